"""Preprocessing throughput: the project's path against the straightforward scipy path, same run.

- end to end: generated frames in the Kaggle layout -> saved datasets, as the preprocess step runs
  it (spawned workers on every core, the OpenCV transforms, shard files adopted in place) against
  the same frames through the scipy reference transforms in one process (same reader and writer);
- transforms only: the per-frame functions on frames already in memory, one process each.

Both paths' datasets are compared row by row (images exactly, floats within 1e-4); a benchmark of
a path that disagrees raises instead of printing a figure.

    python -m steps.bench.preprocess_speed [--quick] [--frames N]
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import datasets
import numpy as np

from steps.bench import BenchRow, area_main
from steps.data import reference, transforms
from steps.data.openeds import Frame, find_openeds, read_frame
from steps.data.precompute import precompute_splits, resolve_workers
from steps.data.synthetic import generate_openeds
from steps.data.transforms import PreprocessParams

FULL_FRAMES = 400
QUICK_FRAMES = 12
TRANSFORM_FRAMES = 24
REFERENCE_NAME = "scipy reference path, 1 process"


def generated_frames(root: Path, count: int, seed: int = 0) -> list[Frame]:
    generate_openeds(root, {"train": count}, seed=seed)
    return list(find_openeds(root).splits["train"])


def time_precompute(frames: Sequence[Frame], output: Path, backend: str, workers: int) -> tuple[float, int]:
    """(seconds, rows) of a whole run of the step's library path into `output`."""
    started = time.perf_counter()
    reports = precompute_splits({"train": frames}, {"train": output}, PreprocessParams(),
                                backend=backend, workers=workers)
    return time.perf_counter() - started, reports["train"].rows


def max_differences(left: Path, right: Path) -> dict[str, float]:
    """Largest difference per column over every row of two saved datasets (same filenames)."""
    a = datasets.load_from_disk(str(left)).with_format("numpy", dtype=None)
    b = datasets.load_from_disk(str(right)).with_format("numpy", dtype=None)
    if len(a) != len(b) or list(a["filename"]) != list(b["filename"]):
        raise AssertionError(f"the two paths wrote different rows ({len(a)} vs {len(b)})")
    worst: dict[str, float] = {}
    for index in range(len(a)):
        row_a, row_b = a[index], b[index]
        mismatched = reference.mismatched_columns(row_b, row_a)
        if mismatched:
            raise AssertionError(f"row {row_a['filename']}: columns {mismatched} differ beyond "
                                 f"{reference.TOLERANCE}")
        for column, value in reference.column_differences(row_b, row_a).items():
            worst[column] = max(worst.get(column, 0.0), value)
    return worst


def frames_per_second(function: Callable, frames: Sequence[tuple[np.ndarray, np.ndarray]]) -> float:
    function(*frames[0])  # warm caches (CLAHE object, LUT, code paths)
    started = time.perf_counter()
    for image, label in frames:
        function(image, label)
    return len(frames) / (time.perf_counter() - started)


def transforms_row(frames: Sequence[Frame]) -> BenchRow:
    loaded = [(image, label) for image, label in map(read_frame, frames)
              if label is not None and (label == 3).any()]
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # as in the workers: one core each
    try:
        project = frames_per_second(transforms.preprocess_frame, loaded)
        slow = frames_per_second(reference.preprocess_frame, loaded)
    finally:
        cv2.setNumThreads(threads)
    return BenchRow(area="preprocess", metric="images/s, transforms only, 1 process",
                    project=project, reference=slow, reference_name="scipy reference transforms",
                    note=f"{len(loaded)} frames in memory")


def measure(quick: bool = False, frames: int | None = None) -> list[BenchRow]:
    count = frames or (QUICK_FRAMES if quick else FULL_FRAMES)
    workers = resolve_workers(0)
    with tempfile.TemporaryDirectory(prefix="bench-preprocess-") as temp:
        temp_path = Path(temp)
        generated = generated_frames(temp_path / "raw", count)
        project_s, rows = time_precompute(generated, temp_path / "project", "opencv", workers)
        reference_s, reference_rows = time_precompute(generated, temp_path / "reference", "scipy", 1)
        worst = max_differences(temp_path / "project", temp_path / "reference")
        end_to_end = BenchRow(
            area="preprocess", metric=f"images/s, {count} generated frames end to end",
            project=count / project_s, reference=count / reference_s, reference_name=REFERENCE_NAME,
            note=f"{workers} workers (spawn); {rows} rows; max |diff| {max(worst.values()):.1e}")
        return [end_to_end, transforms_row(generated[: min(len(generated), TRANSFORM_FRAMES)])]


def main(argv: Sequence[str] | None = None) -> int:
    return area_main("steps.bench.preprocess_speed", __doc__, measure, f"{QUICK_FRAMES} frames instead of {FULL_FRAMES}",
                     ("frames", "generated frames to process"), argv)


if __name__ == "__main__":
    raise SystemExit(main())
