"""Frames of any size to the model input and back: the maps are exact inverses, ellipses map like
the points on them, and an ellipse drawn in a frame comes back where it was drawn."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from steps.data.frames import IMAGE_HEIGHT, IMAGE_WIDTH
from steps.data.geometry import (
    POLICIES,
    ellipse_before_turns,
    ellipse_to_frame,
    ellipse_to_model,
    frame_to_model,
    map_to_frame,
    plan_geometry,
    turn_frame,
)
from steps.data.transforms import Ellipse, fit_pupil_ellipse
from tests.steps.inference.dark_model import eye_frame

SIZES = [(640, 400), (320, 240), (400, 640), (1920, 1080), (384, 288), (101, 77)]


def canonical(e: Ellipse) -> tuple[float, float, float, float, float]:
    """(cx, cy, major, minor, major-axis angle mod 180): one tuple per geometric ellipse."""
    angle = e.angle if e.rx >= e.ry else e.angle + 90.0
    return e.cx, e.cy, max(e.rx, e.ry), min(e.rx, e.ry), angle % 180.0


def assert_same(a: Ellipse, b: Ellipse, centre: float, axes: float, angle: float = 1.0) -> None:
    ca, cb = canonical(a), canonical(b)
    assert math.hypot(ca[0] - cb[0], ca[1] - cb[1]) <= centre, (ca, cb)
    assert abs(ca[2] - cb[2]) <= axes and abs(ca[3] - cb[3]) <= axes, (ca, cb)
    if ca[2] - ca[3] > 0.1 * ca[2]:  # the angle of a near-circle means nothing
        assert min(abs(ca[4] - cb[4]), 180 - abs(ca[4] - cb[4])) <= angle, (ca, cb)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("size", SIZES)
def test_points_and_ellipses_round_trip_exactly(policy, size):
    geometry = plan_geometry(*size, policy)
    rng = np.random.default_rng(1)
    for x, y in rng.uniform(0, 1, (20, 2)) * size:
        back = geometry.to_frame(*geometry.to_model(x, y))
        assert back == pytest.approx((x, y), abs=1e-9)
    ellipse = Ellipse(size[0] * 0.4, size[1] * 0.6, size[0] * 0.1, size[1] * 0.05, 30.0, "fit")
    assert_same(ellipse_to_frame(ellipse_to_model(ellipse, geometry), geometry), ellipse, 1e-9, 1e-9, 1e-7)


@pytest.mark.parametrize("policy", POLICIES)
def test_a_mapped_ellipse_is_the_ellipse_through_the_mapped_points(policy):
    """Independent of the SVD: map 72 points of the ellipse one by one and fit them."""
    geometry = plan_geometry(1280, 720, policy)
    ellipse = Ellipse(500.0, 300.0, 120.0, 60.0, 25.0, "fit")
    t = np.radians(np.arange(0, 360, 5))
    theta = math.radians(ellipse.angle)
    px = ellipse.cx + ellipse.rx * np.cos(t) * math.cos(theta) - ellipse.ry * np.sin(t) * math.sin(theta)
    py = ellipse.cy + ellipse.rx * np.cos(t) * math.sin(theta) + ellipse.ry * np.sin(t) * math.cos(theta)
    mapped = np.array([geometry.to_model(x, y) for x, y in zip(px, py)], np.float32)
    (cx, cy), (w, h), angle = cv2.fitEllipse(mapped)
    assert_same(ellipse_to_model(ellipse, geometry), Ellipse(cx, cy, w / 2, h / 2, angle, "fit"), 0.01, 0.01, 0.05)


def test_policies_fill_the_model_input_as_documented():
    pad = plan_geometry(320, 320, "pad")      # square into 640x400: 400x400 in the middle
    assert (pad.resized_width, pad.resized_height, pad.left, pad.top) == (400, 400, 120, 0)
    crop = plan_geometry(320, 320, "crop")    # 640x640, rows 120..520 kept
    assert (crop.resized_width, crop.resized_height, crop.left, crop.top) == (640, 640, 0, -120)
    stretch = plan_geometry(320, 320, "resize")
    assert stretch.scale == (2.0, 1.25) and plan_geometry(640, 400, "crop").identity
    frame = np.full((320, 320), 90, np.uint8)
    frame[:, :160] = 200
    placed = frame_to_model(frame, pad)
    assert placed.shape == (IMAGE_HEIGHT, IMAGE_WIDTH)
    assert (placed[:, :120] == 145).all() and (placed[:, 520:] == 145).all()  # the median grey
    with pytest.raises(ValueError, match="geometry policy 'zoom'"):
        plan_geometry(320, 240, "zoom")


@pytest.mark.parametrize("quarter_turns", [1, 2, 3, -1])
def test_an_ellipse_fitted_in_a_turned_frame_comes_back_exactly(quarter_turns):
    """Independent of the formula: fit the ellipse in the original frame and in the turned one."""
    frame = np.zeros((77, 101), np.uint8)
    cv2.ellipse(frame, ((60.3, 30.7), (40.0, 22.0), 35.0), 1, -1)
    def fitted(mask: np.ndarray) -> Ellipse:
        contour = max(cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0], key=cv2.contourArea)
        (cx, cy), (w, h), angle = cv2.fitEllipse(contour)
        return Ellipse(cx, cy, w / 2, h / 2, angle, "fit")
    turned = turn_frame(frame, quarter_turns)
    back = ellipse_before_turns(fitted(turned), quarter_turns, 101, 77)
    assert_same(back, fitted(frame), 1e-3, 1e-3, 1e-2)
    assert np.array_equal(turn_frame(turned, -quarter_turns), frame)


@pytest.mark.parametrize("size, taken", [((32, 32), True), ((4096, 4096), True), ((31, 400), False),
                                         ((640, 31), False), ((4097, 400), False), ((640, 4097), False)])
def test_frames_are_taken_from_32_to_4096_pixels_a_side(size, taken):
    if taken:
        assert plan_geometry(*size, "pad").frame_width == size[0]
    else:
        with pytest.raises(ValueError, match=f"frame {size[0]}x{size[1]}: expected at least 32 and at most 4096"):
            plan_geometry(*size, "pad")


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("size", [(320, 240), (400, 640), (1280, 720)])
def test_a_drawn_pupil_comes_back_where_it_was_drawn(policy, size):
    """Draw a dark ellipse in the frame, take the frame to the model input, fit the ellipse there
    (as predict does), map it back: it is the drawn ellipse; the mask maps back onto the drawn one."""
    w, h = size
    drawn = Ellipse(w * 0.45, h * 0.55, min(w, h) * 0.12, min(w, h) * 0.08, 35.0, "fit")
    frame = eye_frame(w, h, (drawn.cx, drawn.cy, drawn.rx, drawn.ry, drawn.angle))
    geometry = plan_geometry(w, h, policy)
    model_mask = (frame_to_model(frame, geometry) < 60).astype(np.uint8)
    fitted = ellipse_to_frame(fit_pupil_ellipse(model_mask), geometry)
    pixel = max(1 / geometry.scale[0], 1 / geometry.scale[1])  # one model pixel, in frame pixels
    assert_same(fitted, drawn, centre=0.5 * pixel, axes=1.0 * pixel, angle=2.0)
    back = map_to_frame(model_mask.astype(np.float32), geometry) > 0.5
    truth = frame < 60
    assert (back & truth).sum() / (back | truth).sum() > 0.9
