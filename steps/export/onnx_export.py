"""Export a trained model folder to one checked ONNX file with its metadata.

The ONNX file is what ships to the edge device, so it carries everything a consumer needs to feed
it correctly (input layout, normalization, the preprocessing the frame must already have had, class
names) and where it came from (run id, checkpoint hash). Every export is checked before it is
reported: `onnx.checker`, a dynamic batch axis, and onnxruntime against PyTorch at batch 1 and 3.

torch 2.13's dynamo exporter specializes a dimension whose example size is 0 or 1: an example
batch of 1 silently gives a static graph, so the example batch is always 2.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from steps.data.frames import IMAGE_HEIGHT, IMAGE_WIDTH, MAX_RADIUS, normalize_image
from steps.data.synthetic import render_indexed_frame
from steps.data.transforms import PreprocessParams, enhance_image
from steps.errors import StepError
from steps.models import ModelSpec, count_parameters, create_model, get_spec
from steps.models.checkpoint_file import CheckpointRefused, read_checkpoint
from steps.models.layers import fuse_conv_bn
from steps.models.registry import ELLIPSE_OUTPUTS
from steps.outputs import loads_json, sha256_file
from steps.paths import PathOutsideFolder, inside_folder

Exporter = Literal["dynamo", "legacy"]
MODEL_CARD_NAME = "model_card.json"
INPUT_NAME = "image"
OUTPUT_NAMES = {"segmentation": "logits", "ellipse": "ellipse"}
EXAMPLE_BATCH = 2           # >= 2, or the dynamo exporter makes the batch axis static
PARITY_BATCHES = (1, 3)
MAX_EXPORT_BATCH = 4096
WRAPPER_PREFIXES = ("_orig_mod.", "module.")  # torch.compile, DistributedDataParallel


@dataclass
class SourceModel:
    """A trained model folder, loaded: the rebuilt module and the facts the export records."""

    folder: Path
    checkpoint_path: Path
    checkpoint: dict[str, Any]
    card: dict[str, Any]
    spec: ModelSpec
    model: nn.Module
    sha256: str

    @property
    def input_mode(self) -> str:
        return str(self.checkpoint.get("input_mode") or self.card.get("input_mode") or "preprocessed")

    @property
    def run_id(self) -> str | None:
        return self.checkpoint.get("run_id") or self.card.get("run_id")

    @property
    def parameters(self) -> int:
        return count_parameters(self.model)

    @property
    def training_data(self) -> dict[str, Any]:
        """What the model was trained on (steps.train.provenance), {} when the card does not say."""
        facts = self.card.get("training_data")
        return facts if isinstance(facts, dict) else {}


@dataclass
class ExportResult:
    """What export_checked measured about one ONNX file (the export report's row)."""

    model_name: str
    model_type: str
    task: str
    file: str
    size_bytes: int
    nodes: int
    initializer_bytes: int
    parameters: int
    parity: dict[str, float]
    max_abs_diff: float
    exporter: str
    opset: int
    seconds: float
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def size_kb(self) -> float:
        return self.size_bytes / 1024

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "size_kb": round(self.size_kb, 2)}


def onnx_file_name(model_name: str) -> str:
    """best_<checkpoint stem>.onnx: best_efficientvit_model, best_efficientvit_tiny_model, best_ellipse_model."""
    return f"best_{get_spec(model_name).checkpoint_stem}.onnx"


# ---------------------------------------------------------------- reading a model folder

def find_checkpoint(folder: Path) -> tuple[Path, dict[str, Any]]:
    """The checkpoint the model card names (or the folder's only best_*.pt) and the card."""
    card_path = folder / MODEL_CARD_NAME
    card: dict[str, Any] = {}
    if card_path.is_file():
        try:
            card = loads_json(card_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise StepError(f"{card_path}: not valid JSON ({error.msg} at line {error.lineno})") from error
        if not isinstance(card, dict) or not card.get("checkpoint"):
            raise StepError(f"{card_path}: expected a JSON object naming its 'checkpoint'")
        try:
            path = inside_folder(folder, str(card["checkpoint"]), f"{card_path} field 'checkpoint'")
        except PathOutsideFolder as error:
            raise StepError(str(error)) from error
        if not path.is_file():
            raise StepError(f"{path}: checkpoint named by {MODEL_CARD_NAME} is missing")
        return path, card
    found = sorted(folder.glob("best_*.pt"))
    if len(found) != 1:
        raise StepError(f"{folder}: no {MODEL_CARD_NAME} and {len(found)} best_*.pt checkpoints "
                        f"(expected exactly one)")
    return found[0], card


def strip_wrapper_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop `_orig_mod.` (torch.compile) and `module.` (DDP) prefixes, in any nesting.

    A prefix is dropped only when every key has it, so a real submodule named `module` survives.
    """
    state = dict(state_dict)
    changed = True
    while changed and state:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(key.startswith(prefix) for key in state):
                state = {key[len(prefix):]: value for key, value in state.items()}
                changed = True
    return state


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], context: str) -> None:
    """Strict loading with a one-line reason: missing/unexpected key counts or the size mismatch."""
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # size mismatches raise even when not strict
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise StepError(f"{context} ({lines[1] if len(lines) > 1 else lines[0]})") from error
    problems = [f"{len(keys)} {kind} keys (first: {keys[0]})"
                for kind, keys in (("missing", result.missing_keys), ("unexpected", result.unexpected_keys)) if keys]
    if problems:
        raise StepError(f"{context}: {'; '.join(problems)}")


def load_source_model(folder: Path, task: str | None = None) -> SourceModel:
    """Load a training `model` folder; `task` ("segmentation"/"ellipse") is checked when given."""
    path, card = find_checkpoint(folder)
    try:
        checkpoint = read_checkpoint(path)
    except CheckpointRefused as error:
        raise StepError(str(error)) from error
    except Exception as error:  # noqa: BLE001 - any unreadable file is the same user-facing problem
        raise StepError(f"{path}: cannot be read as a PyTorch checkpoint ({type(error).__name__}: {error})") from error
    if "state_dict" not in checkpoint or "model_name" not in checkpoint:
        raise StepError(f"{path}: not an openeds checkpoint (expected a dict with model_name and state_dict)")
    try:
        spec = get_spec(checkpoint["model_name"])
    except KeyError as error:
        raise StepError(f"{path}: {error.args[0]}") from error
    if task is not None and spec.task != task:
        raise StepError(f"{path}: holds {spec.name} (task {spec.task}), expected a model with task {task}")
    model = create_model(spec.name, **(checkpoint.get("model_config") or {}))
    load_weights(model, strip_wrapper_prefixes(checkpoint["state_dict"]), f"{path}: weights do not fit {spec.name}")
    return SourceModel(folder=folder, checkpoint_path=path, checkpoint=checkpoint, card=card, spec=spec,
                       model=model.eval(), sha256=sha256_file(path))


# ---------------------------------------------------------------- metadata

def preprocessing_params(input_mode: str, recorded: dict[str, Any] | None = None) -> dict[str, float | int]:
    """The enhancement the model's frames had, as enhance_image's parameters ({} for raw frames):
    those the training data recorded (preprocess's manifest, via the model card), else the spec's."""
    if input_mode == "raw":
        return {}
    params = PreprocessParams(**{key: value for key, value in (recorded or {}).items()
                                 if key in ("gamma", "clahe_clip_limit", "clahe_tile_grid")})
    return {"gamma": params.gamma, "clahe_clip_limit": params.clahe_clip_limit,
            "clahe_tile_grid": params.clahe_tile_grid}


def preprocessing_description(input_mode: str, recorded: dict[str, Any] | None = None) -> str:
    if input_mode == "raw":
        return "none: the raw camera frame (no gamma, no CLAHE)"
    params = preprocessing_params(input_mode, recorded)
    return (f"gamma {params['gamma']} (256-entry LUT) then CLAHE clipLimit {params['clahe_clip_limit']} "
            f"tileGridSize {params['clahe_tile_grid']}x{params['clahe_tile_grid']} "
            f"(steps.data.transforms.enhance_image)")


def output_description(spec: ModelSpec) -> str:
    height, width = spec.input_size
    if spec.task == "segmentation":
        return f"logits float32 [N, {len(spec.outputs)}, {height}, {width}]; argmax over dim 1 is the class"
    angle = ("; then cos 2t, sin 2t of the major axis (ry's) angle t" if len(spec.outputs) > len(ELLIPSE_OUTPUTS)
             else "")
    return (f"ellipse float32 [N, {len(spec.outputs)}]: cx / {width}, cy / {height}, rx / {MAX_RADIUS}, "
            f"ry / {MAX_RADIUS} (pixels after multiplying back; rx <= ry){angle}")


def onnx_metadata(source: SourceModel, exporter: str, opset: int) -> dict[str, str]:
    """The metadata_props written into the ONNX file: how to feed it and where it came from."""
    spec, task = source.spec, source.spec.task
    return {
        "model_name": spec.name,
        "model_type": source.spec.model_type,
        "task": task,
        "input_name": INPUT_NAME,
        "input_layout": "NCHW",
        "input_shape": json.dumps(["N", *spec.input_shape(1)[1:]]).replace('"', ""),
        "input_dtype": "float32",
        "normalization": f"(x / 255 - {spec.input_mean}) / {spec.input_std} from uint8 grayscale "
                         f"(range [{-spec.input_mean / spec.input_std:g}, {(1 - spec.input_mean) / spec.input_std:g}])",
        # The same facts as numbers, for code (steps.inference.model_input reads them).
        "input_mean": str(spec.input_mean),
        "input_std": str(spec.input_std),
        "input_mode": source.input_mode,
        "preprocessing": preprocessing_description(source.input_mode, source.training_data.get("preprocessing")),
        "preprocessing_params": json.dumps(preprocessing_params(source.input_mode,
                                                                source.training_data.get("preprocessing"))),
        "training_data": json.dumps(source.training_data),
        "output_name": OUTPUT_NAMES[task],
        "output": output_description(spec),
        **({"class_names": json.dumps(list(spec.outputs))} if task == "segmentation"
           else {"output_fields": json.dumps(list(spec.outputs))}),
        "parameters": str(source.parameters),
        "source_run_id": str(source.run_id or ""),
        "checkpoint_file": source.checkpoint_path.name,
        "checkpoint_sha256": source.sha256,
        "checkpoint_epoch": str(source.checkpoint.get("epoch", "")),
        "checkpoint_metrics": json.dumps(source.checkpoint.get("metrics") or {}, default=float),
        "opset": str(opset),
        "exporter": exporter,
        "torch_version": torch.__version__,
    }


def strip_debug_info(graph: onnx.GraphProto) -> None:
    """Drop per-node debug metadata (the dynamo exporter's stack traces and class hierarchies:
    about two thirds of a small model's file) from the graph and its subgraphs."""
    for item in (*graph.node, *graph.value_info, *graph.initializer):
        del item.metadata_props[:]
    for node in graph.node:
        node.doc_string = ""
        for attribute in node.attribute:
            for subgraph in (*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs):
                strip_debug_info(subgraph)


def finalize_onnx(path: Path, metadata: dict[str, str]) -> None:
    """Write the model's metadata_props (temp file then rename: never half-written)."""
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, metadata)
    proto.doc_string = f"{metadata['model_type']} ({metadata['task']}); see metadata_props"
    temp = path.with_name(f".{path.name}.tmp")
    onnx.save(proto, str(temp))
    os.replace(temp, path)


def read_metadata(path: Path) -> dict[str, str]:
    proto = onnx.load(str(path), load_external_data=False)
    return {prop.key: prop.value for prop in proto.metadata_props}


# ---------------------------------------------------------------- export and checks

# torch 2.13's exporter: its registry logs one WARNING per torchvision op when torchvision is absent
# (this project never uses torchvision), and its deepcopy of pytrees trips pytree's own LeafSpec
# deprecation. Both are about torch internals, not about the model being exported.
QUIET_LOGGERS = {"onnxscript": logging.WARNING, "onnx_ir": logging.WARNING, "torch.onnx": logging.WARNING,
                 "torch.onnx._internal.exporter._registration": logging.ERROR}
TORCH_INTERNAL_WARNINGS = (r"`isinstance\(treespec, LeafSpec\)` is deprecated",)


@contextmanager
def quiet_exporter_logs() -> Iterator[None]:
    """The dynamo exporter's optimizer logs every rewrite at INFO, its op registry warns about
    torchvision, and torch warns about its own pytree internals: keep the step's log readable."""
    loggers = {logging.getLogger(name): level for name, level in QUIET_LOGGERS.items()}
    levels = {logger: logger.level for logger in loggers}
    for logger, level in loggers.items():
        logger.setLevel(level)
    try:
        with warnings.catch_warnings():
            for message in TORCH_INTERNAL_WARNINGS:
                warnings.filterwarnings("ignore", message=message, category=FutureWarning)
            yield
    finally:
        for logger, level in levels.items():
            logger.setLevel(level)


def export_to_onnx(model: nn.Module, path: Path, task: str, exporter: Exporter = "dynamo",
                   opset: int = 18) -> None:
    """One self-contained ONNX file with a dynamic batch axis (weights inside, no .data file) and
    without per-node debug metadata."""
    example = torch.zeros(EXAMPLE_BATCH, 1, IMAGE_HEIGHT, IMAGE_WIDTH)
    output = OUTPUT_NAMES[task]
    common: dict[str, Any] = dict(input_names=[INPUT_NAME], output_names=[output], opset_version=opset,
                                  external_data=False, verbose=False)
    with torch.no_grad(), quiet_exporter_logs():
        if exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)
            torch.onnx.export(model, (example,), str(path), dynamo=True, optimize=True,
                              dynamic_shapes=({0: batch},), **common)
        else:
            torch.onnx.export(model, (example,), str(path), dynamo=False, do_constant_folding=True,
                              dynamic_axes={INPUT_NAME: {0: "batch"}, output: {0: "batch"}}, **common)
    proto = onnx.load(str(path))
    strip_debug_info(proto.graph)
    onnx.save(proto, str(path))


def check_onnx_file(path: Path) -> onnx.ModelProto:
    """onnx.checker (full, with shape inference) and a symbolic batch axis on input and output."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as error:  # noqa: BLE001 - checker raises several types
        raise StepError(f"{path.name}: onnx.checker failed ({str(error).strip().splitlines()[0]})") from error
    proto = onnx.load(str(path))
    for value in (*proto.graph.input, *proto.graph.output):
        batch = value.type.tensor_type.shape.dim[0]
        if not batch.dim_param:
            raise StepError(f"{path.name}: batch axis of '{value.name}' is static ({batch.dim_value}), "
                            f"expected dynamic")
    return proto


def cpu_session(path: Path, threads: int = 0) -> ort.InferenceSession:
    """An onnxruntime CPU session; threads=1 for latency figures, 0 lets onnxruntime choose."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def parity_inputs(batch: int, seed: int = 0, input_mode: str = "preprocessed") -> np.ndarray:
    """`batch` generated eye frames as the model takes them: the spec's gamma + CLAHE for a
    preprocessed-input model, then the input normalization.

    Eye frames, not uniform noise (the earlier inputs): on noise the ellipse model's pupil map
    has a cell or two barely above its floor, where float rounding between the two runtimes moves
    the moments' ellipse (7.5e-4 on one trained model), a disagreement no eye frame shows.
    """
    frames = [render_indexed_frame(seed, f"parity-{batch}", index, closed_fraction=0.0)[0] for index in range(batch)]
    if input_mode == "preprocessed":
        frames = [enhance_image(frame, PreprocessParams()) for frame in frames]
    return np.stack([normalize_image(frame) for frame in frames])[:, None].astype(np.float32)


def compare_with_pytorch(path: Path, model: nn.Module, batches: tuple[int, ...] = PARITY_BATCHES,
                         input_mode: str = "preprocessed") -> dict[str, float]:
    """Max abs difference between onnxruntime and PyTorch outputs per batch size."""
    session = cpu_session(path)
    diffs = {}
    for batch in batches:
        inputs = parity_inputs(batch, input_mode=input_mode)
        (onnx_out,) = session.run(None, {INPUT_NAME: inputs})
        with torch.no_grad():
            torch_out = model(torch.from_numpy(inputs)).numpy()
        if onnx_out.shape != torch_out.shape:
            raise StepError(f"{path.name}: onnxruntime output shape {onnx_out.shape} at batch {batch} "
                            f"differs from PyTorch {torch_out.shape}")
        diffs[f"batch_{batch}"] = float(np.abs(onnx_out - torch_out).max())
    return diffs


def graph_facts(proto: onnx.ModelProto) -> dict[str, int]:
    return {"nodes": len(proto.graph.node),
            "initializer_bytes": sum(onnx.numpy_helper.to_array(t).nbytes for t in proto.graph.initializer)}


def check_parity(model_name: str, parity: dict[str, float], max_abs_diff: float) -> float:
    """The worst difference; StepError naming the model and the figures when over the limit."""
    worst = max(parity.values())
    if not worst <= max_abs_diff:  # NaN fails too
        shown = ", ".join(f"{k.replace('_', ' ')}: {v:.3g}" for k, v in parity.items())
        raise StepError(f"onnx parity failed for {model_name}: max abs diff {worst:.3g} > "
                        f"max_abs_diff {max_abs_diff:g} ({shown})")
    return worst


def export_checked(source: SourceModel, out_dir: Path, exporter: Exporter = "dynamo", opset: int = 18,
                   max_abs_diff: float = 1e-4) -> ExportResult:
    """Export, write metadata, check; StepError when the file is invalid or differs from PyTorch."""
    started = time.time()
    path = Path(out_dir) / onnx_file_name(source.spec.name)
    metadata = onnx_metadata(source, exporter, opset)
    try:
        export_to_onnx(fuse_conv_bn(source.model), path, source.spec.task, exporter, opset)
    except Exception as error:  # noqa: BLE001 - exporter failures come in many types
        raise StepError(f"{path.name}: {exporter} ONNX export of {source.spec.name} failed "
                        f"({type(error).__name__}: {str(error).strip().splitlines()[0] if str(error) else ''})") from error
    finalize_onnx(path, metadata)
    proto = check_onnx_file(path)
    parity = compare_with_pytorch(path, source.model, input_mode=source.input_mode)
    worst = check_parity(source.spec.name, parity, max_abs_diff)
    return ExportResult(model_name=source.spec.name, model_type=source.spec.model_type, task=source.spec.task,
                        file=path.name, size_bytes=path.stat().st_size, **graph_facts(proto),
                        parameters=source.parameters, parity=parity, max_abs_diff=worst, exporter=exporter,
                        opset=opset, seconds=round(time.time() - started, 2), metadata=metadata)


def check_size(result: ExportResult, max_kb: float) -> None:
    """The segmentation size limit (KB = 1024 bytes)."""
    if result.task == "segmentation" and result.size_kb >= max_kb:
        raise StepError(f"onnx size failed for {result.model_name}: {result.file} is {result.size_kb:.1f} KB "
                        f">= max_seg_size_kb {max_kb:g}")
