"""Tasks adapt loader batches to the loss: the segmentation label travels as uint8, the loss gets int64."""

from __future__ import annotations

import torch

from steps.train.losses import SegmentationLoss, multiclass_terms
from steps.train.metrics import ConfusionMatrix, predicted_classes
from steps.train.tasks import SegmentationTask


def loader_like_batch() -> dict[str, torch.Tensor]:
    """A small batch with the loader's dtypes: uint8 0/1 label, float32 weights and distance maps."""
    generator = torch.Generator().manual_seed(0)
    label = (torch.rand(2, 8, 12, generator=generator) > 0.6).to(torch.uint8)
    return {"label": label, "spatial_weights": torch.rand(2, 8, 12, generator=generator),
            "dist_map": torch.randn(2, 2, 8, 12, generator=generator)}


def test_segmentation_targets_cast_the_uint8_label_to_int64_after_the_copy():
    batch = loader_like_batch()
    targets = SegmentationTask().targets(batch, torch.device("cpu"))
    assert batch["label"].dtype == torch.uint8  # the loader's tensor is left as shipped
    assert targets["label"].dtype == torch.int64
    assert torch.equal(targets["label"], batch["label"].long())
    assert targets["spatial_weights"] is batch["spatial_weights"] and targets["dist_map"] is batch["dist_map"]


def test_targets_feed_the_losses_and_metrics_that_need_int64_classes():
    batch = loader_like_batch()
    targets = SegmentationTask().targets(batch, torch.device("cpu"))
    logits = torch.randn(2, 2, 8, 12, generator=torch.Generator().manual_seed(1))
    # nll_loss refuses uint8 targets: the general path only runs on the cast label.
    ce, dice, surface = multiclass_terms(logits, targets["label"], targets["spatial_weights"], targets["dist_map"], 1e-5)
    binary = SegmentationLoss()(logits, targets["label"], targets["spatial_weights"], targets["dist_map"])
    assert torch.allclose(binary["ce_loss"], ce, atol=1e-6) and torch.allclose(binary["dice_loss"], dice, atol=1e-6)
    matrix = ConfusionMatrix(2)
    SegmentationTask().update_metrics(matrix, logits, targets)
    assert int(matrix.matrix.sum()) == batch["label"].numel()
    assert int(matrix.matrix[1].sum()) == int(batch["label"].sum())
    assert int(matrix.matrix.diag().sum()) == int((predicted_classes(logits) == targets["label"]).sum())
