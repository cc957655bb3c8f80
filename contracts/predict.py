"""predict: the pupil ellipse, a confidence and a mask for every frame of an image, a folder, a video
or a saved split, from an exported ONNX model (default) or a PyTorch checkpoint."""

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from contracts.base import Channel, Hyperparameters, Output, StepContract

Corner = Annotated[int, Field(ge=0)]              # a region's x or y, frame pixels
Side = Annotated[int, Field(ge=32, le=4096)]      # a region's width or height: the frame-size bounds


class PredictHyperparameters(Hyperparameters):
    geometry: Literal["pad", "crop", "resize"] = Field(
        "pad", description="frames of another size than 640x400: pad (fit, keep the aspect ratio), "
                           "crop (cover, keep the aspect ratio) or resize (stretch); mapped back exactly")
    input_bits: Literal[8, 10, 12, 14, 16] = Field(
        8, description="significant bits of 16-bit image files (a Mono12 camera's 0..4095: 12), scaled to "
                       "8-bit by dropping the lowest bits; 8: 16-bit files are skipped, naming them")
    rotate: Literal[0, 90, 180, 270] = Field(
        0, description="turn each frame this many degrees counter-clockwise before the model, so that the eye "
                       "is upright (upper lid at the top): a camera mounted upside down or sideways; ellipses "
                       "and masks are given in the original frame")
    roi: tuple[Corner, Corner, Side, Side] | None = Field(
        None, description="x,y,width,height (or [x, y, width, height]): predict on this region of each frame "
                          "only (a camera that sees the eye smaller than OpenEDS does: the region around the eye "
                          "is scaled up to the model's input); ellipses and masks are given in the whole frame; "
                          "a frame the region does not fit in is skipped")
    backend: Literal["auto", "onnx", "checkpoint"] = Field(
        "auto", description="auto: the .onnx file when the model channel has one, else the checkpoint")
    batch_size: int = Field(4, ge=1, le=256, description="frames per model call")
    threads: int = Field(0, ge=0, le=256, description="CPU threads for the model (0: the runtime's default)")
    max_frames: int | None = Field(None, ge=1,
                                   description="predict at most this many frames (skipped frames do not count)")
    masks: bool = Field(True, description="write masks/<frame>.png (0 or 255, frame size)")
    annotate: Literal["auto", "none", "video", "sheet", "both"] = Field(
        "auto", description="annotated output: auto = a video for a video input, a contact sheet otherwise")
    sheet_frames: int = Field(12, ge=1, le=256, description="frames on the contact sheet")
    min_area_px: int = Field(20, ge=1, description="smallest plausible pupil (model-input pixels)")
    max_area_fraction: float = Field(0.25, gt=0, le=1, description="largest plausible pupil, as a fraction of the frame")
    refine_border: bool = Field(True, description="move the pupil ellipse and mask onto the image's own "
                                "pupil border (sub-pixel edge refinement of the model's guess)")
    min_axis_ratio: float = Field(0.2, gt=0, le=1, description="thinnest plausible pupil (minor / major axis)")

    @field_validator("roi", mode="before")
    @classmethod
    def _roi_as_typed(cls, value: Any) -> Any:
        """`--roi 10,20,320,200` as well as `--roi "[10, 20, 320, 200]"`; a string of any other shape is
        refused saying the expected one (the bounds of each value are checked by its type)."""
        if not isinstance(value, str):
            return value
        parts = [part.strip() for part in value.split(",")]
        if len(parts) != 4:
            raise ValueError(f"expected four values x,y,width,height (e.g. 10,20,320,200), not {len(parts)}")
        try:
            return [int(part) for part in parts]
        except ValueError:
            raise ValueError("expected four whole numbers x,y,width,height (e.g. 10,20,320,200)") from None


CONTRACT = StepContract(
    name="predict",
    summary="Predict pupil ellipses, confidences and masks on images, folders, videos or a saved split",
    module="steps.predict",
    channels=(
        Channel(name="model", artifact="model",
                doc="export-onnx's `onnx` (or one .onnx file), or train-seg's `model` / a .pt checkpoint"),
        Channel(name="input", artifact="dataset", doc="an image, a folder of images and videos, a video file, or a saved split"),
    ),
    outputs=(Output(name="predictions", artifact="dataset", doc="ellipses.csv, ellipses.jsonl, masks/, annotated.mp4 or "
                                            "contact_sheet.png, skipped.jsonl", path="output/data/predictions"),),
    hyperparameters=PredictHyperparameters,
)
