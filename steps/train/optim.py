"""Optimizers and learning-rate schedules, built from the training hyperparameters.

Schedules that shape the learning rate within an epoch (cosine, cosine_warmup, linear_warmup,
onecycle) step after every optimizer step; `step` and `plateau` step once per epoch (`plateau`
on the validation metric). `LRSchedule` hides which, so the engine just calls both hooks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn
from torch.optim import lr_scheduler

# Decaying schedules end at this fraction of the peak rate rather than at 0 (a last epoch at lr 0
# would be wasted).
MIN_LR_RATIO = 0.01
PER_STEP_SCHEDULES = ("cosine", "cosine_warmup", "linear_warmup", "onecycle")
PER_EPOCH_SCHEDULES = ("step", "plateau")


class OptimSettings(Protocol):
    """The hyperparameters these builders read (TrainingHyperparameters has them all)."""

    optimizer: str
    lr: float
    weight_decay: float
    momentum: float
    scheduler: str
    epochs: int
    warmup_epochs: int
    step_size: int
    step_gamma: float
    plateau_patience: int


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weight matrices and kernels only: not on biases or norm scales (1-D)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim > 1 else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, hp: OptimSettings) -> torch.optim.Optimizer:
    groups = parameter_groups(model, hp.weight_decay)
    if hp.optimizer == "adam":
        return torch.optim.Adam(groups, lr=hp.lr)
    if hp.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=hp.lr)
    if hp.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum, nesterov=hp.momentum > 0)
    if hp.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, lr=hp.lr, momentum=hp.momentum)
    raise ValueError(f"unknown optimizer {hp.optimizer!r}")


def optimizer_steps_per_epoch(batches: int, accumulation_steps: int) -> int:
    """The engine steps every `accumulation_steps` batches and once more for a partial last window."""
    return max(1, math.ceil(batches / accumulation_steps))


def warmup_then_decay(total_steps: int, warmup_steps: int, shape: str):
    """A multiplier of the peak lr per optimizer step: linear warmup, then cosine or linear decay."""
    warmup_steps = min(warmup_steps, max(total_steps - 1, 0))
    decay_steps = max(total_steps - warmup_steps - 1, 1)  # the last step reaches the floor

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = min((step - warmup_steps) / decay_steps, 1.0)
        fall = 0.5 * (1 + math.cos(math.pi * progress)) if shape == "cosine" else 1 - progress
        return MIN_LR_RATIO + (1 - MIN_LR_RATIO) * fall

    return factor


@dataclass
class LRSchedule:
    """A scheduler and when it steps; `None` is the constant rate."""

    scheduler: Any
    per_step: bool
    name: str
    total_steps: int = 0  # what a per-step schedule was sized for in this run

    def after_optimizer_step(self) -> None:
        if self.scheduler is not None and self.per_step:
            self.scheduler.step()

    def after_epoch(self, monitored: float) -> None:
        """Epoch-level schedules; `plateau` watches the validation metric (higher is better)."""
        if self.scheduler is None or self.per_step:
            return
        if isinstance(self.scheduler, lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(monitored)
        else:
            self.scheduler.step()

    def state_dict(self) -> dict[str, Any] | None:
        return self.scheduler.state_dict() if self.scheduler is not None else None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.scheduler is not None and state is not None:
            self.scheduler.load_state_dict(state)

    def resume_at(self, steps_done: int) -> None:
        """Place a restored per-step schedule at `steps_done` optimizer steps of this run's length.

        The restored state counts steps at the checkpoint's steps per epoch and keeps its length:
        with more epochs, CosineAnnealingLR climbs back to the peak after the old length, and with
        another batch size every step index is off. The rate continues as if this run had been
        planned so from the start (onecycle cannot be moved: check_resume_settings refuses it).
        """
        scheduler = self.scheduler
        if not self.per_step or isinstance(scheduler, lr_scheduler.OneCycleLR) or self.total_steps <= 0:
            return
        scheduler.last_epoch = steps_done
        if isinstance(scheduler, lr_scheduler.CosineAnnealingLR):
            scheduler.T_max = self.total_steps
            fall = (1 + math.cos(math.pi * min(steps_done / self.total_steps, 1.0))) / 2
            rates = [scheduler.eta_min + (base - scheduler.eta_min) * fall for base in scheduler.base_lrs]
        else:  # LambdaLR: its factor is rebuilt from this run's settings
            rates = [base * factor(steps_done) for base, factor in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
        for group, rate in zip(scheduler.optimizer.param_groups, rates):
            group["lr"] = rate
        scheduler._last_lr = rates  # what get_last_lr() reports, as step() would have set it


def build_scheduler(optimizer: torch.optim.Optimizer, hp: OptimSettings, steps_per_epoch: int) -> LRSchedule:
    """The schedule named by `hp.scheduler`, sized for `hp.epochs` x `steps_per_epoch` optimizer steps."""
    total = hp.epochs * steps_per_epoch
    warmup = hp.warmup_epochs * steps_per_epoch
    name = hp.scheduler
    if name == "none":
        return LRSchedule(None, False, name)
    if name == "cosine":
        return LRSchedule(lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=hp.lr * MIN_LR_RATIO),
                          True, name, total)
    if name in ("cosine_warmup", "linear_warmup"):
        shape = "cosine" if name == "cosine_warmup" else "linear"
        return LRSchedule(lr_scheduler.LambdaLR(optimizer, warmup_then_decay(total, warmup, shape)), True, name,
                          total)
    if name == "onecycle":
        pct_start = min(max(warmup / total, 0.05), 0.5) if hp.warmup_epochs else 0.3
        return LRSchedule(lr_scheduler.OneCycleLR(optimizer, max_lr=hp.lr, total_steps=total,
                                                  pct_start=pct_start), True, name)
    if name == "step":
        return LRSchedule(lr_scheduler.StepLR(optimizer, step_size=hp.step_size, gamma=hp.step_gamma), False, name)
    if name == "plateau":
        return LRSchedule(lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=hp.step_gamma,
                                                         patience=hp.plateau_patience), False, name)
    raise ValueError(f"unknown scheduler {name!r}")


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])
