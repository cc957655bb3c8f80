"""Pictures of predictions: a frame with its mask outline and ellipse, a video of them, a contact sheet."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from steps.data.transforms import Ellipse

MASK_COLOUR = (0, 0, 255)      # BGR red: the predicted mask's outline
ELLIPSE_COLOUR = (0, 255, 0)   # BGR green: the fitted pupil ellipse
NO_PUPIL_COLOUR = (0, 165, 255)
SHEET_TILE_WIDTH = 320
SHEET_COLUMNS = 4
VIDEO_CODEC = "mp4v"


def annotate(gray: np.ndarray, mask: np.ndarray, ellipse: Ellipse | None, label: str) -> np.ndarray:
    """BGR copy of `gray` with the mask outline (red), the ellipse and its centre (green) and `label`."""
    canvas = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    thickness = max(1, round(max(gray.shape) / 400))
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(canvas, contours, -1, MASK_COLOUR, thickness)
    if ellipse is not None and all(math.isfinite(v) for v in (ellipse.cx, ellipse.cy, ellipse.rx, ellipse.ry)):
        centre = (ellipse.cx, ellipse.cy)
        cv2.ellipse(canvas, (centre, (2 * ellipse.rx, 2 * ellipse.ry), ellipse.angle), ELLIPSE_COLOUR, thickness)
        cv2.drawMarker(canvas, (round(centre[0]), round(centre[1])), ELLIPSE_COLOUR, cv2.MARKER_CROSS,
                       6 * thickness, thickness)
    scale = max(0.4, max(gray.shape) / 1000)
    cv2.putText(canvas, label, (8, round(24 * scale / 0.6)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                ELLIPSE_COLOUR if ellipse is not None else NO_PUPIL_COLOUR, thickness, cv2.LINE_AA)
    return canvas


def fit_inside(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`image` scaled to fit (width, height) `size` with its aspect kept, centred on black: a frame of
    another size in a video is shown whole and unstretched."""
    width, height = size
    scale = min(width / image.shape[1], height / image.shape[0])
    fitted = cv2.resize(image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))),
                        interpolation=cv2.INTER_AREA)
    canvas = np.zeros((height, width, *image.shape[2:]), image.dtype)
    top, left = (height - fitted.shape[0]) // 2, (width - fitted.shape[1]) // 2
    canvas[top:top + fitted.shape[0], left:left + fitted.shape[1]] = fitted
    return canvas


class VideoSink:
    """An annotated video written frame by frame (opened at the first frame: size and rate)."""

    def __init__(self, path: Path):
        self.path = path
        self.writer: cv2.VideoWriter | None = None
        self.size: tuple[int, int] | None = None
        self.frames = 0

    def add(self, image: np.ndarray, fps: float | None = None) -> None:
        """Append a BGR frame; the first one sets the video's size and rate (`fps`, default 10)."""
        if self.writer is None:
            self.size = (image.shape[1], image.shape[0])
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter.fourcc(*VIDEO_CODEC), fps or 10.0, self.size)
            if not self.writer.isOpened():
                raise OSError(f"{self.path}: OpenCV cannot write a {VIDEO_CODEC} video here")
        if self.size is not None and (image.shape[1], image.shape[0]) != self.size:
            image = fit_inside(image, self.size)
        self.writer.write(image)
        self.frames += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


def tile(image: np.ndarray, width: int = SHEET_TILE_WIDTH) -> np.ndarray:
    height = max(1, round(image.shape[0] * width / image.shape[1]))
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def contact_sheet(tiles: list[np.ndarray], path: Path, columns: int = SHEET_COLUMNS) -> Path:
    """Tiles (BGR, same width) in a grid, rows as tall as their tallest tile, written as PNG."""
    columns = max(1, min(columns, len(tiles)))
    rows = [tiles[k:k + columns] for k in range(0, len(tiles), columns)]
    width = tiles[0].shape[1]
    strips = []
    for row in rows:
        height = max(t.shape[0] for t in row)
        strip = np.zeros((height, width * columns, 3), np.uint8)
        for k, image in enumerate(row):
            strip[:image.shape[0], k * width:(k + 1) * width] = image
        strips.append(strip)
    if not cv2.imwrite(str(path), np.vstack(strips)):
        raise OSError(f"{path}: could not write the contact sheet")
    return path
