"""The segmentation model predict runs: an exported ONNX file (default) or a PyTorch checkpoint.

Both give the same thing: `ModelInput` (how to prepare a frame, from the model's own metadata) and
`run(batch) -> logits (B, 2, 400, 640)`. A model path may be an .onnx file, a .pt checkpoint, or a
folder holding them (export-onnx's `onnx` output, which may also hold the ellipse model: the
segmentation file is picked by its metadata; train-seg's `model` output).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from steps.inference.model_input import ModelInput, ModelMismatch

Backend = Literal["auto", "onnx", "checkpoint"]


class PupilModel(Protocol):
    path: Path
    spec: ModelInput
    backend: str

    def run(self, batch: np.ndarray) -> np.ndarray: ...


@dataclass
class OnnxModel:
    path: Path
    spec: ModelInput
    session: Any
    input_name: str
    backend: str = "onnx"

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]


@dataclass
class CheckpointModel:
    path: Path
    spec: ModelInput
    module: Any
    backend: str = "checkpoint"

    def run(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.module(torch.from_numpy(batch)).numpy()


def onnx_session(path: Path, threads: int = 0) -> tuple[Any, dict[str, str]]:
    """An onnxruntime CPU session and the file's metadata_props; ModelMismatch naming the file."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001 - onnxruntime raises several types for a bad file
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ModelMismatch(f"{path}: not a loadable ONNX model ({first[:200]})") from error
    return session, dict(session.get_modelmeta().custom_metadata_map)


def open_onnx(path: Path, threads: int = 0) -> OnnxModel:
    session, metadata = onnx_session(path, threads)
    try:
        spec = ModelInput.from_metadata(metadata)
    except ModelMismatch as error:
        raise ModelMismatch(f"{path}: {error}") from None
    return OnnxModel(path, spec, session, metadata.get("input_name") or session.get_inputs()[0].name)


def open_checkpoint(path: Path, threads: int = 0) -> CheckpointModel:
    """A weights-only checkpoint (steps.models.load_checkpoint) of a segmentation model."""
    import torch

    from steps.models import get_spec, load_checkpoint

    if threads:
        torch.set_num_threads(threads)
    try:
        module, checkpoint = load_checkpoint(path)
    except (ValueError, KeyError, RuntimeError, OSError, EOFError, pickle.UnpicklingError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ModelMismatch(f"{path}: not a usable checkpoint ({first[:200]})") from error
    task = get_spec(checkpoint["model_name"]).task
    if task != "segmentation":
        raise ModelMismatch(f"{path}: a model of task {task!r} ({checkpoint['model_name']}), "
                            f"expected a segmentation model")
    return CheckpointModel(path, ModelInput.for_mode(str(checkpoint.get("input_mode") or "preprocessed")), module)


def _segmentation_onnx(folder: Path, threads: int) -> OnnxModel | None:
    """The one segmentation model among a folder's .onnx files (None when it has none at all)."""
    files = sorted(folder.glob("*.onnx"))
    if not files:
        return None
    problems = []
    for file in files:
        try:
            return open_onnx(file, threads)
        except ModelMismatch as error:
            problems.append(str(error))
    raise ModelMismatch(f"{folder}: no segmentation model among its .onnx files ({'; '.join(problems)})")


def open_model(path: Path, backend: Backend = "auto", threads: int = 0) -> PupilModel:
    """The segmentation model at `path` (file or folder); ModelMismatch naming what is wrong."""
    path = Path(path)
    if not path.exists():
        raise ModelMismatch(f"{path}: model not found")
    if path.is_file():
        if backend == "checkpoint" or (backend == "auto" and path.suffix == ".pt"):
            return open_checkpoint(path, threads)
        return open_onnx(path, threads)
    if backend in ("auto", "onnx"):
        found = _segmentation_onnx(path, threads)
        if found is not None:
            return found
        if backend == "onnx":
            raise ModelMismatch(f"{path}: no .onnx file in the folder")
    checkpoints = sorted(path.glob("best_*.pt")) or sorted(path.glob("*.pt"))
    if len(checkpoints) != 1:
        raise ModelMismatch(f"{path}: expected one .onnx segmentation model or one best_*.pt checkpoint, "
                            f"found {len(checkpoints)} checkpoints and no .onnx file")
    return open_checkpoint(checkpoints[0], threads)
