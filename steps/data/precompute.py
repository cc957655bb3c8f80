"""Parallel per-split preprocessing of raw OpenEDS frames into HF `datasets`, one per split.

The parent splits every split's frames into shards; worker processes (spawn context, one OpenCV
thread each, glibc's allocator tuned to keep large temporaries), and the parent beside them, read,
preprocess and write each shard as an Arrow file themselves, so the 3.4 MB rows never travel back
through a pipe. The parent collects counts and file names, then makes a split's shards (in frame
order, whatever the completion order) the data files of a `save_to_disk` folder, checked by
`load_from_disk`.
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
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from tqdm import tqdm

from steps.data.frames import IMAGE_HEIGHT, IMAGE_WIDTH
from steps.data.openeds import Frame
from steps.data.shards import ShardResult, ShardTask, frame_filename, init_worker, process_shard
from steps.data.transforms import PreprocessParams
from steps.outputs import loads_json

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
})  # the spec's (and the seed's) row; push-hf publishes exactly these columns
MAP_COLUMNS = ("spatial_weights", "dist_map")
RAW_IMAGE = "raw_image"


def features_for(row_layout: str = "spec", keep_raw_image: bool = False) -> datasets.Features:
    """The split's columns: the spec row, or a compact one without the maps (the trainer derives
    them per batch: 0.51 MB a row instead of 3.58 MB), plus the camera frame when kept (camera
    augmentation models effects on it, before gamma and CLAHE)."""
    if row_layout not in ("spec", "compact"):
        raise ValueError(f"row_layout: unknown {row_layout!r} (spec, compact)")
    columns = {name: feature for name, feature in FEATURES.items()
               if row_layout == "spec" or name not in MAP_COLUMNS}
    if keep_raw_image:
        columns[RAW_IMAGE] = datasets.Array2D((H, W), "uint8")
    return datasets.Features(columns)


def row_bytes(features: datasets.Features) -> int:
    """Bytes of one row's arrays and scalars as stored (Arrow, uncompressed; strings not counted)."""
    total = 0
    for feature in features.values():
        if isinstance(feature, (datasets.Array2D, datasets.Array3D)):
            total += math.prod(feature.shape) * np.dtype(feature.dtype).itemsize
        elif isinstance(feature, datasets.Value) and feature.dtype != "string":
            total += 1 if feature.dtype == "bool" else np.dtype(feature.dtype).itemsize
    return total


# glibc returns large temporaries to the OS by default; keeping them made this 1.5-2x faster.
MALLOC_TUNING = {"MALLOC_MMAP_THRESHOLD_": "268435456", "MALLOC_TRIM_THRESHOLD_": "1073741824"}
MAX_SHARD_FRAMES = 128  # about 460 MB of rows per shard file, like save_to_disk's 500 MB
SHARDS_DIR = ".shards"


# ---------------------------------------------------------------- planning and running shards

def resolve_workers(workers: int) -> int:
    """0 means one per core this process may run on (the CPU affinity a container grants)."""
    if workers > 0:
        return workers
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def shard_size(frames: int, workers: int) -> int:
    """Several shards per worker (balance, progress), at most MAX_SHARD_FRAMES frames each."""
    return max(1, min(MAX_SHARD_FRAMES, math.ceil(frames / (4 * workers))))


def plan_shards(frames_by_split: dict[str, Sequence[Frame]], shard_dirs: dict[str, Path],
                params: PreprocessParams, backend: str, workers: int,
                features: datasets.Features = FEATURES, frame_policy: str = "strict") -> list[ShardTask]:
    schema = features.arrow_schema.serialize().to_pybytes()
    tasks = []
    for split, frames in frames_by_split.items():
        size = shard_size(len(frames), workers)
        for index, start in enumerate(range(0, len(frames), size)):
            tasks.append(ShardTask(split=split, index=index, frames=tuple(frames[start:start + size]),
                                   path=shard_dirs[split] / f"shard-{index:05d}.arrow",
                                   params=params, schema=schema, backend=backend,
                                   frame_policy=frame_policy))
    return tasks


@contextmanager
def worker_environment() -> Iterator[None]:
    """MALLOC_* tuning for spawned workers (glibc reads it at start); the user's values win."""
    saved = {name: os.environ.get(name) for name in MALLOC_TUNING}
    for name, value in MALLOC_TUNING.items():
        os.environ.setdefault(name, value)
    try:
        yield
    finally:
        for name, before in saved.items():
            if before is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = before


class PrecomputeError(RuntimeError):
    """The run cannot go on (a worker process died); the message names the shard's frames."""


def run_shards(tasks: Sequence[ShardTask], workers: int) -> Iterator[ShardResult]:
    """Results as shards finish: in this process for one worker; else `workers - 1` spawned
    processes and this one share the shards.

    A spawned worker takes about 0.4 s to start (interpreter, imports), which this process would
    otherwise spend waiting: it takes shards from the end of the queue (those the pool has not
    started; `Future.cancel` succeeds only for them) while the pool works from the front, and
    waits only when none is left.
    """
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield process_shard(task)
        return
    context = multiprocessing.get_context("spawn")
    with worker_environment(), single_opencv_thread():
        pool = futures.ProcessPoolExecutor(max_workers=min(workers - 1, len(tasks) - 1), mp_context=context,
                                           initializer=init_worker)
        try:
            pending = {pool.submit(process_shard, task): task for task in tasks}
            queued = list(pending)
            while pending:
                for future in [future for future in pending if future.done()]:
                    yield _shard_result(future, pending.pop(future))
                while queued and (queued[-1] not in pending or queued[-1].done()):
                    queued.pop()
                if queued and queued[-1].cancel():
                    yield process_shard(pending.pop(queued.pop()))
                elif pending:
                    futures.wait(pending, return_when=futures.FIRST_COMPLETED)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


@contextmanager
def single_opencv_thread() -> Iterator[None]:
    """This process works beside the spawned workers: one OpenCV thread, like each of them."""
    import cv2

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(threads)


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

def empty_dataset(split: str, info: datasets.DatasetInfo | None = None,
                  features: datasets.Features = FEATURES) -> datasets.Dataset:
    return datasets.Dataset.from_dict({name: [] for name in features}, features=features,
                                      info=info, split=datasets.NamedSplit(split))


def save_split(split: str, shards: Sequence[tuple[Path, int]], output: Path, description: str = "",
               fingerprint: str | None = None, features: datasets.Features = FEATURES) -> int:
    """Make a split's shard files, (path, rows) in order, the data files of a `save_to_disk` folder.

    `datasets` writes the folder's state and info from a 0-row dataset of the same features; the
    workers' shards then become its data files by a rename instead of a second 3.4 MB-per-row copy,
    and the folder is loaded back with `load_from_disk` to prove it is a valid saved dataset.
    """
    info = datasets.DatasetInfo(description=description, features=features)
    kept = [path for path, rows in shards if rows]
    with _quiet_datasets():
        empty_dataset(split, info, features).save_to_disk(str(output), num_shards=1)
    if kept:
        state_path = output / "state.json"
        state = loads_json(state_path.read_text(encoding="utf-8"))
        for entry in state["_data_files"]:
            (output / entry["filename"]).unlink()
        names = [f"data-{i:05d}-of-{len(kept):05d}.arrow" for i in range(len(kept))]
        for path, name in zip(kept, names):
            os.replace(path, output / name)
        state["_data_files"] = [{"filename": name} for name in names]
        state["_fingerprint"] = fingerprint or state["_fingerprint"]
        state_path.write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
    return _check_saved(split, output, sum(rows for _, rows in shards), features)


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


def split_fingerprint(split: str, frames: Sequence[Frame], params: PreprocessParams, backend: str,
                      features: datasets.Features = FEATURES) -> str:
    """Deterministic: the rows follow from the frames and the settings (datasets caches by it)."""
    payload = json.dumps([split, [frame_filename(f) for f in frames], params.as_dict(), backend,
                          *([] if features == FEATURES else [sorted(features)])])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _check_saved(split: str, output: Path, rows: int, features: datasets.Features = FEATURES) -> int:
    loaded = datasets.load_from_disk(str(output))
    if len(loaded) != rows or loaded.features != features or str(loaded.split) != split:
        raise PrecomputeError(f"{output}: the saved {split} split does not load back as written "
                              f"({len(loaded)} rows, expected {rows}; datasets {datasets.__version__})")
    return rows


# ---------------------------------------------------------------- the whole run

def precompute_splits(frames_by_split: Mapping[str, Sequence[Frame]], outputs: Mapping[str, Path],
                      params: PreprocessParams, backend: str = "opencv", workers: int = 0,
                      description: str = "", features: datasets.Features = FEATURES,
                      frame_policy: str = "strict") -> dict[str, SplitReport]:
    """Preprocess every split into its output folder (a saved dataset, possibly with 0 rows) with
    the columns of `features` (`features_for`)."""
    workers = resolve_workers(workers)
    frames_by_split = {split: frames for split, frames in frames_by_split.items() if split in outputs}
    shard_dirs = {split: Path(outputs[split]) / SHARDS_DIR for split in frames_by_split}
    tasks = plan_shards(frames_by_split, shard_dirs, params, backend, workers, features, frame_policy)
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
        fingerprint = split_fingerprint(split, frames_by_split.get(split, ()), params, backend, features)
        save_split(split, shards, Path(outputs[split]), description, fingerprint, features)
        shutil.rmtree(Path(outputs[split]) / SHARDS_DIR, ignore_errors=True)
        log.info("%s: %s", split, ", ".join(f"{k} {v}" for k, v in report.counts().items()))
    return reports
