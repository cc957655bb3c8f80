"""Parallel per-split preprocessing of raw OpenEDS frames into HF `datasets`, one per split.

The parent splits every split's frames into shards; worker processes (spawn context, one OpenCV
thread each, glibc's allocator tuned to keep large temporaries) read, preprocess and write each
shard as an Arrow file themselves, so the 3.4 MB rows never travel back through a pipe. The
parent only collects counts and file names, then makes a split's shards (in frame order, whatever
the completion order) the data files of a `save_to_disk` folder, checked by `load_from_disk`.
Shards live inside the step's staging folder, so a killed run leaves nothing that looks finished
and a rerun starts over; the rows depend only on the frames and settings, so it ends identical.
"""

from __future__ import annotations

import concurrent.futures as futures
import hashlib
import json
import logging
import math
import multiprocessing
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
from tqdm import tqdm

from steps.data.frames import IMAGE_HEIGHT, IMAGE_WIDTH
from steps.data.openeds import Frame, FrameError, read_frame
from steps.data.transforms import PreprocessParams, SampleError

log = logging.getLogger(__name__)

H, W = IMAGE_HEIGHT, IMAGE_WIDTH
FEATURES = datasets.Features({
    "image": datasets.Array2D((H, W), "uint8"),
    "label": datasets.Array2D((H, W), "uint8"),
    "spatial_weights": datasets.Array2D((H, W), "float32"),
    "dist_map": datasets.Array3D((2, H, W), "float32"),
    "cx": datasets.Value("float32"),
    "cy": datasets.Value("float32"),
    "rx": datasets.Value("float32"),
    "ry": datasets.Value("float32"),
    "filename": datasets.Value("string"),
    "preprocessed": datasets.Value("bool"),
})
SCHEMA = FEATURES.arrow_schema
# glibc returns large temporaries to the OS by default; keeping them made this 1.5-2x faster.
MALLOC_TUNING = {"MALLOC_MMAP_THRESHOLD_": "268435456", "MALLOC_TRIM_THRESHOLD_": "1073741824"}
MAX_SHARD_FRAMES = 64
SHARDS_DIR = ".shards"


def frame_filename(frame: Frame) -> str:
    """The `filename` column: the image's file name ("000160.png"), prefixed by the subject folder
    where the layout has them ("S_0_0.png"), so that it is unique within a split."""
    return frame.stem + frame.image.suffix


# ---------------------------------------------------------------- rows as Arrow record batches

def _nested_lists(array: np.ndarray, arrow_type: pa.DataType) -> pa.Array:
    """One row's n-d array as the nested-list storage of datasets' ArrayND (values not copied)."""
    storage = pa.array(np.ascontiguousarray(array).reshape(-1), type=_leaf_type(arrow_type.storage_type))
    shape = (1, *array.shape)
    for depth in range(len(shape) - 1, 0, -1):
        count = math.prod(shape[:depth])
        offsets = pa.array(np.arange(count + 1, dtype=np.int32) * shape[depth])
        storage = pa.ListArray.from_arrays(offsets, storage)
    return pa.ExtensionArray.from_storage(arrow_type, storage)


def _leaf_type(storage_type: pa.DataType) -> pa.DataType:
    while pa.types.is_list(storage_type):
        storage_type = storage_type.value_type
    return storage_type


def row_record_batch(row: dict[str, Any], filename: str) -> pa.RecordBatch:
    """A preprocessed frame as a one-row record batch of the dataset schema."""
    columns = []
    for arrow_field in SCHEMA:
        name = arrow_field.name
        if name == "filename":
            columns.append(pa.array([filename], pa.string()))
        elif name == "preprocessed":
            columns.append(pa.array([True], pa.bool_()))
        elif isinstance(arrow_field.type, pa.ExtensionType):
            columns.append(_nested_lists(row[name], arrow_field.type))
        else:
            columns.append(pa.array([row[name]], arrow_field.type))
    return pa.RecordBatch.from_arrays(columns, schema=SCHEMA)


# ---------------------------------------------------------------- one shard (runs in a worker)

@dataclass(frozen=True)
class ShardTask:
    split: str
    index: int
    frames: tuple[Frame, ...]
    path: Path
    params: PreprocessParams
    backend: str = "opencv"


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


def _preprocess_one(frame: Frame, preprocess, params: PreprocessParams,
                    result: ShardResult) -> dict[str, Any] | None:
    """One frame's row, or None with the reason recorded in `result`; never raises."""
    name = frame_filename(frame)
    try:
        image, label = read_frame(frame)
        if label is None:
            result.unlabeled.append(name)
            return None
        row = preprocess(image, label, params)
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
    task.path.parent.mkdir(parents=True, exist_ok=True)
    with pa.OSFile(str(task.path), "wb") as sink, pa.ipc.new_stream(sink, SCHEMA) as writer:
        for frame in task.frames:
            row = _preprocess_one(frame, preprocess, task.params, result)
            if row is not None:
                writer.write_batch(row_record_batch(row, frame_filename(frame)))
                result.rows += 1
    return result


# ---------------------------------------------------------------- planning and running shards

def resolve_workers(workers: int) -> int:
    return workers if workers > 0 else (os.cpu_count() or 1)


def shard_size(frames: int, workers: int) -> int:
    """Several shards per worker (balance, progress), at most MAX_SHARD_FRAMES frames each."""
    return max(1, min(MAX_SHARD_FRAMES, math.ceil(frames / (4 * workers))))


def plan_shards(frames_by_split: dict[str, Sequence[Frame]], shard_dirs: dict[str, Path],
                params: PreprocessParams, backend: str, workers: int) -> list[ShardTask]:
    tasks = []
    for split, frames in frames_by_split.items():
        size = shard_size(len(frames), workers)
        for index, start in enumerate(range(0, len(frames), size)):
            tasks.append(ShardTask(split=split, index=index, frames=tuple(frames[start:start + size]),
                                   path=shard_dirs[split] / f"shard-{index:05d}.arrow",
                                   params=params, backend=backend))
    return tasks


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core; OpenCV's own pool would oversubscribe


@contextmanager
def worker_environment() -> Iterator[None]:
    """MALLOC_* tuning for spawned workers (glibc reads it at start); the user's values win."""
    saved = {name: os.environ.get(name) for name in MALLOC_TUNING}
    for name, value in MALLOC_TUNING.items():
        os.environ.setdefault(name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class PrecomputeError(RuntimeError):
    """The run cannot go on (a worker process died); the message names the shard's frames."""


def run_shards(tasks: Sequence[ShardTask], workers: int) -> Iterator[ShardResult]:
    """Results as shards finish: in this process for one worker, else in a spawn pool."""
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield process_shard(task)
        return
    context = multiprocessing.get_context("spawn")
    with worker_environment():
        pool = futures.ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=context,
                                           initializer=_init_worker)
        try:
            pending = {pool.submit(process_shard, task): task for task in tasks}
            for future in futures.as_completed(pending):
                yield _shard_result(future, pending[future])
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _shard_result(future: futures.Future, task: ShardTask) -> ShardResult:
    try:
        return future.result()
    except futures.process.BrokenProcessPool as error:
        first, last = task.frames[0].image, task.frames[-1].image
        raise PrecomputeError(f"split {task.split}: a worker process died on shard {task.index} "
                              f"(frames {first} .. {last}); rerun, or run with workers=1 to find the "
                              f"frame") from error


# ---------------------------------------------------------------- a split's outcome

@dataclass
class SplitReport:
    split: str
    frames: int
    rows: int = 0
    skipped: list[str] = field(default_factory=list)
    unlabeled: list[str] = field(default_factory=list)
    bad: list[dict[str, str]] = field(default_factory=list)
    ellipse_fallbacks: list[str] = field(default_factory=list)
    shards: dict[int, ShardResult] = field(default_factory=dict)

    def add(self, result: ShardResult) -> None:
        self.shards[result.index] = result
        self.rows += result.rows
        self.skipped += result.skipped
        self.unlabeled += result.unlabeled
        self.bad += result.bad
        self.ellipse_fallbacks += result.ellipse_fallbacks

    def counts(self) -> dict[str, int]:
        return {"frames": self.frames, "rows": self.rows, "skipped_empty_pupil": len(self.skipped),
                "skipped_unlabeled": len(self.unlabeled), "bad": len(self.bad),
                "ellipse_fallbacks": len(self.ellipse_fallbacks)}

    def as_dict(self) -> dict[str, Any]:
        return {"split": self.split, **self.counts(), "skipped_files": sorted(self.skipped),
                "unlabeled_files": sorted(self.unlabeled),
                "bad_files": sorted(self.bad, key=lambda item: item["filename"]),
                "ellipse_fallback_files": sorted(self.ellipse_fallbacks)}


def log_result(result: ShardResult) -> None:
    for name in result.skipped:
        log.info("skipped %s/%s: empty pupil mask", result.split, name)
    for item in result.bad:
        log.warning("bad sample %s/%s skipped: %s", result.split, item["filename"], item["reason"])
    if result.unlabeled:
        log.warning("skipped %d frame(s) of %s without a label file: %s", len(result.unlabeled),
                    result.split, ", ".join(result.unlabeled[:5]) + (" ..." if len(result.unlabeled) > 5 else ""))


# ---------------------------------------------------------------- saving a split

def empty_dataset(split: str, info: datasets.DatasetInfo | None = None) -> datasets.Dataset:
    return datasets.Dataset.from_dict({name: [] for name in FEATURES}, features=FEATURES,
                                      info=info, split=datasets.NamedSplit(split))


def save_split(split: str, shards: Sequence[tuple[Path, int]], output: Path, description: str = "",
               fingerprint: str | None = None) -> int:
    """Make a split's shard files, (path, rows) in order, the data files of a `save_to_disk` folder.

    `datasets` writes the folder's state and info from a 0-row dataset of the same features; the
    workers' shards then become its data files by a rename instead of a second 3.4 MB-per-row copy,
    and the folder is loaded back with `load_from_disk` to prove it is a valid saved dataset.
    """
    info = datasets.DatasetInfo(description=description, features=FEATURES)
    kept = [path for path, rows in shards if rows]
    with _quiet_datasets():
        empty_dataset(split, info).save_to_disk(str(output), num_shards=1)
    if kept:
        state_path = output / "state.json"
        state = json.loads(state_path.read_text(encoding="utf-8"))
        for entry in state["_data_files"]:
            (output / entry["filename"]).unlink()
        names = [f"data-{i:05d}-of-{len(kept):05d}.arrow" for i in range(len(kept))]
        for path, name in zip(kept, names):
            os.replace(path, output / name)
        state["_data_files"] = [{"filename": name} for name in names]
        state["_fingerprint"] = fingerprint or state["_fingerprint"]
        state_path.write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
    return _check_saved(split, output, sum(rows for _, rows in shards))


@contextmanager
def _quiet_datasets() -> Iterator[None]:
    """No "Saving the dataset (0/1 shards)" bar for the 0-row template."""
    enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if enabled:
            datasets.enable_progress_bars()


def split_fingerprint(split: str, frames: Sequence[Frame], params: PreprocessParams, backend: str) -> str:
    """Deterministic: the rows follow from the frames and the settings (datasets caches by it)."""
    payload = json.dumps([split, [frame_filename(f) for f in frames], params.as_dict(), backend])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _check_saved(split: str, output: Path, rows: int) -> int:
    loaded = datasets.load_from_disk(str(output))
    if len(loaded) != rows or loaded.features != FEATURES or str(loaded.split) != split:
        raise PrecomputeError(f"{output}: the saved {split} split does not load back as written "
                              f"({len(loaded)} rows, expected {rows}; datasets {datasets.__version__})")
    return rows


# ---------------------------------------------------------------- the whole run

def precompute_splits(frames_by_split: dict[str, Sequence[Frame]], outputs: dict[str, Path],
                      params: PreprocessParams, backend: str = "opencv", workers: int = 0,
                      description: str = "") -> dict[str, SplitReport]:
    """Preprocess every split into its output folder (a saved dataset, possibly with 0 rows)."""
    workers = resolve_workers(workers)
    frames_by_split = {split: frames for split, frames in frames_by_split.items() if split in outputs}
    shard_dirs = {split: Path(outputs[split]) / SHARDS_DIR for split in frames_by_split}
    tasks = plan_shards(frames_by_split, shard_dirs, params, backend, workers)
    reports = {split: SplitReport(split, frames=len(frames_by_split.get(split, ()))) for split in outputs}
    total = sum(len(frames) for frames in frames_by_split.values())
    log.info("preprocessing %d frames (%s) in %d shard(s) with %d worker(s), backend %s", total,
             ", ".join(f"{s} {len(f)}" for s, f in frames_by_split.items()), len(tasks), workers, backend)
    with tqdm(total=total, desc="preprocess", unit="frame", mininterval=2.0) as progress:
        for result in run_shards(tasks, workers):
            reports[result.split].add(result)
            log_result(result)
            progress.update(result.frames)
    for split, report in reports.items():
        shards = [(report.shards[i].path, report.shards[i].rows) for i in sorted(report.shards)]
        fingerprint = split_fingerprint(split, frames_by_split.get(split, ()), params, backend)
        save_split(split, shards, Path(outputs[split]), description, fingerprint)
        shutil.rmtree(Path(outputs[split]) / SHARDS_DIR, ignore_errors=True)
        log.info("%s: %s", split, ", ".join(f"{k} {v}" for k, v in report.counts().items()))
    return reports


# ---------------------------------------------------------------- --validate: stored vs runtime

def is_saved_dataset(folder: Path) -> bool:
    return (folder / "state.json").is_file() and (folder / "dataset_info.json").is_file()


def find_saved_splits(reference: Path) -> dict[str, Path]:
    """A saved split folder, or a folder of them: {split name: folder}.

    A lone folder is named by the split stored in the dataset, else by the folder's name.
    """
    if is_saved_dataset(reference):
        split = datasets.load_from_disk(str(reference)).split
        return {str(split) if split else reference.name: reference}
    return {child.name: child for child in sorted(reference.iterdir())
            if child.is_dir() and is_saved_dataset(child)}


def sample_indices(rows: int, samples: int) -> list[int]:
    """`samples` rows spread evenly over the split (first and last included)."""
    if rows == 0:
        return []
    return sorted({int(round(i)) for i in np.linspace(0, rows - 1, min(samples, rows))})


def _schema_problems(dataset: datasets.Dataset) -> list[str]:
    expected = {name: str(feature) for name, feature in FEATURES.items()}
    found = {name: str(feature) for name, feature in dataset.features.items()}
    return [f"column {name}: expected {want}, found {found.get(name, 'nothing')}"
            for name, want in expected.items() if found.get(name) != want]


def _compare_row(stored: dict[str, Any], frame: Frame | None, preprocess,
                 params: PreprocessParams) -> dict[str, Any]:
    """{column: difference} plus a reason where the row cannot be recomputed; {} when equal."""
    from steps.data.reference import column_differences, mismatched_columns

    if frame is None:
        return {"column": "filename", "reason": "no raw frame with this filename in the split"}
    image, label = read_frame(frame)
    runtime = preprocess(image, label, params) if label is not None else None
    if runtime is None:
        return {"column": "label", "reason": "the raw frame has no pupil (or no label): it should "
                                             "have been skipped"}
    if not bool(stored["preprocessed"]):
        return {"column": "preprocessed", "reason": "stored False"}
    mismatched = mismatched_columns(runtime, stored)
    if mismatched:
        return {"column": next(iter(mismatched)), "differences": mismatched}
    return {"max_differences": column_differences(runtime, stored)}


def validate_split(split: str, dataset_dir: Path, frames: Sequence[Frame], samples: int,
                   params: PreprocessParams, backend: str = "opencv") -> dict[str, Any]:
    """Recompute `samples` stored rows from the raw frames and compare every column."""
    dataset = datasets.load_from_disk(str(dataset_dir))
    report: dict[str, Any] = {"split": split, "path": str(dataset_dir), "rows": len(dataset),
                              "checked": 0, "mismatches": [], "max_differences": {}}
    problems = _schema_problems(dataset)
    if problems:
        report["mismatches"] = [{"filename": None, "column": "schema", "reason": p} for p in problems]
        return report
    dataset = dataset.with_format("numpy", dtype=None)
    by_name = {frame_filename(frame): frame for frame in frames}
    preprocess = preprocess_function(backend)
    for index in sample_indices(len(dataset), samples):
        stored = dataset[index]
        name = str(stored["filename"])
        try:
            outcome = _compare_row(stored, by_name.get(name), preprocess, params)
        except (FrameError, SampleError) as error:
            outcome = {"column": "frame", "reason": str(error).strip().splitlines()[0]}
        report["checked"] += 1
        if "max_differences" in outcome:
            for column, value in outcome["max_differences"].items():
                report["max_differences"][column] = max(value, report["max_differences"].get(column, 0.0))
        else:
            report["mismatches"].append({"filename": name, "row": index, **outcome})
    return report
