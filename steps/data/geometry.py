"""Frames of any size (32-4096 px a side) to the model's 640x400 input and predictions back, exactly.

A policy is one axis-aligned affine map from frame pixels to model pixels, `model = scale * frame +
offset` per axis (pixel centres at integer coordinates, OpenCV's convention):
- `pad`: scale to fit inside 640x400 keeping the aspect ratio, centre it, fill the rest with the
  frame's median grey (black padding would look like pupil to the model);
- `crop`: scale to cover 640x400 keeping the aspect ratio, keep the centre (the edges are lost);
- `resize`: stretch to 640x400 (the aspect ratio changes).
The image is resized with cv2.resize, whose sampling is `model = s * (frame + 0.5) - 0.5` for a
size ratio s, so the map below is the one the pixels really went through. Ellipses go back through
the inverse map exactly (an axis-aligned stretch turns an ellipse into another ellipse: its axes are
the singular values of the mapped axis matrix), masks through cv2.warpAffine with the same matrix.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from steps.data.frames import IMAGE_HEIGHT, IMAGE_WIDTH
from steps.data.transforms import Ellipse

GeometryPolicy = Literal["pad", "crop", "resize"]
POLICIES: tuple[str, ...] = ("pad", "crop", "resize")
# Frames this project takes, a side: under 32 px no pupil is measurable (a 16x10 frame is blown up
# 40x, where one frame pixel is 40 model pixels); over 4096 px the decoded frame alone is 16 MiB+
# and a header may claim any size, so it is checked before decoding.
MIN_FRAME_SIDE, MAX_FRAME_SIDE = 32, 4096


def check_frame_size(width: int, height: int) -> None:
    """ValueError unless both sides are MIN_FRAME_SIDE..MAX_FRAME_SIDE pixels."""
    if not (MIN_FRAME_SIDE <= width <= MAX_FRAME_SIDE and MIN_FRAME_SIDE <= height <= MAX_FRAME_SIDE):
        raise ValueError(f"frame {width}x{height}: expected at least {MIN_FRAME_SIDE} and at most "
                         f"{MAX_FRAME_SIDE} pixels a side")


@dataclass(frozen=True)
class FrameGeometry:
    """How one frame size maps onto the model input: `model = scale * frame + offset` per axis."""

    policy: str
    frame_width: int
    frame_height: int
    resized_width: int   # the frame after cv2.resize, before padding or cropping
    resized_height: int
    left: int            # where the resized frame's column 0 lands in the model input (< 0: cropped)
    top: int

    @property
    def scale(self) -> tuple[float, float]:
        return self.resized_width / self.frame_width, self.resized_height / self.frame_height

    @property
    def offset(self) -> tuple[float, float]:
        sx, sy = self.scale
        return 0.5 * (sx - 1.0) + self.left, 0.5 * (sy - 1.0) + self.top

    @property
    def identity(self) -> bool:
        return (self.frame_width, self.frame_height) == (IMAGE_WIDTH, IMAGE_HEIGHT)

    def to_model(self, x: float, y: float) -> tuple[float, float]:
        (sx, sy), (tx, ty) = self.scale, self.offset
        return sx * x + tx, sy * y + ty

    def to_frame(self, x: float, y: float) -> tuple[float, float]:
        (sx, sy), (tx, ty) = self.scale, self.offset
        return (x - tx) / sx, (y - ty) / sy

    def frame_to_model_matrix(self) -> np.ndarray:
        """The 2x3 affine matrix of `to_model` (cv2.warpAffine's layout)."""
        (sx, sy), (tx, ty) = self.scale, self.offset
        return np.array([[sx, 0.0, tx], [0.0, sy, ty]], np.float64)

    def valid_region(self) -> tuple[slice, slice]:
        """The model-input rows and columns that hold frame pixels (not padding)."""
        rows = slice(max(self.top, 0), min(self.top + self.resized_height, IMAGE_HEIGHT))
        cols = slice(max(self.left, 0), min(self.left + self.resized_width, IMAGE_WIDTH))
        return rows, cols


def turn_frame(image: np.ndarray, quarter_turns: int) -> np.ndarray:
    """The frame turned counter-clockwise by `quarter_turns` x 90 degrees (np.rot90), contiguous."""
    return np.ascontiguousarray(np.rot90(image, quarter_turns)) if quarter_turns % 4 else image


def ellipse_before_turns(ellipse: Ellipse, quarter_turns: int, width: int, height: int) -> Ellipse:
    """An ellipse in a frame turned by `turn_frame(frame, quarter_turns)`, back in the `width` x
    `height` frame: a turned pixel (x', y') came from (w - 1 - y', x'), w the width before that
    quarter turn, and directions turn back by 90 degrees each. Exact (pixels are only permuted)."""
    for step in reversed(range(quarter_turns % 4)):
        width_before = width if step % 2 == 0 else height
        ellipse = dataclasses.replace(ellipse, cx=width_before - 1 - ellipse.cy, cy=ellipse.cx,
                                      angle=(ellipse.angle + 90.0) % 180.0)
    return ellipse


@dataclass(frozen=True)
class Region:
    """A rectangle of a frame (x, y its top-left pixel): the part the model is shown. A camera that
    sees the eye smaller than OpenEDS does gets the eye back to the model's scale this way."""

    x: int
    y: int
    width: int
    height: int

    def check_inside(self, width: int, height: int) -> None:
        """ValueError unless the region lies within a `width` x `height` frame."""
        if self.x + self.width > width or self.y + self.height > height:
            raise ValueError(f"roi [{self.x}, {self.y}, {self.width}, {self.height}] reaches past the "
                             f"{width}x{height} frame")

    def crop(self, image: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(image[self.y:self.y + self.height, self.x:self.x + self.width])

    def paste(self, region_map: np.ndarray, width: int, height: int) -> np.ndarray:
        """A `width` x `height` map: `region_map` in place, zero elsewhere."""
        whole = np.zeros((height, width), region_map.dtype)
        whole[self.y:self.y + self.height, self.x:self.x + self.width] = region_map
        return whole

    def ellipse_to_frame(self, ellipse: Ellipse) -> Ellipse:
        return dataclasses.replace(ellipse, cx=ellipse.cx + self.x, cy=ellipse.cy + self.y)


def plan_geometry(width: int, height: int, policy: str) -> FrameGeometry:
    """The map of a `width` x `height` frame under `policy`; ValueError for an unknown policy or a
    frame size outside MIN_FRAME_SIDE..MAX_FRAME_SIDE."""
    check_frame_size(width, height)
    if policy == "resize":
        resized = (IMAGE_WIDTH, IMAGE_HEIGHT)
    elif policy in ("pad", "crop"):
        pick = min if policy == "pad" else max
        ratio = pick(IMAGE_WIDTH / width, IMAGE_HEIGHT / height)
        bound = min if policy == "pad" else max  # rounding never leaves the box (pad) or a gap (crop)
        resized = (bound(IMAGE_WIDTH, max(1, round(width * ratio))),
                   bound(IMAGE_HEIGHT, max(1, round(height * ratio))))
    else:
        raise ValueError(f"geometry policy {policy!r}: expected one of {', '.join(POLICIES)}")
    left, top = (IMAGE_WIDTH - resized[0]) // 2, (IMAGE_HEIGHT - resized[1]) // 2
    return FrameGeometry(policy, width, height, resized[0], resized[1], left, top)


def frame_to_model(image: np.ndarray, geometry: FrameGeometry) -> np.ndarray:
    """The uint8 (400, 640) model-input frame of a uint8 (h, w) frame."""
    if image.shape != (geometry.frame_height, geometry.frame_width):
        raise ValueError(f"frame shape {image.shape} does not match its geometry "
                         f"({geometry.frame_height}, {geometry.frame_width})")
    if geometry.identity:
        return image
    size = (geometry.resized_width, geometry.resized_height)
    shrinking = size[0] * size[1] < image.size
    resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    canvas = np.full((IMAGE_HEIGHT, IMAGE_WIDTH), int(np.median(image)), np.uint8)
    rows, cols = geometry.valid_region()
    canvas[rows, cols] = resized[rows.start - geometry.top:rows.stop - geometry.top,
                                 cols.start - geometry.left:cols.stop - geometry.left]
    return canvas


def map_to_frame(model_map: np.ndarray, geometry: FrameGeometry, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """A (400, 640) model-space map (probability, mask) resampled onto the frame's pixels; frame
    pixels that the model never saw (cropped away) get 0."""
    if geometry.identity:
        return model_map
    return cv2.warpAffine(model_map, geometry.frame_to_model_matrix(), (geometry.frame_width, geometry.frame_height),
                          flags=interpolation | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def map_ellipse(ellipse: Ellipse, scale: tuple[float, float], offset: tuple[float, float]) -> Ellipse:
    """The image of `ellipse` under `p -> scale * p + offset`: semi-major axis first (rx >= ry),
    angle of the major axis in degrees in [0, 180), OpenCV's convention (x right, y down)."""
    theta = math.radians(ellipse.angle)
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    axes = np.diag(scale) @ rotation @ np.diag([ellipse.rx, ellipse.ry])
    left, singular, _ = np.linalg.svd(axes)
    angle = math.degrees(math.atan2(left[1, 0], left[0, 0])) % 180.0
    return Ellipse(cx=scale[0] * ellipse.cx + offset[0], cy=scale[1] * ellipse.cy + offset[1],
                   rx=float(singular[0]), ry=float(singular[1]), angle=angle, method=ellipse.method)


def ellipse_to_frame(ellipse: Ellipse, geometry: FrameGeometry) -> Ellipse:
    """A model-space ellipse in frame pixels (the exact inverse of `ellipse_to_model`)."""
    (sx, sy), (tx, ty) = geometry.scale, geometry.offset
    return map_ellipse(ellipse, (1.0 / sx, 1.0 / sy), (-tx / sx, -ty / sy))


def ellipse_to_model(ellipse: Ellipse, geometry: FrameGeometry) -> Ellipse:
    return map_ellipse(ellipse, geometry.scale, geometry.offset)


def label_to_model(label: np.ndarray, geometry: FrameGeometry) -> np.ndarray:
    """A (h, w) class label through the image's map onto the (400, 640) model input: nearest
    sampling (classes stay classes), 0 (background) where the model input is padding."""
    if label.shape != (geometry.frame_height, geometry.frame_width):
        raise ValueError(f"label shape {label.shape} does not match its frame "
                         f"({geometry.frame_height}, {geometry.frame_width})")
    if geometry.identity:
        return label
    return cv2.warpAffine(label, geometry.frame_to_model_matrix(), (IMAGE_WIDTH, IMAGE_HEIGHT),
                          flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
