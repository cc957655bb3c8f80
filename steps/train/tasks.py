"""What differs between segmentation and ellipse training: targets, loss call, metrics, model config.

The engine and the epoch loop are task-agnostic; a task adapts a batch (the loader's dict) to its
model and loss, and names its metrics. Both report `valid_iou` (mIoU for segmentation, ellipse
IoU for the ellipse model), so "best" means the same in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from steps.data.frames import SEG_CLASSES
from steps.train.device import move_batch
from steps.train.metrics import ConfusionMatrix, EllipseMetrics, predicted_classes

PRIMARY_METRIC = "valid_iou"


class MetricAccumulator(Protocol):
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None: ...
    def reduce_(self) -> None: ...
    def compute(self) -> dict[str, Any]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Task(Protocol):
    name: str  # the loader's `task`

    def targets(self, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]: ...
    def loss(self, loss_fn: nn.Module, outputs: torch.Tensor, targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...
    def new_metrics(self, device: torch.device) -> MetricAccumulator: ...
    def update_metrics(self, metrics: MetricAccumulator, outputs: torch.Tensor, targets: dict[str, torch.Tensor]) -> None: ...
    def summarize(self, values: dict[str, Any], split: str) -> dict[str, float]: ...
    def build_loss(self, hp: Any) -> nn.Module: ...


def batch_inputs(batch: dict[str, Any], device: torch.device, channels_last: bool) -> torch.Tensor:
    return move_batch(batch["image"], device, channels_last)


@dataclass(frozen=True)
class SegmentationTask:
    """Pixel classes background/pupil; loss: weighted CE + Dice + surface (RITnet schedule)."""

    name: str = "segmentation"

    def targets(self, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
        targets = {key: move_batch(batch[key], device) for key in ("label", "spatial_weights", "dist_map")}
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

    def build_loss(self, hp: Any) -> nn.Module:
        from steps.train.losses import SegmentationLoss

        return SegmentationLoss(dice_weight=hp.dice_weight, surface_loss_max=hp.surface_loss_max)


@dataclass(frozen=True)
class EllipseTask:
    """Normalized (cx, cy, rx, ry) regression; metrics in pixels and ellipse IoU."""

    name: str = "ellipse"

    def targets(self, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
        return {"ellipse": move_batch(batch["ellipse"], device)}

    def loss(self, loss_fn: nn.Module, outputs: torch.Tensor, targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return loss_fn(outputs.float(), targets["ellipse"])

    def new_metrics(self, device: torch.device) -> EllipseMetrics:
        return EllipseMetrics(device)

    def update_metrics(self, metrics: EllipseMetrics, outputs: torch.Tensor, targets: dict[str, torch.Tensor]) -> None:
        metrics.update(outputs.float(), targets["ellipse"])

    def summarize(self, values: dict[str, Any], split: str) -> dict[str, float]:
        if split == "valid":
            return {**values, "valid_iou": values["ellipse_iou"]}
        return {"train_iou": values["ellipse_iou"], "train_center_error_px": values["center_error_px"]}

    def build_loss(self, hp: Any) -> nn.Module:
        from steps.train.losses import EllipseRegressionLoss

        return EllipseRegressionLoss()


def task_for(model_task: str) -> Task:
    """The task of a registry model (`ModelSpec.task`)."""
    return {"segmentation": SegmentationTask(), "ellipse": EllipseTask()}[model_task]
