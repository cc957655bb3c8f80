"""Facts about OpenEDS frames shared by every step: geometry, classes, model input normalization."""

from __future__ import annotations

import math

import numpy as np

IMAGE_HEIGHT = 400
IMAGE_WIDTH = 640
IMAGE_SHAPE = (IMAGE_HEIGHT, IMAGE_WIDTH)
IMAGE_DIAGONAL = math.sqrt(IMAGE_WIDTH**2 + IMAGE_HEIGHT**2)
# Radii are normalized by half the image diagonal (the spec's 377.36).
MAX_RADIUS = 377.36
RAW_CLASSES = ("background", "sclera", "iris", "pupil")
PUPIL_RAW_CLASS = 3
SEG_CLASSES = ("background", "pupil")

# Model input: uint8 grayscale -> float32 in [-1, 1]. Export metadata and validate read these.
INPUT_MEAN = 0.5
INPUT_STD = 0.5


def normalize_image(image: np.ndarray, mean: float = INPUT_MEAN, std: float = INPUT_STD) -> np.ndarray:
    """uint8 [..., H, W] -> float32 model input of the same shape."""
    return ((image.astype(np.float32) / 255.0) - mean) / std
