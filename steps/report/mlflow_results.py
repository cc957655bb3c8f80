"""Validation results to MLflow: metrics on each model's source run, tags on its registered versions.

Only when MLFLOW_TRACKING_URI is set (steps.tracking's reachability check keeps a dead server from
costing minutes). A model whose source run is unknown (or not on this server)
gets its figures on one new `validate` run instead. Tracking problems never hide the report: they
come back as an `error` entry and a warning.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from steps.secrets import redact
from steps.tracking.mlflow_backend import check_reachable, tracking_uri

log = logging.getLogger(__name__)
PREFIX = "validation"


def model_figures(report: dict[str, Any], file: str) -> dict[str, float]:
    """The model's headline figures, flat: validation.miou, validation.fixtures.miou, ..."""
    model = report["models"][file]
    figures: dict[str, Any] = {"size_kb": model["size_kb"], "parameters": model["parameters"],
                               "latency_ms": model.get("latency", {}).get("onnxruntime", {}).get("median_ms")}
    for split, evaluation in report["evaluations"].items():
        results = (evaluation or {}).get(model["task"]) or {}
        scope = "" if split == "test" else f"{split}."
        if model["task"] == "segmentation":
            figures |= {f"{scope}miou": results.get("miou"), f"{scope}pupil_iou": results.get("iou_per_class", {}).get("pupil"),
                        f"{scope}pupil_ap": results.get("pupil_average_precision")}
        else:
            figures |= {f"{scope}{key}": results.get(key, {}).get("mean")
                        for key in ("center_error_px", "radius_error_px", "ellipse_iou", "ellipse_iou_with_angle")}
        figures[f"{scope}parity_max_abs_diff"] = results.get("parity", {}).get("max_abs_diff")
    passed = all(g["passed"] for g in report["gates"] if g["model"] == file)
    figures["gates_passed"] = 1.0 if passed else 0.0
    return {f"{PREFIX}.{k}": float(v) for k, v in figures.items() if v is not None and v == v}


def _existing_run(client: Any, run_id: str | None) -> str | None:
    if not run_id:
        return None
    try:
        return client.get_run(run_id).info.run_id
    except Exception:  # noqa: BLE001 - MlflowException for an unknown id
        log.warning("MLflow: source run %s not found on this server; logging to a validation run", run_id)
        return None


def _validation_run(client: Any, experiment: str, file: str, source_run: str | None) -> str:
    found = client.get_experiment_by_name(experiment)
    experiment_id = os.environ.get("MLFLOW_EXPERIMENT_ID") or (
        found.experiment_id if found else client.create_experiment(experiment))
    tags = {"mlflow.runName": f"validate {file}", "step": "validate", "source_run_id": source_run or "unknown"}
    return client.create_run(experiment_id, tags=tags).info.run_id


def _log_model(client: Any, run_id: str, figures: dict[str, float], source_run: str | None,
               failed_gates: list[str]) -> list[str]:
    """Metrics and tags on the run; the same results as tags on registered versions of the source run."""
    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, v, stamp, 0) for k, v in figures.items()])
    verdict = {f"{PREFIX}.passed": "false" if failed_gates else "true",
               f"{PREFIX}.failed_gates": ",".join(failed_gates) or "none"}
    for key, value in verdict.items():
        client.set_tag(run_id, key, value)
    tagged = []
    if source_run:
        tags = {**{k: f"{v:.6g}" for k, v in figures.items()}, **verdict}
        for version in client.search_model_versions(f"run_id = '{source_run}'"):
            for key, value in tags.items():
                client.set_model_version_tag(version.name, version.version, key, value)
            tagged.append(f"{version.name}/{version.version}")
    return tagged


def register_validated(client: Any, run_id: str, file: str, report: dict[str, Any], files: dict[str, Any],
                       failed: list[str]) -> dict[str, Any]:
    """The ONNX file as a registered onnx-flavor version; champion when none of its gates failed."""
    from steps.tracking.onnx_registry import register_onnx, registered_name

    model = report["models"][file]
    name = registered_name(client, model.get("source_run_id"), model.get("model_name") or Path(file).stem)
    tags = {**{k: f"{v:.6g}" for k, v in model_figures(report, file).items()},
            f"{PREFIX}.passed": "false" if failed else "true", f"{PREFIX}.failed_gates": ",".join(failed) or "none"}
    return register_onnx(client, run_id, files["onnx"], name=name, extra_files=files["extra"], tags=tags,
                         champion=not failed)


def log_validation(report: dict[str, Any], report_dir: Path, experiment: str,
                   files: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Log every model's figures to its source run (or a new validation run) with the report files;
    with `files` (ONNX file name -> {"onnx": path, "extra": [paths]}) also register each ONNX file.
    Returns the run per ONNX file, the tagged model versions and the registered ones."""
    uri = tracking_uri()
    if uri is None:
        return {"enabled": False}
    try:
        from mlflow.tracking import MlflowClient

        check_reachable(uri)  # seconds, not minutes of retries, when the server is down
        client = MlflowClient(tracking_uri=uri)
        runs: dict[str, str] = {}
        tagged: list[str] = []
        registered: dict[str, Any] = {}
        for file, model in report["models"].items():
            source = model.get("source_run_id") or None
            run_id = _existing_run(client, source) or _validation_run(client, experiment, file, source)
            failed = [g["name"] for g in report["gates"] if g["model"] == file and not g["passed"]]
            tagged += _log_model(client, run_id, model_figures(report, file), source, failed)
            client.log_artifacts(run_id, str(report_dir), artifact_path=PREFIX)
            if files and file in files:
                registered[file] = register_validated(client, run_id, file, report, files[file], failed)
            if run_id != source:
                client.set_terminated(run_id, "FINISHED")
            runs[file] = run_id
        return {"enabled": True, "runs": runs, "tagged_versions": tagged, "registered": registered}
    except Exception as error:  # noqa: BLE001 - the report stands without tracking
        message = redact(f"{type(error).__name__}: {error}").splitlines()[0]
        log.warning("MLflow logging failed: %s", message)
        return {"enabled": True, "error": message}
