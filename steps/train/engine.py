"""One training epoch and one evaluation pass (in the style of torchvision's segmentation reference).

Per batch: forward under autocast, loss / accumulation window, backward (scaled with fp16), and
every `accumulation_steps` batches (and at the epoch's end) unscale -> clip -> optimizer step ->
scheduler step. Losses and metrics are summed into device tensors and read once per epoch, so the
GPU never waits on the host inside the loop (bar the periodic finite-loss check).

A SIGTERM (via `should_stop`) is honoured only after an optimizer step, so a stop never leaves
half-accumulated gradients; the partial epoch is returned for a mid-epoch resume point.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from steps.errors import StepError
from steps.train.device import Precision, rng_state, set_rng_state
from steps.train.metrics import RunningMeans
from steps.train.optim import LRSchedule
from steps.train.progress import EpochMeter
from steps.train.tasks import MetricAccumulator, Task, batch_inputs


@dataclass
class StepConfig:
    """How each optimizer step runs."""

    device: torch.device
    precision: Precision
    scaler: torch.amp.GradScaler | None = None
    accumulation_steps: int = 1
    clip_grad_norm: float | None = None
    channels_last: bool = False
    # Reading the loss on the host stalls a GPU: check every N batches there, every batch on CPU.
    check_finite_every: int = 1


@dataclass
class EpochProgress:
    """The accumulators of an epoch in progress: what a mid-epoch resume point stores."""

    losses: RunningMeans
    metrics: MetricAccumulator
    batches_done: int = 0
    images: int = 0
    stopped: bool = False
    rng: dict[str, Any] | None = field(default=None, repr=False)

    def state_dict(self) -> dict[str, Any]:
        return {"losses": self.losses.state_dict(), "metrics": self.metrics.state_dict(),
                "batches_done": self.batches_done, "images": self.images, "rng": rng_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.losses.load_state_dict(state["losses"])
        self.metrics.load_state_dict(state["metrics"])
        self.batches_done, self.images, self.rng = state["batches_done"], state["images"], state["rng"]


class NonFiniteGuard:
    """Remembers (on the device) the first batch whose loss is not finite; raises when checked.

    The file names of the batches since the last check are kept, so the error can name the rows.
    """

    def __init__(self, device: torch.device, epoch: int, every: int):
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=device)
        self.epoch, self.every = epoch, max(1, every)
        self.recent: dict[int, list[str]] = {}

    def observe(self, loss: torch.Tensor, index: int, filenames: list[str] | None = None) -> None:
        bad = ~torch.isfinite(loss.detach())
        self.first_bad = torch.where((self.first_bad < 0) & bad, torch.full_like(self.first_bad, index),
                                     self.first_bad)
        self.recent[index] = list(filenames or [])
        if (index + 1) % self.every == 0:
            self.check()

    def check(self) -> None:
        batch = int(self.first_bad.item())
        if batch >= 0:
            rows = ", ".join(self.recent.get(batch, [])[:8]) or "unknown"
            raise StepError(f"train_loss is not finite at epoch {self.epoch} batch {batch + 1}; lower lr or "
                            f"enable clip_grad_norm (or check those rows for NaN/inf values)\n"
                            f"rows of that batch: {rows}\nno checkpoint was written from the diverged weights")
        self.recent.clear()


def new_progress(task: Task, device: torch.device) -> EpochProgress:
    return EpochProgress(losses=RunningMeans(device), metrics=task.new_metrics(device))


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, config: StepConfig) -> None:
    """Unscale (fp16) before clipping so the norm is the true one; then step and clear gradients."""
    if config.clip_grad_norm is not None:
        if config.scaler is not None:
            config.scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad_norm)
    if config.scaler is not None:
        config.scaler.step(optimizer)
        config.scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def skip_to(loader: Iterable, progress: EpochProgress):
    """An iterator over the loader positioned after the batches a resumed epoch already trained.

    The loader's order and augmentations depend only on (seed, epoch, index), so the skipped
    batches are the same ones; the RNG state saved at the stop is restored after skipping.
    """
    iterator = iter(loader)
    for _ in range(progress.batches_done):
        next(iterator)
    if progress.rng is not None:
        set_rng_state(progress.rng)
    return iterator


def detached(outputs: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """A model's outputs without their graph: a tensor, or a tuple (the ellipse model in training mode)."""
    return outputs.detach() if isinstance(outputs, torch.Tensor) else tuple(o.detach() for o in outputs)


def train_one_epoch(model: nn.Module, task: Task, loss_fn: nn.Module, loader: Any, optimizer: torch.optim.Optimizer,
                    schedule: LRSchedule, config: StepConfig, epoch: int, *,
                    progress: EpochProgress | None = None, should_stop: Callable[[], bool] | None = None,
                    on_step: Callable[[], None] | None = None, meter: EpochMeter | None = None) -> EpochProgress:
    """Train over the loader once (or its rest, given a resumed `progress`); returns the accumulators.
    `meter` times the batches (data wait vs compute) and logs progress every few of them."""
    model.train()
    progress = progress or new_progress(task, config.device)
    guard = NonFiniteGuard(config.device, epoch, config.check_finite_every)
    total, accumulation = len(loader), config.accumulation_steps
    for index, batch in enumerate(skip_to(loader, progress), start=progress.batches_done):
        if meter is not None:
            meter.loaded()
        window_start = index - index % accumulation
        window = min(accumulation, total - window_start)  # a short last window still averages right
        stepping = index + 1 == window_start + window
        inputs, targets = batch_inputs(batch, config.device, config.channels_last), task.targets(batch, config.device)
        with config.precision.autocast(config.device):
            outputs = model(inputs)
            losses = task.loss(loss_fn, outputs, targets)
        guard.observe(losses["loss"], index, batch.get("filename"))
        scaled = losses["loss"] / window
        no_sync: Callable[[], AbstractContextManager[Any]] | None = getattr(model, "no_sync", None)  # DDP's
        sync = nullcontext() if stepping or no_sync is None else no_sync()
        with sync:  # DDP: all-reduce gradients only on the batch that steps
            (config.scaler.scale(scaled) if config.scaler is not None else scaled).backward()
        progress.losses.add_means(losses, inputs.shape[0])
        task.update_metrics(progress.metrics, detached(outputs), targets)
        progress.batches_done, progress.images = index + 1, progress.images + inputs.shape[0]
        if meter is not None:
            meter.done(inputs.shape[0], index + 1)
        if stepping:
            optimizer_step(model, optimizer, config)
            schedule.after_optimizer_step()
            if on_step is not None:
                on_step()
            if should_stop is not None and index + 1 < total and should_stop():
                progress.stopped = True
                break
    guard.check()
    return progress


def summarize_epoch(task: Task, progress: EpochProgress, split: str) -> dict[str, float]:
    """Sum across ranks, copy to the host once, and name the values (`train_loss`, `train_iou`...)."""
    progress.losses.reduce_()
    progress.metrics.reduce_()
    losses = progress.losses.compute()
    # The training loss components keep their own names (ce_loss...); validation ones get a prefix.
    values = {(f"{split}_loss" if k == "loss" else k if split == "train" else f"{split}_{k}"): v
              for k, v in losses.items()}
    return {**values, **task.summarize(progress.metrics.compute(), split)}


@torch.inference_mode()
def evaluate(model: nn.Module, task: Task, loss_fn: nn.Module, loader: Any, config: StepConfig) -> dict[str, float]:
    """Validation loss (and its components, `valid_*`) and the task's metrics over the whole loader."""
    model.eval()
    progress = new_progress(task, config.device)
    started = time.perf_counter()
    for batch in loader:
        inputs, targets = batch_inputs(batch, config.device, config.channels_last), task.targets(batch, config.device)
        with config.precision.autocast(config.device):
            outputs = model(inputs)
            losses = task.loss(loss_fn, outputs, targets)
        progress.losses.add_means(losses, inputs.shape[0])
        task.update_metrics(progress.metrics, outputs, targets)
        progress.images += inputs.shape[0]
    values = summarize_epoch(task, progress, "valid")
    values["valid_seconds"] = time.perf_counter() - started
    return values
