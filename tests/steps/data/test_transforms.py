"""The fast spec transforms against the straightforward scipy reference (SPEC section 3).

Every output column is compared within 1e-4 (images and labels exactly) on generated frames, on
the real OpenEDS fixture frames, and on masks that exercise the ellipse fallback and the image
border (where OpenCV's default borders would disagree with scipy's).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steps.data import reference, transforms
from steps.data.frames import IMAGE_DIAGONAL, IMAGE_SHAPE, MAX_RADIUS
from steps.data.synthetic import render_frame
from steps.data.transforms import PreprocessParams, SampleError

H, W = IMAGE_SHAPE


def assert_rows_match(image: np.ndarray, label: np.ndarray, params: PreprocessParams = PreprocessParams()):
    fast = transforms.preprocess_frame(image, label, params)
    slow = reference.preprocess_frame(image, label, params)
    assert fast is not None and slow is not None
    assert fast["ellipse_method"] == slow["ellipse_method"]
    assert reference.mismatched_columns(slow, fast) == {}, reference.column_differences(slow, fast)
    for column in ("spatial_weights", "dist_map"):
        assert fast[column].dtype == np.float32
    assert fast["dist_map"].shape == (2, H, W) and fast["spatial_weights"].shape == (H, W)
    assert fast["image"].dtype == np.uint8 and fast["label"].dtype == np.uint8
    return fast


def raw_label(mask: np.ndarray, background: int = 2) -> np.ndarray:
    """A 4-class label with the pupil where `mask` is set and iris/sclera elsewhere."""
    label = np.full(IMAGE_SHAPE, background, np.uint8)
    label[:, : W // 4] = 1
    label[mask.astype(bool)] = 3
    return label


@pytest.fixture(scope="module")
def noise_image() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, IMAGE_SHAPE, dtype=np.uint8)


# ---------------------------------------------------------------- the single transforms

def test_binarize_keeps_only_the_pupil_class():
    label = np.array([[0, 1, 2, 3, 3, 0]], np.uint8)
    assert transforms.binarize(label).tolist() == [[0, 0, 0, 1, 1, 0]]
    assert transforms.binarize(label).dtype == np.uint8


def test_gamma_lut_is_the_spec_formula_truncated():
    table = transforms.gamma_lut(0.8)
    expected = (255 * np.linspace(0, 1, 256) ** 0.8).astype(np.uint8)
    assert table.dtype == np.uint8 and table.shape == (256,)
    np.testing.assert_array_equal(table, expected)
    assert table[0] == 0 and table[255] == 255 and table[128] > 128  # gamma < 1 brightens
    assert np.all(np.diff(table.astype(int)) >= 0)


def test_enhanced_image_is_gamma_then_clahe(noise_image):
    params = PreprocessParams()
    expected = cv2.createCLAHE(clipLimit=1.5, tileGridSize=(8, 8)).apply(
        transforms.gamma_lut(0.8)[noise_image])
    np.testing.assert_array_equal(transforms.enhance_image(noise_image, params), expected)


def test_distance_map_convention():
    mask = np.zeros(IMAGE_SHAPE, np.uint8)
    mask[100:110, 200:220] = 1
    maps = transforms.signed_distance_maps(mask)
    unit = 1 / IMAGE_DIAGONAL
    assert maps[1][100, 205] == pytest.approx(-unit)      # the pupil's own boundary pixel
    assert maps[1][99, 205] == pytest.approx(unit)        # its background neighbour
    assert maps[1][105, 210] == pytest.approx(-5 * unit)  # five pixels from the outside
    assert maps[1][50, 205] == pytest.approx(50 * unit)
    assert maps[1][0, 0] == pytest.approx(math.hypot(100, 200) * unit)
    np.testing.assert_array_equal(maps[0], -maps[1])      # exact negatives for two classes
    assert np.all(maps[1][mask == 1] < 0) and np.all(maps[1][mask == 0] > 0)


def test_spatial_weights_peak_on_the_boundary_and_vanish_far_away():
    mask = np.zeros(IMAGE_SHAPE, np.uint8)
    cv2.circle(mask, (320, 200), 40, 1, -1)
    weights = transforms.spatial_weights(mask, 5.0)
    assert weights[200, 320] < 1e-3 and weights[200, 280] > 0.1
    assert weights[200, 280] > weights[200, 300] > weights[200, 320]
    assert np.all(weights[:, :250] == 0)  # beyond boundary + 4 sigma: exactly zero


def test_ellipse_fit_recovers_a_drawn_ellipse():
    mask = np.zeros(IMAGE_SHAPE, np.uint8)
    cv2.ellipse(mask, (300, 180), (50, 30), 0, 0, 360, 1, -1)
    ellipse = transforms.fit_pupil_ellipse(mask)
    assert ellipse.method == "fit"
    assert (ellipse.cx, ellipse.cy) == pytest.approx((300, 180), abs=0.5)
    assert sorted((ellipse.rx, ellipse.ry)) == pytest.approx([30.5, 50.5], abs=1.0)
    cx, cy, rx, ry = ellipse.normalized()
    assert cx == pytest.approx(300 / 640, abs=1e-3) and max(rx, ry) == pytest.approx(50.5 / MAX_RADIUS, abs=3e-3)


def test_moments_circle_of_a_tiny_block():
    mask = np.zeros(IMAGE_SHAPE, np.uint8)
    mask[100:102, 100:102] = 1
    ellipse = transforms.fit_pupil_ellipse(mask)
    assert ellipse.method == "moments"
    assert (ellipse.cx, ellipse.cy) == pytest.approx((100.5, 100.5))
    assert ellipse.rx == ellipse.ry == pytest.approx(math.sqrt(4 / math.pi))


# ---------------------------------------------------------------- whole frames vs the reference

@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_reference_on_generated_frames(seed):
    rng = np.random.default_rng(seed)
    image, label = render_frame(rng)
    assert transforms.binarize(label).any()
    assert_rows_match(image, label)


def test_matches_reference_on_real_frames(real_frames_dir):
    images = sorted((real_frames_dir / "images").glob("*.png"))
    assert images
    for path in images:
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        label = np.load(real_frames_dir / "labels" / f"{path.stem}.npy")
        row = assert_rows_match(image, label)
        assert row["ellipse_method"] == "fit"
        assert 0 < row["cx"] < 1 and 0 < row["cy"] < 1 and 0 < row["rx"] < 0.2


def test_matches_reference_with_other_parameters(noise_image):
    mask = np.zeros(IMAGE_SHAPE, np.uint8)
    cv2.ellipse(mask, (10, 395), (40, 25), 30, 0, 360, 1, -1)
    assert_rows_match(noise_image, raw_label(mask),
                      PreprocessParams(gamma=1.3, clahe_clip_limit=3.0, clahe_tile_grid=4, weight_sigma=2.5))


def _block(rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros(IMAGE_SHAPE, np.uint8)
    mask[rows, cols] = 1
    return mask


def _diagonal(length: int) -> np.ndarray:
    mask = np.zeros(IMAGE_SHAPE, np.uint8)
    np.fill_diagonal(mask[50: 50 + length, 60: 60 + length], 1)
    return mask


def _ellipse(center: tuple[int, int], axes: tuple[int, int], angle: float) -> np.ndarray:
    mask = np.zeros(IMAGE_SHAPE, np.uint8)
    cv2.ellipse(mask, center, axes, angle, 0, 360, 1, -1)
    return mask


FALLBACK_MASKS = {
    "one pixel": (_block(slice(200, 201), slice(300, 301)), "moments"),
    "one corner pixel": (_block(slice(0, 1), slice(0, 1)), "moments"),
    "two pixels at the far corner": (_block(slice(398, 400), slice(639, 640)), "moments"),
    "four pixels in a row": (_block(slice(100, 101), slice(100, 104)), "moments"),
    "2x2 block": (_block(slice(100, 102), slice(100, 102)), "moments"),
    "collinear horizontal line": (_block(slice(120, 121), slice(100, 140)), "moments"),
    "collinear vertical line": (_block(slice(10, 60), slice(630, 631)), "moments"),
    "collinear diagonal": (_diagonal(30), "moments"),
    "two-pixel sliver": (_block(slice(300, 302), slice(100, 160)), "moments"),
    "pupil cut by the left/bottom edge": (_ellipse((8, 392), (60, 45), 20), "fit"),
    "pupil cut by the top/right edge": (_ellipse((636, 3), (50, 35), -40), "fit"),
    "block on the bottom edge": (_block(slice(360, 400), slice(200, 300)), "fit"),
    "band across the whole width (fit too large)": (_block(slice(380, 400), slice(0, 640)), "moments"),
    "largest of several blobs": (_ellipse((200, 200), (30, 20), 10) | _block(slice(5, 9), slice(5, 9)), "fit"),
}


@pytest.mark.parametrize("case", sorted(FALLBACK_MASKS))
def test_fallback_and_border_cases_match_reference(case, noise_image):
    mask, method = FALLBACK_MASKS[case]
    row = assert_rows_match(noise_image, raw_label(mask))
    assert row["ellipse_method"] == method
    assert all(np.isfinite(row[k]) for k in ("cx", "cy", "rx", "ry"))
    assert row["rx"] > 0 and row["ry"] > 0


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cx=st.integers(-20, W + 20), cy=st.integers(-20, H + 20), ax=st.integers(0, 90),
       ay=st.integers(0, 90), angle=st.floats(0, 180))
def test_random_pupils_match_reference(cx, cy, ax, ay, angle, noise_image):
    mask = _ellipse((cx, cy), (ax, ay), angle)
    if not mask.any():
        assert transforms.preprocess_frame(noise_image, raw_label(mask)) is None
        return
    assert_rows_match(noise_image, raw_label(mask))


# ---------------------------------------------------------------- frames that are skipped or refused

def test_empty_pupil_is_skipped(noise_image):
    label = raw_label(np.zeros(IMAGE_SHAPE, np.uint8))
    assert transforms.preprocess_frame(noise_image, label) is None
    assert reference.preprocess_frame(noise_image, label) is None


def test_all_pupil_frame_is_refused(noise_image):
    label = np.full(IMAGE_SHAPE, 3, np.uint8)
    with pytest.raises(SampleError, match="whole frame"):
        transforms.preprocess_frame(noise_image, label)
    with pytest.raises(SampleError, match="whole frame"):
        reference.preprocess_frame(noise_image, label)


@pytest.mark.parametrize("shape, dtype", [((400, 641), np.uint8), ((640, 400), np.uint8), ((400, 640), np.int64)])
def test_wrong_shape_or_dtype_is_refused(shape, dtype, noise_image):
    label = np.zeros(shape, dtype)
    with pytest.raises(SampleError, match="label"):
        transforms.preprocess_frame(noise_image, label)


def test_mismatch_detection_flags_each_column():
    rng = np.random.default_rng(5)
    image, label = render_frame(rng)
    row = transforms.preprocess_frame(image, label)
    assert reference.mismatched_columns(row, row) == {}
    changed = dict(row, image=row["image"].copy(), dist_map=row["dist_map"] + np.float32(2e-4),
                   cx=np.float32(row["cx"] + 5e-5))
    changed["image"][0, 0] ^= 1
    assert sorted(reference.mismatched_columns(row, changed)) == ["dist_map", "image"]
    nan_row = dict(row, rx=np.float32("nan"))
    assert list(reference.mismatched_columns(row, nan_row)) == ["rx"]


def test_distance_maps_are_bit_identical_between_calls_and_equal_scipy_in_float32():
    """OpenCV's EDT may differ by an ulp between calls; the rounded square root may not, so a
    rerun writes byte-identical datasets."""
    from scipy import ndimage

    _, label = render_frame(np.random.default_rng(1))
    mask = transforms.binarize(label)
    first = transforms.signed_distance_maps(mask)
    for _ in range(4):
        np.testing.assert_array_equal(transforms.signed_distance_maps(mask), first)
    outside = mask == 0
    np.testing.assert_array_equal(transforms._exact_edt(outside.view(np.uint8)),
                                  ndimage.distance_transform_edt(outside).astype(np.float32))
