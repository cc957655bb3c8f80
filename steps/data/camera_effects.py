"""What real eye cameras and eyes do to a frame, as plain functions of explicit parameters.

Shared by training-time camera augmentation (`steps.data.camera_augment`) and validate's robustness
suite (`steps.report.perturb`), so the model trains on the same effects it is judged on.
Photometric effects change the image only; `lid` and `warp` move the 0/1 pupil mask with it
(bilinear for the image, nearest for the mask, the same reflected border for both), so the mask
stays exact. Randomness comes only from the generator passed in.
"""

from __future__ import annotations

import cv2
import numpy as np

from steps.data import transforms


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def gaussian_noise(image: np.ndarray, sd: float, rng: np.random.Generator) -> np.ndarray:
    """Sensor noise of standard deviation `sd` (on 0-255)."""
    return to_uint8(image + np.float32(sd) * rng.standard_normal(image.shape, dtype=np.float32))


def gain_offset(image: np.ndarray, gain: float, offset: float) -> np.ndarray:
    """gain * x + offset: dim low-contrast frames (0.6x + 40) to bright, saturated ones (1.4x)."""
    return to_uint8(image.astype(np.float32) * np.float32(gain) + np.float32(offset))


def gamma(image: np.ndarray, exponent: float) -> np.ndarray:
    """255 * (x / 255) ** exponent, by table."""
    table = to_uint8(255.0 * np.linspace(0.0, 1.0, 256) ** exponent)
    return cv2.LUT(image, table)


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), sigma)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """A JPEG round trip at `quality` (block and ringing artefacts of compressed camera streams)."""
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    decoded = cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE) if ok else None
    return image if decoded is None else decoded


def border_points(mask: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` points (x, y) on the fitted pupil ellipse, at random angles."""
    e = transforms.fit_pupil_ellipse(mask)
    phi = rng.uniform(0, 2 * np.pi, count)
    theta = np.deg2rad(e.angle)
    u, v = e.rx * np.cos(phi), e.ry * np.sin(phi)
    return np.stack([e.cx + u * np.cos(theta) - v * np.sin(theta), e.cy + u * np.sin(theta) + v * np.cos(theta)], 1)


def glints(image: np.ndarray, mask: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Saturated LED reflections on the pupil border; the mask keeps them pupil (as OpenEDS does)."""
    if not mask.any() or count <= 0:
        return image
    spots: np.ndarray = np.zeros(image.shape, np.float32)
    for x, y in border_points(mask, count, rng):
        cv2.circle(spots, (int(round(x)), int(round(y))), int(rng.integers(3, 6)), 1.0, -1, cv2.LINE_AA)
    spots = cv2.GaussianBlur(spots, (0, 0), 1.0)
    return to_uint8(image + 300 * spots)


def lid_edge(mask: np.ndarray, fraction: float, curve: np.ndarray) -> float:
    """The lid margin height y0 (margin y = y0 + curve) that covers `fraction` of the pupil pixels."""
    ys, xs = np.nonzero(mask)
    relative = ys - curve[xs]  # a pixel is covered when its y is above the margin: y < y0 + curve
    return float(np.quantile(relative, fraction))


def lid(image: np.ndarray, mask: np.ndarray, fraction: float,
        rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An upper lid drawn down over the pupil until it covers `fraction` of its pixels: skin-bright,
    with a dark lash line at its margin; covered pupil pixels leave the mask."""
    if not mask.any() or fraction <= 0:
        return image, mask
    h, w = image.shape
    e = transforms.fit_pupil_ellipse(mask)
    xs = np.arange(w, dtype=np.float32)
    curve: np.ndarray = 50 * np.minimum(((xs - e.cx) / 200) ** 2, 2.0)  # an arched margin, highest over the pupil
    y0 = lid_edge(mask, fraction, curve)
    yy = np.arange(h, dtype=np.float32)[:, None]
    margin = y0 + curve[None, :]
    covered = yy < margin
    skin = float(np.percentile(image, 80)) + 4 * rng.standard_normal(image.shape, dtype=np.float32)
    lashes = 35 * np.exp(-((yy - margin) / 3.0) ** 2)
    out = np.where(covered, skin, image.astype(np.float32)) - lashes
    return to_uint8(out), (mask & ~covered).astype(np.uint8)


def affine_about(centre: tuple[float, float], scale: float = 1.0, angle_deg: float = 0.0,
                 shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """2x3 map: rotate by `angle_deg` and scale by `scale` about `centre`, then shift (pixels)."""
    matrix = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), float(angle_deg), float(scale))
    matrix[:, 2] += np.asarray(shift, dtype=np.float64)
    return matrix.astype(np.float32)


def warp(image: np.ndarray, mask: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    size = (image.shape[1], image.shape[0])
    border = cv2.BORDER_REFLECT_101  # the camera view continues; a constant would draw a fake edge
    return (cv2.warpAffine(image, matrix, size, flags=cv2.INTER_LINEAR, borderMode=border),
            cv2.warpAffine(mask, matrix, size, flags=cv2.INTER_NEAREST, borderMode=border))


def pupil_centre(mask: np.ndarray) -> tuple[float, float]:
    """The mask's centroid (x, y), or the frame centre when it has no pupil pixel."""
    ys, xs = np.nonzero(mask)
    return (float(xs.mean()), float(ys.mean())) if len(xs) else (mask.shape[1] / 2, mask.shape[0] / 2)
