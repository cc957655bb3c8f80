"""One pupil ellipse from a segmentation: the largest plausible component, fitted, with a confidence.

The model votes per pixel; a frame has one pupil. Dark regions that are not pupil (lens edges, lash
clumps, shadowed lids) show up as extra components, usually small, thin or huge, so candidates are
tried largest first and the first plausible one wins:
- area at least `min_area_px` model pixels (noise specks are smaller),
- area at most `max_area_fraction` of the frame (a shadowed half of the image is no pupil),
- minor/major axis ratio of its fitted ellipse at least `min_axis_ratio` (lash clumps are thin).
Its ellipse is `steps.data.transforms.fit_pupil_ellipse` (cv2.fitEllipse on the outer contour, the
same fit that made the training targets). Confidence = mean pupil probability over the component
times how well the filled ellipse covers it (IoU of ellipse and component): a confident, elliptical
blob scores near 1, a ragged or hesitant one lower.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from steps.data.frames import IMAGE_HEIGHT, IMAGE_WIDTH, MAX_RADIUS, SEG_CLASSES
from steps.data.transforms import Ellipse, fit_pupil_ellipse

PUPIL = SEG_CLASSES.index("pupil")
ELLIPSE_DRAW_SHIFT = 4  # cv2.ellipse's sub-pixel bits: centres and axes in 1/16 pixel


@dataclass(frozen=True)
class Plausibility:
    min_area_px: int = 20
    max_area_fraction: float = 0.25
    min_axis_ratio: float = 0.2


@dataclass(frozen=True)
class PupilFit:
    """The pupil found in one model-space prediction; `ellipse` is None when there is none."""

    ellipse: Ellipse | None
    confidence: float
    area_px: int
    components: int
    reason: str = ""  # why there is no pupil


def pupil_probability(logits: np.ndarray) -> np.ndarray:
    """Softmax probability of the pupil class: logits (..., C, H, W) -> float32 (..., H, W)."""
    shifted = np.exp(logits - logits.max(axis=-3, keepdims=True))
    return (shifted[..., PUPIL, :, :] / shifted.sum(axis=-3)).astype(np.float32)


def regressed_ellipse(values: np.ndarray) -> Ellipse:
    """An ellipse model's output row as a pixel ellipse in cv2's convention (angle of the rx axis).

    4 values (cx, cy, rx, ry) are the seed's angle-free form: axis-aligned. 6 values add (cos 2t,
    sin 2t) of the major axis (ry, the dataset's order: rx <= ry), so rx lies at t - 90 degrees.
    """
    cx, cy, rx, ry = (float(v) for v in values[:4])
    angle = 0.0
    if len(values) >= 6:
        angle = (math.degrees(math.atan2(float(values[5]), float(values[4]))) / 2 - 90.0) % 180.0
    return Ellipse(cx * IMAGE_WIDTH, cy * IMAGE_HEIGHT, rx * MAX_RADIUS, ry * MAX_RADIUS, angle, "regressed")


def filled_ellipse(ellipse: Ellipse, shape: tuple[int, int]) -> np.ndarray:
    """uint8 0/1 mask of the filled ellipse (outline included), drawn at 1/16 pixel precision; empty
    for an ellipse with a non-finite or non-positive axis (a regressor's or detector's nonsense)."""
    canvas = np.zeros(shape, np.uint8)
    values = (ellipse.cx, ellipse.cy, ellipse.rx, ellipse.ry, ellipse.angle)
    if not all(np.isfinite(values)) or ellipse.rx <= 0 or ellipse.ry <= 0:
        return canvas
    unit = 1 << ELLIPSE_DRAW_SHIFT
    cv2.ellipse(canvas, (round(ellipse.cx * unit), round(ellipse.cy * unit)),
                (round(ellipse.rx * unit), round(ellipse.ry * unit)), ellipse.angle, 0, 360, 1,
                thickness=cv2.FILLED, lineType=cv2.LINE_8, shift=ELLIPSE_DRAW_SHIFT)
    return canvas


def _overlap(component: np.ndarray, ellipse: Ellipse) -> float:
    drawn = filled_ellipse(ellipse, component.shape).astype(bool)
    union = np.logical_or(drawn, component).sum()
    return float(np.logical_and(drawn, component).sum() / union) if union else 0.0


def find_pupil(probability: np.ndarray, valid: tuple[slice, slice] | None = None,
               rules: Plausibility = Plausibility()) -> PupilFit:
    """The pupil in a (H, W) pupil-probability map; pixels outside `valid` (padding) never count."""
    mask = (probability > 0.5).astype(np.uint8)
    if valid is not None:
        inside = np.zeros_like(mask)
        inside[valid] = 1
        mask &= inside
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    order = sorted(range(1, count), key=lambda k: -stats[k, cv2.CC_STAT_AREA])
    max_area = rules.max_area_fraction * (mask.size if valid is None else inside.sum())
    reason = "no pupil pixel predicted" if count <= 1 else ""
    for k in order:
        area = int(stats[k, cv2.CC_STAT_AREA])
        if area < rules.min_area_px:
            reason = reason or f"largest component {area} px < min_area_px {rules.min_area_px}"
            break  # the rest are smaller still
        if area > max_area:
            reason = f"component of {area} px covers more than {rules.max_area_fraction:.0%} of the frame"
            continue
        component = labels == k
        ellipse = fit_pupil_ellipse(component.view(np.uint8))
        if min(ellipse.rx, ellipse.ry) < rules.min_axis_ratio * max(ellipse.rx, ellipse.ry):
            reason = f"component of {area} px is too elongated (axis ratio < {rules.min_axis_ratio})"
            continue
        confidence = float(probability[component].mean()) * _overlap(component, ellipse)
        return PupilFit(ellipse, confidence, area, count - 1)
    return PupilFit(None, 0.0, 0, count - 1, reason or "no plausible component")
