"""An exponential moving average of the weights (EMA), on torch's `AveragedModel`.

After every optimizer step the average moves towards the trained weights (BatchNorm's running
statistics included). The average is what the run evaluates, keeps as its best checkpoint and
exports: at batch 2 the trained weights jump from step to step (generated validation mIoU moved
by up to 0.1 between neighbouring epochs), and their average is steadier and generalises further
(real frames, robustness suite). timm's ModelEmaV3 and torchvision's classification reference
do the same.

The decay warms up as timm's does, min(decay, (1 + n) / (10 + n)) after n updates: early in a
run the average follows the weights closely instead of dragging the random initial ones along.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

TensorGroup = tuple[torch.Tensor, ...] | list[torch.Tensor]


def warmed_decay(decay: float, updates: int) -> float:
    """The decay used for the update after `updates` earlier ones."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


class WeightAverage(AveragedModel):
    """EMA of `model`'s parameters and buffers; `.module` is the averaged model."""

    n_averaged: torch.Tensor

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay: expected 0 < decay < 1, got {decay}")
        super().__init__(model, multi_avg_fn=self._average, use_buffers=True)
        self.decay = decay
        self.updates = 0  # == n_averaged, kept on the host: no device sync per step
        self._weight = decay

    def update_parameters(self, model: nn.Module) -> None:
        # The first update copies the weights; the next one averages with n = 0.
        self._weight = warmed_decay(self.decay, max(self.updates - 1, 0))
        super().update_parameters(model)
        self.updates += 1

    def _average(self, averaged: TensorGroup, current: TensorGroup, _: torch.Tensor | int) -> None:
        """One group of tensors of a device and dtype (torch groups them for the foreach ops)."""
        if averaged[0].is_floating_point():
            torch._foreach_lerp_(averaged, current, 1.0 - self._weight)
        else:  # BatchNorm's num_batches_tracked: follow the model
            for target, source in zip(averaged, current):
                target.copy_(source)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.updates = int(self.n_averaged)
        return result


def build_weight_average(model: nn.Module, decay: float) -> WeightAverage | None:
    """The average of `model` (a plain module on its device), or None when `decay` is 0 (off)."""
    return WeightAverage(model, decay) if decay else None
