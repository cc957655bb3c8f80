"""tune as a step: a real study on tiny data (pruning, MLflow parent and nested runs), shared storage.

Trials are real train-seg runs (TinyEfficientViT-Micro, CPU, deterministic) on a few synthetic rows.
Pruning is made certain, not lucky: the study's first two trials are enqueued, a baseline with a
working learning rate and a "frozen" one (lr 1e-9, the weights barely move); a median pruner with
one startup trial and no warmup compares the frozen trial's first-epoch mIoU with the baseline's
at the same epoch, so the frozen trial is pruned as soon as it trails. The test checks that
premise too (the baseline beat the frozen trial's reported value at that epoch).
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from contracts import Layout
from steps.models import epoch_checkpoint_name
from steps.runtime import run_step
from steps.train import search, study_storage
from tests.mlflow_server import mlflow_server, mlflow_tracking_uri  # noqa: F401 - fixtures
from tests.steps.train.tiny_data import write_tiny_splits

GOOD_LR, FROZEN_LR = 1e-2, 1e-9
FIXED = {"model": "tiny_efficientvit_micro", "batch_size": 2, "device": "cpu", "deterministic": True, "seed": 3,
         "scheduler": "none", "augment": False, "register_model": False, "sampler": "random", "sampler_seed": 0}


@pytest.fixture(scope="module")
def splits(tmp_path_factory) -> dict[str, Path]:
    return write_tiny_splits(tmp_path_factory.mktemp("tune_splits"), train_rows=4, valid_rows=2)


def tune(root: Path, splits: dict[str, Path], **settings) -> int:
    layout = Layout.resolve(root, {"train": splits["train"], "validation": splits["validation"]})
    return run_step("tune", layout, {**FIXED, **settings})


def study_dir(root: Path) -> Path:
    return root / "output" / "data" / "study"


def read_trials(root: Path) -> list[dict[str, str]]:
    with (study_dir(root) / search.TRIALS_CSV).open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_four_trial_study_prunes_and_reports_best_params_in_manifest_and_mlflow(
        tmp_path, splits, mlflow_tracking_uri):  # noqa: F811 - fixture
    experiment = "tune-must-show"
    code = tune(tmp_path, splits, n_trials=4, epochs=2, mlflow_experiment=experiment, study_name="must-show",
                search_space={"lr": {"type": "categorical", "choices": [GOOD_LR, 3e-3, FROZEN_LR]}},
                enqueue_trials=[{"lr": GOOD_LR}, {"lr": FROZEN_LR}],
                pruner="median", pruner_startup_trials=1, pruner_warmup_epochs=0)
    assert code == 0, (tmp_path / "output" / "failure").read_text()

    trials = read_trials(tmp_path)
    assert len(trials) == 4
    baseline, frozen = trials[0], trials[1]
    assert json.loads(baseline["params"]) == {"lr": GOOD_LR} and baseline["state"] == "COMPLETE"
    assert json.loads(frozen["params"]) == {"lr": FROZEN_LR}
    baseline_epoch_1 = json.loads((study_dir(tmp_path) / "trials" / "trial_0000" / "metrics" / "metrics.json")
                                  .read_text())[0]["valid_iou"]
    assert float(frozen["last_reported"]) < baseline_epoch_1, "premise: the frozen trial trails at epoch 1"
    assert frozen["state"] == "PRUNED" and frozen["pruned"] == "True" and frozen["epochs_run"] == "1"
    pruned = [t for t in trials if t["state"] == "PRUNED"]

    summary = json.loads((study_dir(tmp_path) / search.STUDY_JSON).read_text())
    assert summary["counts"]["pruned"] == len(pruned) >= 1
    assert summary["counts"]["complete"] + len(pruned) == 4
    best = json.loads((study_dir(tmp_path) / search.BEST_PARAMS).read_text())
    assert best == summary["best_params"] and best["lr"] != FROZEN_LR
    assert summary["best_value"] == max(float(t["value"]) for t in trials if t["state"] == "COMPLETE")

    manifest = json.loads((study_dir(tmp_path) / "_manifest.json").read_text())
    assert manifest["best_params"] == best and manifest["best_value"] == summary["best_value"]
    assert manifest["counts"]["pruned"] == len(pruned)
    assert (study_dir(tmp_path) / "trials" / "trial_0000" / "model" / "model_card.json").is_file()
    assert (tmp_path / "checkpoints" / "trials" / "trial_0000").is_dir()  # per-trial checkpoints

    client = mlflow.MlflowClient()
    parent = client.get_run(manifest["parent_run_id"])
    assert parent.data.params["best_lr"] == str(best["lr"])
    assert parent.data.metrics["best_valid_iou"] == pytest.approx(summary["best_value"])
    assert parent.data.metrics["trials_pruned"] == len(pruned)
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 4
    states = {run.data.tags["optuna_trial"]: (run.data.tags["optuna_state"], run.info.status) for run in children}
    assert states["1"] == ("PRUNED", "KILLED") and states["0"] == ("COMPLETE", "FINISHED")
    assert {run.data.params["lr"] for run in children} >= {str(GOOD_LR), str(FROZEN_LR)}


@pytest.mark.slow
def test_runs_sharing_a_storage_continue_one_study(tmp_path, splits):
    storage = f"sqlite:///{tmp_path / 'shared' / 'optuna.db'}"
    (tmp_path / "shared").mkdir()
    space = {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}
    for worker in ("worker-a", "worker-b"):  # two pods, or one run after another: the same study
        code = tune(tmp_path / worker, splits, n_trials=1, epochs=1, storage=storage, study_name="shared",
                    search_space=space, pruner="none")
        assert code == 0, (tmp_path / worker / "output" / "failure").read_text()
    first = json.loads((study_dir(tmp_path / "worker-a") / search.STUDY_JSON).read_text())
    second = json.loads((study_dir(tmp_path / "worker-b") / search.STUDY_JSON).read_text())
    assert first["counts"]["complete"] == 1 and second["counts"]["complete"] == 2
    assert second["this_run"]["trials"] == [1]
    assert [row["number"] for row in read_trials(tmp_path / "worker-b")] == ["0", "1"]
    assert not (tmp_path / "worker-a" / "checkpoints" / study_storage.STORAGE_FILE).exists()  # the given storage only


@pytest.mark.slow
def test_a_failing_trial_is_recorded_and_the_study_goes_on(tmp_path, splits):
    """input_mode=raw needs camera frames the preprocessed split does not hold: that trial fails alone."""
    code = tune(tmp_path, splits, n_trials=2, epochs=1, pruner="none",
                search_space={"input_mode": {"type": "categorical", "choices": ["preprocessed", "raw"]}},
                enqueue_trials=[{"input_mode": "raw"}, {"input_mode": "preprocessed"}])
    assert code == 0, (tmp_path / "output" / "failure").read_text()
    trials = read_trials(tmp_path)
    assert [t["state"] for t in trials] == ["FAIL", "COMPLETE"]
    assert "input_mode" in trials[0]["error"] and not trials[1]["error"]
    assert json.loads((study_dir(tmp_path) / search.BEST_PARAMS).read_text()) == {"input_mode": "preprocessed"}


@pytest.mark.slow
def test_study_where_every_trial_fails_fails_the_step(tmp_path, splits):
    code = tune(tmp_path, splits, n_trials=1, epochs=1, pruner="none",
                search_space={"input_mode": {"type": "categorical", "choices": ["raw"]}})
    assert code == 2
    failure = (tmp_path / "output" / "failure").read_text()
    assert failure.startswith("tune: 1 of 1 trial(s) failed") and "trial 0: StepError:" in failure
    assert not (study_dir(tmp_path) / "_manifest.json").exists()


def test_bad_search_space_fails_before_any_work_naming_the_key(tmp_path):
    code = run_step("tune", Layout.resolve(tmp_path), {"search_space": {"lrr": {"type": "float", "low": 1, "high": 2}}})
    assert code == 2
    first_line = (tmp_path / "output" / "failure").read_text().splitlines()[0]
    assert "search_space key 'lrr': not a train-seg hyperparameter" in first_line
    assert not (tmp_path / "checkpoints" / study_storage.STORAGE_FILE).exists()


def test_a_storage_setting_with_a_password_is_refused_and_never_echoed(tmp_path, caplog):
    """Settings reach manifests and tracking: the password belongs in OPTUNA_STORAGE or PGPASSWORD."""
    code = run_step("tune", Layout.resolve(tmp_path), {"storage": "postgresql://optuna:canary-pw-7f3a@db/studies"})
    failure = (tmp_path / "output" / "failure").read_text()
    assert code == 2 and "holds a password" in failure and "optuna:***@db" in failure
    assert "canary-pw-7f3a" not in failure + caplog.text and "holds a password" in caplog.text
    assert not (tmp_path / "checkpoints" / study_storage.STORAGE_FILE).exists()


@pytest.mark.parametrize("storage, reason", [
    ("sqlite:///{tmp}/no/such/folder/optuna.db", "unable to open database file"),
    ("nosuchdb://u@h/x", "Can't load plugin"),
])
def test_a_storage_that_cannot_be_opened_is_named(tmp_path, splits, storage, reason):
    """These were raw SQLAlchemy errors with exit 1."""
    storage = storage.format(tmp=tmp_path)
    assert tune(tmp_path, splits, storage=storage) == 2
    first_line = (tmp_path / "output" / "failure").read_text().splitlines()[0]
    assert first_line.startswith(f"storage {storage}: cannot open study") and reason in first_line, first_line


@pytest.mark.slow
def test_sigterm_mid_trial_then_rerun_continues_that_trial_from_its_checkpoint(tmp_path, splits):
    """A stopped pod (SIGTERM): the step exits 143; the next run resumes the trial, not a new one."""
    command = [sys.executable, "-m", "steps", "tune", "--root", str(tmp_path),
               "--channel", f"train={splits['train']}", "--channel", f"validation={splits['validation']}",
               "--model", "tiny_efficientvit_micro", "--batch-size", "2", "--device", "cpu", "--no-augment",
               "--n-trials", "1", "--epochs", "3", "--checkpoint-every", "1", "--pruner", "none",
               "--search-space", '{"lr": {"type": "float", "low": 0.001, "high": 0.01, "log": true}}']
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    marker = tmp_path / "checkpoints" / "trials" / "trial_0000" / epoch_checkpoint_name("tiny_efficientvit_micro", 1)
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert process.poll() is None, process.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "no epoch-1 checkpoint within 300 s"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 143, output[-3000:]
    assert not (study_dir(tmp_path) / "_manifest.json").exists()

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "trial_0000" in resumed.stderr and "resuming from" in resumed.stderr
    trials = read_trials(tmp_path)
    assert [t["state"] for t in trials] == ["FAIL", "COMPLETE"]
    assert "interrupted by SIGTERM" in trials[0]["error"] and trials[0]["params"] == trials[1]["params"]
    assert int(trials[1]["epochs_run"]) < 3  # it continued: the first epoch(s) were not trained again
