"""The report's PNGs are drawn from real evaluation data; training history reads from JSON or CSV."""

from __future__ import annotations

import csv
import json

import numpy as np

from steps.report import figures as plots
from steps.report.evaluate import OverlaySample, PixelPR

PNG = b"\x89PNG\r\n\x1a\n"


def test_training_history_from_json_or_csv(tmp_path):
    rows = [{"epoch": 1, "train_loss": 0.9, "valid_loss": 1.0}, {"epoch": 2, "train_loss": 0.5, "valid_loss": 0.7}]
    (tmp_path / "json").mkdir()
    (tmp_path / "json" / "metrics.json").write_text(json.dumps(rows))
    (tmp_path / "csv").mkdir()
    with (tmp_path / "csv" / "metrics.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert plots.read_training_history(tmp_path / "json") == rows
    assert plots.read_training_history(tmp_path / "csv") == [{k: float(v) for k, v in r.items()} for r in rows]
    assert plots.read_training_history(tmp_path) == []
    assert plots.loss_curves(rows, tmp_path / "curves.png").read_bytes()[:8] == PNG
    assert plots.loss_curves([], tmp_path / "none.png") is None


def test_overlays_pr_curve_and_histogram_are_pngs(tmp_path):
    label = np.zeros((400, 640), np.uint8)
    label[180:220, 300:340] = 1
    prediction = np.roll(label, 5, axis=1)
    ellipse = np.array([320 / 640, 200 / 400, 20 / 377.36, 20 / 377.36], np.float32)
    sample = OverlaySample("a.png", np.full((400, 640), 120, np.uint8), label, prediction, ellipse, ellipse + 0.01, 0.78)
    path = plots.overlays([sample, sample], tmp_path / "overlays.png", {"a.png": ellipse - 0.01})
    assert path.read_bytes()[:8] == PNG
    assert plots.overlays([], tmp_path / "none.png") is None
    pr = PixelPR(bins=50)
    pr.add(np.linspace(0, 1, label.size).reshape(label.shape), label)
    assert plots.pr_curve(pr.curve(), tmp_path / "pr.png").read_bytes()[:8] == PNG
    assert plots.iou_histogram([0.1, 0.8, float("nan"), 0.95], tmp_path / "hist.png").read_bytes()[:8] == PNG


def test_the_crop_holds_truth_and_prediction_with_a_margin_inside_the_frame():
    label = np.zeros((400, 640), np.uint8)
    label[180:220, 300:340] = 1
    prediction = np.zeros_like(label)
    prediction[190:230, 350:400] = 1
    sample = OverlaySample("a.png", np.zeros((400, 640), np.uint8), label, prediction, np.zeros(4), np.zeros(4), 0.1)
    x0, x1, y0, y1 = plots.crop_box(sample)
    assert x0 <= 300 and x1 >= 400 and y0 <= 180 and y1 >= 230
    assert (x1 - x0, y1 - y0) == (160, 100)  # the joint box 100x50 grown by 60%, then to the minimum
    corner = OverlaySample("b.png", sample.image, np.pad(np.ones((10, 10), np.uint8), ((0, 390), (0, 630))),
                           np.zeros_like(label), np.zeros(4), np.zeros(4), 0.0)
    assert plots.crop_box(corner) == (0, 160, 0, 100)
