"""One pupil ellipse from a segmentation: largest plausible blob, confidence, "no pupil"."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from steps.report.pupil_fit import ellipse_mask, pupil_from_mask


def test_the_largest_round_blob_wins_over_a_smaller_one():
    mask = np.zeros((400, 640), np.uint8)
    cv2.ellipse(mask, (300, 200), (30, 22), 20, 0, 360, 1, -1)
    cv2.circle(mask, (550, 60), 12, 1, -1)  # a false pupil on the lens edge
    fit = pupil_from_mask(mask)
    assert fit is not None and fit.center == pytest.approx((300, 200), abs=0.5)
    assert sorted((fit.ellipse.rx, fit.ellipse.ry)) == pytest.approx([22, 30], abs=1)
    assert fit.area == int(fit.mask.sum()) and fit.mask[60, 550] == 0
    alone = pupil_from_mask((fit.mask).astype(np.uint8))
    assert alone.confidence > fit.confidence  # the second blob is doubt


def test_a_thin_lash_strand_is_not_a_pupil_even_when_larger():
    mask = np.zeros((400, 640), np.uint8)
    cv2.line(mask, (100, 100), (400, 130), 1, 3)  # ~900 px, fills little of its ellipse
    cv2.circle(mask, (300, 250), 14, 1, -1)       # ~600 px pupil
    fit = pupil_from_mask(mask)
    assert fit.center == pytest.approx((300, 250), abs=0.5)
    line_only = np.zeros_like(mask)
    cv2.line(line_only, (100, 100), (400, 130), 1, 3)
    assert pupil_from_mask(line_only) is None


def test_no_pupil_when_nothing_or_only_specks_are_predicted():
    mask = np.zeros((400, 640), np.uint8)
    assert pupil_from_mask(mask) is None
    mask[10:13, 10:13] = 1
    assert pupil_from_mask(mask) is None


def test_probability_lowers_the_confidence():
    mask = np.zeros((400, 640), np.uint8)
    cv2.circle(mask, (300, 200), 25, 1, -1)
    sure = pupil_from_mask(mask, np.where(mask, 0.99, 0.01).astype(np.float32))
    unsure = pupil_from_mask(mask, np.where(mask, 0.55, 0.01).astype(np.float32))
    assert 0.9 < sure.confidence <= 1 and unsure.confidence == pytest.approx(sure.confidence * 0.55 / 0.99, rel=1e-4)


def test_an_ellipse_fitted_to_a_region_rasterises_back_to_that_region():
    region = np.zeros((400, 640), np.uint8)
    cv2.ellipse(region, (300, 200), (40, 25), 30, 0, 360, 1, -1)
    fit = pupil_from_mask(region).ellipse
    drawn = ellipse_mask(fit.cx, fit.cy, fit.rx, fit.ry, fit.angle, region.shape)
    assert (drawn & region).sum() / (drawn | region).sum() > 0.97
    moved = ellipse_mask(fit.cx + 0.5, fit.cy, fit.rx, fit.ry, fit.angle, region.shape)
    assert pupil_from_mask(moved).center[0] == pytest.approx(fit.cx + 0.5, abs=0.3)  # sub-pixel centre
    assert not ellipse_mask(float("nan"), 1, 1, 1, 0, (10, 10)).any()
