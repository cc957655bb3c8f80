"""Run comparison against a real MLflow server: leaderboard, overlaid curves, config diff."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import matplotlib.image
import pytest

from contracts.train_seg import TrainSegHyperparameters
from steps.runtime import StepError
from steps.tracking import open_tracker
from steps.tracking.compare import diff_runs, format_leaderboard, leaderboard, main, plot_curves
from tests.mlflow_server import mlflow_server, mlflow_tracking_uri  # noqa: F401 - fixtures

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


@pytest.fixture
def experiment(mlflow_tracking_uri, tmp_path) -> dict:
    """Three runs: two with different learning rates and curves, one without validation metrics."""
    name = f"compare-{uuid.uuid4().hex[:8]}"
    runs = {}
    for run_name, lr, curve in (("slow", 0.001, [0.50, 0.70, 0.65]), ("fast", 0.004, [0.60, 0.85, 0.90]),
                                ("broken", 0.01, [])):
        hp = TrainSegHyperparameters(mlflow_experiment=name, lr=lr)
        with open_tracker(hp, run_name=run_name, model_type="TinyEfficientViT", architecture="tiny_efficientvit",
                          output_dir=tmp_path) as tracker:
            tracker.log_params(hp.model_dump(mode="json"))
            for epoch, value in enumerate(curve, start=1):
                tracker.log_metrics({"valid_iou": value, "train_loss": 1 - value}, step=epoch)
            runs[run_name] = tracker.run_id
    return {"name": name, "runs": runs, "uri": mlflow_tracking_uri}


def test_leaderboard_ranks_runs_by_their_best_validation_miou(experiment):
    rows = leaderboard(experiment["name"])
    runs = experiment["runs"]
    assert [r.run_id for r in rows] == [runs["fast"], runs["slow"], runs["broken"]]
    assert [(r.rank, r.score, r.best_step, r.epochs) for r in rows[:2]] == [(1, 0.90, 3, 3), (2, 0.70, 2, 3)]
    assert rows[0].model_type == "TinyEfficientViT" and rows[0].run_name == "fast"
    table = format_leaderboard(rows, "valid_iou")
    assert table.index(runs["fast"]) < table.index(runs["slow"]) and "0.9000" in table


def test_leaderboard_command_prints_json(experiment):
    env = {**os.environ, "MLFLOW_TRACKING_URI": experiment["uri"]}
    result = subprocess.run([sys.executable, "-m", "steps.tracking.compare", "leaderboard", "--experiment",
                             experiment["name"], "--metric", "valid_iou", "--json"],
                            capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    board = json.loads(result.stdout)
    assert [(r["run_name"], r["score"]) for r in board] == [("fast", 0.9), ("slow", 0.7), ("broken", None)]


def test_curves_overlay_runs_in_one_png(experiment, tmp_path):
    runs = experiment["runs"]
    out = plot_curves([runs["slow"], runs["fast"]], "valid_iou", tmp_path / "plots" / "curves.png")
    image = matplotlib.image.imread(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and image.shape[0] > 200 and image.shape[1] > 300
    assert main(["curves", "--runs", runs["fast"], "--metric", "train_loss", "--out", str(tmp_path / "loss.png")]) == 0
    assert (tmp_path / "loss.png").stat().st_size > 1000


def test_diff_shows_the_params_that_changed(experiment, capsys):
    runs = experiment["runs"]
    assert diff_runs(runs["slow"], runs["fast"]) == [{"param": "lr", "a": "0.001", "b": "0.004"}]
    assert diff_runs(runs["fast"], runs["fast"]) == []
    assert main(["diff", runs["slow"], runs["fast"]]) == 0
    out = capsys.readouterr().out
    assert "lr" in out and "0.001" in out and "0.004" in out


def test_unknown_experiment_and_missing_uri_are_clear_errors(experiment, monkeypatch, capsys):
    assert main(["leaderboard", "--experiment", "no-such-experiment"]) == 2
    assert "--experiment: no MLflow experiment named 'no-such-experiment'" in capsys.readouterr().err
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with pytest.raises(StepError, match="^MLFLOW_TRACKING_URI: not set"):
        leaderboard(experiment["name"])
