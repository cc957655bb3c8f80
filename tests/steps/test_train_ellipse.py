"""train-ellipse as a step: the ellipse model trains and reports center/radius error and ellipse IoU."""

from __future__ import annotations

import json

import pytest
import torch

from contracts import Layout
from steps.models import load_checkpoint
from steps.runtime import run_step
from tests.steps.train.tiny_data import write_tiny_splits


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    return write_tiny_splits(tmp_path_factory.mktemp("ellipse_splits"), train_rows=4, valid_rows=2)


def test_train_ellipse_writes_its_model_and_ellipse_metrics(tmp_path, splits):
    layout = Layout.resolve(tmp_path, {"train": splits["train"], "validation": splits["validation"]})
    code = run_step("train-ellipse", layout, {"epochs": 1, "batch_size": 2, "device": "cpu", "register_model": False})
    assert code == 0, (tmp_path / "output" / "failure").read_text() if code else ""
    model, payload = load_checkpoint(tmp_path / "model" / "best_ellipse_model.pt")
    assert payload["model_name"] == "ellipse_regression"
    assert model(torch.zeros(3, 1, 400, 640)).shape == (3, 6)
    card = json.loads((tmp_path / "model" / "model_card.json").read_text())
    assert card["model_type"] == "EllipseRegressionNet"
    row = json.loads((tmp_path / "output" / "data" / "metrics" / "metrics.json").read_text())[0]
    assert {"center_error_px", "radius_error_px", "ellipse_iou", "train_loss", "valid_loss", "lr"} <= set(row)
    assert row["valid_iou"] == row["ellipse_iou"]  # "best" means the same in both training steps
    assert row["center_error_px"] >= 0 and 0 <= row["ellipse_iou"] <= 1
    assert (tmp_path / "checkpoints" / "ellipse_model_epoch_1.pt").is_file()  # the last epoch
