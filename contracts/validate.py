"""validate: evaluate the exported models and gate them; write machine and human reports."""

from pydantic import Field

from contracts.base import Channel, Hyperparameters, Output, StepContract
from steps.data.openeds import FramePolicy


class ValidateHyperparameters(Hyperparameters):
    min_miou: float = Field(0.80, ge=0, le=1, description="gate: segmentation mIoU on the evaluated split")
    max_center_error_px: float = Field(40.0, gt=0, description="gate: ellipse model mean center error (px)")
    max_parity_diff: float = Field(1e-4, gt=0, description="gate: ONNX vs PyTorch max abs difference")
    max_latency_ms: float = Field(200.0, gt=0, description="gate: onnxruntime CPU latency, batch 1, 1 thread")
    max_seg_params: int = Field(60_000, ge=1, description="gate: segmentation parameter count")
    max_seg_size_kb: float = Field(300.0, gt=0, description="gate: segmentation ONNX file size")
    max_rows: int | None = Field(None, ge=1, description="evaluate at most this many rows")
    fixtures_dir: str | None = Field(None, description="real OpenEDS frames to report separately (if present)")
    frame_policy: FramePolicy = Field(
        "pad", description="real frames (fixtures_dir) not 640x400: 'pad', 'crop' or 'resize' onto 640x400 as "
                           "predict's geometry does (labels follow), or 'strict' (skipped, named in the report)")
    overlays: int = Field(6, ge=0, le=64, description="sample overlay images in the report")
    batch_size: int = Field(8, ge=1, le=512, description="frames per onnxruntime call while evaluating")
    parity_rows: int = Field(16, ge=1, description="rows also run through the PyTorch checkpoint (parity)")
    latency_runs: int = Field(30, ge=3, le=10_000, description="timed onnxruntime calls (median reported)")
    latency_warmup: int = Field(5, ge=0, le=1000, description="untimed calls before timing")
    register_model: bool = Field(True, description="register each validated ONNX file (MLflow onnx flavor, "
                                 "MODEL_CARD.md beside it); alias 'champion' when its gates pass")
    robustness: bool = Field(True, description="run the robustness suite (perturbed frames, every model and the "
                             "classical detector side by side) on the evaluated split and the real frames")
    refine_border: bool = Field(True, description="also run the robustness suite on the segmentation model with "
                                "edge refinement (its pupil moved onto the image's border, as predict does)")
    robustness_rows: int = Field(8, ge=0, le=512, description="rows of the evaluated split in the robustness suite "
                                 "(0: real frames only); each runs every perturbation level through every model")
    robustness_levels: int | None = Field(None, ge=1, le=8, description="at most this many levels per perturbation "
                                          "kind, spread from mild to worst (None: all 29 levels)")
    min_robustness_mean: float | None = Field(None, ge=0, le=1, description="gate: segmentation pupil IoU on the "
                                              "robustness suite, mean over kinds, on every frame set (None: off)")
    min_robustness_worst_kind: float | None = Field(None, ge=0, le=1, description="gate: the worst perturbation "
                                                    "kind's mean pupil IoU, on every frame set (None: off)")
    mlflow_experiment: str = Field("openeds", description="experiment of a new validation run "
                                   "(when the models' source run is unknown; MLFLOW_TRACKING_URI set)")


CONTRACT = StepContract(
    name="validate",
    summary="Evaluate ONNX models and checkpoints, write report.json and a human report, apply gates",
    module="steps.validate",
    channels=(
        Channel(name="onnx", artifact="model", doc="export-onnx's `onnx`"),
        Channel(name="seg_model", artifact="model", doc="train-seg's `model` (PyTorch parity, curves)"),
        Channel(name="ellipse_model", artifact="model", doc="train-ellipse's `model`", required=False),
        Channel(name="test", artifact="dataset", doc="the split to evaluate (preprocess's `validation` or `test`)"),
        Channel(name="seg_metrics", artifact="artifact", doc="train-seg's `metrics` (loss curves)", required=False),
    ),
    outputs=(Output(name="report", artifact="artifact", doc="report.json, per_sample.csv, report.md and PNG plots",
                    path="output/data/report"),),
    hyperparameters=ValidateHyperparameters,
)
