"""One pupil from a probability map: the largest plausible component, its ellipse and confidence."""

from __future__ import annotations

import numpy as np
import pytest

from steps.data.transforms import Ellipse
from steps.inference.pupil import Plausibility, filled_ellipse, find_pupil, pupil_probability

SHAPE = (400, 640)


def blob(ellipse: Ellipse, value: float = 0.95) -> np.ndarray:
    return filled_ellipse(ellipse, SHAPE).astype(np.float32) * value


def test_the_largest_plausible_component_wins_over_specks_and_streaks():
    pupil = Ellipse(300.0, 200.0, 40.0, 30.0, 20.0, "fit")
    probability = np.maximum(blob(pupil), blob(Ellipse(100.0, 100.0, 3.0, 3.0, 0.0, "fit")))
    probability[350:354, 20:620] = 0.9           # a lash-like streak, larger than the pupil
    fit = find_pupil(probability)
    assert fit.components == 3
    assert abs(fit.ellipse.cx - 300) < 0.5 and abs(fit.ellipse.cy - 200) < 0.5
    assert sorted((fit.ellipse.rx, fit.ellipse.ry)) == [pytest.approx(30, abs=1), pytest.approx(40, abs=1)]
    assert 0.85 < fit.confidence <= 0.95          # mean probability 0.95 times a near-perfect overlap


def test_confidence_falls_with_probability_and_with_a_ragged_shape():
    pupil = Ellipse(300.0, 200.0, 40.0, 30.0, 0.0, "fit")
    sure, unsure = find_pupil(blob(pupil, 0.99)), find_pupil(blob(pupil, 0.6))
    ragged = blob(pupil, 0.99)
    ragged[200:240, 260:340] = 0.99              # a square bite added below the ellipse
    assert unsure.confidence < sure.confidence
    assert find_pupil(ragged).confidence < sure.confidence - 0.05


def test_no_pupil_says_why():
    assert find_pupil(np.zeros(SHAPE, np.float32)).reason == "no pupil pixel predicted"
    speck = find_pupil(blob(Ellipse(100.0, 100.0, 2.0, 2.0, 0.0, "fit")))
    assert speck.ellipse is None and "min_area_px 20" in speck.reason
    thin = np.zeros(SHAPE, np.float32)
    thin[100:104, 100:300] = 0.9
    assert "too elongated" in find_pupil(thin).reason
    assert "covers more than 25%" in find_pupil(np.full(SHAPE, 0.9, np.float32)).reason
    strict = find_pupil(blob(Ellipse(300.0, 200.0, 10.0, 10.0, 0.0, "fit")), rules=Plausibility(min_area_px=500))
    assert strict.ellipse is None


def test_padding_never_counts_as_pupil():
    probability = blob(Ellipse(60.0, 200.0, 40.0, 30.0, 0.0, "fit"))  # in a left pad band
    probability = np.maximum(probability, blob(Ellipse(400.0, 200.0, 12.0, 10.0, 0.0, "fit")))
    fit = find_pupil(probability, valid=(slice(0, 400), slice(120, 520)))
    assert abs(fit.ellipse.cx - 400) < 0.5


def test_pupil_probability_is_the_softmax_of_the_pupil_class():
    logits = np.random.default_rng(0).normal(0, 3, (3, 2, 4, 5)).astype(np.float32)
    expected = 1 / (1 + np.exp(logits[:, 0] - logits[:, 1]))
    assert np.allclose(pupil_probability(logits), expected, atol=1e-6)
    assert np.allclose(pupil_probability(logits[1]), expected[1], atol=1e-6)
