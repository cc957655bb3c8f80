"""Augmentations move every field together, and depend only on (seed, epoch, row index)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from steps.data import transforms
from steps.data.augment import NO_AUGMENTATION, AugmentParams, augment_row, augment_sample, draw_params, mirror_cx, params_for
from steps.data.frames import IMAGE_WIDTH
from tests.steps.data.tiny_dataset import make_rows


@pytest.fixture(scope="module")
def sample() -> dict[str, np.ndarray]:
    """One preprocessed row made by the project's transforms, pupil well off the vertical midline."""
    rows = make_rows(3, seed=5, preprocessed=False)
    image, raw_label = rows["image"][1], rows["label"][1]
    row = transforms.preprocess_frame(image, raw_label)
    assert abs(row["cx"] - 0.5) > 0.05
    return {"image": row["image"], "label": row["label"], "spatial_weights": row["spatial_weights"],
            "dist_map": row["dist_map"], "ellipse": np.array([row["cx"], row["cy"], row["rx"], row["ry"]], np.float32)}


def test_flip_mirrors_every_field_exactly(sample):
    out = augment_sample(sample, AugmentParams(flip=True))
    np.testing.assert_array_equal(out["image"], sample["image"][:, ::-1])
    np.testing.assert_array_equal(out["label"], sample["label"][:, ::-1])
    np.testing.assert_array_equal(out["spatial_weights"], sample["spatial_weights"][:, ::-1])
    for channel in (0, 1):
        np.testing.assert_array_equal(out["dist_map"][channel], sample["dist_map"][channel][:, ::-1])
    np.testing.assert_array_equal(out["ellipse"][1:], sample["ellipse"][1:])


def test_flipped_fields_agree_with_preprocessing_the_flipped_frame(sample):
    """Weights, both distance channels and cx of the flipped row are what preprocessing the
    mirrored mask gives (the original project flipped image and label only)."""
    out = augment_sample(sample, AugmentParams(flip=True))
    mask = np.ascontiguousarray(out["label"])
    np.testing.assert_allclose(out["spatial_weights"], transforms.spatial_weights(mask), atol=1e-6)
    np.testing.assert_allclose(out["dist_map"], transforms.signed_distance_maps(mask), atol=1e-6)
    refit = transforms.fit_pupil_ellipse(mask).normalized()
    # Pixel-centre convention: column x mirrors to 639 - x, so cx' = 1 - cx - 1/640 (not 1 - cx).
    assert out["ellipse"][0] * IMAGE_WIDTH == pytest.approx(refit[0] * IMAGE_WIDTH, abs=2e-3)
    assert abs((1 - sample["ellipse"][0]) * IMAGE_WIDTH - refit[0] * IMAGE_WIDTH) == pytest.approx(1.0, abs=2e-3)
    np.testing.assert_allclose(out["ellipse"][1:], refit[1:], atol=1e-5)


def test_mirror_cx_is_an_involution_in_pixels():
    for x in (0.0, 12.5, 319.5, 639.0):
        assert mirror_cx(x / IMAGE_WIDTH) * IMAGE_WIDTH == pytest.approx(639.0 - x, abs=1e-3)
        assert mirror_cx(mirror_cx(x / IMAGE_WIDTH)) * IMAGE_WIDTH == pytest.approx(x, abs=1e-3)


def test_photometric_augmentations_touch_only_the_image(sample):
    lined = augment_sample(sample, AugmentParams(lines=((100, 50, 500, 350),)))
    assert lined["image"][200, 300] == 255 and lined["image"][50, 100] == 255  # a white line on it
    blurred = augment_sample(sample, AugmentParams(blur_sigma=4))
    np.testing.assert_array_equal(blurred["image"], cv2.GaussianBlur(sample["image"], (7, 7), 4))
    both = augment_sample(sample, AugmentParams(lines=((100, 50, 500, 350),), blur_sigma=4))
    np.testing.assert_array_equal(both["image"], cv2.GaussianBlur(lined["image"], (7, 7), 4))
    for out in (lined, blurred, both):
        for name in ("label", "spatial_weights", "dist_map", "ellipse"):
            np.testing.assert_array_equal(out[name], sample[name])


def test_identity_copies_and_source_stays_untouched(sample):
    before = {k: v.copy() for k, v in sample.items()}
    readonly = {k: v.copy() for k, v in sample.items()}
    for value in readonly.values():
        value.flags.writeable = False  # like memory-mapped Arrow views
    out = augment_sample(readonly, draw_params(np.random.default_rng(3)))
    identity = augment_sample(readonly, NO_AUGMENTATION)
    for name in sample:
        np.testing.assert_array_equal(identity[name], sample[name])
        np.testing.assert_array_equal(sample[name], before[name])
    assert set(out) == set(sample)


def test_label_can_be_written_into_a_wider_integer_buffer(sample):
    out = {"label": np.empty(sample["label"].shape, np.int64)}
    augment_row(sample, AugmentParams(flip=True), out)
    np.testing.assert_array_equal(out["label"], sample["label"][:, ::-1].astype(np.int64))


def test_params_depend_only_on_seed_epoch_and_index():
    first = [params_for(7, 2, i) for i in range(50)]
    np.random.seed(123)
    torch.manual_seed(123)
    np.random.random(10)
    assert [params_for(7, 2, i) for i in range(50)] == first
    assert [params_for(7, 3, i) for i in range(50)] != first
    assert [params_for(8, 2, i) for i in range(50)] != first
    assert params_for(7, 2, 5, enabled=False) == NO_AUGMENTATION


def test_ritnet_probabilities_and_valid_line_geometry():
    params = [params_for(0, 0, i) for i in range(3000)]
    assert np.mean([p.flip for p in params]) == pytest.approx(0.5, abs=0.04)
    assert np.mean([bool(p.lines) for p in params]) == pytest.approx(0.2, abs=0.03)
    assert np.mean([p.blur_sigma is not None for p in params]) == pytest.approx(0.2, abs=0.03)
    assert {p.blur_sigma for p in params} - {None} == {2, 3, 4, 5, 6}
    assert all(1 <= len(p.lines) <= 9 for p in params if p.lines)
    image = np.zeros((400, 640), np.uint8)
    for p in params:  # near-vertical lines included: every segment draws without error
        augment_row({"image": image}, p, {"image": image.copy()})


def test_unknown_field_is_refused(sample):
    with pytest.raises(KeyError, match="unknown field"):
        augment_row(sample, NO_AUGMENTATION, {"mask": np.empty((400, 640), np.uint8)})
