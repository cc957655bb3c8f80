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

import numpy as np

from steps.data import camera_effects as effects

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


# ---------------------------------------------------------------- photometric (label unchanged)

def add_noise(frame: Frame, level: tuple[float, ...], rng: np.random.Generator) -> Frame:
    return effects.gaussian_noise(frame[0], level[0], rng), frame[1]


def apply_gain(frame: Frame, level: tuple[float, ...], rng: np.random.Generator) -> Frame:
    return effects.gain_offset(frame[0], level[0], level[1]), frame[1]


def apply_blur(frame: Frame, level: tuple[float, ...], rng: np.random.Generator) -> Frame:
    return effects.blur(frame[0], level[0]), frame[1]


def add_glints(frame: Frame, level: tuple[float, ...], rng: np.random.Generator) -> Frame:
    return effects.glints(frame[0], frame[1], int(level[0]), rng), frame[1]


def add_lid(frame: Frame, level: tuple[float, ...], rng: np.random.Generator) -> Frame:
    return effects.lid(frame[0], frame[1], level[0], rng)


# ---------------------------------------------------------------- geometric (label moves too)

def flip(frame: Frame, level: tuple[float, ...], rng: np.random.Generator) -> Frame:
    image, mask = frame
    return np.ascontiguousarray(image[:, ::-1]), np.ascontiguousarray(mask[:, ::-1])


def zoom(frame: Frame, level: tuple[float, ...], rng: np.random.Generator) -> Frame:
    """Zoom by `level` about the pupil centre (the pupil grows, stays where it was)."""
    return effects.warp(*frame, effects.affine_about(effects.pupil_centre(frame[1]), scale=level[0]))


def shift(frame: Frame, level: tuple[float, ...], rng: np.random.Generator) -> Frame:
    return effects.warp(*frame, np.array([[1, 0, level[0]], [0, 1, level[1]]], np.float32))


APPLY: dict[str, Callable[[Frame, tuple[float, ...], np.random.Generator], Frame]] = {
    "noise": add_noise, "gain": apply_gain, "blur": apply_blur, "occlusion": add_lid, "glint": add_glints,
    "flip": flip, "scale": zoom, "translation": shift}
GEOMETRIC = ("flip", "scale", "translation", "occlusion")  # kinds that change the label


def perturb(image: np.ndarray, mask: np.ndarray, perturbation: Perturbation,
            rng: np.random.Generator) -> Frame:
    """The perturbed (image, 0/1 pupil mask); inputs are not modified."""
    return APPLY[perturbation.kind]((image, mask), perturbation.level, rng)
