"""What a frame must go through before the model sees it, read from the model itself.

An exported ONNX file says how it was trained (steps.export.onnx_export.onnx_metadata):
`input_mode` (gamma + CLAHE, or the raw frame), `preprocessing_params` (enhance_image's settings),
`input_mean`/`input_std` (the normalization). `ModelInput.from_metadata` reads them, so a frame is
prepared exactly as the training frames were; files exported before those keys existed fall back to
the spec's values, which were the only ones export wrote.

    spec = ModelInput.from_metadata(read_metadata(onnx_path))
    batch, geometry = prepare_frame(gray_frame, spec, "pad")   # float32 (1, 1, 400, 640)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from steps.data.frames import INPUT_MEAN, INPUT_STD, normalize_image
from steps.data.geometry import FrameGeometry, frame_to_model, plan_geometry
from steps.data.transforms import PreprocessParams, enhance_image
from steps.outputs import loads_json


class ModelMismatch(ValueError):
    """The model cannot be used for pupil prediction (wrong task, unknown input)."""


@dataclass(frozen=True)
class ModelInput:
    """How to turn a uint8 grayscale frame into the model's float32 input."""

    input_mode: str = "preprocessed"
    params: PreprocessParams | None = field(default_factory=PreprocessParams)  # None: raw frames
    mean: float = INPUT_MEAN
    std: float = INPUT_STD

    @classmethod
    def from_metadata(cls, metadata: dict[str, str]) -> ModelInput:
        """From ONNX metadata_props; ModelMismatch when the model is not a segmentation model."""
        task = metadata.get("task")
        if task != "segmentation":
            raise ModelMismatch(f"a model of task {task!r}, expected a segmentation model "
                                f"(predict fits the pupil ellipse to the predicted mask)")
        return cls.for_mode(metadata.get("input_mode", "preprocessed"),
                            loads_json(metadata["preprocessing_params"]) if "preprocessing_params" in metadata else None,
                            float(metadata.get("input_mean", INPUT_MEAN)), float(metadata.get("input_std", INPUT_STD)))

    @classmethod
    def for_mode(cls, input_mode: str, params: dict[str, Any] | None = None,
                 mean: float = INPUT_MEAN, std: float = INPUT_STD) -> ModelInput:
        if input_mode not in ("preprocessed", "raw"):
            raise ModelMismatch(f"input_mode {input_mode!r}: expected 'preprocessed' or 'raw'")
        if input_mode == "raw":
            return cls("raw", None, mean, std)
        return cls("preprocessed", PreprocessParams(**params) if params else PreprocessParams(), mean, std)

    def describe(self) -> str:
        if self.params is None:
            return f"raw frames, normalized (x / 255 - {self.mean}) / {self.std}"
        return (f"gamma {self.params.gamma}, CLAHE clip {self.params.clahe_clip_limit} tiles "
                f"{self.params.clahe_tile_grid}, normalized (x / 255 - {self.mean}) / {self.std}")


def to_8bit(image: np.ndarray, input_bits: int = 8) -> np.ndarray:
    """An 8-bit image as is; a 16-bit one whose pixels hold `input_bits` significant bits (10-16,
    the low ones: a Mono12 camera's 0..4095) scaled to 0..255 by dropping the lowest bits; ValueError
    for any other pixel type, or a 16-bit image when `input_bits` is 8."""
    if image.dtype == np.uint8:
        return image
    if image.dtype != np.uint16:
        raise ValueError(f"pixel type {image.dtype}, expected 8-bit (or 16-bit with input_bits)")
    if input_bits == 8:
        raise ValueError("pixel type uint16, expected 8-bit (for 10- to 16-bit frames set input_bits)")
    top = int(image.max())
    if top >> input_bits:  # silently saturating every pixel would give junk predictions
        raise ValueError(f"pixel values up to {top} exceed input_bits {input_bits} "
                         f"(data in the high bits of the 16: use input_bits 16)")
    return (image >> (input_bits - 8)).astype(np.uint8)


def to_gray(image: np.ndarray) -> np.ndarray:
    """uint8 grayscale from a grayscale, BGR or BGRA uint8 image; ValueError otherwise."""
    if image.dtype != np.uint8:
        raise ValueError(f"pixel type {image.dtype}, expected 8-bit")
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] in (3, 4):
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY)
    raise ValueError(f"image of shape {image.shape}, expected grayscale, BGR or BGRA")


def enhance(model_frame: np.ndarray, spec: ModelInput) -> np.ndarray:
    """The model-space uint8 frame as the model was trained on it (gamma + CLAHE or as is)."""
    return model_frame if spec.params is None else enhance_image(model_frame, spec.params)


def normalize(model_frames: np.ndarray, spec: ModelInput) -> np.ndarray:
    """uint8 (B, 400, 640) -> float32 (B, 1, 400, 640) model input."""
    return normalize_image(model_frames, spec.mean, spec.std)[:, None].astype(np.float32, copy=False)


def model_frame(image: np.ndarray, spec: ModelInput, policy: str = "pad",
                enhanced: bool = False) -> tuple[np.ndarray, FrameGeometry]:
    """A frame of 32-4096 px a side (grayscale or BGR) -> (uint8 (400, 640) as the model takes it, its
    geometry); `enhanced`: the frame already had the model's gamma + CLAHE (a preprocessed row)."""
    gray = to_gray(image)
    geometry = plan_geometry(gray.shape[1], gray.shape[0], policy)
    placed = frame_to_model(gray, geometry)
    return (placed if enhanced else enhance(placed, spec)), geometry


def prepare_frame(image: np.ndarray, spec: ModelInput, policy: str = "pad") -> tuple[np.ndarray, FrameGeometry]:
    """A frame of 32-4096 px a side (grayscale or BGR) -> (float32 (1, 1, 400, 640) input, its geometry)."""
    placed, geometry = model_frame(image, spec, policy)
    return normalize(placed[None], spec), geometry
