"""Tiny preprocessed splits in the exact on-disk schema of preprocess's outputs, for loader tests.

Rows hold a dark elliptical pupil on a textured background; label, spatial weights, distance map and
ellipse are derived from that mask (OpenCV equivalents of the spec's formulas, good enough for tests
of the loader; the spec-exact transforms are tested with steps/data/transforms.py).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import datasets
import numpy as np

from steps.data.frames import IMAGE_DIAGONAL, IMAGE_HEIGHT, IMAGE_WIDTH, MAX_RADIUS
from steps.data.precompute import FEATURES

H, W = IMAGE_HEIGHT, IMAGE_WIDTH


def preprocessed_features(*, raw_image: bool = False) -> datasets.Features:
    features = dict(FEATURES)  # preprocess's on-disk schema
    if raw_image:
        features["raw_image"] = datasets.Array2D((H, W), "uint8")
    return datasets.Features(features)


def raw_features() -> datasets.Features:
    """Rows with only a camera image and a raw 4-class label (`preprocessed=False`)."""
    return datasets.Features({
        "image": datasets.Array2D((H, W), "uint8"),
        "label": datasets.Array2D((H, W), "uint8"),
        "filename": datasets.Value("string"),
        "preprocessed": datasets.Value("bool"),
    })


def _frame(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float, float]]:
    """A camera-like uint8 frame and its raw 4-class label with a pupil ellipse away from the centre."""
    cx, cy = rng.uniform(120, 520), rng.uniform(100, 300)
    rx, ry = rng.uniform(20, 45), rng.uniform(18, 40)
    label = np.zeros((H, W), np.uint8)
    cv2.ellipse(label, (round(cx), round(cy)), (round(rx * 3), round(ry * 2)), 0, 0, 360, 1, -1)
    cv2.ellipse(label, (round(cx), round(cy)), (round(rx * 1.8), round(ry * 1.8)), 0, 0, 360, 2, -1)
    cv2.ellipse(label, (round(cx), round(cy)), (round(rx), round(ry)), 0, 0, 360, 3, -1)
    image = rng.normal(140, 20, (H, W)).clip(0, 255).astype(np.uint8)
    image[label == 2] //= 2
    image[label == 3] = 20
    return image, label, (cx, cy, rx, ry)


def derived_columns(binary: np.ndarray) -> dict[str, np.ndarray | float]:
    """Spatial weights, signed distance map and normalized ellipse of a binary pupil mask."""
    gradient = cv2.morphologyEx(binary, cv2.MORPH_GRADIENT, cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3)),
                                borderType=cv2.BORDER_CONSTANT, borderValue=0)
    weights = cv2.GaussianBlur(gradient.astype(np.float32), (41, 41), 5, borderType=cv2.BORDER_REFLECT)
    dist_map = np.empty((2, H, W), np.float32)
    for cls in (0, 1):
        inside = (binary == cls).astype(np.uint8)
        d_out = cv2.distanceTransform(1 - inside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        d_in = cv2.distanceTransform(inside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        dist_map[cls] = (d_out - d_in) / IMAGE_DIAGONAL
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    (ex, ey), (ew, eh), _ = cv2.fitEllipse(max(contours, key=cv2.contourArea))
    return {"spatial_weights": weights, "dist_map": dist_map, "cx": ex / W, "cy": ey / H,
            "rx": ew / 2 / MAX_RADIUS, "ry": eh / 2 / MAX_RADIUS}


def make_rows(n: int, seed: int = 0, *, preprocessed: bool = True, raw_image: bool = False) -> dict[str, list]:
    """Column dict of `n` rows. preprocessed=False rows carry the camera image and raw 4-class label only."""
    rng = np.random.default_rng(seed)
    columns: dict[str, list] = {}
    for i in range(n):
        image, raw_label, _ = _frame(rng)
        binary = (raw_label == 3).astype(np.uint8)
        row: dict = {"filename": f"s{seed}_{i:04d}.png", "preprocessed": preprocessed}
        if preprocessed:
            # A stand-in for gamma+CLAHE that is visibly different from the camera frame.
            row.update(image=(255 - image), label=binary, **derived_columns(binary))
            if raw_image:
                row["raw_image"] = image
        else:
            row.update(image=image, label=raw_label)
        for key, value in row.items():
            columns.setdefault(key, []).append(value)
    return columns


def make_split(n: int, seed: int = 0, *, preprocessed: bool = True, raw_image: bool = False) -> datasets.Dataset:
    features = preprocessed_features(raw_image=raw_image) if preprocessed else raw_features()
    return datasets.Dataset.from_dict(make_rows(n, seed, preprocessed=preprocessed, raw_image=raw_image),
                                      features=features)


def write_split(path: Path, n: int, seed: int = 0, **kwargs) -> Path:
    """save_to_disk a split of `n` rows at `path` (like preprocess's outputs) and return `path`."""
    make_split(n, seed, **kwargs).save_to_disk(str(path))
    return path
