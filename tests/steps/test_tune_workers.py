"""Many tune workers, one study on a real PostgreSQL (tests/postgres_server.py).

Workers are real `python -m steps tune` processes, each with its own root, on tiny data (trials of
TinyEfficientViT-Micro take seconds). The search is lr in {GOOD_LR, FROZEN_LR}; a frozen trial
(lr 1e-9: the weights barely move) trails the good one at the first epoch, so a median pruner with
one startup trial prunes it as soon as a good trial has completed anywhere in the study.

The database password reaches each worker a different way (the URL in OPTUNA_STORAGE, as the KFP
Secret gives it; PGPASSWORD; OPTUNA_STORAGE_PASSWORD_FILE), and is never written: not in logs,
failure files, manifests, outputs, nor the MLflow runs.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

import mlflow
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from steps.models import epoch_checkpoint_name
from steps.train import search, study_storage
from tests.steps.train.tiny_data import write_tiny_splits
from tests.steps.tune_workers import FROZEN_LR, GOOD_LR, MODEL, Worker, load_study, start_worker, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.slow,
              pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]

FROZEN_FIRST_SEED = 0  # RandomSampler(seed=0) draws FROZEN_LR first (the test checks that premise)
# a runs enough trials to still be searching when b's process is up (b's start-up, imports included,
# takes several seconds; micro trials on tiny data about one each: 5 trials were over before b's first).
A_TRIALS, B_TRIALS = 14, 3


@pytest.fixture(scope="module")
def splits(tmp_path_factory) -> dict[str, Path]:
    return write_tiny_splits(tmp_path_factory.mktemp("tune_worker_splits"), train_rows=4, valid_rows=2)


def has_trial(postgres_server, database: str, state: TrialState) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return any(t.state == state for t in load_study(postgres_server, database).trials)
        except KeyError:  # no study yet
            return False
    return check


def assert_password_never_written(password: str, workers: list[Worker]) -> None:
    for worker in workers:
        assert "INFO steps" in worker.output(), "no log captured: this check would prove nothing"
        assert password not in worker.output(), f"password in {worker.root.name}'s log"
        written = [p for p in worker.root.rglob("*") if p.is_file() and password.encode() in p.read_bytes()]
        assert written == [], f"password in {written}"


def test_two_workers_share_one_study_split_trials_and_prune_across_workers(
        tmp_path, splits, postgres_server, postgres_database, mlflow_postgres_server):
    url, password = postgres_server.url(postgres_database), postgres_server.password
    tracking = {"MLFLOW_TRACKING_URI": mlflow_postgres_server}
    # a: the URL with its password in OPTUNA_STORAGE (the KFP Secret's form); b: PGPASSWORD beside it.
    a = start_worker(tmp_path / "a", splits, {"OPTUNA_STORAGE": postgres_server.url(postgres_database,
                                                                                   with_password=True), **tracking},
                     n_trials=A_TRIALS, sampler_seed=1, mlflow_experiment="tune-workers")
    # b starts once a good trial is complete, so b's first (frozen) trial can only be pruned by a's.
    wait_until(has_trial(postgres_server, postgres_database, TrialState.COMPLETE), [a], "a's first trial completes")
    b = start_worker(tmp_path / "b", splits, {"OPTUNA_STORAGE": url, "PGPASSWORD": password, **tracking},
                     n_trials=B_TRIALS, sampler_seed=FROZEN_FIRST_SEED, mlflow_experiment="tune-workers")
    assert a.process.poll() is None, "b joins while a is still running"
    assert (a.finish(), b.finish()) == (0, 0), a.output()[-3000:] + b.output()[-3000:]

    study = load_study(postgres_server, postgres_database)
    total = A_TRIALS + B_TRIALS
    assert [t.number for t in study.trials] == list(range(total))  # no number twice, none lost
    ran_a, ran_b = a.trial_numbers(study), b.trial_numbers(study)
    assert (len(ran_a), len(ran_b)) == (A_TRIALS, B_TRIALS) and ran_a | ran_b == set(range(total))
    assert set(a.study_json()["this_run"]["trials"]) == ran_a and set(b.study_json()["this_run"]["trials"]) == ran_b
    assert min(ran_b) < max(ran_a), "the workers' trials interleave: both ran at once"

    first_of_b = study.trials[min(ran_b)]
    good = study.trials[0]
    assert good.params == {"lr": GOOD_LR} and good.state == TrialState.COMPLETE and 0 in ran_a
    assert first_of_b.params == {"lr": FROZEN_LR}, "premise: b's sampler seed draws the frozen lr first"
    assert first_of_b.intermediate_values[1] < good.intermediate_values[1], "premise: frozen trails at epoch 1"
    assert first_of_b.state == TrialState.PRUNED  # b had completed nothing: a's trial decided it
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)

    for worker in (a, b):  # each worker reports the whole study's best, as a single worker does
        summary = worker.study_json()
        assert summary["best_params"] == study.best_params == {"lr": GOOD_LR}
        assert summary["best_value"] == study.best_value and summary["best_trial"] == study.best_trial.number
        assert json.loads((worker.root / "output" / "data" / "study" / search.BEST_PARAMS).read_text()) == \
            {"lr": GOOD_LR}
    assert_password_never_written(password, [a, b])
    assert_no_password_in_mlflow(mlflow_postgres_server, "tune-workers", password,
                                 shown_storage={url.replace("openeds@", "openeds:***@"), url})


def assert_no_password_in_mlflow(uri: str, experiment: str, password: str, shown_storage: set[str]) -> None:
    """One parent run per worker, each trial a nested run; the storage shown, its password masked."""
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=500)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert {run.data.params["storage"] for run in parents} == shown_storage
    assert len(parents) == len(shown_storage) and len(runs) > len(parents)
    for run in runs:
        everything = " ".join([*run.data.params.values(), *run.data.tags.values(), run.info.run_name or ""])
        assert password not in everything


def test_a_killed_workers_trial_fails_by_heartbeat_and_another_worker_retries_it(
        tmp_path, splits, postgres_server, postgres_database):
    secret = tmp_path / "secret" / "password"  # a mounted Secret file (OPTUNA_STORAGE_PASSWORD_FILE)
    secret.parent.mkdir()
    secret.write_text(postgres_server.password + "\n")
    secret.chmod(0o600)
    # Both workers share the checkpoint folder (a volume), so the retry continues the dead trial.
    env = {"OPTUNA_STORAGE": postgres_server.url(postgres_database), "PGPASSWORD": None,
           study_storage.PASSWORD_FILE_ENV: str(secret), "OPENEDS_CHECKPOINT_DIR": str(tmp_path / "checkpoints")}
    settings = {"epochs": 3, "checkpoint_every": 1, "pruner": "none", "heartbeat_s": 1, "heartbeat_grace_s": 3}
    a = start_worker(tmp_path / "a", splits, env, n_trials=1, sampler_seed=1, **settings)
    marker = tmp_path / "checkpoints" / search.TRIALS_DIR / "trial_0000" / epoch_checkpoint_name(MODEL, 1)
    wait_until(marker.exists, [a], "a's trial 0 saves its epoch-1 checkpoint")
    a.process.send_signal(signal.SIGKILL)
    assert a.finish() == -signal.SIGKILL
    assert load_study(postgres_server, postgres_database).trials[0].state == TrialState.RUNNING  # left behind

    wait_until(lambda: heartbeat_age_s(postgres_server, postgres_database) > settings["heartbeat_grace_s"], [],
               "the dead worker's heartbeat goes stale")
    b = start_worker(tmp_path / "b", splits, env, n_trials=2, sampler_seed=2, **settings)
    assert b.finish() == 0, b.output()[-3000:]

    study = load_study(postgres_server, postgres_database)
    killed, retried, fresh = study.trials
    assert killed.state == TrialState.FAIL  # by b's heartbeat check: a never came back
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(retried) == killed.number
    assert retried.state == TrialState.COMPLETE and retried.params == killed.params
    assert b.trial_numbers(study) == {retried.number, fresh.number} and fresh.state == TrialState.COMPLETE
    assert "resuming from" in b.output() and retried.user_attrs["epochs_run"] < 3  # continued, not restarted
    assert b.study_json()["counts"] == {"complete": 2, "pruned": 0, "fail": 1, "running": 0}
    assert_password_never_written(postgres_server.password, [a, b])


def heartbeat_age_s(postgres_server, database: str) -> float:
    """Seconds since the newest heartbeat, by the database's clock (the one heartbeats use)."""
    with postgres_server.connect(database) as db:
        age = db.execute("SELECT EXTRACT(EPOCH FROM (LOCALTIMESTAMP - MAX(heartbeat))) FROM trial_heartbeats")
        value = age.fetchone()[0]
    return float(value) if value is not None else 0.0
