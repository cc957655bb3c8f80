"""The validate step end to end: reports, plots, gates that fail loudly, MLflow results."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from contracts import Layout
from steps.export.onnx_export import read_metadata
from steps.outputs import read_manifest
from steps.runtime import run_step
from tests.steps.export.model_folders import exported_folder, write_model_folder
from tests.steps.train.tiny_data import make_split

PASSING = {"min_miou": 0.0, "max_center_error_px": 10_000, "max_latency_ms": 60_000,
           "latency_runs": 3, "latency_warmup": 0, "overlays": 2, "robustness_levels": 1}
REPORT_FILES = {"report.json", "per_sample.csv", "report.md", "overlays_test.png", "pr_curve_test.png",
                "iou_histogram_test.png"}


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    """A sqlite MLflow store holding the source run and a registered version of the model."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("openeds", artifact_location=str(root / "artifacts"))
    run_id = client.create_run(experiment).info.run_id
    client.create_registered_model("pupil-seg")
    version = client.create_model_version("pupil-seg", source=str(root / "artifacts" / "model"), run_id=run_id)
    return uri, client, run_id, version


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tracking):
    """Exported micro segmentation model (from the tracked run) and ellipse model, their checkpoints,
    a 3-row test split and training metrics."""
    root = tmp_path_factory.mktemp("validate-inputs")
    channels = exported_folder(root, {"seg_model": "tiny_efficientvit_micro", "ellipse_model": "ellipse_regression"},
                               run_ids={"seg_model": tracking[2]})
    make_split(3, seed=5).save_to_disk(str(root / "test"))
    metrics = root / "metrics"
    metrics.mkdir()
    history = [{"epoch": e, "train_loss": 1.0 / e, "valid_loss": 1.2 / e, "train_iou": 0.3 * e, "valid_iou": 0.25 * e}
               for e in (1, 2, 3)]
    (metrics / "metrics.json").write_text(json.dumps(history))
    from steps.train.training_figures import augmented_grid

    split = make_split(2, seed=6).with_format("numpy")
    augmented_grid({"image": np.stack(split["image"])[:, None], "label": np.stack(split["label"]),
                    "filename": list(split["filename"])}, metrics / "augmented_samples.png")
    return {**channels, "test": root / "test", "seg_metrics": metrics}


@pytest.fixture(autouse=True)
def no_tracking_server(monkeypatch):
    """Tests other than the MLflow one never reach a tracking server from the environment."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def layout_for(root, inputs, **replace):
    channels = {name: inputs[name] for name in ("onnx", "seg_model", "ellipse_model", "test", "seg_metrics")}
    return Layout.resolve(root, channels={**channels, **replace})


@pytest.fixture(scope="module")
def passing_run(inputs, tracking, tmp_path_factory):
    layout = layout_for(tmp_path_factory.mktemp("validate-pass"), inputs)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", tracking[0])
        code = run_step("validate", layout, PASSING)
    return layout, code


def test_validate_writes_the_machine_and_human_reports(passing_run):
    layout, code = passing_run
    assert code == 0, layout.failure_file.read_text() if layout.failure_file.exists() else ""
    report_dir = layout.root / "output" / "data" / "report"
    assert REPORT_FILES <= {p.name for p in report_dir.iterdir()}
    report = json.loads((report_dir / "report.json").read_text())
    assert report["passed"] is True and all(g["passed"] for g in report["gates"])
    assert {(g["name"], g["model"]) for g in report["gates"]} == {
        *((name, "best_efficientvit_tiny_model.onnx") for name in
          ("min_miou", "max_parity_diff", "max_latency_ms", "max_seg_params", "max_seg_size_kb")),
        *((name, "best_ellipse_model.onnx") for name in ("max_center_error_px", "max_parity_diff", "max_latency_ms"))}
    seg = report["evaluations"]["test"]["segmentation"]
    assert seg["frames"] == 3 and 0 <= seg["miou"] <= 1 and set(seg["iou_per_class"]) == {"background", "pupil"}
    assert seg["parity"]["rows"] == 3 and seg["parity"]["max_abs_diff"] < 1e-4
    ellipse = report["evaluations"]["test"]["ellipse"]
    assert ellipse["frames"] == 3 and ellipse["center_error_px"]["mean"] >= 0 and ellipse["parity"]["rows"] == 3
    model = report["models"]["best_efficientvit_tiny_model.onnx"]
    assert model["latency"]["onnxruntime"]["threads"] == 1 and model["latency"]["onnxruntime"]["median_ms"] > 0
    with (report_dir / "per_sample.csv").open() as handle:
        rows = [row for row in csv.DictReader(handle) if row["split"] == "test"]
    assert [row["filename"] for row in rows] == [f"synthetic_5_{i:03d}.png" for i in range(3)]
    assert all(0 <= float(row["pupil_iou"]) <= 1 and float(row["ellipse_center_error_px"]) >= 0 for row in rows)
    markdown = (report_dir / "report.md").read_text()
    assert "Gates: PASSED" in markdown and "| min_miou |" in markdown
    for title, file in report["plots"].items():
        assert f"![{title}]({file})" in markdown
        assert (report_dir / file).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "loss_curves.png" in report["plots"].values()
    assert report["plots"]["training: augmented samples"] == "augmented_samples.png"
    assert report["plots"]["test: worst frames by pupil IoU"] == "overlays_test.png"
    assert read_manifest(report_dir)["passed"] is True


def test_validate_writes_the_model_card_with_its_metrics(passing_run):
    layout, _ = passing_run
    report_dir = layout.root / "output" / "data" / "report"
    report = json.loads((report_dir / "report.json").read_text())
    card = (report_dir / "MODEL_CARD.md").read_text()
    assert "Status: validated: all gates passed." in card and report["evaluated_split"] == "test"
    seg = report["evaluations"]["test"]["segmentation"]
    assert f"| test split | 3 | {seg['miou']:.4f} | {seg['iou_per_class']['pupil']:.4f} |" in card
    latency = report["models"]["best_efficientvit_tiny_model.onnx"]["latency"]["onnxruntime"]["median_ms"]
    assert f"{latency:.2f} ms median per frame" in card
    assert "- Gates: all passed (min_miou, max_parity_diff, max_latency_ms, max_seg_params, max_seg_size_kb)." in card
    assert "Robustness suite" in card and "## Limitations" in card


def test_validate_reports_real_frames_separately(passing_run, real_frames_dir):
    layout, _ = passing_run
    report = json.loads((layout.root / "output" / "data" / "report" / "report.json").read_text())
    assert report["fixtures"]["found"] is True and report["fixtures"]["frames"] == 3
    assert report["evaluations"]["fixtures"]["segmentation"]["frames"] == 3
    assert "Real OpenEDS frames" in (layout.root / "output" / "data" / "report" / "report.md").read_text()


def test_validate_runs_the_robustness_suite_on_the_split_and_the_real_frames(passing_run, real_frames_dir):
    layout, _ = passing_run
    report_dir = layout.root / "output" / "data" / "report"
    robustness = json.loads((report_dir / "report.json").read_text())["robustness"]
    assert set(robustness["sets"]) == {"test", "fixtures"} and robustness["sets"]["fixtures"]["stage"] == "raw"
    assert robustness["sets"]["test"]["frames"] == 3 and robustness["sets"]["fixtures"]["frames"] == 3
    expected = {"best_efficientvit_tiny_model.onnx", "best_efficientvit_tiny_model.onnx + edge refinement",
                "best_ellipse_model.onnx"}
    expected |= {"classical"} if robustness["classical"]["available"] else set()
    for frame_set in robustness["sets"].values():
        assert set(frame_set["predictors"]) == expected
        seg = frame_set["predictors"]["best_efficientvit_tiny_model.onnx"]
        assert set(seg["kinds"]) == set(robustness["kinds"]) and 0 <= seg["mean_pupil_iou"] <= 1
        assert all(len(kind["levels"]) == 1 for kind in seg["kinds"].values())  # robustness_levels=1
    assert "## Robustness" in (report_dir / "report.md").read_text()


def test_validate_logs_results_to_mlflow_and_tags_the_model_version(passing_run, tracking):
    uri, client, run_id, version = tracking
    run = client.get_run(run_id)
    assert 0 <= run.data.metrics["validation.miou"] <= 1
    assert run.data.tags["validation.passed"] == "true"
    tags = client.get_model_version("pupil-seg", version.version).tags
    assert tags["validation.passed"] == "true" and float(tags["validation.miou"]) == pytest.approx(
        run.data.metrics["validation.miou"], rel=1e-5)
    artifacts = {a.path for a in client.list_artifacts(run_id, "validation")}
    assert "validation/report.json" in artifacts


def test_validate_registers_the_checked_onnx_and_makes_it_champion(passing_run, tracking, inputs):
    """The version validate adds is the ONNX file it evaluated (onnx flavor, same bytes), with the
    model card beside it; champion because its gates passed; the training version is untouched."""
    import mlflow

    uri, client, run_id, version = tracking
    champion = client.get_model_version_by_alias("pupil-seg", "champion")
    assert champion.version != version.version and champion.run_id == run_id
    assert champion.tags["format"] == "onnx" and champion.tags["validation.passed"] == "true"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        local = mlflow.artifacts.download_artifacts("models:/pupil-seg@champion")
        model = mlflow.pyfunc.load_model("models:/pupil-seg@champion")
        outputs = model.predict(np.zeros((2, 1, 400, 640), np.float32))
    assert "onnx" in model.metadata.flavors and outputs["logits"].shape == (2, 2, 400, 640)
    logged = next(Path(local).rglob("*.onnx"))
    original = inputs["onnx"] / "best_efficientvit_tiny_model.onnx"
    assert read_metadata(logged)["checkpoint_sha256"] == read_metadata(original)["checkpoint_sha256"]
    assert "# Model card" in next(Path(local).rglob("MODEL_CARD.md")).read_text()
    assert client.get_model_version_by_alias("openeds-ellipse-regression", "champion").tags["format"] == "onnx"


def test_forced_gate_fails_the_step_but_keeps_the_report(inputs, tmp_path, caplog):
    layout = layout_for(tmp_path, inputs)
    assert run_step("validate", layout, {**PASSING, "min_miou": 0.999, "fixtures_dir": str(tmp_path / "none"),
                                         "robustness_rows": 1, "min_robustness_worst_kind": 0.0}) == 2
    first = layout.failure_file.read_text().splitlines()[0]
    assert first.startswith("gate min_miou failed: mIoU ") and "< 0.999" in first
    report_dir = layout.root / "output" / "data" / "report"
    report = json.loads((report_dir / "report.json").read_text())
    assert report["passed"] is False and report["fixtures"]["found"] is False
    assert [g["name"] for g in report["gates"] if not g["passed"]] == ["min_miou"]
    assert [g["label"] for g in report["gates"] if g["name"] == "min_robustness_worst_kind"] == [
        "robustness pupil IoU, worst kind (test)"]  # only the split: no real frames here
    assert read_manifest(report_dir)["summary"]["failure"] == first
    assert "Gates: FAILED" in (report_dir / "report.md").read_text()
    assert f"real frames: real frames not found at {tmp_path / 'none'} (fixtures_dir)" in caplog.text  # in the log too


def test_an_onnx_file_that_does_not_load_fails_clearly(inputs, tmp_path):
    broken = tmp_path / "onnx"
    broken.mkdir()
    (broken / "best_efficientvit_model.onnx").write_bytes(b"this is not a protobuf")
    layout = layout_for(tmp_path / "ml", inputs, onnx=broken)
    assert run_step("validate", layout, PASSING) == 2
    first = layout.failure_file.read_text().splitlines()[0]
    assert first.startswith("onnx file best_efficientvit_model.onnx: cannot be loaded by onnxruntime")
    assert not (layout.root / "output" / "data" / "report").exists()


def test_a_checkpoint_that_is_not_the_exported_one_is_refused(inputs, tmp_path):
    other = write_model_folder(tmp_path / "other", "tiny_efficientvit_micro", seed=7)
    layout = layout_for(tmp_path / "ml", inputs, seg_model=other)
    assert run_step("validate", layout, PASSING) == 2
    first = layout.failure_file.read_text().splitlines()[0]
    assert first.startswith("channel 'seg_model': best_efficientvit_tiny_model.pt (sha256 ")
    assert "is not the checkpoint best_efficientvit_tiny_model.onnx was exported from" in first
