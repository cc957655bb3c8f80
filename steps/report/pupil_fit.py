"""One pupil ellipse from a segmentation: the largest plausible blob, its ellipse and a confidence.

A segmentation mask can hold several blobs (a false pupil on a dark lens edge, lash fragments);
downstream users want one ellipse or a clear "no pupil". A blob is plausible when it has at least
`min_area` pixels, fills its fitted ellipse (`min_fill`: ragged shadows fill little of theirs) and is
not a thin strand (`MIN_AXIS_RATIO`: lashes); a pupil, even cut by a lid or a glint, passes all three.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from steps.data import transforms

MIN_AREA_PX = 60      # real near-eye pupils have a few hundred pixels and more
MIN_FILL = 0.6        # blob pixels / fitted ellipse area
MIN_AXIS_RATIO = 0.25  # short / long radius: lash strands are long and thin; a lid-cut pupil is not
CANDIDATES = 4        # only the largest few blobs are fitted (the rest are far too small to win)


@dataclass(frozen=True)
class PupilFit:
    """The chosen pupil: ellipse in pixels, its blob mask, and a confidence in [0, 1]."""

    ellipse: transforms.Ellipse
    mask: np.ndarray  # uint8 0/1, the chosen blob only
    area: int
    confidence: float

    @property
    def center(self) -> tuple[float, float]:
        return self.ellipse.cx, self.ellipse.cy


def fill_ratio(area: int, ellipse: transforms.Ellipse) -> float:
    return area / max(math.pi * ellipse.rx * ellipse.ry, 1.0)


def blob_candidates(mask: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(area, 0/1 blob mask) of the largest 8-connected blobs, largest first."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(np.ascontiguousarray(mask, np.uint8), connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    order = np.argsort(-areas)[:CANDIDATES]
    return [(int(areas[k]), (labels == k + 1).astype(np.uint8)) for k in order]


def pupil_from_mask(mask: np.ndarray, probability: np.ndarray | None = None, *,
                    min_area: int = MIN_AREA_PX, min_fill: float = MIN_FILL) -> PupilFit | None:
    """The largest plausible blob of a 0/1 pupil mask, or None ("no pupil").

    Confidence multiplies how well the blob fills its ellipse, its share of all predicted pupil
    pixels (a second large blob means doubt) and, given the pupil probability map, its mean
    probability inside the blob."""
    total = int(np.count_nonzero(mask))
    if total < min_area:
        return None
    for area, blob in blob_candidates(mask):
        if area < min_area:
            break
        ellipse = transforms.fit_pupil_ellipse(blob)
        fill = fill_ratio(area, ellipse)
        if fill < min_fill or min(ellipse.rx, ellipse.ry) < MIN_AXIS_RATIO * max(ellipse.rx, ellipse.ry):
            continue
        confidence = min(fill, 1.0) * area / total
        if probability is not None:
            confidence *= float(probability[blob.astype(bool)].mean())
        return PupilFit(ellipse=ellipse, mask=blob, area=area, confidence=float(confidence))
    return None


def ellipse_mask(cx: float, cy: float, rx: float, ry: float, angle_deg: float,
                 shape: tuple[int, int]) -> np.ndarray:
    """A filled ellipse as a uint8 0/1 mask, outline included (cv2.ellipse at sub-pixel precision).

    Ellipses here are fitted to boundary pixel centres (cv2.fitEllipse on a contour, the classical
    detector on edge pixels), so the region they came from reaches half a pixel beyond them; filling
    the outline too gives that region back (pixel centres strictly inside would lose ~0.5 px)."""
    mask = np.zeros(shape, np.uint8)
    if not all(math.isfinite(v) for v in (cx, cy, rx, ry, angle_deg)) or rx <= 0 or ry <= 0:
        return mask
    shift = 4  # cv2.ellipse takes fixed-point coordinates with `shift` fractional bits
    scale = 1 << shift
    center = (int(round(cx * scale)), int(round(cy * scale)))
    axes = (int(round(rx * scale)), int(round(ry * scale)))
    cv2.ellipse(mask, center, axes, angle_deg, 0, 360, 1, thickness=-1, lineType=cv2.LINE_8, shift=shift)
    return mask
