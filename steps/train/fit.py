"""The training run: setup, the epoch loop, resume, checkpoints, early stopping, SIGTERM, tracking.

`train(hp, train_split=..., valid_split=..., paths=...)` is what train-seg, train-ellipse and the
tune step call. One run:

1. picks the device, joins the torchrun process group (if any), seeds everything, sets CUDA
   options and deterministic mode;
2. builds loaders, model (channels_last / compile on CUDA, DDP when distributed), loss,
   optimizer, schedule and GradScaler;
3. resumes from the furthest valid checkpoint in `checkpoints/` (rank 0 reads it, every rank gets it);
4. per epoch: train, evaluate, step the epoch-level schedule, then on rank 0 only: save best /
   epoch / last checkpoints, write metrics.csv/json and curves, log to the tracker;
5. stops early after `early_stopping_patience` epochs without improvement, or on SIGTERM (after
   the current optimizer step, with a mid-epoch resume point saved, exit code 143);
6. copies the best checkpoint into the model output with its model card and registers it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast

import torch
from torch import nn

from steps.errors import StepError
from steps.models import get_spec, unwrap
from steps.train import checkpoints as ckpt
from steps.train.averaging import WeightAverage, build_weight_average
from steps.train.device import (
    configure_backends,
    describe_device,
    prepare_model,
    resolve_precision,
    rng_state,
    seed_everything,
    select_device,
    set_rng_state,
    torch_threads,
)
from steps.train.distributed import DistInfo, any_rank, barrier, broadcast_object, dist_info_from_env, process_group, wrap_ddp
from steps.train.engine import EpochProgress, StepConfig, evaluate, new_progress, summarize_epoch, train_one_epoch
from steps.train.metric_lines import metric_line
from steps.train.metrics import predicted_classes
from steps.train.optim import LRSchedule, build_optimizer, build_scheduler, current_lr, optimizer_steps_per_epoch
from steps.train.profiling import ResourceMonitor, TrainingProfiler
from steps.train.progress import EpochMeter
from steps.train.records import MetricsLog, package_versions, write_resolved_config
from steps.train.signals import StopRequest, TrainingInterrupted
from steps.train.tasks import PRIMARY_METRIC, Task, normalize_input, task_for
from steps.train.training_figures import AUGMENTED, augmented_grid, overlay

if TYPE_CHECKING:
    from steps.data.loading import Task as LoaderTask

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict[str, Any]], None]


@dataclass(frozen=True)
class TrainingPaths:
    model_dir: Path       # the `model` output (staging): best checkpoint + model card at the end
    metrics_dir: Path     # the `metrics` output (staging): metrics.csv/json, curves, resolved config
    checkpoint_dir: Path  # persistent across runs: resume points, epoch checkpoints, best so far


@dataclass
class TrainingRun:
    """Everything one run trains with."""

    hp: Any
    hyperparameters: dict[str, Any]  # hp as JSON, resolved once: checkpoints, tracking, the saved config
    model_name: str
    model_config: dict[str, Any]
    task: Task
    dist: DistInfo
    model: nn.Module          # the plain module (what checkpoints save)
    train_model: nn.Module    # compiled and/or DDP-wrapped: what trains
    eval_model: nn.Module     # compiled (or the weight average), not DDP: ranks evaluate different numbers of batches
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    config: StepConfig
    train_loader: Any
    valid_loader: Any
    average: WeightAverage | None = None  # ema_decay > 0: the weights evaluated, kept as best and exported

    @property
    def kept_model(self) -> nn.Module:
        """The plain module whose weights are evaluated and saved as the best model."""
        return self.average.module if self.average is not None else self.model

    def after_step(self) -> None:
        if self.average is not None:
            self.average.update_parameters(self.model)


@dataclass
class LoopState:
    """What the epoch loop carries across epochs (and across a resume)."""

    epoch: int = 0                      # completed epochs
    best_metric: float = -math.inf
    best_epoch: int = 0
    epochs_without_improvement: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    partial: EpochProgress | None = None  # a resumed epoch in progress
    rng: dict[str, Any] | None = None     # RNG state to start the next epoch from (resume)
    resumed_from: str | None = None
    run_id: str | None = None             # the tracking run a resumed training continues


def build_run(hp: Any, train_split: Any, valid_split: Any, device: torch.device, dist: DistInfo,
              model_overrides: dict[str, Any] | None = None) -> TrainingRun:
    """Loaders, model, optimizer and step settings for `hp`; `model_overrides` (benchmarks) change the
    variant's config."""
    from steps.data.loading import build_loaders
    from steps.models import create_model, variant_config

    spec = get_spec(hp.model)
    task = task_for(spec.task)
    resident = bool(getattr(hp, "resident_data", False))
    if resident and device.type != "cuda":
        raise StepError(f"hyperparameter 'resident_data': device-resident training data needs a CUDA device, "
                        f"and this run trains on {device.type}\nset resident_data=false (or train on a GPU)")
    train_loader: Any
    train_loader, valid_loader = build_loaders(
        train_split, valid_split, task=cast("LoaderTask", task.name), batch_size=hp.batch_size, num_workers=hp.num_workers,
        augment=hp.augment, input_mode=hp.input_mode, seed=hp.seed, distributed=dist.enabled,
        pin_memory=device.type == "cuda", max_train_rows=hp.max_train_rows, max_valid_rows=hp.max_valid_rows,
        camera=hp.camera_augment())
    if resident:
        from steps.data.resident import resident_loader

        # Validation stays on the loader (read once per epoch, never augmented).
        train_loader = resident_loader(train_split, device, task=task.name, batch_size=hp.batch_size,
                                       augment=hp.augment, input_mode=hp.input_mode, seed=hp.seed,
                                       distributed=dist.enabled, max_rows=hp.max_train_rows,
                                       camera=hp.camera_augment())
    if len(train_loader) == 0 or len(valid_loader) == 0:
        raise StepError(f"{'train' if len(train_loader) == 0 else 'validation'}: no batches to run "
                        f"(rows per process < 1); use more rows or fewer processes")
    # The whole config: the checkpoint describes itself.
    model_config = {**variant_config(hp.model), **(model_overrides or {})}
    model = create_model(hp.model, **model_config)
    compiled = prepare_model(model, device, channels_last=hp.channels_last, compile_model=hp.compile)
    optimizer = build_optimizer(model, hp)
    average = build_weight_average(model, hp.ema_decay)  # a copy on the device, after channels_last
    precision = resolve_precision(hp.amp, device)
    config = StepConfig(device=device, precision=precision, scaler=precision.grad_scaler(device),
                        accumulation_steps=hp.accumulation_steps, clip_grad_norm=hp.clip_grad_norm,
                        channels_last=hp.channels_last, check_finite_every=1 if device.type == "cpu" else 25)
    schedule = build_scheduler(optimizer, hp, optimizer_steps_per_epoch(len(train_loader), hp.accumulation_steps))
    return TrainingRun(hp=hp, hyperparameters=hp.model_dump(mode="json"), model_name=hp.model,
                       model_config=model_config, task=task, dist=dist, model=model,
                       train_model=wrap_ddp(compiled, dist, device),
                       eval_model=average.module if average is not None else compiled,
                       loss_fn=task.build_loss(hp).to(device), optimizer=optimizer, schedule=schedule,
                       config=config, train_loader=train_loader, valid_loader=valid_loader, average=average)


# -- resume -------------------------------------------------------------------------------------------

def find_resume_state(run: TrainingRun, checkpoint_dir: Path) -> dict[str, Any] | None:
    """Rank 0 picks the furthest valid resume point; every rank receives the same state."""
    state = None
    if run.dist.is_primary:
        state = ckpt.load_resume_state(checkpoint_dir, run.model_name, run.model_config)
        if state is None:
            (checkpoint_dir / ckpt.best_checkpoint_name(run.model_name)).unlink(missing_ok=True)  # stale
    return broadcast_object(state, run.config.device)


def apply_resume(run: TrainingRun, state: dict[str, Any] | None) -> LoopState:
    """Load model, optimizer, schedule, scaler and loop state; restore the RNGs (exact resume)."""
    if state is None:
        return LoopState()
    check_resume_settings(run.hp, state, run.hyperparameters)
    unwrap(run.model).load_state_dict(state["state_dict"], strict=True)
    run.optimizer.load_state_dict(state["optimizer"])
    run.schedule.load_state_dict(state["scheduler"])
    if run.config.scaler is not None and state.get("scaler"):
        run.config.scaler.load_state_dict(state["scaler"])
    resume_average(run, state)
    loop = LoopState(epoch=state["epoch"], best_metric=state["best_metric"], best_epoch=state["best_epoch"],
                     epochs_without_improvement=state["epochs_without_improvement"],
                     history=list(state["history"]), resumed_from=state.get("_path"), run_id=state.get("run_id"))
    if state.get("partial"):
        loop.partial = new_progress(run.task, run.config.device)
        loop.partial.load_state_dict(state["partial"])  # its RNG state is restored after skipping
    else:
        loop.rng = state["rng"]  # restored right before the next epoch starts
    steps_per_epoch = optimizer_steps_per_epoch(len(run.train_loader), run.hp.accumulation_steps)
    in_epoch = optimizer_steps_per_epoch(loop.partial.batches_done, run.hp.accumulation_steps) if loop.partial else 0
    run.schedule.resume_at(loop.epoch * steps_per_epoch + in_epoch)
    where = (f"epoch {loop.epoch + 1} batch {loop.partial.batches_done + 1}" if loop.partial
             else f"epoch {loop.epoch + 1}")
    log.info("resuming from %s: continuing at %s (best %s %.4f at epoch %d)", loop.resumed_from, where,
             PRIMARY_METRIC, loop.best_metric, loop.best_epoch)
    return loop


def resume_average(run: TrainingRun, state: dict[str, Any]) -> None:
    """The weight average goes on from the checkpoint's; a checkpoint without one restarts it."""
    if run.average is None:
        return
    if state.get("weight_average"):
        try:
            run.average.load_state_dict(state["weight_average"])
        except (RuntimeError, TypeError, ValueError, KeyError) as error:
            raise StepError(f"checkpoint {state.get('_path')}: its weight average does not fit the model "
                            f"({type(error).__name__})\nmove the checkpoint away to start afresh") from error
    else:
        log.warning("ema_decay: the checkpoint holds no weight average; the average restarts from its weights")


# The optimizer's and the schedule's state come back from a resume checkpoint with these settings in
# them (learning rates, decay, momentum buffers, the schedule's position and shape).
RESTORED_ON_RESUME = frozenset({"optimizer", "lr", "weight_decay", "momentum", "scheduler", "warmup_epochs",
                                "step_size", "step_gamma", "plateau_patience"})


def check_resume_settings(hp: Any, state: dict[str, Any], current: dict[str, Any] | None = None) -> None:
    """Warn about settings (`current`: hp as JSON, when already resolved) that differ from the
    checkpoint's; refuse what cannot continue."""
    saved = state.get("hyperparameters", {})
    current = hp.model_dump(mode="json") if current is None else current
    changed = sorted(k for k in current if k in saved and saved[k] != current[k])
    fixed = [k for k in changed if k in RESTORED_ON_RESUME]
    if fixed:
        others = "".join(f", '{k}' too" for k in fixed[1:])
        keep = ", ".join(f"{k}={saved[k]!r}" for k in fixed)
        raise StepError(f"hyperparameter '{fixed[0]}': {current[fixed[0]]!r} differs from the checkpoint's "
                        f"{saved[fixed[0]]!r}{others}; a resumed run continues the checkpoint's optimizer and "
                        f"schedule, which would ignore it\nkeep {keep} to resume, or start afresh with an empty "
                        f"checkpoints folder")
    if changed:
        log.warning("resuming with settings that differ from the checkpoint's: %s",
                    ", ".join(f"{k} {saved[k]!r} -> {current[k]!r}" for k in changed))
    for key in ("epochs", "batch_size", "accumulation_steps") if hp.scheduler == "onecycle" else ():
        if saved.get(key) not in (None, current[key]):
            raise StepError(f"hyperparameter '{key}': {current[key]} differs from the checkpoint's {saved[key]}, "
                            f"and the onecycle schedule cannot be stretched\nkeep {key}={saved[key]} to resume, "
                            f"or start afresh with an empty checkpoints folder")


def training_state(run: TrainingRun, loop: LoopState, metrics: dict[str, Any], run_id: str | None,
                   partial: EpochProgress | None = None) -> dict[str, Any]:
    """The full resume state: a model checkpoint plus optimizer, schedule, scaler, RNGs, loop state."""
    payload = ckpt.model_payload(run.model, model_name=run.model_name, model_config=run.model_config,
                                 epoch=loop.epoch, metrics=metrics, input_mode=run.hp.input_mode,
                                 hyperparameters=run.hyperparameters, run_id=run_id)
    payload.update(
        optimizer=run.optimizer.state_dict(), scheduler=run.schedule.state_dict(),
        scaler=run.config.scaler.state_dict() if run.config.scaler is not None else None,
        rng=rng_state(), best_metric=loop.best_metric, best_epoch=loop.best_epoch,
        epochs_without_improvement=loop.epochs_without_improvement, history=list(loop.history),
        partial=partial.state_dict() if partial is not None else None, world_size=run.dist.world_size,
        weight_average=run.average.state_dict() if run.average is not None else None)
    return payload


# -- the epoch loop -------------------------------------------------------------------------------

def run_epoch(run: TrainingRun, loop: LoopState, epoch: int, stop: StopRequest, profiler: TrainingProfiler,
              monitor: ResourceMonitor) -> tuple[dict[str, Any] | None, EpochProgress]:
    """Train one epoch and evaluate; (None, progress) when SIGTERM stopped it mid-epoch."""
    from steps.data.loading import set_loader_epoch

    set_loader_epoch(run.train_loader, epoch)
    set_epoch: Callable[[int, int], None] | None = getattr(run.loss_fn, "set_epoch", None)
    if set_epoch is not None:
        set_epoch(epoch - 1, run.hp.epochs)  # RITnet: Dice/surface balance by epoch
    monitor.start_epoch()
    started = time.perf_counter()
    progress, loop.partial = loop.partial, None
    images_before = progress.images if progress is not None else 0

    def after_step() -> None:
        run.after_step()
        profiler.step()

    progress = train_one_epoch(
        run.train_model, run.task, run.loss_fn, run.train_loader, run.optimizer, run.schedule, run.config,
        epoch, progress=progress, should_stop=lambda: any_rank(stop.requested, run.config.device),
        on_step=after_step,
        meter=EpochMeter(epoch, run.hp.epochs, len(run.train_loader), run.hp.log_every_steps, enabled=run.dist.is_primary))
    if progress.stopped:
        return None, progress
    train_values = summarize_epoch(run.task, progress, "train")
    train_seconds = time.perf_counter() - started
    barrier()
    valid_values = evaluate(run.eval_model, run.task, run.loss_fn, run.valid_loader, run.config)
    row = {"epoch": epoch, **train_values, **valid_values, "lr": current_lr(run.optimizer),
           "epoch_seconds": time.perf_counter() - started,
           "images_per_second": (progress.images - images_before) * run.dist.world_size / max(train_seconds, 1e-9),
           **monitor.end_epoch()}
    return row, progress


def record_epoch(run: TrainingRun, loop: LoopState, row: dict[str, Any]) -> bool:
    """Update best / early-stopping state and the epoch-level schedule; True when this epoch is best."""
    value = row[PRIMARY_METRIC]
    improved = math.isfinite(value) and value > loop.best_metric
    loop.epoch = row["epoch"]
    if improved:
        loop.best_metric, loop.best_epoch, loop.epochs_without_improvement = value, loop.epoch, 0
    else:
        loop.epochs_without_improvement += 1
    row["best_valid_iou"] = loop.best_metric
    loop.history.append(row)
    run.schedule.after_epoch(value if math.isfinite(value) else -math.inf)
    return improved


def early_stop_due(hp: Any, loop: LoopState) -> bool:
    patience = hp.early_stopping_patience
    return bool(patience) and loop.epochs_without_improvement >= patience


def save_epoch(run: TrainingRun, loop: LoopState, row: dict[str, Any], improved: bool, paths: TrainingPaths,
               tracker: Any, last_epoch: bool) -> None:
    """Rank 0: best model, the epoch checkpoint (or the `last` resume point), top-k pruning."""
    hp, run_id = run.hp, tracker.run_id
    if improved:
        ckpt.save_best(run.kept_model, paths.checkpoint_dir, model_name=run.model_name, model_config=run.model_config,
                       epoch=loop.epoch, metrics=row, input_mode=hp.input_mode,
                       hyperparameters=run.hyperparameters, run_id=run_id)
    epoch_file = loop.epoch % hp.checkpoint_every == 0 or last_epoch
    path = ckpt.save_training_state(paths.checkpoint_dir, run.model_name, training_state(run, loop, row, run_id),
                                    epoch_file=epoch_file)
    if epoch_file:
        ckpt.prune_epoch_checkpoints(paths.checkpoint_dir, run.model_name, hp.keep_top_k, PRIMARY_METRIC)
        tracker.log_artifact(path, artifact_path="checkpoints")


def log_epoch(run: TrainingRun, row: dict[str, Any], improved: bool) -> None:
    """One `[metrics] name=value ...` line per epoch (steps.train.metric_lines): what SageMaker scrapes."""
    log.info("%s epochs=%d%s", metric_line(row), run.hp.epochs, "  (best)" if improved else "")


def stop_for_sigterm(run: TrainingRun, loop: LoopState, paths: TrainingPaths, tracker: Any,
                     partial: EpochProgress | None) -> NoReturn:
    """Save the resume point (rank 0) and leave with TrainingInterrupted (exit code 143).

    The flag is read after optimizer steps, so the saved point is mid-epoch (`partial`) and a
    SIGTERM during evaluation or bookkeeping stops after the next epoch's first step. An epoch of a
    single optimizer step has no such point: there the flag is read after the epoch (`partial` None).
    """
    if run.dist.is_primary:
        metrics = loop.history[-1] if loop.history else {}
        ckpt.save_training_state(paths.checkpoint_dir, run.model_name,
                                 training_state(run, loop, metrics, tracker.run_id, partial), epoch_file=False)
    barrier()
    where = (f"at epoch {loop.epoch + 1} after batch {partial.batches_done}" if partial is not None
             else f"after epoch {loop.epoch}")
    raise TrainingInterrupted(
        f"training stopped by SIGTERM {where}; resume point saved in {paths.checkpoint_dir}\n"
        f"run the step again with the same checkpoints folder to continue")


def fit(run: TrainingRun, loop: LoopState, paths: TrainingPaths, tracker: Any, stop: StopRequest,
        on_epoch_end: EpochCallback | None = None) -> LoopState:
    """The epoch loop from `loop.epoch + 1` to `hp.epochs`; returns the final loop state."""
    hp, device = run.hp, run.config.device
    metrics_log = MetricsLog(paths.metrics_dir, enabled=run.dist.is_primary)
    monitor = ResourceMonitor(device)
    profiler = TrainingProfiler(paths.metrics_dir, hp.profile_steps, device, enabled=hp.profile and run.dist.is_primary)
    if loop.partial is not None or loop.epoch:
        metrics_log.write(loop.history)
    if loop.rng is not None:
        set_rng_state(loop.rng)
    # An epoch of one optimizer step has no mid-epoch point to stop at: stop after the epoch instead.
    single_step = optimizer_steps_per_epoch(len(run.train_loader), hp.accumulation_steps) == 1
    try:
        with profiler:
            for epoch in range(loop.epoch + 1, hp.epochs + 1):
                if early_stop_due(hp, loop):
                    break
                row, progress = run_epoch(run, loop, epoch, stop, profiler, monitor)
                if row is None:
                    stop_for_sigterm(run, loop, paths, tracker, progress)
                epoch_rng = rng_state()  # the state the next epoch starts from, resumed or not
                improved = record_epoch(run, loop, row)
                if run.dist.is_primary:
                    save_epoch(run, loop, row, improved, paths, tracker, epoch == hp.epochs or early_stop_due(hp, loop))
                    metrics_log.write(loop.history)
                    tracker.log_metrics(numeric(row), step=epoch)
                    log_epoch(run, row, improved)
                barrier()
                if on_epoch_end is not None:
                    on_epoch_end(epoch, row)
                set_rng_state(epoch_rng)  # logging and tracking never shift the next epoch's randomness
                if single_step and epoch < hp.epochs and not early_stop_due(hp, loop) \
                        and any_rank(stop.requested, device):
                    stop_for_sigterm(run, loop, paths, tracker, None)
    finally:
        monitor.close()
    if early_stop_due(hp, loop) and loop.epoch < hp.epochs:
        log.info("early stopping: %d epochs without improvement of %s (best %.4f at epoch %d)",
                 loop.epochs_without_improvement, PRIMARY_METRIC, loop.best_metric, loop.best_epoch)
    return loop


def numeric(row: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in row.items() if isinstance(v, (int, float)) and math.isfinite(v) and k != "epoch"}


# -- the whole run ---------------------------------------------------------------------------------

def resolved_config(run: TrainingRun, loop: LoopState) -> dict[str, Any]:
    """Everything that decided this run: hyperparameters, model, device, precision, data, versions."""
    from steps.models import count_parameters

    return {"hyperparameters": run.hyperparameters, "model_name": run.model_name,
            "model_type": get_spec(run.model_name).model_type, "model_config": run.model_config,
            "parameters": count_parameters(run.model), "device": describe_device(run.config.device),
            "precision": run.config.precision.name, "world_size": run.dist.world_size,
            "train_batches_per_epoch": len(run.train_loader), "valid_batches": len(run.valid_loader),
            "train_rows": len(run.train_loader.dataset), "valid_rows": len(run.valid_loader.dataset),
            "schedule": run.schedule.name, "resumed_from": loop.resumed_from, "versions": package_versions()}


def finish_outputs(run: TrainingRun, loop: LoopState, paths: TrainingPaths, tracker: Any,
                   config: dict[str, Any]) -> dict[str, Any]:
    """Rank 0: best model + card into the model output, config beside it, artifacts, registry."""
    card = ckpt.write_model_output(paths.checkpoint_dir, paths.model_dir, run.model_name)
    write_resolved_config(config, paths.model_dir, paths.metrics_dir)
    best_path = paths.model_dir / card["checkpoint"]
    tracker.log_artifact(best_path, artifact_path="model")
    for name in sorted(p.name for p in paths.metrics_dir.iterdir() if p.is_file()):
        tracker.log_artifact(paths.metrics_dir / name, artifact_path="metrics")
    from steps.models import load_checkpoint

    model, _ = load_checkpoint(best_path)
    log_overlays(run, tracker, model, step=loop.best_epoch)
    registered = None
    if run.hp.register_model:
        from steps.tracking.mlflow_backend import default_registered_name

        name = run.hp.registered_model_name or default_registered_name(run.model_name)
        registered = tracker.register_model(
            model, best_path, name=name, input_example=torch.zeros(get_spec(run.model_name).input_shape(2)).numpy(),
            tags={**get_spec(run.model_name).tracking_tags, "best_epoch": str(loop.best_epoch),
                  PRIMARY_METRIC: f"{loop.best_metric:.4f}", "input_mode": run.hp.input_mode})
    return {"model_card": card, "registered": registered}


def draw_augmented_samples(run: TrainingRun, folder: Path, count: int = 8) -> Path | None:
    """augmented_samples.png in the metrics output: epoch 1's first rows through the training
    augmentations (they depend only on seed, epoch and row, so drawing them changes no batch)."""
    dataset = run.train_loader.dataset
    keys = [(1, position) for position in range(min(count, len(dataset)))]
    if not keys:
        return None
    batch = {name: value.cpu() if isinstance(value, torch.Tensor) else value  # resident data: on the device
             for name, value in dataset.__getitems__(keys).items()}
    return augmented_grid(batch, folder / AUGMENTED)


def log_overlays(run: TrainingRun, tracker: Any, model: nn.Module, step: int, count: int = 4) -> None:
    """A few validation frames with target (green) and the best model's prediction (red)."""
    if run.task.name != "segmentation":
        return
    batch = next(iter(run.valid_loader))
    images = normalize_input(batch["image"][:count])  # the loader ships uint8 frames
    with torch.inference_mode():
        predictions = predicted_classes(model.eval()(images))
    tracker.log_images({f"valid_{Path(name).stem}": overlay(image[0].numpy(), label.numpy(), pred.numpy())
                        for name, image, label, pred in zip(batch["filename"], images, batch["label"], predictions)},
                       step=step)


def summarize_run(run: TrainingRun, loop: LoopState, seconds: float, config: dict[str, Any]) -> dict[str, Any]:
    best_row = next((row for row in loop.history if row["epoch"] == loop.best_epoch), {})
    speeds = [row["images_per_second"] for row in loop.history if "images_per_second" in row]
    return {"model_name": run.model_name, "model_type": config["model_type"], "parameters": config["parameters"],
            "best_valid_iou": loop.best_metric, "best_epoch": loop.best_epoch, "epochs_trained": loop.epoch,
            "epochs": run.hp.epochs, "stopped_early": loop.epoch < run.hp.epochs, "seconds": round(seconds, 3),
            "images_per_second": sum(speeds) / len(speeds) if speeds else None, "device": config["device"],
            "world_size": run.dist.world_size, "resumed_from": loop.resumed_from,
            "best_metrics": numeric(best_row)}


def train(hp: Any, *, train_split: Any, valid_split: Any, paths: TrainingPaths,
          on_epoch_end: EpochCallback | None = None, run_name: str | None = None) -> dict[str, Any]:
    """Train `hp.model` on the two splits; outputs under `paths`; returns the run summary."""
    from steps.tracking import open_tracker

    started = time.perf_counter()
    dist = dist_info_from_env()
    device = select_device(hp.device, dist.local_rank)
    with process_group(dist, device), StopRequest() as stop, torch_threads(hp.cpu_threads):
        seed_everything(hp.seed)
        configure_backends(device, hp.deterministic)
        run = build_run(hp, train_split, valid_split, device, dist)
        loop = apply_resume(run, find_resume_state(run, paths.checkpoint_dir))
        config = resolved_config(run, loop)
        if dist.is_primary:
            log.info("training %s (%s, %d parameters) on %s, %s, world size %d: %d train / %d validation rows",
                     run.model_name, config["model_type"], config["parameters"], config["device"],
                     config["precision"], dist.world_size, config["train_rows"], config["valid_rows"])
            write_resolved_config(config, paths.metrics_dir)
            draw_augmented_samples(run, paths.metrics_dir)
        spec = get_spec(run.model_name)
        with open_tracker(hp, run_name=run_name or f"{hp.model}-seed{hp.seed}", model_type=spec.model_type,
                          architecture=run.model_name, output_dir=paths.metrics_dir,
                          enabled=dist.is_primary, resume_run_id=loop.run_id) as tracker:
            tracker.log_params({**run.hyperparameters, "parameters": config["parameters"],
                                "device": config["device"], "precision": config["precision"],
                                "world_size": dist.world_size})
            loop = fit(run, loop, paths, tracker, stop, on_epoch_end)
            barrier()
            summary = summarize_run(run, loop, time.perf_counter() - started, config)
            if dist.is_primary:
                summary.update(finish_outputs(run, loop, paths, tracker, config), run_id=tracker.run_id)
        barrier()
    return summary


def run_training_step(hp: Any, io: Any) -> dict[str, Any]:
    """The body of train-seg and train-ellipse: splits from the channels (or hf_repo), train, annotate."""
    from steps.data.loading import load_split
    from steps.train.provenance import add_training_data, training_data

    train_split = load_split(io.channel("train"), hf_repo=hp.hf_repo, split="train", data_dir=hp.data_dir)
    valid_split = load_split(io.channel("validation"), hf_repo=hp.hf_repo, split="validation", data_dir=hp.data_dir)
    paths = TrainingPaths(model_dir=io.output("model"), metrics_dir=io.output("metrics"),
                          checkpoint_dir=io.checkpoints)
    summary = train(hp, train_split=train_split, valid_split=valid_split, paths=paths)
    if "model_card" in summary:
        summary["model_card"] = add_training_data(paths.model_dir / ckpt.MODEL_CARD,
                                                  training_data(io.channel("train"), hp.hf_repo, hp.max_train_rows))
        io.annotate("model", model_card=summary["model_card"], best_valid_iou=summary["best_valid_iou"])
        io.annotate("metrics", rows=summary["epochs_trained"], best_metrics=summary["best_metrics"])
    return summary
