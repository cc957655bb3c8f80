"""Faults a preemptible node deals out, on real step processes (`python -m steps ...`):

- SIGKILL at seeded random points of a preprocess run, three times on the same root: the next run
  completes with byte-identical datasets to an uninterrupted run, and no killed run ever leaves an
  output that looks complete but is not, nor staging folders after the successful run;
- SIGKILL at seeded random points of training (in epoch 2, after the epoch-1 resume point, then
  in the run that resumed from it): the final run ends with exactly the weights of an
  uninterrupted run (CPU, deterministic mode).
  tests/steps/train/test_fit.py covers the kill right after the first epoch checkpoint and SIGTERM
  followed by an exact resume; this adds random kill points and a resume of a resume;
- SIGTERM during training: the process saves a resume point and exits (code 143) within a bound;
- two runs started at once on the same root: one refuses (stderr names the root's lock; it writes
  nothing into the root, whose failure file belongs to the running step), and the other completes
  with outputs that match their manifest.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from steps.data.synthetic import generate_openeds
from steps.models import epoch_checkpoint_name
from steps.models.checkpoint_file import read_checkpoint
from steps.outputs import MANIFEST_NAME, read_manifest, sha256_file
from steps.train.checkpoints import last_checkpoint_name
from tests.reliability.conftest import REPO, read_failure, step_environment
from tests.steps.train.tiny_data import write_tiny_splits

SPLITS = ("train", "validation", "test")
MODEL = "tiny_efficientvit_micro"
EPOCHS = 2
SIGTERM_BOUND_S = 60  # SageMaker waits 120 s before SIGKILL, Kubernetes 30 s by default (one step + a save here)


def start(argv: list[str], log: Path) -> subprocess.Popen:
    """A step process in its own session (so a kill reaches its workers too), output to `log`."""
    with open(log, "ab") as handle:
        return subprocess.Popen([sys.executable, "-m", "steps", *argv], cwd=REPO, stdout=handle,
                                stderr=subprocess.STDOUT, env=step_environment(), start_new_session=True)


def wait_for(condition, process: subprocess.Popen, what: str, timeout: float = 300) -> float:
    """Poll until `condition()` (or the process ended); returns the time it became true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            return time.monotonic()
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.02)
    return time.monotonic()


def kill_group(process: subprocess.Popen) -> int:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    return process.wait(timeout=60)


def assert_committed_outputs_are_whole(folders: list[Path]) -> None:
    """Any output with a manifest holds exactly the files its manifest lists, unaltered."""
    for folder in folders:
        manifest = read_manifest(folder)
        if manifest is None:
            continue
        listed = {entry["path"]: entry["sha256"] for entry in manifest["files"]}
        present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {MANIFEST_NAME}
        assert present == set(listed), f"{folder}: files differ from its manifest"
        for path, digest in listed.items():
            assert sha256_file(folder / path) == digest, f"{folder / path} changed after its manifest was written"


def staging_folders(parent: Path) -> list[Path]:
    return sorted(p for p in parent.glob(".*") if ".staging-" in p.name or ".old-" in p.name) if parent.is_dir() else []


# ---------------------------------------------------------------- preprocess

@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    return generate_openeds(tmp_path_factory.mktemp("raw"), {"train": 6, "validation": 3, "test": 2}, seed=5,
                            closed_fraction=0.0)


def preprocess_argv(root: Path, raw: Path) -> list[str]:
    return ["preprocess", "--root", str(root), "--channel", f"raw={raw}", "--workers", "2"]


def split_hashes(root: Path) -> dict[str, list[tuple[str, str]]]:
    data = root / "output" / "data"
    return {split: [(f["path"], f["sha256"]) for f in read_manifest(data / split)["files"]] for split in SPLITS}


def started_working(root: Path, process: subprocess.Popen):
    """This process holds the root and has opened its outputs (imports and checks are done)."""
    return lambda: (root / "output" / "data" / f".train.staging-{process.pid}").is_dir()


@pytest.fixture(scope="module")
def clean_preprocess(raw, tmp_path_factory) -> tuple[dict, float]:
    """An uninterrupted run: its datasets' hashes and how long its work took (outputs opened -> exit)."""
    root = tmp_path_factory.mktemp("clean")
    process = start(preprocess_argv(root, raw), root.parent / "clean.log")
    opened = wait_for(started_working(root, process), process, "preprocess staging folder")
    assert process.wait(timeout=300) == 0, (root.parent / "clean.log").read_text()[-3000:]
    return split_hashes(root), time.monotonic() - opened


@pytest.mark.slow
def test_preprocess_killed_at_random_points_reruns_to_identical_outputs(raw, clean_preprocess, tmp_path):
    expected, work_seconds = clean_preprocess
    root, log = tmp_path / "root", tmp_path / "runs.log"
    data = root / "output" / "data"
    rng = random.Random(20240607)
    killed_mid_run = 0
    for _ in range(3):
        process = start(preprocess_argv(root, raw), log)
        wait_for(started_working(root, process), process, "preprocess staging folder")
        time.sleep(rng.uniform(0.0, 0.6) * work_seconds)
        code = kill_group(process)
        killed_mid_run += code == -signal.SIGKILL
        assert code in (0, -signal.SIGKILL), log.read_text()[-3000:]
        assert_committed_outputs_are_whole([data / name for name in (*SPLITS, "preprocess-report")])
    assert killed_mid_run >= 1, "every run finished before its kill point"
    rerun = subprocess.run([sys.executable, "-m", "steps", *preprocess_argv(root, raw)], cwd=REPO,
                           capture_output=True, text=True, timeout=300, env=step_environment())
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert split_hashes(root) == expected  # byte-identical to the uninterrupted run
    assert staging_folders(data) == [], "leftovers of the killed runs"
    assert read_failure(root) is None


# ---------------------------------------------------------------- training

@pytest.fixture(scope="module")
def splits(tmp_path_factory) -> dict[str, Path]:
    return write_tiny_splits(tmp_path_factory.mktemp("fault_splits"), train_rows=4, valid_rows=2)


def train_argv(root: Path, splits: dict[str, Path], epochs: int = EPOCHS) -> list[str]:
    return ["train-seg", "--root", str(root), "--channel", f"train={splits['train']}",
            "--channel", f"validation={splits['validation']}", "--model", MODEL, "--epochs", str(epochs),
            "--batch-size", "2", "--checkpoint-every", "1", "--deterministic", "--device", "cpu", "--seed", "7",
            "--no-register-model", "--no-augment"]


def training_started(root: Path, process: subprocess.Popen):
    """This process wrote resolved_config.json: the model is built, the SIGTERM handler installed
    and any resume point loaded; training proper starts right after."""
    return lambda: (root / "output" / "data" / f".metrics.staging-{process.pid}" / "resolved_config.json").is_file()


def epoch_checkpoint(root: Path, epoch: int):
    return lambda: (root / "checkpoints" / epoch_checkpoint_name(MODEL, epoch)).is_file()


def final_weights(root: Path) -> dict[str, torch.Tensor]:
    state = read_checkpoint(root / "checkpoints" / epoch_checkpoint_name(MODEL, EPOCHS), map_location="cpu")
    return state["state_dict"]


@pytest.fixture(scope="module")
def clean_training(splits, tmp_path_factory) -> tuple[dict[str, torch.Tensor], float]:
    """The uninterrupted run's final weights and its slowest epoch (train + evaluation), in seconds."""
    root = tmp_path_factory.mktemp("clean_training")
    log = root.parent / "clean_training.log"
    process = start(train_argv(root, splits), log)
    assert process.wait(timeout=600) == 0, log.read_text()[-3000:]
    rows = json.loads((root / "output" / "data" / "metrics" / "metrics.json").read_text())
    return final_weights(root), max(row["epoch_seconds"] for row in rows)


@pytest.mark.slow
def test_training_killed_at_random_points_resumes_to_identical_weights(splits, clean_training, tmp_path):
    expected, epoch_seconds = clean_training
    root, log = tmp_path / "root", tmp_path / "runs.log"
    rng = random.Random(77)
    killed_mid_run = 0
    # First kill: a random point of epoch 2 (after the epoch-1 resume point); second kill: a random
    # point of the run that resumed from it.
    for marker in (lambda process: epoch_checkpoint(root, 1), lambda process: training_started(root, process)):
        process = start(train_argv(root, splits), log)
        wait_for(marker(process), process, "kill marker")
        time.sleep(rng.uniform(0.0, 0.5) * epoch_seconds)
        code = kill_group(process)
        assert code in (0, -signal.SIGKILL), log.read_text()[-3000:]
        killed_mid_run += code == -signal.SIGKILL
        # a kill after the commit leaves complete outputs; before it, none that look complete
        assert_committed_outputs_are_whole([root / "model", root / "output" / "data" / "metrics"])
    assert killed_mid_run >= 1, "every run finished before its kill point"
    assert "resuming from" in log.read_text()
    final = subprocess.run([sys.executable, "-m", "steps", *train_argv(root, splits)], cwd=REPO,
                           capture_output=True, text=True, timeout=600, env=step_environment())
    assert final.returncode == 0, final.stderr[-3000:]
    weights = final_weights(root)
    assert weights.keys() == expected.keys()
    assert [name for name in expected if not torch.equal(weights[name], expected[name])] == []
    assert (root / "model" / MANIFEST_NAME).is_file()


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_within_a_bound(splits, clean_training, tmp_path):
    _, epoch_seconds = clean_training
    root, log = tmp_path / "root", tmp_path / "run.log"
    process = start(train_argv(root, splits, epochs=3), log)
    wait_for(training_started(root, process), process, "training start")
    time.sleep(random.Random(5).uniform(0.0, 0.5) * epoch_seconds)  # in the first epochs of three
    assert process.poll() is None, "training ended before the signal"
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=SIGTERM_BOUND_S + 60)
    took = time.monotonic() - signalled
    assert code == 143, log.read_text()[-3000:]
    assert took < SIGTERM_BOUND_S, f"exit {took:.1f} s after SIGTERM"
    first = read_failure(root).splitlines()[0]
    assert first.startswith("training stopped by SIGTERM at epoch"), first
    saved = list((root / "checkpoints").glob("efficientvit_tiny_model_*.pt"))
    assert saved, "no resume point saved"
    state = read_checkpoint(root / "checkpoints" / last_checkpoint_name(MODEL), map_location="cpu")
    assert state["partial"]["batches_done"] >= 1 and "optimizer" in state
    assert not (root / "model" / MANIFEST_NAME).exists()
    print(f"SIGTERM to exit: {took:.1f} s")


# ---------------------------------------------------------------- two runs on one root

def test_two_runs_at_once_on_one_root_one_refuses_the_other_completes(tmp_path):
    root = tmp_path / "root"
    argv = ["download-kaggle", "--root", str(root), "--synthetic-train-frames", "30",
            "--synthetic-validation-frames", "4", "--synthetic-test-frames", "2", "--seed", "9"]
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    processes = [start(argv, log) for log in logs]
    codes = [process.wait(timeout=300) for process in processes]
    texts = [log.read_text() for log in logs]
    assert sorted(code == 0 for code in codes) == [False, True], f"exit codes {codes}:\n" + "\n".join(t[-1500:] for t in texts)
    loser = texts[codes.index(next(c for c in codes if c != 0))]
    assert f"root {root} is in use by another running step (lock {root / '.step.lock'})" in loser
    raw = root / "output" / "data" / "raw"
    assert_committed_outputs_are_whole([raw])
    assert read_manifest(raw)["counts"] == {"train": 30, "validation": 4, "test": 2}
    assert staging_folders(raw.parent) == []
    assert not [p for p in raw.parent.iterdir() if p.name.startswith(".download-kaggle-")]
    assert read_failure(root) is None, "the refused run wrote a failure file into the finished run's root"
