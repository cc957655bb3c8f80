"""Training augmentations (RITnet's): horizontal flip, line augment, Gaussian blur.

One function, `augment_row`, moves every field of a row together: the horizontal flip mirrors the
image, the label, the spatial weights, both distance-map channels and the ellipse centre; the
photometric augmentations (lines, blur) touch only the image.

Randomness: the parameters of a row are drawn from a generator seeded by (seed, epoch, row index)
only (`row_rng`), never from global RNG state or the worker that happens to load the row, so a
resumed run sees exactly the augmentations of an uninterrupted one.

Ellipse convention: cx = x / 640 where x is the pixel coordinate that `cv2.fitEllipse` returns
(pixel centres at integers 0..639). Mirroring column x gives column 639 - x, so the mirrored
centre is cx' = (639 - 640 * cx) / 640 = 1 - cx - 1/640, not 1 - cx. cy, rx and ry do not change
(the fitted angle is not stored).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

import cv2
import numpy as np

from steps.data.frames import IMAGE_HEIGHT, IMAGE_WIDTH

# RITnet's probabilities (dataset.py: flip 0.5, Line_augment 0.2, Gaussian_blur 0.2).
FLIP_PROBABILITY = 0.5
LINES_PROBABILITY = 0.2
BLUR_PROBABILITY = 0.2
BLUR_KERNEL = 7                 # RITnet: cv2.GaussianBlur(img, (7, 7), sigma), sigma in 2..6
BLUR_SIGMAS = (2, 7)            # randint bounds, high exclusive
MAX_LINES = 10                  # RITnet: randint(1, 10) lines, white, 4 px thick
LINE_THICKNESS = 4
LINE_VALUE = 255
_COORD_LIMIT = 100_000          # tan(theta) near pi/2: keep cv2.line's integer coordinates finite

GEOMETRIC_FIELDS = ("image", "label", "spatial_weights", "dist_map", "ellipse")


@dataclass(frozen=True)
class AugmentParams:
    """What happens to one row; the identity by default (validation rows)."""

    flip: bool = False
    lines: tuple[tuple[int, int, int, int], ...] = ()   # (x1, y1, x2, y2) segments drawn on the image
    blur_sigma: int | None = None

    @property
    def is_identity(self) -> bool:
        return not self.flip and not self.lines and self.blur_sigma is None


NO_AUGMENTATION = AugmentParams()


def row_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one row in one epoch: depends on nothing else."""
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, index]))


def _random_lines(u: np.ndarray) -> tuple[tuple[int, int, int, int], ...]:
    """RITnet's Line_augment geometry from uniforms `u`: 1-9 lines through a point near the centre."""
    yc, xc = (0.3 + 0.4 * u[0]) * IMAGE_HEIGHT, (0.3 + 0.4 * u[0]) * IMAGE_WIDTH
    segments = []
    for line in range(1 + int(u[1] * (MAX_LINES - 1))):
        theta, near, near_sign, far, far_sign = u[2 + 5 * line: 7 + 5 * line]
        slope = math.tan(math.pi * theta)
        x1 = xc - 50 * near * (1 if near_sign < 0.5 else -1)
        x2 = xc - (150 * far + 50) * (1 if far_sign < 0.5 else -1)
        ends = ((x1, (x1 - xc) * slope + yc), (x2, (x2 - xc) * slope + yc))
        segments.append(tuple(max(-_COORD_LIMIT, min(_COORD_LIMIT, round(v))) for point in ends for v in point))
    return tuple(segments)


_UNIFORMS = 3 + 1 + 2 + 5 * (MAX_LINES - 1)  # flip, lines?, blur?, sigma, centre, count, 5 per line


def draw_params(rng: np.random.Generator) -> AugmentParams:
    """One row's augmentations from a single fixed-size draw (cheap, and the stream stays aligned)."""
    u = rng.random(_UNIFORMS).tolist()
    flip, lines, blur, sigma = u[0] < FLIP_PROBABILITY, u[1] < LINES_PROBABILITY, u[2] < BLUR_PROBABILITY, u[3]
    low, high = BLUR_SIGMAS
    return AugmentParams(flip=flip, lines=_random_lines(u[4:]) if lines else (),
                         blur_sigma=low + int(sigma * (high - low)) if blur else None)


def params_for(seed: int, epoch: int, index: int, enabled: bool = True) -> AugmentParams:
    return draw_params(row_rng(seed, epoch, index)) if enabled else NO_AUGMENTATION


def mirror_cx(cx: float) -> float:
    """The normalized centre of the left-right mirrored frame (pixel-centre convention, above)."""
    return float(np.float32((IMAGE_WIDTH - 1 - IMAGE_WIDTH * float(cx)) / IMAGE_WIDTH))


def _copy_plane(source: np.ndarray, target: np.ndarray, flip: bool) -> None:
    """target[...] = source, mirrored left-right when `flip` (OpenCV's SIMD flip where it can)."""
    if not flip:
        np.copyto(target, source, casting="unsafe")
    elif source.dtype == target.dtype and source.ndim == 2:
        cv2.flip(source, 1, dst=target)
    elif source.dtype == target.dtype and source.ndim == 3:
        for channel in range(source.shape[0]):
            cv2.flip(source[channel], 1, dst=target[channel])
    else:
        np.copyto(target, source[..., ::-1], casting="unsafe")


def _photometric(image: np.ndarray, params: AugmentParams) -> None:
    """Lines then blur, in place on a uint8 image."""
    for x1, y1, x2, y2 in params.lines:
        cv2.line(image, (x1, y1), (x2, y2), LINE_VALUE, LINE_THICKNESS)
    if params.blur_sigma is not None:
        cv2.GaussianBlur(image, (BLUR_KERNEL, BLUR_KERNEL), params.blur_sigma, dst=image)


def augment_row(source: Mapping[str, np.ndarray], params: AugmentParams,
                out: MutableMapping[str, np.ndarray]) -> None:
    """Write the augmented row into `out` (preallocated, one entry per field wanted).

    Fields: "image" uint8 (H, W); "label" (H, W) any integer dtype; "spatial_weights" (H, W);
    "dist_map" (C, H, W); "ellipse" float32 (4,) = (cx, cy, rx, ry) normalized. Every field in
    `out` must be in `source`; `source` is only read (it may be a read-only memory-mapped view).
    """
    for name, target in out.items():
        if name not in GEOMETRIC_FIELDS:
            raise KeyError(f"augment_row: unknown field '{name}' (fields: {', '.join(GEOMETRIC_FIELDS)})")
        if name == "ellipse":
            target[:] = source["ellipse"]
            if params.flip:
                target[0] = mirror_cx(target[0])
        else:
            _copy_plane(source[name], target, params.flip)
    if "image" in out and (params.lines or params.blur_sigma is not None):
        _photometric(out["image"], params)


def augment_sample(sample: Mapping[str, np.ndarray], params: AugmentParams) -> dict[str, np.ndarray]:
    """`augment_row` into fresh arrays of the sample's own shapes and dtypes."""
    out = {name: np.empty_like(np.asarray(value)) for name, value in sample.items()}
    augment_row(sample, params, out)
    return out
