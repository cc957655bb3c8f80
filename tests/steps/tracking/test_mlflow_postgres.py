"""The MLflow tracking server on a PostgreSQL backend store (what teams run), with an artifact store:
a real train-seg run logs to it and registers its model, which loads back by version and by alias.
The rows are checked in PostgreSQL itself, so the run cannot have landed anywhere else."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import mlflow
import pytest
import torch

from contracts import Layout
from steps.runtime import run_step
from steps.tracking import load_registered_model
from tests.steps.train.tiny_data import write_tiny_splits

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
MODEL = "tiny_efficientvit_micro"


@pytest.fixture(scope="module")
def splits(tmp_path_factory) -> dict[str, Path]:
    return write_tiny_splits(tmp_path_factory.mktemp("seg_splits_pg"), train_rows=4, valid_rows=2)


def test_training_logs_registers_and_loads_through_a_postgres_backed_server(
        tmp_path, splits, mlflow_postgres_tracking_uri, postgres_server):
    name = f"openeds-pg-{uuid.uuid4().hex[:6]}"
    layout = Layout.resolve(tmp_path, {"train": splits["train"], "validation": splits["validation"]})
    code = run_step("train-seg", layout, {"model": MODEL, "epochs": 2, "batch_size": 2, "device": "cpu",
                                          "register_model": True, "registered_model_name": name,
                                          "mlflow_experiment": "pg-backed"})
    assert code == 0, (tmp_path / "output" / "failure").read_text()
    summary = json.loads((tmp_path / "output" / "manifest.json").read_text())["summary"]
    run_id, registered = summary["run_id"], summary["registered"]

    client = mlflow.MlflowClient(mlflow_postgres_tracking_uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["model"] == MODEL
    assert [m.step for m in client.get_metric_history(run_id, "valid_iou")] == [1, 2]
    assert {a.path for a in client.list_artifacts(run_id, "model")} >= {"model/best_efficientvit_tiny_model.pt"}
    # training sets `candidate`; `champion` is validate's, once the gates pass (issue 15)
    assert registered["version"] == "1" and registered["aliases"] == ["candidate"]

    with postgres_server.connect("mlflow") as db:  # the server's backend store is this database
        assert db.execute("SELECT status FROM runs WHERE run_uuid = %s", (run_id,)).fetchone() == ("FINISHED",)
        assert db.execute("SELECT version FROM model_versions WHERE name = %s", (name,)).fetchall() == [(1,)]
        assert db.execute("SELECT alias FROM registered_model_aliases WHERE name = %s ORDER BY alias",
                          (name,)).fetchall() == [("candidate",)]

    batch = torch.zeros(1, 1, 400, 640)
    by_version = load_registered_model(name, version=1)  # models:/NAME/1
    by_alias = load_registered_model(name, alias="candidate")  # models:/NAME@candidate
    assert torch.equal(by_version.eval()(batch), by_alias.eval()(batch))
    assert by_alias(batch).shape == (1, 2, 400, 640)
