"""Training throughput per model: images/s of whole training steps (forward, loss, backward,
optimizer step) at batch 8 on 400x640 frames, the project's path against a plain loop, on the same
batches in the same run.

- project: what train-seg and train-ellipse run per batch. `steps.train.fit.build_run` builds the
  model, loss, optimizer, schedule and step settings for this machine (CUDA: bf16 or fp16
  autocast with a GradScaler where needed, channels_last, cudnn autotuning; CPU: fp32, the same
  code), and `steps.train.engine.train_one_epoch` steps it (losses and metrics accumulated on the
  device, the finite-loss guard, the schedule stepped per optimizer step, the weight average
  updated after it);
- reference: the straightforward loop of the original project: fp32, NCHW, no autocast,
  `loss.backward(); optimizer.step(); optimizer.zero_grad()` with a plain AdamW and the same model
  and loss, reading the running loss back (`loss.item()`) every batch as its progress bar did.

Both paths train copies of the same initial weights on the same batches, taken once from the
project's loader and kept in memory (the loader has its own benchmark row), on one CPU thread
(CPU_THREADS) when there is no GPU. Timed rounds alternate
between the paths, so a machine busy with other work slows both alike, and each path's fastest
round counts.
On a CPU the project turns on nothing the reference lacks (its extra per-batch work, the training
metrics, shows as a ratio below 1 there); its speed-ups are CUDA ones.

    python -m steps.bench.training_speed [--quick]
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from typing import Any

import datasets
import numpy as np
import torch
from torch import nn

from steps.bench import BenchRow, area_main
from steps.models import MODEL_SPECS, count_parameters
from steps.train.device import describe_device, torch_threads

MODELS = tuple(MODEL_SPECS)  # tiny_efficientvit, tiny_efficientvit_micro, ellipse_regression
QUICK_MODELS = ("tiny_efficientvit_micro",)
BATCH_SIZE = 8
REFERENCE_NAME = "plain fp32 loop (original project)"
# One thread on CPU, as the ONNX rows: OpenMP threads waiting on a descheduled sibling make
# two-thread timings on a shared 2-core machine swing several-fold (and slower than one thread).
CPU_THREADS = 1


def training_rows(count: int, seed: int = 0) -> datasets.Dataset:
    """`count` generated frames through the spec's preprocessing, in preprocess's schema."""
    from steps.data.precompute import FEATURES
    from steps.data.synthetic import render_frame
    from steps.data.transforms import preprocess_frame

    rng = np.random.default_rng(seed)
    columns: dict[str, list] = {name: [] for name in FEATURES}
    while len(columns["filename"]) < count:
        row = preprocess_frame(*render_frame(rng))
        if row is None:  # a closed eye: no pupil
            continue
        row.pop("ellipse_method")
        row.update(filename=f"bench_{len(columns['filename']):03d}.png", preprocessed=True)
        for name in FEATURES:
            columns[name].append(row[name])
    return datasets.Dataset.from_dict(columns, features=FEATURES)


def training_settings(model_name: str, device: torch.device) -> Any:
    """The step's own hyperparameters for this model: defaults, batch 8, no augmentation."""
    from contracts import get_contract

    step = "train-seg" if MODEL_SPECS[model_name].task == "segmentation" else "train-ellipse"
    return get_contract(step).hyperparameters.model_validate(
        {"model": model_name, "batch_size": BATCH_SIZE, "augment": False, "device": device.type, "epochs": 1})


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class ProjectPath:
    """The training step's model, loss, optimizer and settings, stepped by the engine."""

    def __init__(self, hp: Any, rows: datasets.Dataset, device: torch.device,
                 model_overrides: dict[str, Any] | None = None):
        from steps.train.device import configure_backends, seed_everything
        from steps.train.distributed import DistInfo
        from steps.train.fit import build_run

        seed_everything(0)
        configure_backends(device, deterministic=False)
        self.run = build_run(hp, rows, rows, device, DistInfo(), model_overrides)
        self.batch = next(iter(self.run.train_loader))

    def steps(self, count: int) -> None:
        from steps.train.engine import train_one_epoch

        run = self.run
        train_one_epoch(run.train_model, run.task, run.loss_fn, [self.batch] * count, run.optimizer, run.schedule,
                        run.config, epoch=1, on_step=run.after_step)  # the weight average's update included


class ReferencePath:
    """A copy of the same initial model, trained by the plain loop."""

    def __init__(self, project: ProjectPath, device: torch.device):
        from steps.train.tasks import normalize_input

        run = project.run
        # torch's stubs lack Module.to's memory_format (the model may come channels_last from CUDA).
        self.model: nn.Module = copy.deepcopy(run.model).to(
            device=device, memory_format=torch.contiguous_format)  # type: ignore[call-overload]
        self.loss_fn, self.task, self.device = run.loss_fn, run.task, device
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=run.hp.lr, weight_decay=run.hp.weight_decay)
        self.batch = project.batch
        # The original project's loader delivered normalized float32 frames: so does this path's
        # batch (normalized once, here, off the clock), copied to the device every step.
        self.image = normalize_input(project.batch["image"])
        self.running_loss = 0.0

    def steps(self, count: int) -> None:
        self.model.train()
        for _ in range(count):
            image = self.image.to(self.device)
            targets = self.task.targets(self.batch, self.device)
            loss = self.task.loss(self.loss_fn, self.model(image), targets)["loss"]
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad()
            self.running_loss += loss.item()


def images_per_second(paths: dict[str, Callable[[int], None]], device: torch.device, rounds: int,
                      steps_per_round: int) -> dict[str, float]:
    """One warm-up step each, then `rounds` alternating timed rounds; images/s per path from its
    fastest round (as timeit does: other work on a shared machine only ever adds time, and CPU
    time is no cleaner, since waiting OpenMP threads spin)."""
    for step in paths.values():
        step(1)
    synchronize(device)
    seconds: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, step in paths.items():
            started = time.perf_counter()
            step(steps_per_round)
            synchronize(device)
            seconds[name].append(time.perf_counter() - started)
    return {name: steps_per_round * BATCH_SIZE / min(spent) for name, spent in seconds.items()}


def measure_model(model_name: str, rows: datasets.Dataset, device: torch.device, rounds: int,
                  steps_per_round: int) -> BenchRow:
    project = ProjectPath(training_settings(model_name, device), rows, device)
    reference = ReferencePath(project, device)
    rates = images_per_second({"project": project.steps, "reference": reference.steps}, device, rounds,
                              steps_per_round)
    config = project.run.config
    return BenchRow(area="train", metric=f"images/s ({MODEL_SPECS[model_name].model_type}, batch {BATCH_SIZE})",
                    project=rates["project"], reference=rates["reference"], reference_name=REFERENCE_NAME,
                    note=f"{describe_device(device)}, {config.precision.name}, {count_parameters(project.run.model)} params, "
                         f"best of {rounds} rounds of {steps_per_round} step(s)")


def measure_against_previous(rows: datasets.Dataset, device: torch.device, rounds: int,
                             steps_per_round: int) -> BenchRow:
    """The default model's training steps against the previous default architecture's, both by the
    project's engine on the same batches."""
    from steps.bench._previous import PREVIOUS_DEFAULT, PREVIOUS_NAME

    name = "tiny_efficientvit"
    current = ProjectPath(training_settings(name, device), rows, device)
    previous = ProjectPath(training_settings(name, device), rows, device, PREVIOUS_DEFAULT)
    rates = images_per_second({"current": current.steps, "previous": previous.steps}, device, rounds, steps_per_round)
    return BenchRow(area="train", metric=f"images/s ({MODEL_SPECS[name].model_type} vs previous, batch {BATCH_SIZE})",
                    project=rates["current"], reference=rates["previous"], reference_name=PREVIOUS_NAME,
                    note=f"{count_parameters(current.run.model)} vs {count_parameters(previous.run.model)} params")


def measure(quick: bool = False) -> list[BenchRow]:
    """One row per registry model, and the default against its previous architecture (quick: the
    micro segmentation model only, fewer steps)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = training_rows(BATCH_SIZE)
    names = QUICK_MODELS if quick else MODELS
    rounds, steps_per_round = (1, 1) if quick else (3, 1)
    with torch_threads(CPU_THREADS if device.type == "cpu" else None):
        measured = [measure_model(name, rows, device, rounds, steps_per_round) for name in names]
        return measured if quick else [*measured, measure_against_previous(rows, device, rounds, steps_per_round)]


def main(argv: Sequence[str] | None = None) -> int:
    return area_main("steps.bench.training_speed", __doc__, measure, "the micro model only, one timed step per path", argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
