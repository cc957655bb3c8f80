"""What the KFP UI shows of a run, beyond links: `Metrics` and the validation report as `Markdown`,
and the typed pipeline parameters users change most.

The UI renders a `system.Metrics` artifact from its metadata (what `log_metric` sets in a Python
component), which a container component reports in the executor output file KFP names in the
executor input (`{{$}}`); a `system.Markdown` artifact is rendered from its file. Generic
`Artifact`/`Dataset` outputs show only as links (SPEC 8, "KFP v2 UI").
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

METRICS = "system.Metrics@0.0.1"
MARKDOWN = "system.Markdown@0.0.1"
METRICS_OUTPUT = "kfp_metrics"
REPORT_OUTPUT = "report_md"
# Per step: the UI outputs its component adds beside the contract's outputs.
UI_OUTPUTS: dict[str, dict[str, str]] = {
    "train-seg": {METRICS_OUTPUT: METRICS},
    "train-ellipse": {METRICS_OUTPUT: METRICS},
    "tune": {},
    "validate": {METRICS_OUTPUT: METRICS, REPORT_OUTPUT: MARKDOWN},
}
# Per step: hyperparameters that are also typed component inputs and pipeline parameters.
TYPED_PARAMETERS: dict[str, dict[str, str]] = {
    "train-seg": {"epochs": "Integer", "batch_size": "Integer", "lr": "Float", "model": "String"},
    "train-ellipse": {"epochs": "Integer", "batch_size": "Integer", "lr": "Float"},
}


def _finite(values: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def training_metrics(run_manifest: Mapping[str, Any]) -> dict[str, float]:
    """The best epoch's figures, its number and the best validation mIoU."""
    summary = run_manifest.get("summary", {})
    return _finite({**summary.get("best_metrics", {}), "best_valid_iou": summary.get("best_valid_iou"),
                    "best_epoch": summary.get("best_epoch"), "world_size": summary.get("world_size")})


def validation_metrics(report: Mapping[str, Any]) -> dict[str, float]:
    """mIoU, pupil IoU, and every gate's figure (centre error, latency, parity, size...) per model."""
    segmentation = (report.get("evaluations", {}).get("test") or {}).get("segmentation") or {}
    values: dict[str, Any] = {"miou": segmentation.get("miou"),
                              "pupil_iou": segmentation.get("iou_per_class", {}).get("pupil"),
                              "passed": 1.0 if report.get("passed") else 0.0}
    for gate in report.get("gates", []):
        name = gate["name"].removeprefix("min_").removeprefix("max_")
        values[f"{name} ({Path(gate['model']).stem})"] = gate.get("value")
    return _finite(values)


def executor_output(executor_input: Mapping[str, Any], metrics: Mapping[str, float]) -> dict[str, Any]:
    """The executor output KFP's launcher reads: the Metrics artifact with its metadata."""
    artifact = executor_input["outputs"]["artifacts"][METRICS_OUTPUT]["artifacts"][0]
    return {"artifacts": {METRICS_OUTPUT: {"artifacts": [
        {"name": artifact.get("name", METRICS_OUTPUT), "uri": artifact.get("uri", ""), "metadata": dict(metrics)}]}}}


def write_ui_outputs(step: str, root: Path, outputs: Mapping[str, str | Path], ui_paths: Mapping[str, str | Path],
                     executor_input: Mapping[str, Any] | None) -> dict[str, float]:
    """After the step: the metrics (file and executor output) and the report as Markdown."""
    run_manifest_path = root / "output" / "manifest.json"
    if not ui_paths or not run_manifest_path.is_file():
        return {}
    if step == "validate":
        report_dir = Path(outputs["report"])
        if not (report_dir / "report.json").is_file():
            return {}
        metrics = validation_metrics(json.loads((report_dir / "report.json").read_text(encoding="utf-8")))
        if REPORT_OUTPUT in ui_paths:
            Path(ui_paths[REPORT_OUTPUT]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(report_dir / "report.md", ui_paths[REPORT_OUTPUT])
    else:
        metrics = training_metrics(json.loads(run_manifest_path.read_text(encoding="utf-8")))
    if METRICS_OUTPUT in ui_paths:
        path = Path(ui_paths[METRICS_OUTPUT])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        output_file = (executor_input or {}).get("outputs", {}).get("outputFile")
        if executor_input and output_file:
            Path(output_file).parent.mkdir(parents=True, exist_ok=True)
            Path(output_file).write_text(json.dumps(executor_output(executor_input, metrics)), encoding="utf-8")
    return metrics
