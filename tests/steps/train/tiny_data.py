"""Tiny preprocessed splits for training tests: a few synthetic eye frames through the real
preprocessing (steps.data.transforms.preprocess_frame), saved in preprocess's on-disk schema."""

from __future__ import annotations

from pathlib import Path

import cv2
import datasets
import numpy as np

from steps.data.frames import IMAGE_HEIGHT as H
from steps.data.frames import IMAGE_WIDTH as W
from steps.data.precompute import FEATURES  # preprocess's on-disk schema
from steps.data.transforms import preprocess_frame


def synthetic_frame(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A gray frame with sclera, iris and a dark pupil ellipse, and its raw 4-class label."""
    cx, cy = rng.uniform(200, 440), rng.uniform(140, 260)
    rx, ry = rng.uniform(25, 45), rng.uniform(22, 40)
    label = np.zeros((H, W), np.uint8)
    for cls, scale in ((1, 3.0), (2, 1.9), (3, 1.0)):
        cv2.ellipse(label, (round(cx), round(cy)), (round(rx * scale), round(ry * scale)), 0, 0, 360, cls, -1)
    shade = np.array([150, 200, 90, 25], np.float32)[label]
    image = (shade + rng.normal(0, 12, (H, W))).clip(0, 255).astype(np.uint8)
    return image, label


def make_split(rows: int, seed: int, nan_weight_rows: tuple[int, ...] = ()) -> datasets.Dataset:
    """`rows` synthetic frames; rows in `nan_weight_rows` get NaN spatial weights (corrupt data)."""
    rng = np.random.default_rng(seed)
    columns: dict[str, list] = {name: [] for name in FEATURES}
    for index in range(rows):
        processed = preprocess_frame(*synthetic_frame(rng))
        processed.pop("ellipse_method", None)
        if index in nan_weight_rows:
            processed["spatial_weights"] = np.full_like(processed["spatial_weights"], np.nan)
        processed.update(filename=f"synthetic_{seed}_{index:03d}.png", preprocessed=True)
        for name in FEATURES:
            columns[name].append(processed[name])
    return datasets.Dataset.from_dict(columns, features=FEATURES)


def write_tiny_splits(root: Path, train_rows: int = 6, valid_rows: int = 4) -> dict[str, Path]:
    """`root/train` and `root/validation` as preprocess writes them; returns the two folders."""
    paths = {"train": Path(root) / "train", "validation": Path(root) / "validation"}
    make_split(train_rows, seed=1).save_to_disk(str(paths["train"]))
    make_split(valid_rows, seed=2).save_to_disk(str(paths["validation"]))
    return paths
