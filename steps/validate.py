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
from steps.outputs import read_manifest
from steps.report.evaluate import RealFrames, SplitEvaluation, evaluate_split, raw_frames_dataset
from steps.report.exported import ExportedModel, attach_checkpoints, describe_models, open_models
from steps.report.figures import report_plots
from steps.report.gates import failure_text, validation_gates
from steps.report.mlflow_results import log_validation
from steps.report.model_card import write_model_card
from steps.report.render import write_report
from steps.report.robustness import robustness_summary
from steps.runtime import FailAfterCommit, StepHooks, StepIO

log = logging.getLogger(__name__)
CHECKPOINT_CHANNELS = {"segmentation": "seg_model", "ellipse": "ellipse_model"}


@dataclass
class Inputs:
    models: list[ExportedModel]  # the segmentation model first
    test: datasets.Dataset
    warnings: list[str] = field(default_factory=list)


def load_inputs(io: StepIO) -> Inputs:
    models = open_models(io.require_channel("onnx"))
    warnings = attach_checkpoints(models, {task: (channel, io.channel(channel))
                                           for task, channel in CHECKPOINT_CHANNELS.items()})
    return Inputs(models=models, test=load_disk_split(io.require_channel("test"), "test"), warnings=warnings)


def evaluated_split(folder: Path) -> str:
    """The name of the split fed as `test` (preprocess's manifest says which it wrote), else 'test'."""
    manifest = read_manifest(folder) or {}
    return str(manifest.get("output") or "test")


def check_inputs(hp: ValidateHyperparameters, io: StepIO) -> None:
    """Every ONNX file loads, checkpoints match them, the split is a saved dataset: before any work."""
    load_inputs(io)


def fixtures_folder(hp: ValidateHyperparameters) -> tuple[Path | None, str]:
    """The real frames named by `fixtures_dir` (or OPENEDS_FIXTURES_DIR); the step knows no default
    path, so every checkout, image and scheduler reports the same thing for the same settings."""
    if not hp.fixtures_dir:
        return None, "no real frames given (fixtures_dir / OPENEDS_FIXTURES_DIR); not evaluated"
    folder = Path(hp.fixtures_dir).expanduser()
    if folder.is_dir():
        return folder, f"{folder}"
    return None, f"real frames not found at {folder} (fixtures_dir); not evaluated"


def real_frames(hp: ValidateHyperparameters) -> tuple[datasets.Dataset | None, dict[str, Any]]:
    """The labelled real frames (unprocessed rows) and what the report says about them."""
    folder, note = fixtures_folder(hp)
    read = raw_frames_dataset(folder, hp.frame_policy) if folder else RealFrames(None, {}, [])
    frames = read.dataset
    if folder and frames is None:
        note = (f"{read.error}; not evaluated" if read.error else
                f"no labelled frame of {folder} could be read ({len(read.skipped)} skipped, the first: "
                f"{read.skipped[0]}); not evaluated" if read.skipped else
                f"no labelled OpenEDS frame (images/<stem>.png with labels/<stem>.npy) in {folder}; not evaluated")
    elif read.skipped:
        note = f"{note}; {len(read.skipped)} labelled frame(s) skipped, the first: {read.skipped[0]}"
    return frames, {"path": str(folder) if folder else None, "found": frames is not None, "note": note,
                    "frames": len(frames) if frames is not None else 0, "frame_sizes": read.sizes,
                    "frame_policy": hp.frame_policy, "skipped": read.skipped}


def evaluate_all(hp: ValidateHyperparameters, inputs: Inputs,
                 frames: datasets.Dataset | None) -> dict[str, SplitEvaluation]:
    options = dict(batch_size=hp.batch_size, parity_rows=hp.parity_rows)
    evaluations = {"test": evaluate_split("test", inputs.test, inputs.models, max_rows=hp.max_rows,
                                          overlays=hp.overlays, **options)}
    if frames is not None:
        evaluations["fixtures"] = evaluate_split("fixtures", frames, inputs.models, max_rows=None,
                                                 overlays=min(hp.overlays, 3), **options)
    return evaluations


def evaluate_robustness(hp: ValidateHyperparameters, inputs: Inputs,
                        frames: datasets.Dataset | None) -> dict[str, Any] | None:
    """The robustness suite on a bounded number of split rows and on every real frame."""
    if not hp.robustness:
        return None
    splits: dict[str, tuple[datasets.Dataset, int | None]] = {}
    if hp.robustness_rows:
        splits["test"] = (inputs.test, hp.robustness_rows)
    if frames is not None:
        splits["fixtures"] = (frames, None)
    return robustness_summary(splits, inputs.models, max_levels=hp.robustness_levels, batch_size=hp.batch_size,
                              refine=hp.refine_border)


def run(hp: ValidateHyperparameters, io: StepIO) -> dict[str, Any]:
    inputs = load_inputs(io)
    out = io.output("report")
    frames, fixtures = real_frames(hp)
    evaluations = evaluate_all(hp, inputs, frames)
    robustness = evaluate_robustness(hp, inputs, frames)
    models = describe_models(inputs.models, hp.latency_runs, hp.latency_warmup)
    summaries = {name: evaluation.summary() for name, evaluation in evaluations.items()}
    gates = validation_gates(hp, models, summaries["test"], robustness)
    warnings = inputs.warnings + [f"{name}: {task} model not evaluated: {reason}"
                                  for name, e in evaluations.items() for task, reason in e.skipped.items()]
    if hp.fixtures_dir and (not fixtures["found"] or fixtures["skipped"]):  # asked for, and not all there
        warnings.append(f"real frames: {fixtures['note']}")
    for warning in warnings:  # the report lists them too; a misspelt fixtures_dir must not pass unseen
        log.warning("%s", warning)
    report = {"passed": all(g.passed for g in gates), "gates": [g.to_dict() for g in gates], "models": models,
              "evaluations": summaries, "fixtures": fixtures,
              "robustness": robustness, "warnings": warnings,
              "plots": report_plots(out, evaluations, io.channel("seg_metrics")),
              "evaluated_split": evaluated_split(io.require_channel("test")),
              "hyperparameters": hp.model_dump(mode="json")}
    write_report(out, report, [row for e in evaluations.values() for row in e.rows()])
    card = write_model_card(out, [(m.path, m.metadata) for m in inputs.models], report)
    files = {m.path.name: {"onnx": m.path, "extra": [card, *([m.checkpoint_path] if m.checkpoint_path else [])]}
             for m in inputs.models} if hp.register_model else None
    tracking = log_validation(report, out, hp.mlflow_experiment, files)
    io.annotate("report", passed=report["passed"], gates={g.name + ":" + g.model: g.passed for g in gates})
    summary = {"passed": report["passed"], "failed_gates": [g.message() for g in gates if not g.passed],
               "miou": summaries["test"]["segmentation"]["miou"] if summaries["test"]["segmentation"] else None,
               "fixtures_frames": fixtures["frames"], "tracking": tracking}
    failure = failure_text(gates)
    if failure:
        raise FailAfterCommit(failure, summary)
    return summary


HOOKS = StepHooks(run=run, check_inputs=check_inputs)
