"""The Optuna study behind the tune step: sampler, pruner, storage, trial objective and results.

A trial is a train-seg run with the study's fixed settings plus the sampled ones. It reports the
validation mIoU after every epoch (`trial.report`), and the pruner stops it early when it trails
the other trials at the same epoch. Studies live in an RDB storage (sqlite locally, any SQLAlchemy
URL in a cluster; steps.train.study_storage): workers that share the URL and study name add their
trials to one study.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, Trial, TrialState

from steps.secrets import redact
from steps.train.signals import TrainingInterrupted
from steps.train.study_storage import open_storage

log = logging.getLogger(__name__)

OBJECTIVE = "valid_iou"  # validation mIoU over both classes, maximized
TRIALS_DIR = "trials"
BEST_PARAMS = "best_params.json"
BEST_HYPERPARAMETERS = "best_hyperparameters.json"
BEST_ARGS = "best_params.args"
TRIALS_CSV = "trials.csv"
STUDY_JSON = "study.json"
# A trial failing on its own (NaN loss, out of memory, a bad combination of settings) is recorded as
# FAIL and the study goes on; anything else stops the study.
TRIAL_ERRORS = (RuntimeError, ValueError, FloatingPointError, ArithmeticError)
RESUME_OF = "resume_of"  # user attribute: the trial whose checkpoints this trial continues
WORKER = "worker"  # user attribute: host:pid of the worker that ran the trial (pods sharing a study)


class TrialFailed(Exception):
    """One trial failed on its own; the study records it as FAIL and goes on."""

EpochCallback = Callable[[int, dict[str, Any]], None]
# settings of one trial, its checkpoint folder, the per-epoch callback -> the trial's final metrics
TrialTrainer = Callable[[Any, Path, EpochCallback], dict[str, Any]]


class SearchParam(Protocol):
    """One searched hyperparameter's distribution (tune's contract declares them)."""

    type: str
    low: float | None
    high: float | None
    log: bool
    step: float | None
    choices: list[Any] | None

    def contains(self, value: Any) -> bool: ...


class StudySettings(Protocol):
    """What the search needs of its settings; tune's contract provides them (the library never
    imports a contract). `trial_settings` makes one trial's training settings."""

    study_name: str
    search_space: Mapping[str, SearchParam]
    enqueue_trials: Sequence[Mapping[str, Any]]
    n_trials: int
    timeout_s: float | None
    epochs: int
    sampler: str
    sampler_seed: int | None
    pruner: str
    pruner_startup_trials: int
    pruner_warmup_epochs: int
    heartbeat_s: int
    heartbeat_grace_s: int

    def trial_settings(self, params: Mapping[str, Any]) -> Any: ...


def make_sampler(hp: StudySettings, trials_before: int = 0) -> optuna.samplers.BaseSampler:
    """The configured sampler. Its seed moves on by the trials this run's folder already ran: a rerun
    with the same `sampler_seed` (a resume, a KFP retry) would otherwise draw the same parameters
    again. (Another worker joining the study keeps its seed as given.)"""
    seed = None if hp.sampler_seed is None else hp.sampler_seed + trials_before
    if hp.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # constant_liar: workers sharing the study do not all sample next to the same running trial.
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def make_pruner(hp: StudySettings) -> optuna.pruners.BasePruner:
    if hp.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=hp.pruner_startup_trials,
                                           n_warmup_steps=hp.pruner_warmup_epochs)
    if hp.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=hp.epochs)
    return optuna.pruners.NopPruner()


def open_study(hp: StudySettings, storage: str | optuna.storages.BaseStorage,
               trials_dir: Path | None = None) -> optuna.Study:
    """Create the study, or join it when another run or worker already made it; `trials_dir`: where
    this run's trials keep their checkpoints (earlier trials there make this a rerun)."""
    if isinstance(storage, str):
        storage = open_storage(storage, heartbeat_s=hp.heartbeat_s, grace_s=hp.heartbeat_grace_s)
    study = optuna.create_study(storage=storage, study_name=hp.study_name, direction="maximize",
                                sampler=make_sampler(hp), pruner=make_pruner(hp), load_if_exists=True)
    if hp.sampler_seed is not None and trials_dir is not None:
        ours = str(Path(trials_dir)) + os.sep
        before = sum(1 for trial in study.get_trials(deepcopy=False)
                     if str(trial.user_attrs.get("checkpoint_dir", "")).startswith(ours))
        if before:
            study.sampler = make_sampler(hp, before)
            log.info("study %s: %d trial(s) ran from %s before; sampler seed %d + %d", hp.study_name, before,
                     trials_dir, hp.sampler_seed, before)
    for params in hp.enqueue_trials:
        study.enqueue_trial(dict(params), skip_if_exists=True)
    return study


def suggest(trial: Trial, space: Mapping[str, SearchParam]) -> dict[str, Any]:
    """One value per searched hyperparameter, from its distribution."""
    params: dict[str, Any] = {}
    for name, param in space.items():
        if param.type == "categorical":
            params[name] = trial.suggest_categorical(name, list(param.choices or []))
            continue
        if param.low is None or param.high is None:
            raise ValueError(f"search_space.{name}: {param.type} needs 'low' and 'high'")
        if param.type == "int":
            params[name] = trial.suggest_int(name, int(param.low), int(param.high),
                                             step=int(param.step or 1), log=param.log)
        else:
            params[name] = trial.suggest_float(name, param.low, param.high, step=param.step, log=param.log)
    return params


def trial_settings(hp: StudySettings, params: Mapping[str, Any]) -> Any:
    """Training settings of one trial: the study's fixed settings with the sampled values."""
    return hp.trial_settings(params)


class PruningReporter:
    """The per-epoch callback of a trial: report validation mIoU, stop the trial when pruned."""

    def __init__(self, trial: Trial):
        self.trial = trial
        self.values: list[float] = []

    def __call__(self, epoch: int, metrics: dict[str, Any]) -> None:
        value = float(metrics[OBJECTIVE])
        if not math.isfinite(value):
            raise FloatingPointError(f"trial {self.trial.number}: {OBJECTIVE} is {value} at epoch {epoch}")
        self.trial.report(value, step=epoch)
        self.values.append(value)
        if self.trial.should_prune():
            log.info("trial %d pruned at epoch %d (%s %.4f)", self.trial.number, epoch, OBJECTIVE, value)
            raise optuna.TrialPruned(f"{OBJECTIVE} {value:.4f} at epoch {epoch}")


def checkpoint_key(trial: Trial) -> int:
    """The trial whose checkpoint folder this trial trains in: its own, or the one it continues."""
    if RESUME_OF in trial.user_attrs:
        return int(trial.user_attrs[RESUME_OF])
    frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retried = RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
    return int(retried if retried is not None else trial.number)


def worker_name() -> str:
    """host:pid: tells apart the pods (hostname) and processes sharing one study."""
    return f"{socket.gethostname()}:{os.getpid()}"


def make_objective(hp: StudySettings, train: TrialTrainer, trials_dir: Path,
                   tracking: StudyTracking | None = None) -> Callable[[Trial], float]:
    """The study's objective: train one trial into its own checkpoint folder, return its best mIoU."""

    def objective(trial: Trial) -> float:
        params = suggest(trial, hp.search_space)
        settings = trial_settings(hp, params)
        checkpoint_dir = Path(trials_dir) / f"trial_{checkpoint_key(trial):04d}"
        trial.set_user_attr("checkpoint_dir", str(checkpoint_dir))
        trial.set_user_attr(WORKER, worker_name())
        log.info("trial %d: %s", trial.number, json.dumps(params))
        reporter, started = PruningReporter(trial), time.perf_counter()

        def on_epoch_end(epoch: int, metrics: dict[str, Any]) -> None:
            if tracking is not None:
                tracking.remember_trial_run(trial.number)
            reporter(epoch, metrics)

        try:
            metrics = train(settings, checkpoint_dir, on_epoch_end)
        except TrainingInterrupted:
            # SIGTERM stops the whole step; the next run continues this trial from its checkpoints.
            trial.set_user_attr("error", "interrupted by SIGTERM; the next run of the study continues it")
            trial.study.enqueue_trial(params, user_attrs={RESUME_OF: checkpoint_key(trial)})
            raise
        except TRIAL_ERRORS as error:
            reason = redact(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
            trial.set_user_attr("error", reason[:500])
            raise TrialFailed(f"trial {trial.number}: {reason}") from error
        finally:
            trial.set_user_attr("seconds", round(time.perf_counter() - started, 3))
            trial.set_user_attr("epochs_run", len(reporter.values))
        value = best_reported(trial.number, reporter.values, metrics)
        log.info("trial %d: %s %.4f in %.1fs", trial.number, OBJECTIVE, value, time.perf_counter() - started)
        return value

    return objective


def best_reported(number: int, reported: list[float], metrics: dict[str, Any]) -> float:
    """The trial's score: its best validation mIoU over epochs (what its best checkpoint holds)."""
    values = list(reported)
    if metrics.get(f"best_{OBJECTIVE}") is not None:
        values.append(float(metrics[f"best_{OBJECTIVE}"]))
    if not values:
        raise ValueError(f"trial {number}: training reported no {OBJECTIVE}")
    return max(values)


def run_study(study: optuna.Study, hp: StudySettings, train: TrialTrainer, trials_dir: Path,
              tracking: StudyTracking | None = None) -> list[FrozenTrial]:
    """Run this worker's trials; returns them (the study may also hold other workers' trials)."""
    finished: list[int] = []
    callbacks = [lambda _, trial: finished.append(trial.number)]
    callbacks += [tracking.after_trial] if tracking is not None else []
    study.optimize(make_objective(hp, train, trials_dir, tracking), n_trials=hp.n_trials, timeout=hp.timeout_s,
                   catch=(TrialFailed,), callbacks=callbacks, gc_after_trial=True)
    return [t for t in study.get_trials() if t.number in finished]


def count_states(trials: list[FrozenTrial]) -> dict[str, int]:
    return {state.name.lower(): sum(t.state == state for t in trials)
            for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)}


def trial_rows(trials: list[FrozenTrial]) -> list[dict[str, Any]]:
    """One row per trial: number, state, value, pruned, params (JSON), worker, time, epochs, error."""
    return [{"number": t.number, "state": t.state.name, "value": t.value,
             "pruned": t.state == TrialState.PRUNED, "params": json.dumps(t.params, sort_keys=True),
             "worker": t.user_attrs.get(WORKER, ""),
             "seconds": t.user_attrs.get("seconds"), "epochs_run": t.user_attrs.get("epochs_run"),
             "last_reported": t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None,
             "error": t.user_attrs.get("error", "")}
            for t in trials]


def write_trials_csv(path: Path, trials: list[FrozenTrial]) -> None:
    rows = trial_rows(trials)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["number"])
        writer.writeheader()
        writer.writerows(rows)


def fits_space(trial: FrozenTrial, space: Mapping[str, SearchParam]) -> bool:
    """The trial searched exactly these keys, within these distributions (an earlier search in the
    same stored study may have used another space: its best must not feed train-seg now)."""
    return set(trial.params) == set(space) and all(space[k].contains(v) for k, v in trial.params.items())


def study_summary(study: optuna.Study, worker_trials: list[FrozenTrial], storage: str,
                  space: Mapping[str, SearchParam]) -> dict[str, Any]:
    """Best trial of the current search space over the whole study; counts for the whole study and
    for this worker."""
    everything = study.get_trials(deepcopy=False)
    completed = [t for t in everything if t.state == TrialState.COMPLETE and fits_space(t, space)]
    best = max(completed, key=lambda t: t.value if t.value is not None else -math.inf) if completed else None
    return {"study_name": study.study_name, "storage": storage, "objective": OBJECTIVE, "direction": "maximize",
            "best_value": best.value if best else None, "best_trial": best.number if best else None,
            "best_params": best.params if best else {}, "counts": count_states(everything),
            "other_space_trials": sum(not fits_space(t, space) for t in everything),
            "this_run": {"trials": [t.number for t in worker_trials], "counts": count_states(worker_trials)}}


def best_args(params: dict[str, Any]) -> str:
    """train-seg command-line flags for the best parameters (`$(cat best_params.args)`)."""
    flags = []
    for name, value in params.items():
        flag = name.replace("_", "-")
        if isinstance(value, bool):  # a bool setting: --augment / --no-augment
            flags.append(f"--{flag}" if value else f"--no-{flag}")
        else:
            flags.append(f"--{flag} {value if isinstance(value, str) else json.dumps(value)}")
    return " ".join(flags)


def write_study_outputs(folder: Path, study: optuna.Study, hp: StudySettings,
                        worker_trials: list[FrozenTrial], storage: str) -> dict[str, Any]:
    """best_params.json, best_hyperparameters.json, best_params.args, trials.csv, study.json."""
    summary = study_summary(study, worker_trials, storage, hp.search_space)
    folder.mkdir(parents=True, exist_ok=True)
    write_trials_csv(folder / TRIALS_CSV, study.get_trials())
    (folder / STUDY_JSON).write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    best = summary["best_params"]
    (folder / BEST_PARAMS).write_text(json.dumps(best, indent=2) + "\n", encoding="utf-8")
    (folder / BEST_ARGS).write_text(best_args(best) + "\n", encoding="utf-8")
    full = trial_settings(hp, best).model_dump(mode="json")
    (folder / BEST_HYPERPARAMETERS).write_text(json.dumps(full, indent=2) + "\n", encoding="utf-8")
    return summary


@contextmanager
def study_logging() -> Iterator[None]:
    """Optuna's own per-trial INFO lines duplicate ours: keep its warnings only while we run."""
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(previous)


def engine_trainer(train_split: Any, valid_split: Any, study_dir: Path, study_name: str) -> TrialTrainer:
    """Trials through the training engine: checkpoints per trial, model and metrics under the study."""
    from steps.train.fit import TrainingPaths, train

    def train_trial(settings: Any, checkpoint_dir: Path, on_epoch_end: EpochCallback) -> dict:
        trial_dir = Path(study_dir) / TRIALS_DIR / checkpoint_dir.name
        paths = TrainingPaths(model_dir=trial_dir / "model", metrics_dir=trial_dir / "metrics",
                              checkpoint_dir=checkpoint_dir)
        for folder in (paths.model_dir, paths.metrics_dir, paths.checkpoint_dir):
            folder.mkdir(parents=True, exist_ok=True)
        return train(settings, train_split=train_split, valid_split=valid_split, paths=paths,
                     on_epoch_end=on_epoch_end, run_name=f"{study_name}-{checkpoint_dir.name}")

    return train_trial


class StudyTracking:
    """The study's MLflow side: a parent run per worker, each trial a nested run tagged with its state.

    The trials' runs are started by the engine's tracker while the parent run is active, which
    nests them; pruned trials' runs end KILLED (the engine ends them FAILED on the exception).
    """

    def __init__(self, tracker: Any):
        self.tracker = tracker
        self.trial_runs: dict[int, str] = {}

    def remember_trial_run(self, trial_number: int) -> None:
        """Called inside a trial (its run is the active one): note the run to tag it later."""
        if self.tracker.run_id is None:
            return
        import mlflow

        active = mlflow.active_run()
        if active is not None and active.info.run_id != self.tracker.run_id:
            self.trial_runs[trial_number] = active.info.run_id

    def after_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Optuna callback: the trial's value on the parent, its state on its own run."""
        if trial.value is not None:
            self.tracker.log_metrics({f"trial_{OBJECTIVE}": trial.value}, step=trial.number)
        run_id = self.trial_runs.get(trial.number)
        if run_id is None:
            return
        import mlflow

        client = mlflow.MlflowClient()
        try:
            for key, value in {"optuna_study": study.study_name, "optuna_trial": str(trial.number),
                               "optuna_state": trial.state.name}.items():
                client.set_tag(run_id, key, value)
            if trial.state == TrialState.PRUNED:
                client.set_terminated(run_id, "KILLED")
        except Exception as error:  # noqa: BLE001 - tracking never ends a study
            log.warning("MLflow: tagging trial %d's run failed (%s)", trial.number, type(error).__name__)

    def log_best(self, summary: dict[str, Any]) -> None:
        self.tracker.set_tags({"optuna_study": summary["study_name"], "optuna_storage": summary["storage"],
                               "best_trial": str(summary["best_trial"])})
        self.tracker.log_params({f"best_{name}": value for name, value in summary["best_params"].items()})
        counts = {f"trials_{state}": n for state, n in summary["counts"].items()}
        best = {f"best_{OBJECTIVE}": summary["best_value"]} if summary["best_value"] is not None else {}
        self.tracker.log_metrics({**best, **counts}, step=0)
