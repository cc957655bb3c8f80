"""validate: evaluate the exported ONNX models (and their checkpoints for parity), gate them, report.

The report is written whether or not the gates pass: a failed gate commits the report (its
manifest marked with the failure) and then fails the step with the gate and its figure on the
failure file's first line (steps.runtime.FailAfterCommit).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets

from contracts.validate import ValidateHyperparameters
from steps.data.loading import load_disk_split
from steps.export.onnx_export import load_source_model
from steps.report import plots
from steps.report.evaluate import (ExportedModel, SplitEvaluation, evaluate_split, open_exported,
                                   raw_frames_dataset)
from steps.report.gates import failure_text, validation_gates
from steps.report.latency import onnx_latency, paired_latency
from steps.report.render import write_report
from steps.report.tracking import log_validation
from steps.runtime import FailAfterCommit, StepError, StepIO

log = logging.getLogger(__name__)
CHECKPOINT_CHANNELS = {"segmentation": "seg_model", "ellipse": "ellipse_model"}
# The real frames beside a project checkout (../shared/fixtures/openeds-sample); absent elsewhere.
DEFAULT_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "openeds-sample"


@dataclass
class Inputs:
    models: list[ExportedModel]  # the segmentation model first
    test: datasets.Dataset
    warnings: list[str] = field(default_factory=list)


def open_models(onnx_dir: Path) -> list[ExportedModel]:
    files = sorted(onnx_dir.glob("*.onnx"))
    if not files:
        raise StepError(f"channel 'onnx': no .onnx file in {onnx_dir} (expected export-onnx's output)")
    models = sorted((open_exported(path) for path in files), key=lambda m: m.task != "segmentation")
    for task in ("segmentation", "ellipse"):
        found = [m.path.name for m in models if m.task == task]
        if len(found) > 1 or (task == "segmentation" and not found):
            raise StepError(f"channel 'onnx': expected one {task} model, found {len(found)} ({', '.join(found)})")
    return models


def attach_checkpoints(models: list[ExportedModel], io: StepIO) -> list[str]:
    """Each ONNX file gets the checkpoint it was exported from (checked by sha256) for parity."""
    warnings = []
    for model in models:
        channel = CHECKPOINT_CHANNELS[model.task]
        folder = io.channel(channel)
        if folder is None:
            warnings.append(f"{model.path.name}: no '{channel}' channel, so ONNX vs PyTorch parity is not measured")
            continue
        source = load_source_model(folder, model.task)
        expected = model.metadata.get("checkpoint_sha256")
        if expected and expected != source.sha256:
            raise StepError(f"channel '{channel}': {source.checkpoint_path.name} (sha256 {source.sha256[:12]}) is "
                            f"not the checkpoint {model.path.name} was exported from (sha256 {expected[:12]})")
        model.torch_model = source.model
    return warnings


def load_inputs(io: StepIO) -> Inputs:
    models = open_models(io.require_channel("onnx"))
    warnings = attach_checkpoints(models, io)
    return Inputs(models=models, test=load_disk_split(io.require_channel("test"), "test"), warnings=warnings)


def check_inputs(hp: ValidateHyperparameters, io: StepIO) -> None:
    """Every ONNX file loads, checkpoints match them, the split is a saved dataset: before any work."""
    load_inputs(io)


def fixtures_folder(hp: ValidateHyperparameters) -> tuple[Path | None, str]:
    folder = Path(hp.fixtures_dir).expanduser() if hp.fixtures_dir else DEFAULT_FIXTURES
    if folder.is_dir():
        return folder, f"{folder}"
    return None, f"real frames not found at {folder} (fixtures_dir); not evaluated"


def evaluate_all(hp: ValidateHyperparameters, inputs: Inputs) -> tuple[dict[str, SplitEvaluation], dict[str, Any]]:
    options = dict(batch_size=hp.batch_size, parity_rows=hp.parity_rows)
    evaluations = {"test": evaluate_split("test", inputs.test, inputs.models, max_rows=hp.max_rows,
                                          overlays=hp.overlays, **options)}
    folder, note = fixtures_folder(hp)
    frames = raw_frames_dataset(folder) if folder else None
    if folder and frames is None:
        note = f"no labelled OpenEDS frame (images/<stem>.png with labels/<stem>.npy) in {folder}; not evaluated"
    if frames is not None:
        evaluations["fixtures"] = evaluate_split("fixtures", frames, inputs.models, max_rows=None,
                                                 overlays=min(hp.overlays, 3), **options)
    return evaluations, {"path": str(folder) if folder else None, "found": frames is not None, "note": note,
                         "frames": len(frames) if frames is not None else 0}


def model_rows(hp: ValidateHyperparameters, models: list[ExportedModel]) -> dict[str, dict[str, Any]]:
    """Per ONNX file: what it is, its size and its CPU latency (onnxruntime, and PyTorch eager)."""
    rows = {}
    for model in models:
        meta = model.metadata
        timing = dict(runs=hp.latency_runs, warmup=hp.latency_warmup, threads=1, batch=1)
        if model.torch_model is not None:
            onnx_figure, torch_figure = paired_latency(model.path, model.torch_model, **timing)
            latency = {"onnxruntime": onnx_figure.to_dict(), "pytorch": torch_figure.to_dict()}
        else:
            latency = {"onnxruntime": onnx_latency(model.path, **timing).to_dict()}
        size = model.path.stat().st_size
        rows[model.path.name] = {
            "task": model.task, "model_name": meta.get("model_name"), "model_type": meta.get("model_type"),
            "parameters": int(meta.get("parameters", 0)), "size_bytes": size, "size_kb": round(size / 1024, 2),
            "input_mode": model.input_mode, "source_run_id": meta.get("source_run_id") or None,
            "checkpoint_sha256": meta.get("checkpoint_sha256"), "has_checkpoint": model.torch_model is not None,
            "opset": meta.get("opset"), "exporter": meta.get("exporter"), "latency": latency}
    return rows


def draw_plots(out: Path, evaluations: dict[str, SplitEvaluation], io: StepIO) -> dict[str, str]:
    """PNG files by title (only those that could be drawn)."""
    drawn: dict[str, Path | None] = {}
    metrics = io.channel("seg_metrics")
    drawn["training curves"] = plots.loss_curves(plots.read_training_history(metrics), out / "loss_curves.png") \
        if metrics else None
    for name, evaluation in evaluations.items():
        seg, ellipse = evaluation.segmentation, evaluation.ellipse
        if seg is None:
            continue
        predictions = ellipse.predictions if ellipse else None
        drawn[f"{name}: sample overlays"] = plots.overlays(seg.overlays, out / f"overlays_{name}.png", predictions)
        drawn[f"{name}: precision-recall of pupil pixels"] = plots.pr_curve(seg.pr.curve(), out / f"pr_curve_{name}.png")
        drawn[f"{name}: pupil IoU histogram"] = plots.iou_histogram([r["pupil_iou"] for r in seg.rows],
                                                                    out / f"iou_histogram_{name}.png")
    return {title: path.name for title, path in drawn.items() if path is not None}


def run(hp: ValidateHyperparameters, io: StepIO) -> dict[str, Any]:
    inputs = load_inputs(io)
    out = io.output("report")
    evaluations, fixtures = evaluate_all(hp, inputs)
    models = model_rows(hp, inputs.models)
    summaries = {name: evaluation.summary() for name, evaluation in evaluations.items()}
    gates = validation_gates(hp, models, summaries["test"])
    warnings = inputs.warnings + [f"{name}: {task} model not evaluated: {reason}"
                                  for name, e in evaluations.items() for task, reason in e.skipped.items()]
    report = {"passed": all(g.passed for g in gates), "gates": [g.to_dict() for g in gates], "models": models,
              "evaluations": summaries, "fixtures": fixtures, "warnings": warnings,
              "plots": draw_plots(out, evaluations, io), "hyperparameters": hp.model_dump(mode="json")}
    write_report(out, report, [row for e in evaluations.values() for row in e.rows()])
    tracking = log_validation(report, out, hp.mlflow_experiment)
    io.annotate("report", passed=report["passed"], gates={g.name + ":" + g.model: g.passed for g in gates})
    summary = {"passed": report["passed"], "failed_gates": [g.message() for g in gates if not g.passed],
               "miou": summaries["test"]["segmentation"]["miou"] if summaries["test"]["segmentation"] else None,
               "fixtures_frames": fixtures["frames"], "tracking": tracking}
    failure = failure_text(gates)
    if failure:
        raise FailAfterCommit(failure, summary)
    return summary
