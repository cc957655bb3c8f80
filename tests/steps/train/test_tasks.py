"""Tasks adapt loader batches to model and loss: image and label travel as uint8 and are finished on
the device (normalized image, int64 label)."""

from __future__ import annotations

import pytest
import torch

from steps.data.frames import normalize_image
from steps.train.losses import SegmentationLoss, multiclass_terms
from steps.train.metrics import ConfusionMatrix, predicted_classes
from steps.train.tasks import _DEVICE_TABLES, EllipseTask, SegmentationTask, batch_inputs, normalize_input


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


def every_pixel_value_image() -> torch.Tensor:
    """(2, 1, 4, 160) uint8: every value 0..255, five times each, shuffled."""
    values = torch.arange(256, dtype=torch.uint8).repeat(5)
    return values[torch.randperm(values.numel(), generator=torch.Generator().manual_seed(2))].reshape(2, 1, 4, 160)


def test_normalize_input_is_bit_identical_to_normalize_image():
    image = every_pixel_value_image()
    expected = torch.from_numpy(normalize_image(image.numpy()))
    cpu = normalize_input(image)
    assert cpu.dtype == torch.float32 and torch.equal(cpu, expected)
    assert torch.equal(normalize_input(image[:, :, :, ::2]), expected[:, :, :, ::2])  # strided views too
    assert torch.device("cpu") not in _DEVICE_TABLES  # the CPU path uses OpenCV's lookup, no device table
    with pytest.raises(TypeError, match="uint8"):
        normalize_input(expected)  # an already normalized image is refused, not normalized twice


def test_batch_inputs_normalize_the_loader_image_for_both_tasks():
    image = every_pixel_value_image()
    batch = {"image": image, "ellipse": torch.zeros(2, 4)}
    inputs = batch_inputs(batch, torch.device("cpu"), channels_last=True)
    assert batch["image"].dtype == torch.uint8 and inputs.dtype == torch.float32 and inputs.shape == image.shape
    assert torch.equal(inputs, torch.from_numpy(normalize_image(image.numpy())))
    assert torch.equal(EllipseTask().targets(batch, torch.device("cpu"))["ellipse"], batch["ellipse"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_normalize_input_on_cuda_matches_normalize_image():
    image = every_pixel_value_image()
    on_device = normalize_input(image.cuda())
    assert on_device.is_cuda and torch.equal(on_device.cpu(), torch.from_numpy(normalize_image(image.numpy())))
