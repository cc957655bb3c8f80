"""train-seg as a step: outputs, metrics and config files, and clear failures (device, NaN loss)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from contracts import Layout
from contracts.train_seg import TrainSegHyperparameters
from steps import train_seg
from steps.models import load_checkpoint
from steps.runtime import run_step
from tests.mlflow_server import mlflow_server, mlflow_tracking_uri  # noqa: F401 (fixtures)
from tests.steps.train.tiny_data import make_split, write_tiny_splits

MODEL = "tiny_efficientvit_micro"
METRIC_NAMES = {"train_loss", "valid_loss", "train_iou", "valid_iou", "iou_background", "iou_pupil", "ce_loss",
                "dice_loss", "surface_loss", "lr", "epoch_seconds", "images_per_second", "memory_rss_mb"}


@pytest.fixture(scope="module")
def splits(tmp_path_factory) -> dict[str, Path]:
    return write_tiny_splits(tmp_path_factory.mktemp("seg_splits"), train_rows=4, valid_rows=2)


def layout(root: Path, splits: dict[str, Path]) -> Layout:
    return Layout.resolve(root, {"train": splits["train"], "validation": splits["validation"]})


def run(root: Path, splits: dict[str, Path], **settings) -> int:
    values = {"model": MODEL, "epochs": 1, "batch_size": 2, "device": "cpu", "register_model": False, **settings}
    return run_step("train-seg", layout(root, splits), values)


def test_one_epoch_writes_model_metrics_and_config(tmp_path, splits):
    assert run(tmp_path, splits, epochs=2, checkpoint_every=1) == 0
    model_dir, metrics_dir = tmp_path / "model", tmp_path / "output" / "data" / "metrics"
    model, payload = load_checkpoint(model_dir / "best_efficientvit_tiny_model.pt")
    assert payload["model_name"] == MODEL and payload["input_mode"] == "preprocessed"
    assert model(torch.zeros(1, 1, 400, 640)).shape == (1, 2, 400, 640)
    card = json.loads((model_dir / "model_card.json").read_text())
    assert card["model_type"] == "TinyEfficientViT-Micro" and card["checkpoint"] == "best_efficientvit_tiny_model.pt"
    rows = json.loads((metrics_dir / "metrics.json").read_text())
    assert [row["epoch"] for row in rows] == [1, 2]
    assert METRIC_NAMES <= set(rows[0])
    assert (metrics_dir / "metrics.csv").read_text().splitlines()[0].startswith("epoch,")
    assert (metrics_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (metrics_dir / "augmented_samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert card["training_data"] == {}  # the test splits carry no preprocess manifest
    for folder in (model_dir, metrics_dir):
        config = json.loads((folder / "resolved_config.json").read_text())
        assert config["hyperparameters"]["epochs"] == 2 and config["world_size"] == 1
        assert config["device"].startswith("cpu") and "torch" in config["versions"]
    manifest = json.loads((tmp_path / "output" / "manifest.json").read_text())
    assert manifest["summary"]["best_valid_iou"] == max(row["valid_iou"] for row in rows)


def test_cuda_requested_without_a_gpu_fails_naming_device(tmp_path, splits):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert run(tmp_path, splits, device="cuda") == 2
    reason = (tmp_path / "output" / "failure").read_text().splitlines()[0]
    assert reason == "hyperparameter 'device': cuda requested but no CUDA device is available"
    assert not (tmp_path / "model").exists()


def test_a_checkpoints_folder_it_cannot_write_is_named_before_training(tmp_path, splits, monkeypatch):
    """It used to surface after epoch 1 as a PermissionError traceback on the first save (exit 1)."""
    not_a_folder = tmp_path / "checkpoints-file"
    not_a_folder.write_text("a file where the checkpoints folder should be")
    monkeypatch.setenv("OPENEDS_CHECKPOINT_DIR", str(not_a_folder))
    assert run(tmp_path / "root", splits, epochs=3) == 2
    reason = (tmp_path / "root" / "output" / "failure").read_text().splitlines()[0]
    assert reason.startswith(f"checkpoints: cannot write {not_a_folder} (File exists)"), reason
    assert not (tmp_path / "root" / "output" / "data" / "metrics").exists()  # no epoch ran


def test_nan_loss_fails_clearly_and_saves_no_best_model(tmp_path, splits):
    corrupt = tmp_path / "corrupt_train"
    make_split(4, seed=1, nan_weight_rows=(0, 1, 2, 3)).save_to_disk(str(corrupt))
    code = run_step("train-seg", Layout.resolve(tmp_path / "root", {"train": corrupt, "validation": splits["validation"]}),
                    # camera augmentation off: a moved label derives fresh weights, so the NaN ones never count
                    {"model": MODEL, "epochs": 1, "batch_size": 2, "device": "cpu", "register_model": False,
                     "camera_probability": 0.0})
    assert code == 2
    failure = (tmp_path / "root" / "output" / "failure").read_text()
    assert failure.startswith("train_loss is not finite at epoch 1 batch 1; lower lr or enable clip_grad_norm")
    assert "synthetic_1_00" in failure  # names the rows of the batch
    assert not list((tmp_path / "root" / "checkpoints").glob("*.pt"))
    assert not (tmp_path / "root" / "model").exists()


def test_hf_repo_makes_the_channels_optional():
    assert train_seg.channels_optional(TrainSegHyperparameters(hf_repo="org/openeds")) == ["train", "validation"]
    assert train_seg.channels_optional(TrainSegHyperparameters()) == []


@pytest.mark.slow
def test_run_is_tracked_in_a_real_mlflow_server_and_the_model_registered(tmp_path, splits, mlflow_tracking_uri):
    import mlflow

    from steps.tracking import load_registered_model

    name = "test-train-seg-micro"
    assert run(tmp_path, splits, epochs=2, register_model=True, registered_model_name=name,
               mlflow_experiment="test-train-seg") == 0
    client = mlflow.MlflowClient(tracking_uri=mlflow_tracking_uri)
    manifest = json.loads((tmp_path / "output" / "manifest.json").read_text())
    run_id = manifest["summary"]["run_id"]
    tracked = client.get_run(run_id)
    assert tracked.info.status == "FINISHED"
    assert {"train_loss", "valid_loss", "train_iou", "valid_iou", "ce_loss", "dice_loss", "surface_loss",
            "iou_pupil"} <= set(tracked.data.metrics)
    assert [m.step for m in client.get_metric_history(run_id, "valid_iou")] == [1, 2]
    assert tracked.data.tags["model_type"] == "TinyEfficientViT-Micro"
    assert tracked.data.tags["architecture"] == MODEL
    assert tracked.data.params["lr"] == "0.003"
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"checkpoints", "model", "metrics"} <= artifacts
    assert {a.path for a in client.list_artifacts(run_id, "model")} >= {"model/best_efficientvit_tiny_model.pt"}
    version = manifest["summary"]["registered"]["version"]
    model = load_registered_model(name, version=version)
    assert model(torch.zeros(1, 1, 400, 640)).shape == (1, 2, 400, 640)
