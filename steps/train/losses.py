"""Training losses: RITnet's segmentation loss with its Dice/surface schedule, and the ellipse regression loss.

Segmentation (Chaudhary et al. 2019, "RITnet: Real-time Semantic Segmentation of the Eye for Gaze
Tracking"; github.com/AayushKrChaudhary/RITnet, train.py and utils.py):

    total = CE weighted by (1 + spatial_weights)
            + dice_weight * alpha * generalized Dice
            + surface_loss_max * (1 - alpha) * surface loss

- CE: per-pixel cross-entropy times (1 + spatial_weights) (the weights peak on the pupil boundary),
  averaged over pixels;
- generalized Dice: class weights 1 / (pixels of the class in the target)^2 clamped below by epsilon,
  per sample, averaged over the batch (RITnet's GeneralizedDiceLoss); an absent class gets weight
  1/epsilon, so predicting it where it is absent is punished hard, as in RITnet;
- surface loss (Kervadec et al. 2019, as RITnet's SurfaceLoss): mean over pixels and classes of
  softmax probability times the signed distance map (positive outside a class, negative inside),
  so probability mass far outside the true region costs the most;
- schedule: RITnet sets alpha = 1 - (epoch + 1) / min(125, epochs) for the first min(125, epochs)
  epochs: Dice (region overlap, stable early) hands over to the surface loss (boundary placement)
  and reaches alpha = 0 at the last epoch of that window. RITnet then resets alpha to 1 after epoch
  125; here alpha stays 0, the end point the schedule was heading for. Before `set_epoch` is called
  alpha is 1 (Dice only).

RITnet has no weights on the two terms; `dice_weight` and `surface_loss_max` (train-seg's
hyperparameters, both 1 by default, i.e. RITnet's loss) scale them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from steps.data.frames import IMAGE_HEIGHT, IMAGE_WIDTH, MAX_RADIUS

RITNET_DECAY_EPOCHS = 125


def ritnet_alpha(epoch: int, total_epochs: int, decay_epochs: int = RITNET_DECAY_EPOCHS) -> float:
    """Dice share at 0-based `epoch`: 1 - (epoch + 1) / min(decay_epochs, total_epochs), floored at 0."""
    if total_epochs < 1 or epoch < 0:
        raise ValueError(f"set_epoch: expected 0 <= epoch and total_epochs >= 1, got {epoch}, {total_epochs}")
    window = min(decay_epochs, total_epochs)
    return max(0.0, 1.0 - (epoch + 1) / window)


def one_hot(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, H, W) class indices -> (B, C, H, W) float one-hot (comparison: no int64 (B, H, W, C) detour)."""
    classes = torch.arange(num_classes, device=target.device).view(1, -1, 1, 1)
    return (target.unsqueeze(1) == classes).float()


def generalized_dice_loss(probs: torch.Tensor, target_one_hot: torch.Tensor, epsilon: float = 1e-5) -> torch.Tensor:
    """RITnet's generalized Dice: 1 - 2 sum_c w_c |P_c T_c| / sum_c w_c (|P_c| + |T_c|), w_c = 1/|T_c|^2."""
    probs, target_one_hot = probs.flatten(2), target_one_hot.flatten(2)  # (B, C, N)
    target_sums = target_one_hot.sum(dim=2)
    class_weights = 1.0 / (target_sums ** 2).clamp(min=epsilon)
    intersection = class_weights * (probs * target_one_hot).sum(dim=2)
    denominator = class_weights * (probs.sum(dim=2) + target_sums)
    dice = 2.0 * intersection.sum(dim=1) / denominator.sum(dim=1)
    return (1.0 - dice.clamp(min=epsilon)).mean()


def surface_loss(probs: torch.Tensor, dist_map: torch.Tensor) -> torch.Tensor:
    """Mean over pixels and classes of probability times signed distance (lower is better; can be < 0)."""
    return (probs * dist_map).mean()


SegmentationTerms = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def multiclass_terms(logits: torch.Tensor, target: torch.Tensor, spatial_weights: torch.Tensor,
                     dist_map: torch.Tensor, epsilon: float) -> SegmentationTerms:
    """(weighted CE, generalized Dice, surface loss) for any number of classes."""
    log_probs = F.log_softmax(logits, dim=1)
    ce = (F.nll_loss(log_probs, target, reduction="none") * (1.0 + spatial_weights)).mean()
    probs = log_probs.exp()
    dice = generalized_dice_loss(probs, one_hot(target, logits.shape[1]), epsilon)
    return ce, dice, surface_loss(probs, dist_map)


def binary_terms(logits: torch.Tensor, target: torch.Tensor, spatial_weights: torch.Tensor,
                 dist_map: torch.Tensor, epsilon: float) -> SegmentationTerms:
    """The same three terms for two classes from the logit difference z = l1 - l0 alone.

    p1 = sigmoid(z), CE = softplus(z) - t z, and every Dice sum of class 0 follows from class 1's
    (N - sum p1, ...): half the full-resolution tensors of the general path (measured 1.6x faster
    forward + backward on CPU), same values.
    """
    z = logits[:, 1] - logits[:, 0]
    t = target.to(z.dtype)
    ce = ((F.softplus(z) - t * z) * (1.0 + spatial_weights)).mean()
    p1 = torch.sigmoid(z)
    pixels = z[0].numel()
    intersection1, prob_sum1, target_sum1 = (p1 * t).flatten(1).sum(1), p1.flatten(1).sum(1), t.flatten(1).sum(1)
    intersection0 = pixels - prob_sum1 - target_sum1 + intersection1
    weight0 = 1.0 / ((pixels - target_sum1) ** 2).clamp(min=epsilon)
    weight1 = 1.0 / (target_sum1 ** 2).clamp(min=epsilon)
    dice = 2.0 * (weight0 * intersection0 + weight1 * intersection1) / (
        weight0 * (2 * pixels - prob_sum1 - target_sum1) + weight1 * (prob_sum1 + target_sum1))
    dice_loss = (1.0 - dice.clamp(min=epsilon)).mean()
    # mean over both channels of p_c * d_c, with p0 = 1 - p1
    surface = 0.5 * (dist_map[:, 0].mean() + (p1 * (dist_map[:, 1] - dist_map[:, 0])).mean())
    return ce, dice_loss, surface


class SegmentationLoss(nn.Module):
    """Weighted CE + scheduled generalized Dice and surface loss; returns the total and its components."""

    def __init__(self, dice_weight: float = 1.0, surface_loss_max: float = 1.0, dice_epsilon: float = 1e-5,
                 decay_epochs: int = RITNET_DECAY_EPOCHS) -> None:
        super().__init__()
        self.dice_weight, self.surface_loss_max = float(dice_weight), float(surface_loss_max)
        self.dice_epsilon, self.decay_epochs = dice_epsilon, decay_epochs
        self.alpha = 1.0

    def set_epoch(self, epoch: int, total_epochs: int) -> None:
        """RITnet's schedule: call at the start of each (0-based) epoch."""
        self.alpha = ritnet_alpha(epoch, total_epochs, self.decay_epochs)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, spatial_weights: torch.Tensor,
                dist_map: torch.Tensor) -> dict[str, torch.Tensor]:
        """logits (B, C, H, W), target (B, H, W) class indices, spatial_weights (B, H, W), dist_map (B, C, H, W)."""
        terms = binary_terms if logits.shape[1] == 2 else multiclass_terms
        ce, dice, surface = terms(logits.float(), target.long(), spatial_weights.float(), dist_map.float(),
                                  self.dice_epsilon)  # float32 even under autocast
        total = ce + self.dice_weight * self.alpha * dice + self.surface_loss_max * (1.0 - self.alpha) * surface
        return {"loss": total, "ce_loss": ce.detach(), "dice_loss": dice.detach(), "surface_loss": surface.detach()}


def pupil_fractions(label: torch.Tensor, map_logits: torch.Tensor, pupil_class: int = 1) -> torch.Tensor:
    """The label's pupil fraction per cell of a pupil map: (B, H, W) class indices -> (B, 1, h, w)."""
    pupil = (label == pupil_class).to(map_logits.dtype).unsqueeze(1)
    return F.adaptive_avg_pool2d(pupil, (int(map_logits.shape[-2]), int(map_logits.shape[-1])))


class EllipseRegressionLoss(nn.Module):
    """Smooth L1 on (cx, cy, rx, ry) in one pixel-consistent unit, centre weighted more than radii.

    The targets are normalized differently (cx by 640 px, cy by 400 px, radii by half the diagonal,
    377.36 px), so errors are first rescaled to half-diagonal units: a pixel of error costs the same
    in every coordinate. The centre weighs `center_weight` (2) against the radii because the centre
    is what gaze estimation uses and what the headline metric (centre error in px) measures, and the
    radius targets are noisier: the minor and major semi-axes of a fit that keeps no angle. `beta`
    (0.01 of half the diagonal, ~3.8 px) is where smooth L1 turns from quadratic to linear: small
    residual errors still get gradients, outliers do not dominate.

    With the model's pupil map (training mode), `map_weight` x (binary cross-entropy + Dice) of its
    logits against the label's pupil fraction per cell is added: the ellipse is the map's moments, and
    the map learns its shape far faster from every cell than from four numbers. `regression_weight`
    scales the smooth-L1 part in training: train-ellipse sets it to 0 by default, so the map alone
    trains the model (the smooth L1 on the moments taught the map shapes that fit generated pupils and
    missed real ones under zoom and shift); the centre and radius terms are still returned for the
    logs. Without the map (eval mode) the loss is the smooth-L1 part, unweighted by it.
    """

    def __init__(self, center_weight: float = 2.0, radius_weight: float = 1.0, beta: float = 0.01,
                 map_weight: float = 1.0, regression_weight: float = 1.0) -> None:
        super().__init__()
        self.center_weight, self.radius_weight, self.beta = center_weight, radius_weight, beta
        self.map_weight, self.regression_weight = map_weight, regression_weight
        self.unit_scale = (IMAGE_WIDTH / MAX_RADIUS, IMAGE_HEIGHT / MAX_RADIUS, 1.0, 1.0)

    def forward(self, pred: torch.Tensor, target: torch.Tensor, map_logits: torch.Tensor | None = None,
                label: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """pred, target (B, 4) normalized (cx, cy, rx, ry); map_logits (B, 1, h, w), label (B, H, W)."""
        scale = torch.tensor(self.unit_scale, device=pred.device, dtype=torch.float32)
        per_value = F.smooth_l1_loss(pred.float() * scale, target.float() * scale, beta=self.beta, reduction="none")
        center, radius = per_value[:, :2].mean(), per_value[:, 2:].mean()
        regression = self.center_weight * center + self.radius_weight * radius
        terms = {"center_loss": center.detach(), "radius_loss": radius.detach()}
        if map_logits is None or label is None:  # eval mode gives no map: the regression loss is the loss
            return {"loss": regression, **terms}
        # regression_weight 0: not even a zero term in the graph, so the moments' backward never runs
        total = self.regression_weight * regression if self.regression_weight else torch.zeros((), device=pred.device)
        fractions = pupil_fractions(label, map_logits.float())
        probability = torch.sigmoid(map_logits.float())
        overlap = (probability * fractions).flatten(1).sum(dim=1)
        dice = 1 - (2 * overlap + 1) / ((probability + fractions).flatten(1).sum(dim=1) + 1)
        # Dice besides cross-entropy: a false blob costs in proportion to the pupil's size
        map_loss = F.binary_cross_entropy_with_logits(map_logits.float(), fractions) + dice.mean()
        terms["map_loss"] = map_loss.detach()
        return {"loss": total + self.map_weight * map_loss, **terms}
