"""The epoch loop's robustness: a killed run resumes to exactly the weights of an uninterrupted one.

Each run is the real step in a subprocess (`python -m steps train-seg`) in deterministic mode on
CPU: 8 train rows, batch 2 (4 optimizer steps per epoch), 3 epochs, a checkpoint every epoch.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from steps.models import best_checkpoint_name, epoch_checkpoint_name
from steps.models.checkpoint_file import read_checkpoint
from steps.train.checkpoints import last_checkpoint_name

MODEL = "tiny_efficientvit_micro"
EPOCHS = 3


def step_command(root: Path, splits: dict[str, Path], *settings: str) -> list[str]:
    return [sys.executable, "-m", "steps", "train-seg", "--root", str(root),
            "--channel", f"train={splits['train']}", "--channel", f"validation={splits['validation']}",
            "--model", MODEL, "--epochs", str(EPOCHS), "--batch-size", "2", "--checkpoint-every", "1",
            "--deterministic", "--device", "cpu", "--seed", "7", "--no-register-model", *settings]


def run_to_completion(root: Path, splits: dict[str, Path], *settings: str) -> subprocess.CompletedProcess:
    done = subprocess.run(step_command(root, splits, *settings), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def start_and_signal_after_epoch_1(root: Path, splits: dict[str, Path], sig: int, *settings: str) -> tuple[int, str]:
    """Start a run, send `sig` as soon as the epoch-1 checkpoint exists (so during epoch 2)."""
    process = subprocess.Popen(step_command(root, splits, *settings), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    marker = root / "checkpoints" / epoch_checkpoint_name(MODEL, 1)
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert process.poll() is None, process.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "no epoch-1 checkpoint within 300 s"
        time.sleep(0.01)
    process.send_signal(sig)
    output, _ = process.communicate(timeout=300)
    return process.returncode, output


def final_weights(root: Path) -> dict[str, torch.Tensor]:
    """The trained weights and their moving average (ema_decay is on by default): both resume exactly."""
    state = read_checkpoint(root / "checkpoints" / epoch_checkpoint_name(MODEL, EPOCHS), map_location="cpu")
    return {**state["state_dict"], **{f"average.{k}": v for k, v in state["weight_average"].items()}}


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [name for name in a if not torch.equal(a[name], b[name])]
    assert not different, f"tensors differ after resume: {different[:5]}"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_splits) -> dict[str, torch.Tensor]:
    root = tmp_path_factory.mktemp("uninterrupted")
    run_to_completion(root, tiny_splits)
    return final_weights(root)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_gives_identical_weights(tmp_path, tiny_splits, uninterrupted):
    code, _ = start_and_signal_after_epoch_1(tmp_path, tiny_splits, signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert not (tmp_path / "checkpoints" / epoch_checkpoint_name(MODEL, 2)).exists(), "killed too late"
    assert not (tmp_path / "model" / "_manifest.json").exists()  # nothing presented as finished
    resumed = run_to_completion(tmp_path, tiny_splits)
    assert "resuming from" in resumed.stderr and "continuing at epoch 2" in resumed.stderr
    assert_identical(final_weights(tmp_path), uninterrupted)


def test_the_best_model_is_the_weight_average_of_its_epoch(tmp_path_factory, tiny_splits):
    root = tmp_path_factory.mktemp("average")
    run_to_completion(root, tiny_splits)
    best = torch.load(root / "model" / best_checkpoint_name(MODEL), weights_only=True)
    epoch = read_checkpoint(root / "checkpoints" / epoch_checkpoint_name(MODEL, best["epoch"]))
    average = {k.removeprefix("module."): v for k, v in epoch["weight_average"].items() if k.startswith("module.")}
    assert int(epoch["weight_average"]["n_averaged"]) == 4 * best["epoch"]  # one update per optimizer step
    assert_identical(best["state_dict"], average)
    assert not all(torch.equal(best["state_dict"][k], epoch["state_dict"][k]) for k in average)  # not the raw weights


@pytest.mark.slow
def test_sigterm_saves_a_resume_point_and_exits_143_then_resumes_exactly(tmp_path, tiny_splits, uninterrupted):
    code, output = start_and_signal_after_epoch_1(tmp_path, tiny_splits, signal.SIGTERM)
    assert code == 143, output[-3000:]
    reason = (tmp_path / "output" / "failure").read_text().splitlines()[0]
    assert reason.startswith("training stopped by SIGTERM at epoch 2 after batch"), reason
    last = read_checkpoint(tmp_path / "checkpoints" / last_checkpoint_name(MODEL))
    assert last["epoch"] == 1 and 1 <= last["partial"]["batches_done"] < 4
    assert not (tmp_path / "model" / "_manifest.json").exists()
    resumed = run_to_completion(tmp_path, tiny_splits)
    assert f"continuing at epoch 2 batch {last['partial']['batches_done'] + 1}" in resumed.stderr
    assert_identical(final_weights(tmp_path), uninterrupted)
    assert not (tmp_path / "output" / "failure").exists()


@pytest.mark.slow
def test_sigterm_in_epochs_of_one_optimizer_step_stops_after_the_epoch(tmp_path, tiny_splits):
    """The flag is read mid-epoch, so with one optimizer step per epoch (8 rows, batch 8) a SIGTERM
    used to be ignored and training ran to the end (exit 0). It now stops after the epoch."""
    one_step, epochs = ("--batch-size", "8", "--epochs", "10"), 10  # room for a late signal on a loaded machine
    code, output = start_and_signal_after_epoch_1(tmp_path, tiny_splits, signal.SIGTERM, *one_step)
    assert code == 143, output[-3000:]
    reason = (tmp_path / "output" / "failure").read_text().splitlines()[0]
    stopped_after = int(reason.split("after epoch ")[1].split(";")[0])
    assert reason.startswith("training stopped by SIGTERM after epoch") and 1 <= stopped_after < epochs, reason
    resumed = run_to_completion(tmp_path, tiny_splits, *one_step)
    assert f"continuing at epoch {stopped_after + 1}" in resumed.stderr
    uninterrupted = tmp_path / "uninterrupted"
    run_to_completion(uninterrupted, tiny_splits, *one_step)
    last = epoch_checkpoint_name(MODEL, epochs)
    assert_identical(read_checkpoint(tmp_path / "checkpoints" / last)["state_dict"],
                     read_checkpoint(uninterrupted / "checkpoints" / last)["state_dict"])


def test_early_stopping_counts_epochs_without_improvement():
    from types import SimpleNamespace

    from contracts.train_seg import TrainSegHyperparameters
    from steps.train.fit import LoopState, early_stop_due, record_epoch
    from steps.train.optim import LRSchedule

    hp = TrainSegHyperparameters(early_stopping_patience=2)
    run = SimpleNamespace(schedule=LRSchedule(None, False, "none"))
    loop = LoopState()
    outcomes = [record_epoch(run, loop, {"epoch": e, "valid_iou": v})
                for e, v in enumerate([0.5, 0.7, 0.7, float("nan")], start=1)]
    assert outcomes == [True, True, False, False]  # equal is no improvement; NaN never is
    assert (loop.best_epoch, loop.best_metric, loop.epochs_without_improvement) == (2, 0.7, 2)
    assert early_stop_due(hp, loop) and not early_stop_due(TrainSegHyperparameters(), loop)
    assert [row["best_valid_iou"] for row in loop.history] == [0.5, 0.7, 0.7, 0.7]


def test_resume_refuses_to_stretch_a_onecycle_schedule(caplog):
    from contracts.train_seg import TrainSegHyperparameters
    from steps.runtime import StepError
    from steps.train.fit import check_resume_settings

    saved = {"hyperparameters": TrainSegHyperparameters(scheduler="onecycle", epochs=4).model_dump(mode="json")}
    check_resume_settings(TrainSegHyperparameters(scheduler="onecycle", epochs=4, dice_weight=0.25), saved)
    assert "dice_weight 1.0 -> 0.25" in caplog.text  # applies from the next batch: a warning
    with pytest.raises(StepError, match="^hyperparameter 'epochs': 6 differs from the checkpoint's 4"):
        check_resume_settings(TrainSegHyperparameters(scheduler="onecycle", epochs=6), saved)
    # another batch size changes the steps per epoch, which onecycle cannot follow either
    with pytest.raises(StepError, match="^hyperparameter 'batch_size': 4 differs from the checkpoint's 2"):
        check_resume_settings(TrainSegHyperparameters(scheduler="onecycle", epochs=4, batch_size=4), saved)


def test_resume_refuses_optimizer_and_schedule_settings_the_checkpoint_would_override():
    """The optimizer and schedule states come back from the checkpoint: a new lr would be recorded
    but not used (a resumed cosine run kept training at its old lr)."""
    from contracts.train_seg import TrainSegHyperparameters
    from steps.runtime import StepError
    from steps.train.fit import check_resume_settings

    saved = {"hyperparameters": TrainSegHyperparameters().model_dump(mode="json")}
    with pytest.raises(StepError, match=r"^hyperparameter 'lr': 0.5 differs from the checkpoint's 0.003, "
                                        r"'scheduler' too; a resumed run continues the checkpoint's optimizer"):
        check_resume_settings(TrainSegHyperparameters(lr=0.5, scheduler="none"), saved)
    check_resume_settings(TrainSegHyperparameters(epochs=20), saved)  # a longer run may resume
