"""MLflow tracking against a real `mlflow server` (tests/mlflow_server.py)."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

import steps.tracking as tracking
from contracts.train_seg import TrainSegHyperparameters
from steps.models import create_model
from steps.runtime import StepError
from steps.tracking import load_registered_model, open_tracker
from steps.train.checkpoints import save_best
from tests.mlflow_server import mlflow_server, mlflow_tracking_uri  # noqa: F401 - fixtures

CANARY = "canary-secret-7f3a9c1e"
EPOCH_METRICS = ("train_loss", "valid_loss", "train_iou", "valid_iou", "ce_loss", "dice_loss", "surface_loss")


def hp(**overrides) -> TrainSegHyperparameters:
    return TrainSegHyperparameters(mlflow_experiment=f"test-{uuid.uuid4().hex[:8]}", **overrides)


def open_seg_tracker(settings, tmp_path, **kwargs):
    return open_tracker(settings, run_name=kwargs.pop("run_name", "seg-run"), model_type="TinyEfficientViT",
                        architecture="tiny_efficientvit", output_dir=tmp_path, **kwargs)


def test_run_holds_params_tags_metrics_artifacts_and_no_secret(mlflow_tracking_uri, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", CANARY)
    settings = hp(hf_repo=f"team/{CANARY}", lr=0.004)
    with open_seg_tracker(settings, tmp_path, run_name=f"run-{CANARY}") as tracker:
        tracker.log_params({**settings.model_dump(mode="json"), "world_size": 1})
        tracker.set_tags({"note": f"token {CANARY}"})
        for epoch in (1, 2):
            tracker.log_metrics({name: 0.1 * epoch + i for i, name in enumerate(EPOCH_METRICS)}, step=epoch)
        checkpoint = tmp_path / "best_efficientvit_model.pt"
        checkpoint.write_bytes(b"weights")
        tracker.log_artifact(checkpoint, artifact_path="checkpoints")
        tracker.log_images({"overlay": np.full((40, 64, 3), 200, np.uint8)}, step=2)
        run_id = tracker.run_id
    client = mlflow.MlflowClient(mlflow_tracking_uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == settings.mlflow_experiment
    assert set(EPOCH_METRICS) <= set(run.data.metrics)
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "valid_iou")] == [
        (1, pytest.approx(3.1)), (2, pytest.approx(3.2))]
    assert run.data.tags["model_type"] == "TinyEfficientViT" and run.data.tags["architecture"] == "tiny_efficientvit"
    assert run.data.params["lr"] == "0.004" and run.data.params["world_size"] == "1"
    everything = " ".join([*run.data.params.values(), *run.data.tags.values(), run.info.run_name])
    assert CANARY not in everything and "team/***" in run.data.params["hf_repo"]
    assert [a.path for a in client.list_artifacts(run_id, "checkpoints")] == ["checkpoints/best_efficientvit_model.pt"]
    assert client.list_artifacts(run_id, "images"), "log_images stores the image with its step"


@pytest.mark.slow
def test_registered_model_loads_by_version_and_alias(mlflow_tracking_uri, tmp_path):
    name = f"openeds-test-{uuid.uuid4().hex[:6]}"
    model = create_model("tiny_efficientvit_micro").eval()
    example = torch.zeros(2, 1, 400, 640).numpy()
    checkpoint = save_best(model, tmp_path, model_name="tiny_efficientvit_micro", model_config={}, epoch=1,
                           metrics={}, input_mode="preprocessed", hyperparameters={}, run_id=None)
    versions = []
    for score in ("0.9100", "0.8800"):
        with open_seg_tracker(hp(), tmp_path) as tracker:
            versions.append(tracker.register_model(model, checkpoint, name=name,
                                                   tags={"valid_iou": score, "model_type": "TinyEfficientViT-Micro"},
                                                   input_example=example))
    first, second = versions
    assert (first["version"], second["version"]) == ("1", "2")
    assert first["aliases"] == second["aliases"] == ["candidate"]  # champion: only validate's gates make one
    client = mlflow.MlflowClient(mlflow_tracking_uri)
    tags = client.get_model_version(name, "1").tags
    assert tags["valid_iou"] == "0.9100" and tags["run_id"] == first["run_id"] and "date" in tags
    assert len(tags.get("git_commit", "x" * 40)) == 40
    batch = torch.randn(1, 1, 400, 640)  # batch 1: the logged model is not fixed to the example's shape
    expected = model(batch)
    for loaded in (load_registered_model(name, version=1), load_registered_model(name, alias="candidate"),
                   load_registered_model(name)):
        assert torch.allclose(loaded.eval()(batch), expected, atol=1e-6)
    assert client.get_model_version_by_alias(name, "candidate").version == "2"
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_model_version_by_alias(name, "champion")
    # The logged model itself is torch.export's graph (no pickle): it runs without the project's classes.
    graph = mlflow.pytorch.load_model(f"models:/{name}@candidate")
    assert "steps" not in type(graph).__module__
    assert torch.allclose(graph(batch), expected, atol=1e-5) and graph(torch.zeros(3, 1, 400, 640)).shape[0] == 3


def test_experiment_id_from_the_environment_wins(mlflow_tracking_uri, tmp_path, monkeypatch):
    client = mlflow.MlflowClient(mlflow_tracking_uri)
    experiment_id = client.create_experiment(f"chosen-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment_id)
    with open_seg_tracker(hp(), tmp_path) as tracker:
        run_id = tracker.run_id
    assert client.get_run(run_id).info.experiment_id == experiment_id


def test_failure_inside_the_block_marks_the_run_failed(mlflow_tracking_uri, tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with open_seg_tracker(hp(), tmp_path) as tracker:
            run_id = tracker.run_id
            raise RuntimeError("boom")
    assert mlflow.MlflowClient(mlflow_tracking_uri).get_run(run_id).info.status == "FAILED"


def test_resumed_training_continues_the_same_run(mlflow_tracking_uri, tmp_path):
    settings = hp()
    with open_seg_tracker(settings, tmp_path) as tracker:
        tracker.log_params({"lr": 0.003})
        tracker.log_metrics({"valid_iou": 0.5}, step=1)
        run_id = tracker.run_id
    with open_seg_tracker(settings, tmp_path, resume_run_id=run_id) as tracker:
        tracker.log_params({"lr": 0.003, "epochs": 4})
        tracker.log_metrics({"valid_iou": 0.6}, step=2)
        assert tracker.run_id == run_id
    client = mlflow.MlflowClient(mlflow_tracking_uri)
    assert [m.step for m in client.get_metric_history(run_id, "valid_iou")] == [1, 2]
    assert client.get_run(run_id).data.params == {"lr": "0.003", "epochs": "4"}


def test_unreachable_server_fails_fast_with_a_clear_message(tmp_path, monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://user:{CANARY}@127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(StepError, match="^MLFLOW_TRACKING_URI: the MLflow tracking server http://127.0.0.1:") as error:
        open_seg_tracker(hp(), tmp_path)
    assert time.monotonic() - started < 10
    assert CANARY not in str(error.value)


def test_without_tracking_uri_it_warns_once_and_keeps_local_files_only(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(tracking, "_warned_no_mlflow", False)
    with caplog.at_level(logging.WARNING, logger="steps.tracking"):
        for _ in range(2):
            with open_seg_tracker(hp(), tmp_path) as tracker:
                tracker.log_metrics({"valid_iou": 0.5}, step=1)
                assert tracker.run_id is None
                assert tracker.register_model(torch.nn.Linear(1, 1), tmp_path / "x.pt", name="n", tags={},
                                              input_example=None) is None
    assert caplog.text.count("MLFLOW_TRACKING_URI is not set") == 1


def test_disabled_tracker_does_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # never contacted
    tracker = open_seg_tracker(hp(wandb=True, tensorboard=True), tmp_path, enabled=False)
    tracker.log_metrics({"valid_iou": 1.0}, step=1)
    tracker.finish()
    assert tracker.backends == [] and not any(tmp_path.iterdir())


def test_local_sqlite_store_without_a_server(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with open_seg_tracker(hp(), tmp_path) as tracker:
        tracker.log_metrics({"valid_iou": 0.7}, step=1)
        run_id = tracker.run_id
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_run(run_id).data.metrics["valid_iou"] == pytest.approx(0.7)


def test_processes_opening_a_new_sqlite_store_at_once_all_get_their_run(tmp_path):
    """The local runner starts train-seg and train-ellipse together on an empty sqlite store: without
    the store lock each migrated the schema and most failed ("table latest_metrics already exists":
    8 of 9 processes in three tries)."""
    database = tmp_path / "mlflow.db"
    script = ("import sys; from steps.tracking.mlflow_backend import MlflowBackend; "
              "b = MlflowBackend(experiment='shared', run_name=sys.argv[1], tags={}); "
              "b.log_metrics({'x': 1.0}, step=0); b.finish('FINISHED')")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{database}"}
    root = Path(__file__).resolve().parents[3]
    processes = [subprocess.Popen([sys.executable, "-c", script, f"run-{i}"], env=env, cwd=root,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(3)]
    outputs = [process.communicate(timeout=120)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0], "\n".join(o[-1500:] for o in outputs)
    client = mlflow.MlflowClient(f"sqlite:///{database}")
    runs = client.search_runs([client.get_experiment_by_name("shared").experiment_id])
    assert sorted(run.info.run_name for run in runs) == ["run-0", "run-1", "run-2"]


def test_a_damaged_registered_checkpoint_is_one_step_error_naming_the_version(tmp_path):
    from steps.errors import StepError
    from steps.tracking.mlflow_backend import load_checkpoint_of

    (tmp_path / "version" / "extra_files").mkdir(parents=True)
    (tmp_path / "version" / "extra_files" / "best_efficientvit_model.pt").write_bytes(b"junk\n")
    with pytest.raises(StepError, match=r"model registry: .*version: not a PyTorch checkpoint file"):
        load_checkpoint_of(str(tmp_path / "version"))
