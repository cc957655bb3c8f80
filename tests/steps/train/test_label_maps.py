"""Weights and distance maps derived per batch equal what preprocess stores."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from scipy import ndimage

from steps.data import transforms
from steps.data.frames import IMAGE_DIAGONAL
from steps.train.label_maps import exact_edt, label_maps, opencv_label_maps, torch_label_maps


def ellipse_masks(count: int, seed: int, shape: tuple[int, int] = (400, 640)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    masks = np.zeros((count, *shape), np.uint8)
    h, w = shape
    for mask in masks:
        centre = (int(rng.integers(10, w - 10)), int(rng.integers(10, h - 10)))
        axes = (int(rng.integers(3, w // 6)), int(rng.integers(3, h // 5)))
        cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return masks


def test_the_cpu_path_is_preprocess_bit_for_bit():
    masks = ellipse_masks(3, seed=1)
    weights, distances = label_maps(torch.from_numpy(masks), 5.0)
    for k, mask in enumerate(masks):
        np.testing.assert_array_equal(weights[k].numpy(), transforms.spatial_weights(mask, 5.0))
        np.testing.assert_array_equal(distances[k].numpy(), transforms.signed_distance_maps(mask))


@pytest.mark.parametrize("seed", [2, 3])
def test_the_torch_path_matches_opencv_within_1e_4(seed):
    masks = ellipse_masks(3, seed=seed)
    masks[1, :, :4] = 1          # a pupil touching the frame border (the reflected Gaussian)
    masks[2, 100:140, 200:260] = 1  # two blobs
    label = torch.from_numpy(masks)
    weights, distances = torch_label_maps(label, 5.0)
    reference_weights, reference_distances = opencv_label_maps(label, 5.0)
    assert weights.shape == reference_weights.shape and distances.shape == reference_distances.shape
    assert float((weights - reference_weights).abs().max()) < 1e-4
    assert float((distances - reference_distances).abs().max()) < 1e-4


def test_the_edt_is_exact_against_scipy():
    features = np.random.default_rng(4).random((2, 37, 53)) < 0.01
    features[:, 0, 0] = True
    ours = exact_edt(torch.from_numpy(features)).numpy()
    for k in range(2):
        np.testing.assert_allclose(ours[k], ndimage.distance_transform_edt(~features[k]), rtol=0, atol=1e-5)


def test_a_label_that_is_all_pupil_is_refused():
    with pytest.raises(transforms.SampleError):
        torch_label_maps(torch.ones((1, 8, 8), dtype=torch.uint8), 1.0)


def test_distances_are_normalized_by_the_diagonal():
    masks = ellipse_masks(1, seed=5)
    _, distances = torch_label_maps(torch.from_numpy(masks), 5.0)
    outside = ndimage.distance_transform_edt(masks[0] == 0) / IMAGE_DIAGONAL
    np.testing.assert_allclose(distances[0, 1].numpy()[masks[0] == 0], outside[masks[0] == 0], atol=1e-6)
