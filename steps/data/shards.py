"""Worker side of preprocess: one shard of frames -> one Arrow stream file of dataset rows.

It runs in spawned worker processes, so it imports only numpy, pyarrow, OpenCV and the transforms,
not `datasets` (about a second of start-up per worker). The dataset schema arrives serialized in
the task; without `datasets` imported, pyarrow reads its ArrayND extension columns as their
nested-list storage with the extension named in the field metadata, and the files written with it
load back with the ArrayND features wherever `datasets` reads them.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from steps.data.openeds import Frame, FrameError, read_frame
from steps.data.transforms import PreprocessParams, SampleError


def frame_filename(frame: Frame) -> str:
    """The `filename` column: the image's file name ("000160.png"), prefixed by the subject folder
    where the layout has them ("S_0_0.png"), so that it is unique within a split."""
    return frame.stem + frame.image.suffix


# ---------------------------------------------------------------- rows as Arrow record batches

@functools.lru_cache(maxsize=4)
def read_schema(serialized: bytes) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(serialized))


def _nested_lists(array: np.ndarray, arrow_type: pa.DataType) -> pa.Array:
    """One row's n-d array as the nested-list storage of datasets' ArrayND (values not copied)."""
    storage_type = arrow_type.storage_type if isinstance(arrow_type, pa.ExtensionType) else arrow_type
    leaf = storage_type
    while pa.types.is_list(leaf):
        leaf = leaf.value_type
    storage = pa.array(np.ascontiguousarray(array).reshape(-1), type=leaf)
    shape = (1, *array.shape)
    for depth in range(len(shape) - 1, 0, -1):
        offsets = pa.array(np.arange(math.prod(shape[:depth]) + 1, dtype=np.int32) * shape[depth])
        storage = pa.ListArray.from_arrays(offsets, storage)
    if isinstance(arrow_type, pa.ExtensionType):
        return pa.ExtensionArray.from_storage(arrow_type, storage)
    return storage


def row_record_batch(row: dict[str, Any], filename: str, schema: pa.Schema) -> pa.RecordBatch:
    """A preprocessed frame as a one-row record batch of the dataset schema."""
    columns = []
    for arrow_field in schema:
        name, arrow_type = arrow_field.name, arrow_field.type
        if name == "filename":
            columns.append(pa.array([filename], pa.string()))
        elif name == "preprocessed":
            columns.append(pa.array([True], pa.bool_()))
        elif isinstance(arrow_type, pa.ExtensionType) or pa.types.is_list(arrow_type):
            columns.append(_nested_lists(row[name], arrow_type))
        else:
            columns.append(pa.array([row[name]], arrow_type))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


# ---------------------------------------------------------------- one shard

@dataclass(frozen=True)
class ShardTask:
    split: str
    index: int
    frames: tuple[Frame, ...]
    path: Path
    params: PreprocessParams
    schema: bytes  # the dataset's Arrow schema, serialized
    backend: str = "opencv"
    frame_policy: str = "strict"  # frames not 640x400 (steps.data.openeds.read_frame)


@dataclass
class ShardResult:
    split: str
    index: int
    path: Path
    frames: int
    rows: int = 0
    skipped: list[str] = field(default_factory=list)          # empty pupil mask
    unlabeled: list[str] = field(default_factory=list)        # no label file
    bad: list[dict[str, str]] = field(default_factory=list)   # {"filename", "reason"}
    ellipse_fallbacks: list[str] = field(default_factory=list)


def preprocess_function(backend: str):
    """The per-frame function of a backend: "opencv" (fast) or "scipy" (the reference)."""
    if backend == "opencv":
        from steps.data.transforms import preprocess_frame
    elif backend == "scipy":
        from steps.data.reference import preprocess_frame
    else:
        raise ValueError(f"backend: unknown {backend!r} (opencv, scipy)")
    return preprocess_frame


def _preprocess_one(frame: Frame, preprocess, params: PreprocessParams, result: ShardResult,
                    frame_policy: str = "strict") -> dict[str, Any] | None:
    """One frame's row, or None with the reason recorded in `result`; never raises."""
    name = frame_filename(frame)
    try:
        image, label = read_frame(frame, frame_policy)  # type: ignore[arg-type]  # checked by the contract
        if label is None:
            result.unlabeled.append(name)
            return None
        row = preprocess(image, label, params)
        if row is not None:
            row["raw_image"] = image  # written only when the split keeps it (features_for)
    except Exception as error:  # noqa: BLE001 - an odd frame is reported, never fatal to the run
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        kind = "" if isinstance(error, (FrameError, SampleError)) else f"{type(error).__name__}: "
        result.bad.append({"filename": name, "reason": kind + reason})
        return None
    if row is None:
        result.skipped.append(name)
    elif row["ellipse_method"] != "fit":
        result.ellipse_fallbacks.append(name)
    return row


def process_shard(task: ShardTask) -> ShardResult:
    """Preprocess a shard's frames and write the rows as one Arrow stream file."""
    result = ShardResult(split=task.split, index=task.index, path=task.path, frames=len(task.frames))
    preprocess = preprocess_function(task.backend)
    schema = read_schema(task.schema)
    task.path.parent.mkdir(parents=True, exist_ok=True)
    with pa.OSFile(str(task.path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for frame in task.frames:
            row = _preprocess_one(frame, preprocess, task.params, result, task.frame_policy)
            if row is not None:
                writer.write_batch(row_record_batch(row, frame_filename(frame), schema))
                result.rows += 1
    return result


def init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core; OpenCV's own pool would oversubscribe
