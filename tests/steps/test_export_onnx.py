"""The export-onnx step end to end: model folders in, checked ONNX files, report and manifest out."""

from __future__ import annotations

import json

import numpy as np
import pytest

from contracts import Layout
from steps.export.onnx_export import INPUT_NAME, cpu_session, read_metadata
from steps.models import count_parameters, create_model
from steps.outputs import read_manifest
from steps.runtime import run_step
from tests.steps.export.model_folders import write_model_folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One export-onnx run over the default segmentation model and the ellipse model."""
    root = tmp_path_factory.mktemp("export")
    seg = write_model_folder(root / "in" / "seg", "tiny_efficientvit", run_id="abc")
    ellipse = write_model_folder(root / "in" / "ellipse", "ellipse_regression", input_mode="raw")
    layout = Layout.resolve(root / "ml", channels={"seg_model": seg, "ellipse_model": ellipse})
    code = run_step("export-onnx", layout, {})
    return layout, code


def test_step_writes_both_models_runnable_at_batch_1_and_3(exported):
    layout, code = exported
    assert code == 0, layout.failure_file.read_text() if layout.failure_file.exists() else ""
    out = layout.root / "model"
    expected_shapes = {"best_efficientvit_model.onnx": (2, 400, 640), "best_ellipse_model.onnx": (6,)}
    for name, tail in expected_shapes.items():
        session = cpu_session(out / name)
        for batch in (1, 3):
            inputs = np.zeros((batch, 1, 400, 640), np.float32)
            assert session.run(None, {INPUT_NAME: inputs})[0].shape == (batch, *tail)
    ellipse_meta = read_metadata(out / "best_ellipse_model.onnx")
    assert ellipse_meta["input_mode"] == "raw" and "no gamma" in ellipse_meta["preprocessing"]
    assert json.loads(ellipse_meta["output_fields"]) == ["cx", "cy", "rx", "ry", "cos_2theta", "sin_2theta"]
    assert read_metadata(out / "best_efficientvit_model.onnx")["source_run_id"] == "abc"


def test_step_reports_sizes_and_differences(exported):
    layout, _ = exported
    out = layout.root / "model"
    report = json.loads((out / "export_report.json").read_text())
    rows = {row["file"]: row for row in report["models"]}
    assert set(rows) == {"best_efficientvit_model.onnx", "best_ellipse_model.onnx"}
    for name, row in rows.items():
        assert row["size_bytes"] == (out / name).stat().st_size
        assert 0 <= row["max_abs_diff"] < 1e-4 and row["nodes"] > 0
    assert rows["best_efficientvit_model.onnx"]["size_kb"] < 300
    manifest = read_manifest(out)
    assert manifest["models"]["best_efficientvit_model.onnx"]["size_bytes"] == rows["best_efficientvit_model.onnx"]["size_bytes"]
    assert {f["path"] for f in manifest["files"]} == {*rows, "export_report.json", "MODEL_CARD.md"}


def test_step_writes_a_model_card_beside_the_onnx_files(exported):
    layout, _ = exported
    card = (layout.root / "model" / "MODEL_CARD.md").read_text()
    assert "Status: exported, not yet validated." in card
    for heading in ("## Intended use", "## best_efficientvit_model.onnx: TinyEfficientViT (pupil segmentation)",
                    "## best_ellipse_model.onnx: EllipseRegressionNet", "### Input contract", "## Limitations",
                    "## How to run"):
        assert heading in card, heading
    assert card.index("best_efficientvit_model.onnx:") < card.index("best_ellipse_model.onnx:")
    assert "gamma 0.8 (256-entry LUT) then CLAHE clipLimit 1.5" in card and "no gamma, no CLAHE" in card
    assert "(x / 255 - 0.5) / 0.5" in card and "Training data: not recorded" in card
    size_kb = round((layout.root / "model" / "best_efficientvit_model.onnx").stat().st_size / 1024, 1)
    parameters = count_parameters(create_model("tiny_efficientvit"))
    assert f"Size {size_kb} KB, {parameters} parameters" in card


def test_step_refuses_a_model_in_the_wrong_channel(tmp_path):
    ellipse = write_model_folder(tmp_path / "in" / "ellipse", "ellipse_regression")
    layout = Layout.resolve(tmp_path / "ml", channels={"seg_model": ellipse})
    assert run_step("export-onnx", layout, {}) == 2
    first = layout.failure_file.read_text().splitlines()[0]
    assert "best_ellipse_model.pt: holds ellipse_regression (task ellipse), expected a model with task segmentation" in first
    assert not (layout.root / "model").exists()


def test_step_fails_when_the_segmentation_file_is_over_the_size_limit(tmp_path):
    seg = write_model_folder(tmp_path / "in" / "seg", "tiny_efficientvit_micro")
    layout = Layout.resolve(tmp_path / "ml", channels={"seg_model": seg})
    assert run_step("export-onnx", layout, {"max_seg_size_kb": 20, "exporter": "legacy"}) == 2
    first = layout.failure_file.read_text().splitlines()[0]
    assert first.startswith("onnx size failed for tiny_efficientvit_micro: best_efficientvit_tiny_model.onnx is ")
    assert first.endswith(">= max_seg_size_kb 20")
    assert not (layout.root / "model").exists()


@pytest.mark.slow
def test_the_console_log_holds_only_the_steps_own_lines(tmp_path):
    """A fresh process (torch's exporter warns once per process): no torchvision registrations, no
    FutureWarnings from torch internals, nothing but `HH:MM:SS LEVEL logger: message` lines."""
    import re
    import subprocess
    import sys

    seg = write_model_folder(tmp_path / "seg", "tiny_efficientvit_micro")
    result = subprocess.run([sys.executable, "-m", "steps", "export-onnx", "--root", str(tmp_path / "ml"),
                             "--channel", f"seg_model={seg}"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    foreign = [line for line in lines if not re.match(r"\d\d:\d\d:\d\d (INFO|WARNING) steps[.\w]*: ", line)]
    assert not foreign, "\n".join(foreign)
