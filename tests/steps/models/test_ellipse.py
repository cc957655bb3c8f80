"""EllipseRegressionNet: shapes, bounds, budget, the soft-argmax centre, and that it learns."""

from __future__ import annotations

import pytest
import torch

from steps.models import count_parameters, create_model, parameter_limit
from steps.models.ellipse import soft_argmax
from steps.train.losses import EllipseRegressionLoss

EXPECTED_PARAMETERS = 43_564


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("batch", [1, 3])
def test_full_frame_gives_four_normalized_numbers(batch):
    model = create_model("ellipse_regression").eval()
    with torch.no_grad():
        out = model(torch.randn(batch, 1, 400, 640))
    assert out.shape == (batch, 4) and torch.isfinite(out).all()


def test_parameter_count_is_exact_and_under_the_limit():
    params = count_parameters(create_model("ellipse_regression"))
    assert params == EXPECTED_PARAMETERS < parameter_limit("ellipse_regression")


def test_outputs_stay_in_range_for_extreme_inputs():
    torch.manual_seed(0)
    model = create_model("ellipse_regression")
    with torch.no_grad():
        for module in model.modules():  # a model far from its init
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                module.weight.mul_(20)
        out = model.eval()(torch.randn(4, 1, 160, 256) * 50)
    assert ((out[:, :2] >= 0) & (out[:, :2] <= 1)).all()
    assert ((out[:, 2:] >= model.config.radius_min) & (out[:, 2:] <= model.config.radius_scale)).all()
    assert model.config.radius_min > 0


def test_initial_prediction_is_the_frame_centre_and_a_typical_radius():
    model = create_model("ellipse_regression").eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 400, 640))
    torch.testing.assert_close(out[:, :2], torch.full((2, 2), 0.5), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[:, 2:], torch.full((2, 2), 0.1), atol=2e-3, rtol=0)


def test_soft_argmax_finds_a_peak_at_its_cell_centre():
    heatmap = torch.full((2, 1, 50, 80), -30.0)
    heatmap[0, 0, 10, 20] = 30.0
    heatmap[1, 0, 49, 0] = 30.0
    weights, x, y = soft_argmax(heatmap)
    assert weights.shape == (2, 4000)
    torch.testing.assert_close(x, torch.tensor([20.5 / 80, 0.5 / 80]))
    torch.testing.assert_close(y, torch.tensor([10.5 / 50, 49.5 / 50]))


def test_downsamples_before_any_work_at_full_resolution():
    first = create_model("ellipse_regression").encoder.stem[0][0].conv
    assert first.stride == (2, 2) and first.in_channels == 1


def test_learns_the_centre_of_a_bright_disc():
    """A few steps on two small synthetic frames pull the prediction toward the discs."""
    torch.manual_seed(0)
    model = create_model("ellipse_regression")
    height, width = 64, 96
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    centres = [(20, 25), (45, 70)]
    images = torch.stack([((yy - cy) ** 2 + (xx - cx) ** 2 < 64).float()[None] * 2 - 1 for cy, cx in centres])
    target = torch.tensor([[cx / width, cy / height, 0.02, 0.02] for cy, cx in centres])
    loss_fn = EllipseRegressionLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        loss = loss_fn(model(images), target)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
