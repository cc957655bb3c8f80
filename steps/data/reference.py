"""The straightforward implementation of the spec's preprocessing, written as the spec reads.

scipy's `distance_transform_edt`, scipy's binary morphology and `gaussian_filter` on the whole
frame, numpy indexing for the gamma table, and `cv2.findContours` + `cv2.fitEllipse` on the whole
mask. It is deliberately independent of `steps.data.transforms` (the fast path) so that tests,
`--validate` and the benchmark can compare the two; the conventions are the ones documented there.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
from scipy import ndimage

from steps.data.frames import IMAGE_DIAGONAL, IMAGE_HEIGHT, IMAGE_WIDTH, MAX_RADIUS
from steps.data.transforms import PreprocessParams, SampleError, check_frame

CLASSES = (0, 1)  # background, pupil


def binarize(label: np.ndarray) -> np.ndarray:
    return np.where(label == 3, 1, 0).astype(np.uint8)


def enhance_image(image: np.ndarray, params: PreprocessParams) -> np.ndarray:
    table = (255.0 * np.linspace(0.0, 1.0, 256) ** params.gamma).astype(np.uint8)
    corrected = table[image]
    grid = (params.clahe_tile_grid, params.clahe_tile_grid)
    return cv2.createCLAHE(clipLimit=params.clahe_clip_limit, tileGridSize=grid).apply(corrected)


def moments_circle(contour: np.ndarray, shape: tuple[int, int]) -> tuple[float, float, float, float, str]:
    filled = np.zeros(shape, np.uint8)
    cv2.drawContours(filled, [contour], -1, 1, thickness=cv2.FILLED)
    ys, xs = np.nonzero(filled)
    radius = math.sqrt(len(xs) / math.pi)
    return float(xs.mean()), float(ys.mean()), radius, radius, "moments"


def fit_ellipse(mask: np.ndarray) -> tuple[float, float, float, float, str]:
    """(cx, cy, rx, ry, method) in pixels."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contour = max(contours, key=cv2.contourArea)
    if len(contour) < 5 or cv2.contourArea(contour) == 0:
        return moments_circle(contour, mask.shape)
    try:
        (cx, cy), (width, height), angle = cv2.fitEllipse(contour)
    except cv2.error:
        return moments_circle(contour, mask.shape)
    finite = all(math.isfinite(v) for v in (cx, cy, width, height, angle))
    if not finite or min(width, height) < 1.0 or max(width, height) > 2 * IMAGE_DIAGONAL:
        return moments_circle(contour, mask.shape)
    return cx, cy, width / 2.0, height / 2.0, "fit"


def spatial_weights(mask: np.ndarray, sigma: float) -> np.ndarray:
    dilated = ndimage.binary_dilation(mask)
    eroded = ndimage.binary_erosion(mask)
    boundary = dilated.astype(np.float64) - eroded.astype(np.float64)
    return ndimage.gaussian_filter(boundary, sigma=sigma).astype(np.float32)


def distance_maps(mask: np.ndarray) -> np.ndarray:
    if mask.all():
        raise SampleError("pupil mask covers the whole frame: its outside distance is undefined")
    maps = []
    for cls in CLASSES:
        inside = mask == cls
        maps.append(ndimage.distance_transform_edt(~inside) - ndimage.distance_transform_edt(inside))
    return (np.stack(maps) / IMAGE_DIAGONAL).astype(np.float32)


def preprocess_frame(image: np.ndarray, label: np.ndarray,
                     params: PreprocessParams = PreprocessParams()) -> dict[str, Any] | None:
    """Same contract as `transforms.preprocess_frame`."""
    check_frame(image, label)
    mask = binarize(label)
    if mask.sum() == 0:
        return None
    cx, cy, rx, ry, method = fit_ellipse(mask)
    return {
        "image": enhance_image(image, params),
        "label": mask,
        "spatial_weights": spatial_weights(mask, params.weight_sigma),
        "dist_map": distance_maps(mask),
        "cx": np.float32(cx / IMAGE_WIDTH), "cy": np.float32(cy / IMAGE_HEIGHT),
        "rx": np.float32(rx / MAX_RADIUS), "ry": np.float32(ry / MAX_RADIUS),
        "ellipse_method": method,
    }


# ---------------------------------------------------------------- comparing rows

EXACT_COLUMNS = ("image", "label")
FLOAT_COLUMNS = ("spatial_weights", "dist_map", "cx", "cy", "rx", "ry")
TOLERANCE = 1e-4


def column_differences(expected: dict[str, Any], actual: dict[str, Any]) -> dict[str, float]:
    """Largest absolute difference per compared column (inf where shapes differ)."""
    differences = {}
    for column in EXACT_COLUMNS + FLOAT_COLUMNS:
        want = np.asarray(expected[column], dtype=np.float64)
        got = np.asarray(actual[column], dtype=np.float64)
        if want.shape != got.shape:
            differences[column] = math.inf
        else:
            differences[column] = float(np.abs(want - got).max()) if want.size else 0.0
    return differences


def mismatched_columns(expected: dict[str, Any], actual: dict[str, Any],
                       tolerance: float = TOLERANCE) -> dict[str, float]:
    """Columns that disagree: images and labels must be equal, floats within `tolerance`."""
    differences = column_differences(expected, actual)
    return {column: difference for column, difference in differences.items()
            if difference > (0.0 if column in EXACT_COLUMNS else tolerance)
            or not math.isfinite(difference)}
