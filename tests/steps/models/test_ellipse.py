"""EllipseRegressionNet: shapes, budget, the moments head against cv2.fitEllipse, that predictions follow
the pupil under shift and scale, and that it learns."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from steps.data.frames import IMAGE_HEIGHT, IMAGE_WIDTH, MAX_RADIUS
from steps.data.transforms import fit_pupil_ellipse
from steps.models import count_parameters, create_model, parameter_limit
from steps.models.ellipse import ellipse_from_moments, map_moments
from steps.train.losses import EllipseRegressionLoss, pupil_fractions

EXPECTED_PARAMETERS = 46_766
PIXELS = np.array([IMAGE_WIDTH, IMAGE_HEIGHT, MAX_RADIUS, MAX_RADIUS])

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def ellipse_mask(cx: float, cy: float, a: float, b: float, degrees: float) -> np.ndarray:
    mask = np.zeros((IMAGE_HEIGHT, IMAGE_WIDTH), np.uint8)
    cv2.ellipse(mask, ((cx, cy), (2 * a, 2 * b), degrees), 1, -1)
    return mask


def moments_ellipse(mask: np.ndarray, angle: bool = False) -> np.ndarray:
    """The head applied to the mask's exact pupil fraction per 8x8 cell (what a perfect map holds)."""
    fractions = pupil_fractions(torch.from_numpy(mask)[None].long(), torch.zeros(1, 1, 50, 80))
    moments = map_moments(fractions, (IMAGE_HEIGHT, IMAGE_WIDTH), create_model("ellipse_regression").config.map_floor)
    return ellipse_from_moments(*moments, angle=angle)[0].numpy()


@pytest.mark.parametrize("batch", [1, 3])
def test_full_frame_gives_six_numbers_with_the_angle_and_the_seeds_four_without(batch):
    x = torch.randn(batch, 1, 400, 640)
    with torch.no_grad():
        out = create_model("ellipse_regression", angle_output=False).eval()(x)
        with_angle = create_model("ellipse_regression").eval()(x)
    assert out.shape == (batch, 4) and torch.isfinite(out).all() and (out[:, 2:] >= 0).all()
    assert with_angle.shape == (batch, 6) and torch.isfinite(with_angle).all()


def test_training_mode_also_returns_the_pupil_map():
    ellipse, map_logits = create_model("ellipse_regression").train()(torch.randn(2, 1, 400, 640))
    assert ellipse.shape == (2, 6) and map_logits.shape == (2, 1, 100, 160)


def test_parameter_count_is_exact_and_under_the_limit():
    params = count_parameters(create_model("ellipse_regression"))
    assert params == EXPECTED_PARAMETERS < parameter_limit("ellipse_regression")


@pytest.mark.parametrize("seed", range(6))
def test_a_perfect_map_gives_the_datasets_ellipse(seed):
    """Moments of the exact cell fractions against cv2.fitEllipse on the mask (the dataset's radii):
    centre within 0.2 px, radii (minor, major) within 0.8 px, angle within 3 degrees."""
    rng = np.random.default_rng(seed)
    cx, cy, a, degrees = rng.uniform(80, 560), rng.uniform(80, 320), rng.uniform(14, 50), rng.uniform(0, 180)
    b = a * rng.uniform(0.6, 0.85)
    mask = ellipse_mask(cx, cy, a, b, degrees)
    fit = fit_pupil_ellipse(mask)
    out = moments_ellipse(mask, angle=True)
    np.testing.assert_allclose(out[:2] * PIXELS[:2], [fit.cx, fit.cy], atol=0.2)
    np.testing.assert_allclose(out[2:4] * PIXELS[2:], [fit.rx, fit.ry], atol=0.8)
    assert abs(np.hypot(out[4], out[5]) - 1) < 1e-5
    major_degrees = np.degrees(np.arctan2(out[5], out[4])) / 2  # of the major axis: cv2's width is the minor
    assert abs((major_degrees - degrees + 90) % 180 - 90) < 3


@pytest.mark.parametrize("zoom", [1.0, 1.2, 1.4])
def test_predictions_follow_the_pupil_under_zoom_and_shift(zoom):
    """The head is equivariant: zooming and shifting the pupil moves its ellipse by the same amount."""
    base = (300.0, 190.0, 27.0, 24.0, 30.0)
    for shift in (-40, 0, 40):
        cx, cy, a, b, degrees = base[0] + shift, base[1] - shift / 2, base[2] * zoom, base[3] * zoom, base[4]
        out = moments_ellipse(ellipse_mask(cx, cy, a, b, degrees)) * PIXELS
        np.testing.assert_allclose(out[:2], [cx, cy], atol=0.3)
        np.testing.assert_allclose(out[2:], [b, a], atol=1.0)


def test_the_window_keeps_a_far_dark_blob_out_of_the_ellipse():
    """A perfect pupil map plus a false blob 250 px away (a dark lens border): with the window the
    ellipse stays the pupil's; over the whole map the blob drags it off."""
    pupil = ellipse_mask(200, 200, 30, 25, 0)
    blob = ellipse_mask(450, 200, 20, 20, 0)
    cells = torch.zeros(1, 1, 50, 80)
    fractions = (pupil_fractions(torch.from_numpy(pupil)[None].long(), cells)  # the blob: less confident
                 + 0.6 * pupil_fractions(torch.from_numpy(blob)[None].long(), cells))
    logits = torch.logit(fractions.clamp(1e-4, 1 - 1e-4))
    fit = fit_pupil_ellipse(pupil)
    windowed = create_model("ellipse_regression").forward_head(logits, (IMAGE_HEIGHT, IMAGE_WIDTH))[0].numpy()
    whole = create_model("ellipse_regression", window_px=0.0).forward_head(logits, (IMAGE_HEIGHT, IMAGE_WIDTH))[0]
    np.testing.assert_allclose(windowed[:2] * PIXELS[:2], [fit.cx, fit.cy], atol=0.5)
    np.testing.assert_allclose(windowed[2:4] * PIXELS[2:], [fit.rx, fit.ry], atol=1.0)
    assert abs(float(whole[0]) * IMAGE_WIDTH - fit.cx) > 50


def test_a_map_with_no_cell_above_the_floor_still_centres_on_its_faint_pupil():
    """A faint pupil cut by the frame edge, every cell below map_floor: the head must not put the
    centre at (0, 0), as the floored moments alone did (650 px off on a generated validation frame)."""
    mask = ellipse_mask(630.0, 200.0, 20.0, 30.0, 0.0)
    fractions = 1e-4 + 0.04 * pupil_fractions(torch.from_numpy(mask)[None].long(), torch.zeros(1, 1, 100, 160))
    model = create_model("ellipse_regression").eval()
    assert float(fractions.max()) < model.config.map_floor
    ellipse = model.forward_head(torch.logit(fractions), (IMAGE_HEIGHT, IMAGE_WIDTH))[0, :4].numpy() * PIXELS
    assert abs(ellipse[0] - 628) < 8 and abs(ellipse[1] - 200) < 8


def test_learns_the_centre_and_size_of_a_dark_disc():
    """A few steps on two synthetic frames bring the ellipse toward the discs, through the map loss."""
    torch.manual_seed(0)
    model = create_model("ellipse_regression").train()
    height, width = 128, 192
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    discs = [(40, 50, 14), (80, 130, 20)]
    labels = torch.stack([((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).long() for cy, cx, r in discs])
    images = 1 - 2 * labels[:, None].float()
    target = torch.tensor([[cx / IMAGE_WIDTH, cy / IMAGE_HEIGHT, r / MAX_RADIUS, r / MAX_RADIUS] for cy, cx, r in discs])
    loss_fn = EllipseRegressionLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(12):
        ellipse, map_logits = model(images)
        loss = loss_fn(ellipse[:, :4], target, map_logits, labels)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_downsamples_before_any_work_at_full_resolution():
    first = create_model("ellipse_regression").encoder.stem[0][0].conv
    assert first.stride == (4, 4) and first.in_channels == 1 and first.kernel_size == (8, 8)
