"""MLflow logging of validation results: off without a URI, fast and non-fatal with a dead server
(the MLflow store round trip is tested through the step in tests/steps/test_validate.py)."""

from __future__ import annotations

import time

from steps.report.mlflow_results import log_validation, model_figures

REPORT = {"models": {"seg.onnx": {"task": "segmentation", "size_kb": 90.0, "parameters": 9927,
                                  "latency": {"onnxruntime": {"median_ms": 8.0}}, "source_run_id": None}},
          "evaluations": {"test": {"segmentation": {"miou": 0.9, "iou_per_class": {"pupil": 0.85},
                                                    "pupil_average_precision": 0.95,
                                                    "parity": {"max_abs_diff": 1e-7}}},
                          "fixtures": {"segmentation": {"miou": float("nan"), "parity": {}}}},
          "gates": [{"name": "min_miou", "model": "seg.onnx", "passed": True}]}


def test_figures_are_flat_scoped_by_split_and_skip_missing_values():
    figures = model_figures(REPORT, "seg.onnx")
    assert figures["validation.miou"] == 0.9 and figures["validation.pupil_iou"] == 0.85
    assert figures["validation.gates_passed"] == 1.0 and figures["validation.latency_ms"] == 8.0
    assert "validation.fixtures.miou" not in figures  # NaN is not a value


def test_without_a_tracking_uri_nothing_is_logged(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert log_validation(REPORT, tmp_path, "openeds") == {"enabled": False}


def test_an_unreachable_server_is_reported_in_seconds_not_raised(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    started = time.monotonic()
    result = log_validation(REPORT, tmp_path, "openeds")
    assert result["enabled"] is True and "unreachable" in result["error"]
    assert time.monotonic() - started < 10
