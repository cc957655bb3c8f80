"""Frames in, pupil predictions out: prepare, batch through the model, fit, map back to the frame.

    model = open_model(path)                       # steps.inference.segmenters
    kind, frames = open_source(input_path, model.spec.input_mode)
    for item in predict_frames(model, frames, PredictOptions(policy="pad")):
        ...  # FramePrediction, or the SourceFrame that could not be read (item.error)
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from steps.data.geometry import FrameGeometry, Region, ellipse_before_turns, ellipse_to_frame, map_to_frame, turn_frame
from steps.data.transforms import Ellipse
from steps.inference.model_input import model_frame, normalize
from steps.inference.pupil import Plausibility, PupilFit, find_pupil, pupil_probability
from steps.inference.refine import refine_pupil
from steps.inference.segmenters import PupilModel
from steps.inference.sources import SourceFrame


@dataclass(frozen=True)
class PredictOptions:
    policy: str = "pad"
    batch_size: int = 4
    rules: Plausibility = Plausibility()
    max_frames: int | None = None
    refine_border: bool = True  # move the pupil onto the image's border (steps.inference.refine)
    quarter_turns: int = 0      # counter-clockwise, before the model: a camera mounted at another roll
    region: Region | None = None  # the part of each frame the model sees (before the turns)


@dataclass
class FramePrediction:
    """One frame's pupil in frame pixels (`ellipse` None: no pupil) and its 0/1 mask."""

    source: SourceFrame
    geometry: FrameGeometry       # of the frame as the model saw it (its region, turned)
    fit: PupilFit                 # in model pixels
    ellipse: Ellipse | None       # in frame pixels
    mask: np.ndarray              # uint8 0/1, frame size

    def row(self) -> dict[str, Any]:
        """The CSV/JSONL record: frame pixels, rx the semi-major axis along `angle` (degrees)."""
        e = self.ellipse
        return {"frame": self.source.name, "width": self.mask.shape[1], "height": self.mask.shape[0],
                "pupil": e is not None, "cx": _round(e, "cx"), "cy": _round(e, "cy"), "rx": _round(e, "rx"),
                "ry": _round(e, "ry"), "angle": _round(e, "angle"), "confidence": round(self.fit.confidence, 4),
                "mask_area_px": int(self.mask.sum()), "components": self.fit.components,
                "reason": self.fit.reason}


def _round(ellipse: Ellipse | None, name: str) -> float | None:
    return None if ellipse is None else round(float(getattr(ellipse, name)), 3)


@dataclass
class Timing:
    frames: int = 0
    skipped: int = 0
    model_seconds: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def summary(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.started
        return {"frames": self.frames, "skipped": self.skipped, "seconds": round(wall, 3),
                "frames_per_s": round(self.frames / wall, 2) if wall > 0 else None,
                "model_frames_per_s": round(self.frames / self.model_seconds, 2) if self.model_seconds else None}


def _image(frame: SourceFrame) -> np.ndarray:
    if frame.image is None:  # predict_frames sends unreadable frames (error set, no image) around the model
        raise ValueError(f"{frame.name}: no image to predict on ({frame.error or 'unreadable'})")
    return frame.image


def _view(frame: SourceFrame, options: PredictOptions) -> np.ndarray:
    """What the model is shown of the frame: its region (or all of it), turned upright."""
    image = _image(frame)
    return turn_frame(options.region.crop(image) if options.region else image, options.quarter_turns)


def _in_frame(frame: SourceFrame, options: PredictOptions, view_mask: np.ndarray,
              view_ellipse: Ellipse | None) -> tuple[np.ndarray, Ellipse | None]:
    """A mask and ellipse of the model's view, back in the frame as given."""
    turns, region = options.quarter_turns, options.region
    mask = turn_frame(view_mask, -turns)
    ellipse = None if view_ellipse is None else ellipse_before_turns(view_ellipse, turns, *mask.shape[::-1])
    if region is None:
        return mask, ellipse
    height, width = _image(frame).shape
    return region.paste(mask, width, height), None if ellipse is None else region.ellipse_to_frame(ellipse)


def _predict_batch(model: PupilModel, batch: list[SourceFrame], options: PredictOptions,
                   timing: Timing) -> list[FramePrediction]:
    prepared = [model_frame(_view(frame, options), model.spec, options.policy, frame.enhanced) for frame in batch]
    inputs = normalize(np.stack([image for image, _ in prepared]), model.spec)
    started = time.perf_counter()
    logits = model.run(inputs)
    timing.model_seconds += time.perf_counter() - started
    results = []
    for frame, (image, geometry), frame_logits in zip(batch, prepared, logits):
        probability = pupil_probability(frame_logits)
        fit = find_pupil(probability, geometry.valid_region(), options.rules)
        model_mask = (probability > 0.5).astype(np.uint8)
        if options.refine_border:
            model_mask, fit = refine_pupil(image, model_mask, fit)
        view_mask = (map_to_frame(model_mask.astype(np.float32), geometry) > 0.5).astype(np.uint8)
        view_ellipse = None if fit.ellipse is None else ellipse_to_frame(fit.ellipse, geometry)
        mask, ellipse = _in_frame(frame, options, view_mask, view_ellipse)
        results.append(FramePrediction(frame, geometry, fit, ellipse, mask))
    timing.frames += len(results)
    return results


def _outside_region(frame: SourceFrame, region: Region | None) -> SourceFrame:
    """The frame, or, when the region does not fit in it, the frame skipped with the reason."""
    if region is None or frame.error or frame.image is None:
        return frame
    try:
        region.check_inside(frame.image.shape[1], frame.image.shape[0])
    except ValueError as error:
        return dataclasses.replace(frame, image=None, error=f"{frame.name}: {error}")
    return frame


def predict_frames(model: PupilModel, frames: Iterable[SourceFrame], options: PredictOptions,
                   timing: Timing | None = None) -> Iterator[FramePrediction | SourceFrame]:
    """Predictions in input order; unreadable frames come through as their SourceFrame (error set)."""
    timing = timing if timing is not None else Timing()
    batch: list[SourceFrame] = []
    taken = 0  # frames predicted (skipped ones do not count towards max_frames)
    for frame in frames:
        if options.max_frames is not None and taken >= options.max_frames:
            break
        frame = _outside_region(frame, options.region)
        if frame.error:
            yield from _predict_batch(model, batch, options, timing) if batch else ()
            batch = []
            timing.skipped += 1
            yield frame
            continue
        taken += 1
        batch.append(frame)
        if len(batch) == options.batch_size:
            yield from _predict_batch(model, batch, options, timing)
            batch = []
    if batch:
        yield from _predict_batch(model, batch, options, timing)
