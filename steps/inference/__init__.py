"""Pupil prediction on your own frames (the predict step's library; no steps.runtime here).

geometry: any frame size onto the 640x400 input (pad | crop | resize) and back, exactly.
preprocess: the frame preparation the model's own ONNX metadata asks for (public: ModelInput,
prepare_frame). pupil: one ellipse from a segmentation. models: ONNX or checkpoint. sources:
images, folders, videos, saved splits. runner: batches through the model. results, annotate:
CSV/JSONL, masks, annotated video and contact sheet. sample_video: a generated video to try it on.
"""
