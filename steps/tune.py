"""tune: an Optuna search over train-seg hyperparameters (library: steps.train.search).

Outputs (`study`): best_params.json (the best sampled values: a train-seg hyperparameters.json),
best_hyperparameters.json (the best trial's full train-seg settings), best_params.args (the same
as train-seg flags), trials.csv, study.json, and trials/trial_NNNN/{model,metrics} per trial.
Checkpoints of each trial: <checkpoints>/trials/trial_NNNN/. The study itself lives in the storage
(default sqlite:///<checkpoints>/optuna.db), so a second run, or another worker given the same
storage and study_name, adds its trials to the same study.

    python -m steps tune --root R --channel train=T --channel validation=V --n-trials 20 --epochs 4 \
        --search-space '{"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": true},
                         "batch_size": {"type": "categorical", "choices": [4, 8, 16]}}'
    # the best parameters into a full training run, as flags or as its hyperparameters.json:
    python -m steps train-seg --root R2 --channel train=T --channel validation=V \
        $(cat R/output/data/study/best_params.args) --epochs 40
    cp R/output/data/study/best_params.json R2/input/config/hyperparameters.json
    # many workers (pods): the same storage and study name on each, each with its own sampler seed;
    # a URL with a password goes in the OPTUNA_STORAGE environment variable (a secret):
    OPTUNA_STORAGE=postgresql://optuna:PASSWORD@db/studies python -m steps tune ... --sampler-seed 3

A trial that fails on its own (diverged loss, out of memory) is recorded and the study goes on; a
SIGTERM stops the step (exit 143) and the next run continues the interrupted trial from its
checkpoints; a worker killed outright leaves a trial that heartbeats mark failed and re-queue.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from steps.models import get_spec
from steps.runtime import StepError, StepHooks
from steps.train import search, study_storage
from steps.train_seg import channels_optional, check_inputs  # the same data and device checks

log = logging.getLogger(__name__)
__all__ = ["channels_optional", "check_inputs", "run"]


def run(hp: Any, io: Any) -> dict[str, Any]:
    from steps.data.loading import load_split
    from steps.tracking import TrackingConfig, open_tracker

    train_split = load_split(io.channel("train"), hf_repo=hp.hf_repo, split="train", data_dir=hp.data_dir)
    valid_split = load_split(io.channel("validation"), hf_repo=hp.hf_repo, split="validation", data_dir=hp.data_dir)
    url = study_storage.resolve_storage_url(hp, io.checkpoints)
    study_dir = io.output("study")
    trainer = search.engine_trainer(train_split, valid_split, study_dir, hp.study_name)
    log.info("study %s in %s: %d trial(s) of %d epoch(s), pruner %s, sampler %s", hp.study_name,
             study_storage.shown_url(url), hp.n_trials, hp.epochs, hp.pruner, hp.sampler)
    parent = TrackingConfig.of(hp, wandb=False, tensorboard=False)  # the extras follow the trials' runs
    with search.study_logging(), open_tracker(parent, run_name=hp.study_name, model_type=get_spec(hp.model).model_type,
                                              architecture=hp.model, output_dir=study_dir) as tracker:
        tracker.log_params({**hp.model_dump(mode="json"), "storage": study_storage.shown_url(url)})
        tracking = search.StudyTracking(tracker)
        trials_dir = io.checkpoints / search.TRIALS_DIR
        study = open_named_study(hp, url, trials_dir)
        trials = search.run_study(study, hp, trainer, trials_dir, tracking)
        summary = search.write_study_outputs(study_dir, study, hp, trials, study_storage.shown_url(url))
        tracking.log_best(summary)
    check_outcome(summary, trials)
    log.info("study %s: best %s %.4f (trial %d) with %s; this run: %s", hp.study_name, search.OBJECTIVE,
             summary["best_value"], summary["best_trial"], summary["best_params"], summary["this_run"]["counts"])
    io.annotate("study", rows=len(study.trials), best_params=summary["best_params"],
                best_value=summary["best_value"], best_trial=summary["best_trial"], counts=summary["counts"],
                parent_run_id=tracker.run_id)
    return {key: summary[key] for key in ("best_value", "best_trial", "best_params", "counts", "this_run")}


def open_named_study(hp: Any, url: str, trials_dir: Path) -> Any:
    """The study, or a StepError naming the storage: a wrong password, an unknown driver or a folder
    that does not exist were raw SQLAlchemy errors (exit 1)."""
    import sqlalchemy.exc

    try:
        return search.open_study(hp, url, trials_dir)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError) as error:
        first = (str(getattr(error, "orig", None) or error).strip().splitlines() or [""])[0]
        raise StepError(f"storage {study_storage.shown_url(url)}: cannot open study {hp.study_name!r} "
                        f"({type(error).__name__}: {first[:300]}); check the URL (tune.storage or "
                        f"OPTUNA_STORAGE), the server and the credentials") from error


def check_outcome(summary: dict[str, Any], trials: list[Any]) -> None:
    """Fail when the study has no completed trial, or every trial of this run failed."""
    failed = [t for t in trials if t.state.name == "FAIL"]
    if summary["best_trial"] is None or (trials and len(failed) == len(trials)):
        reasons = "\n".join(f"trial {t.number}: {t.user_attrs.get('error', 'see the log')}" for t in failed)
        raise StepError(f"tune: {len(failed)} of {len(trials)} trial(s) failed and the study has "
                        f"{'no' if summary['best_trial'] is None else 'only earlier'} completed trials\n{reasons}")


HOOKS = StepHooks(run=run, check_inputs=check_inputs, channels_optional=channels_optional)
