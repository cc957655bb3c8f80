"""SegmentationLoss (RITnet: weighted CE, generalized Dice, surface loss, schedule) and EllipseRegressionLoss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from steps.data.frames import IMAGE_HEIGHT, IMAGE_WIDTH, MAX_RADIUS
from steps.data.transforms import signed_distance_maps, spatial_weights
from steps.train.losses import (
    EllipseRegressionLoss,
    SegmentationLoss,
    binary_terms,
    generalized_dice_loss,
    multiclass_terms,
    one_hot,
    ritnet_alpha,
)

SIZE = (64, 96)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def disc_batch(centres=((20, 30), (40, 60)), radius=10):
    """Labels with one pupil disc each, their spatial weights and signed distance maps (project code)."""
    yy, xx = np.mgrid[:SIZE[0], :SIZE[1]]
    masks = [((yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2).astype(np.uint8) for cy, cx in centres]
    label = torch.from_numpy(np.stack(masks)).long()
    weights = torch.from_numpy(np.stack([spatial_weights(m) for m in masks]))
    dist = torch.from_numpy(np.stack([signed_distance_maps(m) for m in masks]))
    return label, weights, dist


def confident_logits(label: torch.Tensor, margin: float = 8.0) -> torch.Tensor:
    return (one_hot(label, 2) * 2 - 1) * margin


def test_returns_total_and_components():
    label, weights, dist = disc_batch()
    logits = torch.randn(2, 2, *SIZE, requires_grad=True)
    out = SegmentationLoss()(logits, label, weights, dist)
    assert set(out) == {"loss", "ce_loss", "dice_loss", "surface_loss"}
    assert all(torch.isfinite(v) and v.dim() == 0 for v in out.values())
    assert out["loss"].requires_grad
    assert not any(out[k].requires_grad for k in ("ce_loss", "dice_loss", "surface_loss"))


def test_perfect_prediction_beats_the_inverted_one_on_every_component():
    label, weights, dist = disc_batch()
    loss = SegmentationLoss()
    perfect = loss(confident_logits(label), label, weights, dist)
    inverted = loss(-confident_logits(label), label, weights, dist)
    assert perfect["surface_loss"] < 0 < inverted["surface_loss"]  # mass inside its class: negative distance
    assert perfect["dice_loss"] < 1e-3 and inverted["dice_loss"] > 0.99
    assert perfect["ce_loss"] < 1e-3 < inverted["ce_loss"]


def test_cross_entropy_weighs_boundary_pixels_by_one_plus_spatial_weights():
    label, weights, dist = disc_batch()
    logits = torch.zeros(2, 2, *SIZE)  # CE = log 2 at every pixel
    ce = SegmentationLoss()(logits, label, weights, dist)["ce_loss"]
    torch.testing.assert_close(ce, np.log(2) * (1 + weights).mean())


def test_generalized_dice_matches_the_formula_and_handles_an_absent_class():
    probs = torch.tensor([[[0.8, 0.6, 0.1, 0.0]], [[0.2, 0.4, 0.9, 1.0]]]).permute(1, 0, 2)[:, :, None, :]
    target = torch.tensor([[[0, 0, 1, 1]]])
    t = one_hot(target, 2)
    w = 1 / torch.tensor([2.0, 2.0]) ** 2
    intersection = (w * torch.tensor([0.8 + 0.6, 0.9 + 1.0])).sum()
    union = (w * torch.tensor([1.5 + 2, 2.5 + 2])).sum()
    torch.testing.assert_close(generalized_dice_loss(probs, t), 1 - 2 * intersection / union)
    no_pupil = torch.zeros(1, 1, 4, dtype=torch.long)
    assert torch.isfinite(generalized_dice_loss(probs, one_hot(no_pupil, 2)))


def test_schedule_follows_ritnet():
    assert ritnet_alpha(0, 12) == pytest.approx(1 - 1 / 12)
    assert ritnet_alpha(5, 12) == pytest.approx(1 - 6 / 12)
    assert ritnet_alpha(11, 12) == 0.0
    assert ritnet_alpha(0, 300) == pytest.approx(1 - 1 / 125)  # the 125-epoch window
    assert ritnet_alpha(124, 300) == ritnet_alpha(299, 300) == 0.0
    with pytest.raises(ValueError, match="set_epoch"):
        ritnet_alpha(0, 0)


def test_total_is_ce_plus_scheduled_dice_and_surface():
    label, weights, dist = disc_batch()
    logits = torch.randn(2, 2, *SIZE)
    loss = SegmentationLoss(dice_weight=0.5, surface_loss_max=2.0)
    first = loss(logits, label, weights, dist)  # before set_epoch: Dice only
    torch.testing.assert_close(first["loss"], first["ce_loss"] + 0.5 * first["dice_loss"])
    loss.set_epoch(3, 4)  # last epoch: surface only, at its maximum weight
    last = loss(logits, label, weights, dist)
    torch.testing.assert_close(last["loss"], last["ce_loss"] + 2.0 * last["surface_loss"])
    loss.set_epoch(1, 4)  # alpha = 1 - 2/4
    mid = loss(logits, label, weights, dist)
    torch.testing.assert_close(mid["loss"], mid["ce_loss"] + 0.25 * mid["dice_loss"] + 1.0 * mid["surface_loss"])


@pytest.mark.parametrize("epoch", [0, 5])
def test_total_decreases_under_an_optimizer(epoch):
    label, weights, dist = disc_batch()
    torch.manual_seed(0)
    logits = torch.randn(2, 2, *SIZE).requires_grad_()
    loss = SegmentationLoss()
    loss.set_epoch(epoch, 6)
    optimizer = torch.optim.Adam([logits], lr=0.5)
    values = []
    for _ in range(8):
        total = loss(logits, label, weights, dist)["loss"]
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        values.append(total.item())
    assert values[-1] < values[0] - 0.3
    assert all(b <= a + 1e-6 for a, b in zip(values, values[1:]))


def test_half_precision_logits_give_a_float32_loss():
    label, weights, dist = disc_batch()
    out = SegmentationLoss()(torch.randn(2, 2, *SIZE).bfloat16(), label, weights, dist)
    assert all(v.dtype == torch.float32 for v in out.values())


def test_ellipse_loss_is_zero_for_a_perfect_prediction():
    target = torch.tensor([[0.5, 0.5, 0.1, 0.08], [0.3, 0.6, 0.05, 0.05]])
    out = EllipseRegressionLoss()(target.clone(), target)
    assert set(out) == {"loss", "center_loss", "radius_loss"}
    assert out["loss"] == 0


def test_ellipse_loss_counts_pixels_alike_and_the_centre_twice():
    target = torch.tensor([[0.5, 0.5, 0.1, 0.1]])
    loss = EllipseRegressionLoss()
    pixels = 20.0
    off_x = target + torch.tensor([[pixels / IMAGE_WIDTH, 0, 0, 0]])
    off_y = target + torch.tensor([[0, pixels / IMAGE_HEIGHT, 0, 0]])
    off_r = target + torch.tensor([[0, 0, pixels / MAX_RADIUS, 0]])
    x, y, r = (loss(p, target) for p in (off_x, off_y, off_r))
    torch.testing.assert_close(x["center_loss"], y["center_loss"])  # 20 px is 20 px in x and y
    torch.testing.assert_close(x["center_loss"], r["radius_loss"])
    torch.testing.assert_close(x["loss"], 2 * r["loss"])


def test_ellipse_loss_gradient_moves_the_prediction_toward_the_target():
    target = torch.tensor([[0.5, 0.5, 0.1, 0.1]])
    pred = torch.tensor([[0.6, 0.4, 0.2, 0.05]], requires_grad=True)
    EllipseRegressionLoss()(pred, target)["loss"].backward()
    assert torch.equal(torch.sign(pred.grad), torch.sign(pred.detach() - target))


def test_without_the_regression_term_only_the_map_trains_and_the_ellipse_terms_are_still_logged():
    from contracts.train_ellipse import TrainEllipseHyperparameters
    from steps.train.tasks import EllipseTask

    target = torch.tensor([[0.5, 0.5, 0.1, 0.1]])
    pred = torch.tensor([[0.6, 0.4, 0.2, 0.05]], requires_grad=True)
    label = torch.zeros(1, 400, 640, dtype=torch.long)
    label[0, 160:240, 280:360] = 1
    map_logits = torch.zeros(1, 1, 100, 160, requires_grad=True)
    loss = EllipseTask().build_loss(TrainEllipseHyperparameters())  # train-ellipse's default: 0
    out = loss(pred, target, map_logits, label)
    out["loss"].backward()
    fractions = (torch.nn.functional.avg_pool2d(label[:, None].float(), 4))
    probability = torch.sigmoid(map_logits.detach())
    dice = 1 - (2 * (probability * fractions).sum() + 1) / ((probability + fractions).sum() + 1)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(map_logits.detach(), fractions) + dice
    torch.testing.assert_close(out["loss"].detach(), expected)
    assert pred.grad is None or not pred.grad.any()
    assert map_logits.grad.abs().sum() > 0 and out["center_loss"] > 0 and out["radius_loss"] > 0
    evaluated = loss(pred.detach(), target)  # eval mode: no map, the regression loss
    torch.testing.assert_close(evaluated["loss"], 2 * out["center_loss"] + out["radius_loss"])


def test_two_class_fast_path_equals_the_general_formulas():
    label, weights, dist = disc_batch()
    torch.manual_seed(0)
    logits = (torch.randn(2, 2, *SIZE) * 3).requires_grad_()
    fast = binary_terms(logits, label, weights, dist, 1e-5)
    general = multiclass_terms(logits, label, weights, dist, 1e-5)
    for a, b in zip(fast, general):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    grad_fast = torch.autograd.grad(sum(fast), logits)[0]
    grad_general = torch.autograd.grad(sum(general), logits)[0]
    torch.testing.assert_close(grad_fast, grad_general, atol=1e-8, rtol=1e-4)


def test_more_classes_use_the_general_path():
    label = torch.randint(0, 3, (2, *SIZE))
    dist = torch.randn(2, 3, *SIZE)
    out = SegmentationLoss()(torch.randn(2, 3, *SIZE), label, torch.zeros(2, *SIZE), dist)
    assert all(torch.isfinite(v) for v in out.values())
