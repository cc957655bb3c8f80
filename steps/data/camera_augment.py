"""Camera augmentation at training time: what real near-eye IR cameras and eyes vary.

Applied to the camera frame (the sensor's image, before the spec's gamma and CLAHE) and its 0/1
pupil mask, then the loader enhances the frame as preprocess would, so a preprocessed-mode model
trains on exactly what it will see from a noisy, dim or zoomed camera:

- geometric (image and mask together, one affine map): scale about the frame centre, small
  rotation, translation; the pupil must stay in the frame, else the row keeps its geometry;
- an upper lid covering part of the pupil (the covered pixels leave the mask);
- glints on the pupil border;
- photometric (image only): gain and offset, gamma, defocus blur, Gaussian sensor noise, JPEG.

Each effect is applied to a row with `probability`, at a magnitude drawn uniformly up to its
limit; a limit of 0 turns it off. Draws depend only on (seed, epoch, row), from a stream apart
from RITnet's flip/lines/blur (steps.data.augment), so enabling these leaves those unchanged.
The ellipse is refitted to the moved mask; weights and distance maps are recomputed from it per
batch (steps.train.label_maps), never warped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from steps.data import camera_effects as effects

# The camera stream's extra key in the row generator's seed: apart from RITnet's draws.
_STREAM = 1


@dataclass(frozen=True)
class CameraAugment:
    """Limits of each effect (0 = off) and the probability that a row gets it."""

    probability: float = 0.5
    scale: float = 0.3          # zoom factor in [1/(1+s), 1+s]
    rotation_deg: float = 10.0  # in [-r, r]
    shift_px: float = 60.0      # in [-s, s] both ways
    lid: float = 0.5            # covered fraction of the pupil in [0, l]
    glints: int = 4             # 1..g glints
    gain: float = 0.5           # gain in [1-g, 1+g]
    offset: float = 40.0        # offset in [-o, o]
    gamma: float = 0.5          # exponent in [1/(1+g), 1+g]
    blur_sigma: float = 3.0     # defocus sigma in [0.5, b]
    noise_sd: float = 25.0      # sensor noise sd in [0, n]
    jpeg_quality: int = 20      # JPEG quality in [q, 95]; 0 = off

    @property
    def enabled(self) -> bool:
        return self.probability > 0 and any(getattr(self, f.name) for f in fields(self) if f.name != "probability")

    @property
    def moves_label(self) -> bool:
        """Whether the pupil mask can change (then stored weights and distance maps are stale)."""
        return self.probability > 0 and bool(self.scale or self.rotation_deg or self.shift_px or self.lid)

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


OFF = CameraAugment(probability=0.0)


def camera_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, index, _STREAM]))


def _geometry(mask: np.ndarray, settings: CameraAugment, u: np.ndarray) -> np.ndarray | None:
    """The row's affine map from uniforms u[0:4], or None (identity)."""
    if u[0] >= settings.probability or not (settings.scale or settings.rotation_deg or settings.shift_px):
        return None
    h, w = mask.shape
    scale = math.exp((2 * u[1] - 1) * math.log1p(settings.scale))
    angle = (2 * u[2] - 1) * settings.rotation_deg
    dx, dy = (2 * u[3] - 1) * settings.shift_px, (2 * u[4] - 1) * settings.shift_px * h / w
    return effects.affine_about((w / 2, h / 2), scale, angle, (dx, dy))


def _inside(mask: np.ndarray, minimum: int) -> bool:
    """The moved pupil still has pixels and does not touch the frame border (it stays in view)."""
    if int(np.count_nonzero(mask)) < minimum:
        return False
    return not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def apply(image: np.ndarray, mask: np.ndarray, settings: CameraAugment,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The augmented (uint8 camera frame, 0/1 mask). Inputs are not modified."""
    u = rng.random(16)
    matrix = _geometry(mask, settings, u)
    turns = 0  # quarter turns of the eye in the frame (rotation_deg above 45: a camera at another roll)
    if matrix is not None:
        moved_image, moved_mask = effects.warp(image, mask, matrix)
        if _inside(moved_mask, minimum=max(20, int(np.count_nonzero(mask)) // 4)):
            image, mask = moved_image, moved_mask
            turns = round((2 * u[2] - 1) * settings.rotation_deg / 90) % 4
    if settings.lid and u[5] < settings.probability:
        image, mask = _upper_lid(image, mask, u[6] * settings.lid, turns, rng)
    if settings.glints and u[7] < settings.probability and mask.any():
        image = effects.glints(image, mask, 1 + int(u[8] * settings.glints), rng)
    return _photometric(image, settings, u[9:], rng), mask


def _upper_lid(image: np.ndarray, mask: np.ndarray, fraction: float, turns: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The upper lid from the eye's top: the frame's top, or its side or bottom when the eye was
    turned by about 90, 180 or 270 degrees (counter-clockwise, as cv2 and np.rot90 turn)."""
    if not turns:
        return effects.lid(image, mask, fraction, rng)
    upright = np.ascontiguousarray(np.rot90(image, -turns)), np.ascontiguousarray(np.rot90(mask, -turns))
    lidded_image, lidded_mask = effects.lid(*upright, fraction, rng)
    return np.ascontiguousarray(np.rot90(lidded_image, turns)), np.ascontiguousarray(np.rot90(lidded_mask, turns))


def _photometric(image: np.ndarray, settings: CameraAugment, u: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
    p = settings.probability
    if (settings.gain or settings.offset) and u[0] < p:
        gain = 1 + (2 * rng.random() - 1) * settings.gain
        image = effects.gain_offset(image, gain, (2 * rng.random() - 1) * settings.offset)
    if settings.gamma and u[1] < p:
        image = effects.gamma(image, math.exp((2 * rng.random() - 1) * math.log1p(settings.gamma)))
    if settings.blur_sigma > 0.5 and u[2] < p:
        image = effects.blur(image, 0.5 + rng.random() * (settings.blur_sigma - 0.5))
    if settings.noise_sd and u[3] < p:
        image = effects.gaussian_noise(image, rng.random() * settings.noise_sd, rng)
    if settings.jpeg_quality and u[4] < p:
        image = effects.jpeg(image, settings.jpeg_quality + int(rng.random() * (95 - settings.jpeg_quality)))
    return image
