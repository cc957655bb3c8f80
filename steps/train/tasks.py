"""What differs between segmentation and ellipse training: targets, loss call, metrics, model config.

The engine and the epoch loop are task-agnostic; a task adapts a batch (the loader's dict) to its
model and loss, and names its metrics. Both report `valid_iou` (mIoU for segmentation, ellipse
IoU for the ellipse model), so "best" means the same in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, cast

import cv2
import numpy as np
import torch
from torch import nn

from steps.data.frames import SEG_CLASSES, normalize_image
from steps.data.transforms import PreprocessParams
from steps.train.device import move_batch
from steps.train.label_maps import label_maps
from steps.train.metrics import ConfusionMatrix, EllipseMetrics, predicted_classes

PRIMARY_METRIC = "valid_iou"
# What a model returns: a tensor, or (ellipse, pupil-map logits) from the ellipse model in training mode.
ModelOutputs = torch.Tensor | tuple[torch.Tensor, ...]
WEIGHT_SIGMA = PreprocessParams().weight_sigma  # the spec's, as preprocess stores them


class MetricAccumulator(Protocol):
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None: ...
    def reduce_(self) -> None: ...
    def compute(self) -> dict[str, Any]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class LossSettings(Protocol):
    """What the losses read of the training settings (RITnet's Dice/surface balance)."""

    dice_weight: float
    surface_loss_max: float


class Task(Protocol):
    name: str  # the loader's `task`

    def targets(self, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]: ...
    def loss(self, loss_fn: nn.Module, outputs: ModelOutputs, targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...
    def new_metrics(self, device: torch.device) -> MetricAccumulator: ...
    def update_metrics(self, metrics: MetricAccumulator, outputs: ModelOutputs, targets: dict[str, torch.Tensor]) -> None: ...
    def summarize(self, values: dict[str, Any], split: str) -> dict[str, float]: ...
    def build_loss(self, hp: LossSettings) -> nn.Module: ...


# normalize_image's value for each of the 256 pixel values: a lookup gives bit-identical inputs.
_INPUT_TABLE = normalize_image(np.arange(256, dtype=np.uint8))
_DEVICE_TABLES: dict[torch.device, torch.Tensor] = {}


def normalize_input(image: torch.Tensor) -> torch.Tensor:
    """The loader's uint8 image (..., H, W) -> float32 model input, on the image's device, exactly
    steps.data.frames.normalize_image. CPU: OpenCV's table lookup (torch's gather is ~20x slower
    there); elsewhere a gather from the 256-entry table on that device."""
    if image.dtype != torch.uint8:
        raise TypeError(f"normalize_input: expected the loader's uint8 image, got {image.dtype}")
    if image.device.type == "cpu":
        image = image.contiguous()
        out = torch.empty(image.shape, dtype=torch.float32)
        width = image.shape[-1]
        cv2.LUT(image.numpy().reshape(-1, width), _INPUT_TABLE.reshape(1, 256), dst=out.numpy().reshape(-1, width))
        return out
    table = _DEVICE_TABLES.get(image.device)
    if table is None:
        table = _DEVICE_TABLES[image.device] = torch.from_numpy(_INPUT_TABLE).to(image.device)
    return table[image.long()]


def batch_inputs(batch: dict[str, Any], device: torch.device, channels_last: bool) -> torch.Tensor:
    """The model input: the uint8 image copied to `device` (1 byte per pixel), normalized there."""
    inputs = normalize_input(move_batch(batch["image"], device))
    if channels_last and device.type == "cuda":
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    return inputs


@dataclass(frozen=True)
class SegmentationTask:
    """Pixel classes background/pupil; loss: weighted CE + Dice + surface (RITnet schedule)."""

    name: str = "segmentation"

    def targets(self, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
        stored = [key for key in ("label", "spatial_weights", "dist_map") if key in batch]
        targets: dict[str, torch.Tensor] = {key: move_batch(batch[key], device) for key in stored}
        if "spatial_weights" not in targets:
            # A compact or geometrically augmented batch: the maps are derived here, on the device.
            targets["spatial_weights"], targets["dist_map"] = label_maps(targets["label"], WEIGHT_SIGMA)
        # The loader ships uint8 labels (1 byte per pixel over the host-to-device copy); the loss
        # (nll_loss, one-hot) wants int64 class indices: cast after the copy, on the device.
        targets["label"] = targets["label"].long()
        return targets

    def loss(self, loss_fn: nn.Module, outputs: torch.Tensor, targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return loss_fn(outputs, targets["label"], targets["spatial_weights"], targets["dist_map"])

    def new_metrics(self, device: torch.device) -> ConfusionMatrix:
        return ConfusionMatrix(len(SEG_CLASSES), device)

    def update_metrics(self, metrics: ConfusionMatrix, outputs: torch.Tensor, targets: dict[str, torch.Tensor]) -> None:
        metrics.update(predicted_classes(outputs), targets["label"])

    def summarize(self, values: dict[str, Any], split: str) -> dict[str, float]:
        summary = {f"{split}_iou": values["miou"], f"{split}_pixel_acc": values["pixel_acc"]}
        if split == "valid":
            summary.update({f"iou_{name}": iou for name, iou in zip(SEG_CLASSES, values["iou_per_class"])})
        return summary

    def build_loss(self, hp: LossSettings) -> nn.Module:
        from steps.train.losses import SegmentationLoss

        return SegmentationLoss(dice_weight=hp.dice_weight, surface_loss_max=hp.surface_loss_max)


@dataclass(frozen=True)
class EllipseTask:
    """Normalized (cx, cy, rx, ry) regression; metrics in pixels and ellipse IoU.

    In training mode the model returns (ellipse, pupil-map logits): the loss also fits the map to the
    label's pupil fraction per cell. The metrics read the ellipse's first four values.
    """

    name: str = "ellipse"

    def targets(self, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
        targets = {"ellipse": move_batch(batch["ellipse"], device)}
        if "label" in batch:  # supervises the pupil map; without it only the ellipse loss trains
            targets["label"] = move_batch(batch["label"], device)
        return targets

    def loss(self, loss_fn: nn.Module, outputs: ModelOutputs,
             targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        ellipse, map_logits = (outputs, None) if isinstance(outputs, torch.Tensor) else outputs
        return loss_fn(ellipse[:, :4].float(), targets["ellipse"], map_logits, targets.get("label"))

    def new_metrics(self, device: torch.device) -> EllipseMetrics:
        return EllipseMetrics(device)

    def update_metrics(self, metrics: EllipseMetrics, outputs: ModelOutputs,
                       targets: dict[str, torch.Tensor]) -> None:
        ellipse = outputs if isinstance(outputs, torch.Tensor) else outputs[0]
        metrics.update(ellipse[:, :4].float(), targets["ellipse"])

    def summarize(self, values: dict[str, Any], split: str) -> dict[str, float]:
        if split == "valid":
            return {**values, "valid_iou": values["ellipse_iou"]}
        return {"train_iou": values["ellipse_iou"], "train_center_error_px": values["center_error_px"]}

    def build_loss(self, hp: LossSettings) -> nn.Module:
        from steps.train.losses import EllipseRegressionLoss

        return EllipseRegressionLoss(regression_weight=getattr(hp, "regression_weight", 1.0))


def task_for(model_task: str) -> Task:
    """The task of a registry model (`ModelSpec.task`)."""
    # cast: each task's methods take its own metrics class, narrower than the protocol's
    return cast(Task, {"segmentation": SegmentationTask(), "ellipse": EllipseTask()}[model_task])
