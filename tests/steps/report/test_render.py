"""report.md and per_sample.csv are rendered from the report dict; report.json is strict JSON."""

from __future__ import annotations

import csv
import json
import math

from steps.report.render import fixtures_note, json_safe, render_markdown, write_report

GATE = {"name": "min_miou", "model": "seg.onnx", "label": "mIoU", "value": 0.5, "limit": 0.8, "minimum": True,
        "strict": False, "reason": "", "passed": False}
SEG = {"frames": 2, "miou": 0.5, "pixel_acc": 0.9, "iou_per_class": {"background": 0.9, "pupil": 0.1},
       "pupil_iou_per_frame": {"mean": 0.1, "median": 0.1, "p90": 0.2},
       "pupil_iou_refined_per_frame": {"mean": 0.15, "median": 0.15, "p90": 0.2}, "pupil_average_precision": 0.3,
       "fitted_ellipse": {"center_error_px": {"mean": 3.0, "median": 3.0, "p90": 4.0},
                          "radius_error_px": {"mean": 1.0, "median": 1.0, "p90": 1.0},
                          "ellipse_iou": {"mean": 0.8, "median": 0.8, "p90": 0.9}, "frames_without_pupil": 0},
       "parity": {"rows": 2, "max_abs_diff": 1e-7}}
SKIPPED = {**GATE, "name": "max_parity_diff", "label": "diff", "value": None, "limit": 1e-4, "skipped": True,
           "reason": "no PyTorch checkpoint given", "passed": True}
REPORT = {"passed": False, "gates": [GATE, SKIPPED],
          "models": {"seg.onnx": {"task": "segmentation", "model_type": "TinyEfficientViT", "parameters": 30934,
                                  "size_kb": 180.9, "input_mode": "preprocessed", "source_run_id": None,
                                  "latency": {"onnxruntime": {"median_ms": 8.4}, "pytorch": {"median_ms": 20.0}}}},
          "evaluations": {"test": {"segmentation": SEG, "ellipse": None, "skipped": {}}},
          "fixtures": {"found": False, "note": "real frames not found at /x"},
          "plots": {"test: sample overlays": "overlays_test.png"}, "warnings": ["something to know"]}


def test_markdown_has_the_verdict_tables_plots_and_warnings():
    text = render_markdown(REPORT)
    assert "**Gates: FAILED**" in text
    assert "| min_miou | seg.onnx | mIoU | 0.5 | 0.8 | **FAIL** |" in text
    assert "| seg.onnx | TinyEfficientViT | 30934 | 180.9 | preprocessed | 8.4 | 20 | - |" in text
    assert "| max_parity_diff | seg.onnx | diff | - | 0.0001 | skipped: no PyTorch checkpoint given |" in text
    assert "| IoU pupil | 0.1 |" in text
    assert "real frames not found at /x" in text
    assert "![test: sample overlays](overlays_test.png)" in text and "- something to know" in text
    assert "## Test split" in text  # no evaluated_split recorded: the channel's name


def test_the_heading_names_the_split_that_was_evaluated():
    text = render_markdown({**REPORT, "evaluated_split": "validation"})
    assert "## Validation split" in text and "Test split" not in text


def test_report_files_are_written_with_nan_as_null_and_empty(tmp_path):
    rows = [{"split": "test", "filename": "a.png", "pupil_iou": 0.5, "fit_center_error_px": math.nan}]
    write_report(tmp_path, {**REPORT, "extra": math.inf}, rows)
    assert json.loads((tmp_path / "report.json").read_text())["extra"] is None
    with (tmp_path / "per_sample.csv").open() as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["filename"] == "a.png" and row["pupil_iou"] == "0.5" and row["fit_center_error_px"] == ""
    assert (tmp_path / "report.md").read_text().startswith("# Validation report")
    assert json_safe({"a": [math.nan, 1.0]}) == {"a": [None, 1.0]}


def test_the_real_frames_note_says_their_sizes_policy_and_skipped_frames():
    note = fixtures_note({"path": "/cam", "frame_sizes": {"320x240": 2}, "frame_policy": "crop",
                          "skipped": ["/cam/images/b.png: image file is missing"]})
    assert note == ("Frames from `/cam`; never used for training. Frame sizes 2 of 320x240, mapped onto 640x400 by "
                    "frame_policy crop. 1 labelled frame(s) skipped, the first: /cam/images/b.png: image file is missing")
    assert fixtures_note({"path": "/f", "frame_sizes": {"640x400": 3}, "frame_policy": "pad", "skipped": []}) == \
        "Frames from `/f`; never used for training."
