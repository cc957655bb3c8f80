"""Edge refinement: a first ellipse off by a pixel or two is moved onto the image's pupil border."""

from __future__ import annotations

import math

import cv2
import numpy as np

from steps.data.transforms import Ellipse
from steps.inference.pupil import filled_ellipse
from steps.inference.refine import RefineParams, refine_ellipse, refined_mask

SHAPE = (400, 640)
TRUTH = Ellipse(310.3, 190.6, 31.2, 26.4, 25.0, "truth")


def eye_image(truth: Ellipse = TRUTH, blur: float = 1.2, noise_sd: float = 0.0, seed: int = 0) -> np.ndarray:
    """A dark pupil (35) on iris (70), drawn 16x finer than a pixel and then downsampled: its border
    is where the filled ellipse's coverage is 50%, as a label's."""
    fine = Ellipse(truth.cx * 16 + 7.5, truth.cy * 16 + 7.5, truth.rx * 16, truth.ry * 16, truth.angle, "fine")
    inside = filled_ellipse(fine, (SHAPE[0] * 16, SHAPE[1] * 16)).astype(np.float32)
    coverage = cv2.resize(inside, (SHAPE[1], SHAPE[0]), interpolation=cv2.INTER_AREA)
    image = 70 - 35 * coverage
    image = cv2.GaussianBlur(image, (0, 0), blur) + noise_sd * np.random.default_rng(seed).standard_normal(SHAPE)
    return np.clip(image, 0, 255).astype(np.float32)


def off_by(dx: float, dy: float, dr: float, truth: Ellipse = TRUTH) -> Ellipse:
    return Ellipse(truth.cx + dx, truth.cy + dy, truth.rx + dr, truth.ry + dr, truth.angle + 8, "fit")


def errors(found: Ellipse, truth: Ellipse = TRUTH) -> tuple[float, float]:
    return (math.hypot(found.cx - truth.cx, found.cy - truth.cy),
            max(abs(a - b) for a, b in zip(sorted((found.rx, found.ry)), sorted((truth.rx, truth.ry)))))


def overlap(mask: np.ndarray, label: np.ndarray) -> float:
    return float((mask & label).sum() / (mask | label).sum())


def test_a_guess_two_pixels_off_lands_on_the_border_within_a_fifth_of_a_pixel():
    first = off_by(1.5, -1.2, -1.8)
    mask = filled_ellipse(first, SHAPE)
    found = refine_ellipse(eye_image(), mask, first)
    assert found.method == "refined"
    center, radius = errors(found)
    assert center < 0.2 and radius < 0.2, (center, radius)
    assert errors(first)[0] > 1.5  # the guess really was off


def test_noise_leaves_it_within_half_a_pixel_and_pure_noise_returns_the_guess():
    first = off_by(-1.0, 1.0, 1.5)
    mask = filled_ellipse(first, SHAPE)
    center, radius = errors(refine_ellipse(eye_image(noise_sd=6.0), mask, first))
    assert center < 0.5 and radius < 0.5, (center, radius)
    flat = np.full(SHAPE, 60, np.float32) + 2 * np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32)
    assert refine_ellipse(flat, mask, first) is first  # no border stronger than noise: unchanged


def test_a_lid_over_the_pupil_is_not_taken_for_its_border_and_the_mask_keeps_the_lid():
    image = eye_image()
    lid_row = int(TRUTH.cy - 14)
    image[:lid_row] = 95.0  # bright lid skin over the top of the pupil
    first = off_by(0.8, -1.0, -1.2)
    mask = filled_ellipse(first, SHAPE)
    mask[:lid_row] = 0  # the model's mask follows the lid
    found = refine_ellipse(image, mask, first)
    center, radius = errors(found)
    assert found.method == "refined" and center < 0.4 and radius < 0.4, (center, radius)
    drawn = refined_mask(mask, found, RefineParams())
    assert not drawn[:lid_row - RefineParams().grow_px].any()  # never far above the lid
    assert drawn[lid_row + 2:].sum() >= filled_ellipse(TRUTH, SHAPE)[lid_row + 2:].sum() * 0.98


def test_the_refined_mask_grows_only_where_the_image_border_was_found():
    """refine_pupil grows the model's mask out to the refined ellipse along the measured border
    only: the lid line, where no border was measured, stays exactly where the model put it (the
    ellipse fitted to a lid-cut mask is a poor first guess, so the gain here is small; it used to
    grow 3 px into the lid)."""
    from steps.inference.pupil import find_pupil
    from steps.inference.refine import refine_pupil

    image = eye_image()
    lid_row = int(TRUTH.cy - 14)
    image[:lid_row] = 95.0
    truth = filled_ellipse(TRUTH, SHAPE)
    mask = cv2.erode(truth, np.ones((5, 5), np.uint8))  # the model's mask: 2 px short all round
    mask[:lid_row + 1] = 0  # and a pixel short of the lid
    refined, fit = refine_pupil(image, mask, find_pupil(mask.astype(np.float32)))
    assert fit.ellipse is not None and fit.ellipse.method == "refined"
    assert not refined[:lid_row + 1].any()  # the lid line kept, not grown into the lid
    expected = truth.copy()
    expected[:lid_row + 1] = 0
    assert overlap(refined, expected) >= overlap(mask, expected)
    # Without the border points every angle may grow, and the lid line moves into the lid.
    assert refined_mask(mask, fit.ellipse)[:lid_row + 1].any()


def test_a_guess_five_pixels_off_is_still_refined():
    """A tiny model's mask can sit 4-6 px off on a real frame (a dark lid shadow beside the pupil):
    the search reaches 6 px and the guess may move 5 px."""
    first = off_by(0.0, -4.5, 1.0)
    found = refine_ellipse(eye_image(), filled_ellipse(first, SHAPE), first)
    center, radius = errors(found)
    assert found.method == "refined" and center < 0.3 and radius < 0.3, (center, radius)


def test_a_saturated_glint_on_the_border_does_not_pull_it():
    image = eye_image()
    cv2.circle(image, (round(TRUTH.cx + TRUTH.rx * math.cos(math.radians(TRUTH.angle))),
                       round(TRUTH.cy + TRUTH.rx * math.sin(math.radians(TRUTH.angle)))), 4, 255.0, -1)
    first = off_by(1.0, 1.0, 1.0)
    center, radius = errors(refine_ellipse(image, filled_ellipse(first, SHAPE), first))
    assert center < 0.3 and radius < 0.3, (center, radius)


def test_a_far_border_is_refused_and_the_guess_kept():
    far = Ellipse(TRUTH.cx, TRUTH.cy, TRUTH.rx * 1.5, TRUTH.ry * 1.5, TRUTH.angle, "fit")
    image = eye_image(far)  # the only border is 50% out: beyond the search reach
    assert refine_ellipse(image, filled_ellipse(TRUTH, SHAPE), TRUTH) is TRUTH


def test_on_real_frames_a_model_mask_two_pixels_short_is_moved_onto_the_labelled_border(real_frames_dir):
    """The judge is the real frame: a guess eroded by 2 px and shifted 1 px (as a tiny model's is)
    refined on the gamma+CLAHE frame the model sees reaches the label far better than the guess."""
    from steps.data.transforms import PreprocessParams, enhance_image
    from steps.inference.pupil import find_pupil
    from steps.inference.refine import refine_pupil

    for path in sorted((real_frames_dir / "images").glob("*.png")):
        label = (np.load(real_frames_dir / "labels" / f"{path.stem}.npy") == 3).astype(np.uint8)
        image = enhance_image(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), PreprocessParams())
        eroded = cv2.erode(label, np.ones((5, 5), np.uint8))
        for guess in (np.roll(eroded, 1, axis=1), np.roll(cv2.dilate(label, np.ones((3, 3), np.uint8)), -4, axis=0)):
            refined, fit = refine_pupil(image, guess, find_pupil(guess.astype(np.float32)))
            before, after = overlap(guess, label), overlap(refined, label)
            assert fit.ellipse is not None and fit.ellipse.method == "refined", path.name
            assert before < 0.87 and after > 0.94, (path.name, before, after)


def test_a_glint_notch_in_the_mask_is_filled_not_taken_for_a_lid():
    """A saturated glint on the pupil border cuts a notch in a model's mask, as a lid would cut a run
    of points; the label counts the pupil under the glint, so the refined mask fills the notch (real
    frame 000180: 0.943 -> 0.953 with the glint told apart)."""
    from steps.inference.pupil import find_pupil
    from steps.inference.refine import refine_pupil

    image = eye_image()
    top = (round(TRUTH.cx + TRUTH.ry * math.sin(math.radians(TRUTH.angle))),
           round(TRUTH.cy - TRUTH.ry * math.cos(math.radians(TRUTH.angle))))
    cv2.circle(image, top, 4, 255.0, -1)
    truth = filled_ellipse(TRUTH, SHAPE)
    mask = cv2.erode(truth, np.ones((3, 3), np.uint8))
    outward = (top[0] + round(2 * math.sin(math.radians(TRUTH.angle))), top[1] - round(2 * math.cos(math.radians(TRUTH.angle))))
    notch = cv2.circle(np.zeros(SHAPE, np.uint8), outward, 5, 1, -1)  # 3 px deep, as the real frame's
    mask[notch > 0] = 0
    refined, fit = refine_pupil(image, mask, find_pupil(mask.astype(np.float32)))
    assert fit.ellipse is not None and fit.ellipse.method == "refined"
    under_glint = (notch > 0) & (truth > 0)
    assert refined[under_glint].mean() > 0.9 > mask[under_glint].mean() + 0.5
    assert overlap(refined, truth) > 0.97
