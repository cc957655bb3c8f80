"""Perturbations real eye cameras show, applied to a camera frame and its pupil label together.

SPEC section 8 ("Real eyes"): sensor noise up to sd ~25 on 0-255, gain 0.6-1.4 and low contrast
(0.6x + 40), blur sigma up to 4, lids covering 20-40% of the pupil, glints on the pupil border,
flips and shifts (the dark lens edges move), other pupil scales. Photometric kinds change the
image only; geometric kinds move image and label with the same affine map (bilinear for the image,
nearest for the label, the same reflected border for both), so the label stays exact.

Each kind has graded levels; a perturbation's randomness (noise, glint positions) comes from the
generator passed in, so a suite run is reproducible.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from steps.data import transforms

Frame = tuple[np.ndarray, np.ndarray]  # uint8 image (H, W), uint8 0/1 pupil mask (H, W)


@dataclass(frozen=True)
class Perturbation:
    kind: str
    level: tuple[float, ...]
    name: str  # for people: "sd 15", "0.6x+40", "zoom 1.2"


LEVELS: dict[str, list[tuple[tuple[float, ...], str]]] = {
    "noise": [((sd,), f"sd {sd:g}") for sd in (5, 10, 15, 20, 25)],
    "gain": [((g, o), f"{g:g}x+{o:g}") for g, o in ((0.6, 40), (0.6, 0), (0.8, 0), (1.2, 0), (1.4, 0))],
    "blur": [((s,), f"sigma {s:g}") for s in (1, 2, 3, 4)],
    "occlusion": [((f,), f"lid {f:.0%}") for f in (0.2, 0.3, 0.4)],
    "glint": [((n,), f"{n:g} glint(s)") for n in (1, 2, 4)],
    "flip": [((1,), "horizontal")],
    "scale": [((z,), f"zoom {z:g}") for z in (1.1, 1.2, 1.3, 1.4)],
    "translation": [((dx, dy), f"shift {dx:+g},{dy:+g}") for dx, dy in ((40, 0), (-40, 0), (0, 40), (0, -40))],
}
KINDS = tuple(LEVELS)


def suite(max_levels: int | None = None) -> list[Perturbation]:
    """Every kind at its levels; `max_levels` keeps that many per kind, spread from mild to worst."""
    chosen = []
    for kind, levels in LEVELS.items():
        if max_levels is not None and len(levels) > max_levels:
            picks = np.unique(np.linspace(0, len(levels) - 1, max_levels).round().astype(int))
            levels = [levels[k] for k in picks]
        chosen += [Perturbation(kind, level, name) for level, name in levels]
    return chosen


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- photometric (label unchanged)

def add_noise(frame: Frame, level: tuple[float, ...], rng: np.random.Generator) -> Frame:
    image, mask = frame
    return to_uint8(image + level[0] * rng.standard_normal(image.shape)), mask


def apply_gain(frame: Frame, level: tuple[float, ...], rng: np.random.Generator) -> Frame:
    image, mask = frame
    return to_uint8(image.astype(np.float32) * level[0] + level[1]), mask


def apply_blur(frame: Frame, level: tuple[float, ...], rng: np.random.Generator) -> Frame:
    image, mask = frame
    return cv2.GaussianBlur(image, (0, 0), level[0]), mask


def border_points(mask: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` points (x, y) on the fitted pupil ellipse, at random angles."""
    e = transforms.fit_pupil_ellipse(mask)
    phi = rng.uniform(0, 2 * np.pi, count)
    theta = np.deg2rad(e.angle)
    u, v = e.rx * np.cos(phi), e.ry * np.sin(phi)
    return np.stack([e.cx + u * np.cos(theta) - v * np.sin(theta), e.cy + u * np.sin(theta) + v * np.cos(theta)], 1)


def add_glints(frame: Frame, level: tuple[float, ...], rng: np.random.Generator) -> Frame:
    """Saturated LED reflections on the pupil border; the label keeps them pupil (as OpenEDS does)."""
    image, mask = frame
    if not mask.any():
        return frame
    spots: np.ndarray = np.zeros(image.shape, np.float32)
    for x, y in border_points(mask, int(level[0]), rng):
        cv2.circle(spots, (int(round(x)), int(round(y))), int(rng.integers(3, 6)), 1.0, -1, cv2.LINE_AA)
    spots = cv2.GaussianBlur(spots, (0, 0), 1.0)
    return to_uint8(image + 300 * spots), mask


def lid_edge(mask: np.ndarray, fraction: float, curve: np.ndarray) -> float:
    """The lid margin height y0 (margin y = y0 + curve) that covers `fraction` of the pupil pixels."""
    ys, xs = np.nonzero(mask)
    relative = ys - curve[xs]  # a pixel is covered when its y is above the margin: y < y0 + curve
    return float(np.quantile(relative, fraction))


def add_lid(frame: Frame, level: tuple[float, ...], rng: np.random.Generator) -> Frame:
    """An upper lid drawn down over the pupil until it covers `level` of its pixels: skin-bright,
    with a dark lash line at its margin; covered pupil pixels leave the label."""
    image, mask = frame
    if not mask.any():
        return frame
    h, w = image.shape
    e = transforms.fit_pupil_ellipse(mask)
    xs = np.arange(w, dtype=np.float32)
    curve: np.ndarray = 50 * np.minimum(((xs - e.cx) / 200) ** 2, 2.0)  # an arched margin, highest over the pupil
    y0 = lid_edge(mask, level[0], curve)
    yy = np.arange(h, dtype=np.float32)[:, None]
    margin = y0 + curve[None, :]
    covered = yy < margin
    skin = float(np.percentile(image, 80)) + 4 * rng.standard_normal(image.shape)
    lashes = 35 * np.exp(-((yy - margin) / 3.0) ** 2)
    out = np.where(covered, skin, image.astype(np.float32)) - lashes
    return to_uint8(out), (mask & ~covered).astype(np.uint8)


# ---------------------------------------------------------------- geometric (label moves too)

def warp(frame: Frame, matrix: np.ndarray) -> Frame:
    image, mask = frame
    size = (image.shape[1], image.shape[0])
    border = cv2.BORDER_REFLECT_101  # the camera view continues; a constant would draw a fake edge
    return (cv2.warpAffine(image, matrix, size, flags=cv2.INTER_LINEAR, borderMode=border),
            cv2.warpAffine(mask, matrix, size, flags=cv2.INTER_NEAREST, borderMode=border))


def flip(frame: Frame, level: tuple[float, ...], rng: np.random.Generator) -> Frame:
    image, mask = frame
    return np.ascontiguousarray(image[:, ::-1]), np.ascontiguousarray(mask[:, ::-1])


def zoom(frame: Frame, level: tuple[float, ...], rng: np.random.Generator) -> Frame:
    """Zoom by `level` about the pupil centre (the pupil grows, stays where it was)."""
    _, mask = frame
    ys, xs = np.nonzero(mask)
    cx, cy = (xs.mean(), ys.mean()) if len(xs) else (mask.shape[1] / 2, mask.shape[0] / 2)
    s = level[0]
    return warp(frame, np.array([[s, 0, (1 - s) * cx], [0, s, (1 - s) * cy]], np.float32))


def shift(frame: Frame, level: tuple[float, ...], rng: np.random.Generator) -> Frame:
    return warp(frame, np.array([[1, 0, level[0]], [0, 1, level[1]]], np.float32))


APPLY: dict[str, Callable[[Frame, tuple[float, ...], np.random.Generator], Frame]] = {
    "noise": add_noise, "gain": apply_gain, "blur": apply_blur, "occlusion": add_lid, "glint": add_glints,
    "flip": flip, "scale": zoom, "translation": shift}
GEOMETRIC = ("flip", "scale", "translation", "occlusion")  # kinds that change the label


def perturb(image: np.ndarray, mask: np.ndarray, perturbation: Perturbation,
            rng: np.random.Generator) -> Frame:
    """The perturbed (image, 0/1 pupil mask); inputs are not modified."""
    return APPLY[perturbation.kind]((image, mask), perturbation.level, rng)
