"""`--validate`: recompute stored rows of a preprocessed dataset from the raw frames and compare.

Rows are sampled evenly over each split, matched to raw frames by `filename`, recomputed with the
step's transforms and compared column by column (images and labels exactly, floats within 1e-4).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from steps.data.openeds import Frame, FrameError, read_frame
from steps.data.precompute import FEATURES
from steps.data.reference import column_differences, mismatched_columns
from steps.data.shards import frame_filename, preprocess_function
from steps.data.transforms import PreprocessParams, SampleError


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
