"""Camera augmentation: deterministic per (seed, epoch, row), image and mask move together."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from steps.data import camera_augment, transforms
from steps.data.camera_augment import CameraAugment

GEOMETRY_ONLY = CameraAugment(probability=1.0, lid=0, glints=0, gain=0, offset=0, gamma=0, blur_sigma=0,
                              noise_sd=0, jpeg_quality=0)
PHOTOMETRIC_ONLY = CameraAugment(probability=1.0, scale=0, rotation_deg=0, shift_px=0, lid=0)


def dark_pupil_frame(cx: int = 300, cy: int = 190, r: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """A bright frame whose only dark pixels are the pupil: where the image is dark is the truth."""
    mask = np.zeros((400, 640), np.uint8)
    cv2.ellipse(mask, (cx, cy), (r, int(r * 0.8)), 20, 0, 360, 1, -1)
    return np.where(mask == 1, 10, 200).astype(np.uint8), mask


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_the_same_row_and_epoch_give_the_same_frame_and_others_differ():
    image, mask = dark_pupil_frame()
    first = camera_augment.apply(image, mask, CameraAugment(probability=1.0), camera_augment.camera_rng(7, 2, 11))
    again = camera_augment.apply(image, mask, CameraAugment(probability=1.0), camera_augment.camera_rng(7, 2, 11))
    other = camera_augment.apply(image, mask, CameraAugment(probability=1.0), camera_augment.camera_rng(7, 3, 11))
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


@pytest.mark.parametrize("effect", ["scale", "rotation_deg", "shift_px"])
def test_every_geometric_effect_moves_image_and_mask_together(effect):
    image, mask = dark_pupil_frame()
    settings = dataclasses.replace(GEOMETRY_ONLY, **{name: 0 for name in ("scale", "rotation_deg", "shift_px")
                                                     if name != effect})
    moved_any = False
    for row in range(12):
        out_image, out_mask = camera_augment.apply(image, mask, settings, camera_augment.camera_rng(0, 0, row))
        assert iou(out_image < 105, out_mask == 1) > 0.97  # the dark pixels are still the labelled ones
        moved_any |= iou(out_mask == 1, mask == 1) < 0.95
    assert moved_any, f"{effect} never moved the pupil"


def test_a_rotation_of_up_to_180_degrees_turns_the_eye_upside_down_with_its_label():
    """A camera mounted at any roll: the pupil above and right of the centre comes out below it."""
    image, mask = dark_pupil_frame(cx=360, cy=160, r=24)
    settings = dataclasses.replace(GEOMETRY_ONLY, scale=0, shift_px=0, rotation_deg=180)
    below = 0
    for row in range(24):
        out_image, out_mask = camera_augment.apply(image, mask, settings, camera_augment.camera_rng(0, 0, row))
        assert iou(out_image < 105, out_mask == 1) > 0.97
        ys, xs = np.nonzero(out_mask)
        # a rotation about the centre keeps the pupil's distance to it
        assert np.hypot(xs.mean() - 319.5, ys.mean() - 199.5) == pytest.approx(np.hypot(360 - 319.5, 160 - 199.5), abs=2)
        below += ys.mean() > 220
    assert below >= 4, "no row was turned upside down"


def test_the_lid_comes_from_the_top_of_the_turned_eye():
    """With a camera at another roll the upper lid covers the pupil from the eye's top: from below
    when the eye is upside down, from the left when it is turned 90 degrees counter-clockwise."""
    image, mask = dark_pupil_frame(cx=330, cy=195, r=24)
    turned = dataclasses.replace(GEOMETRY_ONLY, scale=0, shift_px=0, rotation_deg=180)
    sides = set()
    for row in range(40):
        _, open_mask = camera_augment.apply(image, mask, turned, camera_augment.camera_rng(0, 0, row))
        _, lid_mask = camera_augment.apply(image, mask, dataclasses.replace(turned, lid=0.6),
                                           camera_augment.camera_rng(0, 0, row))
        angle = (2 * camera_augment.camera_rng(0, 0, row).random(16)[2] - 1) * 180
        covered = open_mask.astype(bool) & ~lid_mask.astype(bool)
        if covered.sum() < 50 or abs(angle) % 90 > 35 and abs(angle) % 90 < 55:
            continue  # no lid drawn, or too near a diagonal to name a side
        ys, xs = np.nonzero(covered)
        oy, ox = np.nonzero(open_mask)
        dx, dy = xs.mean() - ox.mean(), ys.mean() - oy.mean()
        turns = 0 if np.array_equal(open_mask, mask) else round(angle / 90) % 4  # a refused move: upright
        expected = {0: (0, -1), 1: (-1, 0), 2: (0, 1), 3: (1, 0)}[turns]  # the eye's top after the turn
        assert np.sign(dx if expected[0] else dy) == (expected[0] or expected[1]), (row, angle, dx, dy)
        assert abs(dx if expected[0] else dy) > 2 * abs(dy if expected[0] else dx), (row, angle, dx, dy)
        sides.add(turns)
    assert len(sides) >= 3, sides


def test_a_move_that_would_push_the_pupil_out_of_view_is_not_applied():
    image, mask = dark_pupil_frame(cx=600, cy=360, r=30)
    settings = dataclasses.replace(GEOMETRY_ONLY, scale=0, rotation_deg=0, shift_px=300)
    for row in range(12):
        _, out_mask = camera_augment.apply(image, mask, settings, camera_augment.camera_rng(0, 0, row))
        assert out_mask.any() and not (out_mask[-1].any() or out_mask[:, -1].any())


def test_the_lid_removes_exactly_the_covered_pupil_pixels_from_the_mask():
    image, mask = dark_pupil_frame()
    settings = dataclasses.replace(GEOMETRY_ONLY, scale=0, rotation_deg=0, shift_px=0, lid=0.5)
    covered_any = False
    for row in range(8):
        out_image, out_mask = camera_augment.apply(image, mask, settings, camera_augment.camera_rng(1, 0, row))
        assert not (out_mask & ~mask.astype(bool)).any()       # a lid never adds pupil
        assert (out_image[out_mask == 1] < 105).mean() > 0.97  # what stays pupil is still dark
        covered_any |= out_mask.sum() < 0.9 * mask.sum()
    assert covered_any


def test_photometric_effects_leave_the_mask_and_change_the_image():
    image, mask = dark_pupil_frame()
    changed = 0
    for row in range(6):
        out_image, out_mask = camera_augment.apply(image, mask, PHOTOMETRIC_ONLY, camera_augment.camera_rng(2, 0, row))
        assert out_mask is mask and out_image.dtype == np.uint8 and out_image.shape == image.shape
        changed += not np.array_equal(out_image, image)
    assert changed == 6


def test_off_is_the_identity_and_not_enabled():
    image, mask = dark_pupil_frame()
    assert not camera_augment.OFF.enabled and not camera_augment.OFF.moves_label
    out_image, out_mask = camera_augment.apply(image, mask, camera_augment.OFF, camera_augment.camera_rng(0, 0, 0))
    assert out_image is image and out_mask is mask


def test_the_refitted_ellipse_follows_a_zoom():
    image, mask = dark_pupil_frame(r=30)
    settings = dataclasses.replace(GEOMETRY_ONLY, rotation_deg=0, shift_px=0, scale=0.4)
    for row in range(6):
        _, out_mask = camera_augment.apply(image, mask, settings, camera_augment.camera_rng(3, 0, row))
        ratio = transforms.fit_pupil_ellipse(out_mask).rx / transforms.fit_pupil_ellipse(mask).rx
        assert ratio == pytest.approx(np.sqrt(out_mask.sum() / mask.sum()), rel=0.05)
