"""The exported models validate evaluates: ONNX sessions with their metadata, the checkpoints they
were exported from (for parity), and what each one is (size, parameters, CPU latency)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from torch import nn

from steps.errors import StepError
from steps.export.onnx_export import INPUT_NAME, cpu_session, load_source_model, read_metadata
from steps.report.latency import onnx_latency, paired_latency


@dataclass
class ExportedModel:
    """One ONNX file, its session and metadata, and its PyTorch checkpoint for parity (if any)."""

    path: Path
    session: ort.InferenceSession
    metadata: dict[str, str]
    torch_model: nn.Module | None = None
    checkpoint_path: Path | None = None

    @property
    def task(self) -> str:
        return self.metadata["task"]

    @property
    def input_mode(self) -> str:
        return self.metadata.get("input_mode", "preprocessed")

    def run(self, inputs: np.ndarray) -> np.ndarray:
        return self.session.run(None, {INPUT_NAME: inputs})[0]


def open_exported(path: Path) -> ExportedModel:
    """Load an ONNX file into onnxruntime; StepError naming the file when it does not load."""
    try:
        session = cpu_session(path)
        metadata = read_metadata(path)
    except Exception as error:  # noqa: BLE001 - onnx and onnxruntime raise many types
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise StepError(f"onnx file {path.name}: cannot be loaded by onnxruntime ({first})") from error
    if metadata.get("task") not in ("segmentation", "ellipse"):
        raise StepError(f"onnx file {path.name}: no 'task' in its metadata (not written by export-onnx)")
    return ExportedModel(path=path, session=session, metadata=metadata)


def open_models(onnx_dir: Path) -> list[ExportedModel]:
    """Every ONNX file of export-onnx's output, the segmentation model first (exactly one, and at
    most one ellipse model)."""
    files = sorted(onnx_dir.glob("*.onnx"))
    if not files:
        raise StepError(f"channel 'onnx': no .onnx file in {onnx_dir} (expected export-onnx's output)")
    models = sorted((open_exported(path) for path in files), key=lambda m: m.task != "segmentation")
    for task in ("segmentation", "ellipse"):
        found = [m.path.name for m in models if m.task == task]
        if len(found) > 1 or (task == "segmentation" and not found):
            raise StepError(f"channel 'onnx': expected one {task} model, found {len(found)} ({', '.join(found)})")
    return models


def attach_checkpoints(models: list[ExportedModel], folders: dict[str, tuple[str, Path | None]]) -> list[str]:
    """Each model gets the checkpoint it was exported from (checked by sha256) for parity.

    `folders`: task -> (channel name, model folder or None). Returns warnings for missing ones."""
    warnings = []
    for model in models:
        channel, folder = folders[model.task]
        if folder is None:
            warnings.append(f"{model.path.name}: no '{channel}' channel, so ONNX vs PyTorch parity is not measured")
            continue
        source = load_source_model(folder, model.task)
        expected = model.metadata.get("checkpoint_sha256")
        if expected and expected != source.sha256:
            raise StepError(f"channel '{channel}': {source.checkpoint_path.name} (sha256 {source.sha256[:12]}) is "
                            f"not the checkpoint {model.path.name} was exported from (sha256 {expected[:12]})")
        model.torch_model = source.model
        model.checkpoint_path = source.checkpoint_path
    return warnings


def describe_models(models: list[ExportedModel], runs: int, warmup: int) -> dict[str, dict[str, Any]]:
    """Per ONNX file: what it is, its size and its CPU latency (onnxruntime, and PyTorch eager)."""
    rows = {}
    for model in models:
        meta = model.metadata
        timing = dict(runs=runs, warmup=warmup, threads=1, batch=1)
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
