"""Perturbations: photometric kinds keep the label, geometric kinds move it exactly as the image."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from steps.report.perturb import KINDS, LEVELS, Perturbation, perturb, suite

H, W = 400, 640


def eye(cx: int = 220, cy: int = 210, r: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Mid-grey frame with a dark textured disc (the pupil) off the centre, and its 0/1 mask."""
    rng = np.random.default_rng(0)
    image = np.clip(120 + 10 * rng.standard_normal((H, W)), 0, 255).astype(np.uint8)
    mask = np.zeros((H, W), np.uint8)
    cv2.circle(mask, (cx, cy), r, 1, -1)
    image[mask == 1] = 30
    return image, mask


def apply(kind: str, *level: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    image, mask = eye()
    return perturb(image, mask, Perturbation(kind, level, "test"), np.random.default_rng(seed))


@pytest.mark.parametrize("kind,level", [("noise", (15,)), ("gain", (0.6, 40)), ("blur", (3,)), ("glint", (4,))])
def test_photometric_kinds_change_the_image_and_keep_the_label(kind, level):
    image, mask = eye()
    out_image, out_mask = apply(kind, *level)
    np.testing.assert_array_equal(out_mask, mask)
    assert out_image.dtype == np.uint8 and not np.array_equal(out_image, image)


def test_noise_has_the_requested_sd_and_gain_the_requested_map():
    image, _ = eye()
    noisy, _ = apply("noise", 20)
    inside = (slice(50, 150), slice(400, 600))  # away from the pupil and from 0/255 clipping
    assert np.std(noisy[inside].astype(float) - image[inside]) == pytest.approx(20, rel=0.05)
    dim, _ = apply("gain", 0.6, 40)
    np.testing.assert_array_equal(dim, np.clip(np.rint(image * 0.6 + 40), 0, 255).astype(np.uint8))


def test_glints_are_saturated_spots_on_the_pupil_border():
    image, mask = eye()
    out, _ = apply("glint", 2)
    bright = (out > 200) & (image < 200)
    ys, xs = np.nonzero(bright)
    assert len(ys) > 10
    radius = np.hypot(xs - 220, ys - 210)
    assert np.all(np.abs(radius - 30) < 8)  # on the border, not elsewhere


def test_flip_moves_the_label_with_the_image():
    image, mask = eye()
    out_image, out_mask = apply("flip", 1)
    np.testing.assert_array_equal(out_image, image[:, ::-1])
    np.testing.assert_array_equal(out_mask, mask[:, ::-1])


@pytest.mark.parametrize("dx,dy", [(40, 0), (-40, 0), (0, 40), (0, -40)])
def test_translation_moves_image_and_label_by_whole_pixels(dx, dy):
    image, mask = eye()
    out_image, out_mask = apply("translation", dx, dy)
    expected = np.zeros_like(mask)
    cv2.circle(expected, (220 + dx, 210 + dy), 30, 1, -1)
    np.testing.assert_array_equal(out_mask, expected)
    rows, cols = slice(100, 300), slice(100, 500)  # inside: no border reflection involved
    shifted = np.roll(np.roll(image, dy, axis=0), dx, axis=1)
    np.testing.assert_array_equal(out_image[rows, cols], shifted[rows, cols])


def test_zoom_grows_the_pupil_about_its_centre():
    _, mask = eye()
    _, out = apply("scale", 1.4)
    ys, xs = np.nonzero(out)
    assert out.sum() == pytest.approx(mask.sum() * 1.4**2, rel=0.03)
    assert (xs.mean(), ys.mean()) == pytest.approx((220, 210), abs=0.5)


@pytest.mark.parametrize("fraction", [0.2, 0.3, 0.4])
def test_lid_covers_the_requested_share_of_the_pupil_from_above(fraction):
    image, mask = eye()
    out_image, out_mask = apply("occlusion", fraction)
    assert out_mask.sum() == pytest.approx(mask.sum() * (1 - fraction), abs=0.02 * mask.sum())
    assert not (out_mask & ~mask.astype(bool)).any()  # only removes pupil
    removed_rows = np.nonzero((mask & ~out_mask.astype(bool)).any(axis=1))[0]
    kept_rows = np.nonzero(out_mask.any(axis=1))[0]
    assert removed_rows.min() < kept_rows.min() and removed_rows.min() == np.nonzero(mask.any(axis=1))[0].min()
    covered = (mask == 1) & (out_mask == 0)
    assert out_image[covered].mean() > image[covered].mean() + 50  # lid skin, not the dark pupil


def test_suite_levels_and_reproducibility():
    full = suite()
    assert {p.kind for p in full} == set(KINDS) and len(full) == sum(len(v) for v in LEVELS.values())
    two = suite(max_levels=2)
    noise = [p.level for p in two if p.kind == "noise"]
    assert noise == [(5,), (25,)]  # mildest and worst
    assert len([p for p in two if p.kind == "flip"]) == 1
    a, _ = apply("noise", 10, seed=3)
    b, _ = apply("noise", 10, seed=3)
    np.testing.assert_array_equal(a, b)
