"""Loader throughput: full training rows into batched tensors, the project's loader against the
original project's per-row python-list path, on the same saved dataset in the same run.

The dataset is made by the preprocess library path (generated frames -> precompute) and its rows
repeated to the wanted size, so every row has the real schema and real sizes (about 3.5 MB).
Both paths deliver the same batch (uint8 image and label, weights, distance map, ellipse; training
normalizes the image and widens the label on the device, after the copy, in steps.train.tasks)
with the same augmentations (steps.data.augment), through a DataLoader with the same workers;
only the way rows are read and assembled differs. One warm-up epoch each, then timed epochs.

    python -m steps.bench.loader [--quick] [--rows N]
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from torch.utils.data import DataLoader

from steps.bench import BenchRow, area_main
from steps.data.augment import augment_row, params_for
from steps.data.loading import build_loaders, set_loader_epoch

FULL_ROWS, QUICK_ROWS = 256, 48
UNIQUE_FRAMES = 16
BATCH_SIZE = 8
REFERENCE_ROWS = 48  # the reference reads ~40 rows/s: a few batches are enough
REFERENCE_NAME = "per-row python lists + default_collate (original project)"


def make_dataset(folder: Path, rows: int, unique: int = UNIQUE_FRAMES, row_layout: str = "spec") -> Path:
    """A saved split of `rows` rows: `unique` generated frames preprocessed, then repeated."""
    from steps.data.openeds import find_openeds
    from steps.data.precompute import features_for, precompute_splits
    from steps.data.synthetic import generate_openeds
    from steps.data.transforms import PreprocessParams

    if not (folder / "raw").is_dir():
        generate_openeds(folder / "raw", {"train": unique}, seed=0)
    frames = list(find_openeds(folder / "raw").splits["train"])
    unique_split, split = folder / f"unique-{row_layout}", folder / f"split-{row_layout}"
    precompute_splits({"train": frames}, {"train": unique_split}, PreprocessParams(),
                      features=features_for(row_layout))
    base = datasets.load_from_disk(str(unique_split))
    repeated = datasets.concatenate_datasets([base] * (rows // len(base) + 1)).select(range(rows))
    repeated.flatten_indices().save_to_disk(str(split))
    return split


class PythonListRows(torch.utils.data.Dataset):
    """The original project's access: `dataset[i]` as python lists, converted field by field."""

    def __init__(self, dataset: datasets.Dataset, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.dataset[index]
        source: dict[str, np.ndarray] = {"image": np.array(row["image"], np.uint8), "label": np.array(row["label"], np.uint8),
                  "spatial_weights": np.array(row["spatial_weights"], np.float32),
                  "dist_map": np.array(row["dist_map"], np.float32),
                  "ellipse": np.array([row["cx"], row["cy"], row["rx"], row["ry"]], np.float32)}
        out = {name: np.empty_like(value) for name, value in source.items()}
        augment_row(source, params_for(self.seed, self.epoch, index), out)
        return {"image": torch.from_numpy(out.pop("image")[None]),
                **{k: torch.from_numpy(v) for k, v in out.items()}, "filename": row["filename"]}


def rows_per_second(loader: DataLoader, epochs: int, set_epoch) -> tuple[float, float]:
    """(rows per wall second, rows per CPU second of this process) over `epochs` timed epochs after
    one warm-up epoch (workers started, pages mapped). The CPU rate counts this process's threads
    only (not worker processes); it shows the cost per row even on a machine shared with others."""
    wall, cpu = [], []
    for epoch in range(epochs + 1):
        set_epoch(epoch)
        started, cpu_started, rows = time.perf_counter(), time.process_time(), 0
        for batch in loader:
            rows += batch["image"].shape[0]
        if epoch:
            wall.append(rows / (time.perf_counter() - started))
            cpu.append(rows / max(time.process_time() - cpu_started, 1e-9))
    return float(np.median(wall)), float(np.median(cpu))


def project_rate(split: datasets.Dataset, workers: int, epochs: int) -> tuple[float, float]:
    train, _ = build_loaders(split, split, task="segmentation", batch_size=BATCH_SIZE, num_workers=workers,
                             augment=True, input_mode="preprocessed", seed=0, distributed=False, pin_memory=False)
    return rows_per_second(train, epochs, lambda epoch: set_loader_epoch(train, epoch))


def reference_rate(split: datasets.Dataset, workers: int, epochs: int) -> tuple[float, float]:
    rows = PythonListRows(split.select(range(min(REFERENCE_ROWS, len(split)))), seed=0)

    def set_epoch(epoch: int) -> None:
        rows.epoch = epoch  # workers copy the dataset at start: only exact with workers=0

    loader = DataLoader(rows, batch_size=BATCH_SIZE, shuffle=True, drop_last=True, num_workers=workers,
                        multiprocessing_context="spawn" if workers else None, persistent_workers=workers > 0,
                        generator=torch.Generator().manual_seed(0))
    return rows_per_second(loader, epochs, set_epoch)


def stored_bytes_per_row(path: Path, rows: int) -> float:
    """Bytes on disk per row of a saved split (its Arrow files)."""
    return sum(f.stat().st_size for f in path.glob("*.arrow")) / rows


def compact_rows(spec: datasets.Dataset, compact: datasets.Dataset, spec_path: Path, compact_path: Path,
                 epochs: int) -> list[BenchRow]:
    """The compact row (image, label, ellipse; maps derived per batch) beside the spec row."""
    from steps.train.tasks import SegmentationTask

    count = len(spec)
    spec_mb, compact_mb = (stored_bytes_per_row(p, count) / 1e6 for p in (spec_path, compact_path))
    spec_rate, _ = project_rate(spec, 0, epochs)
    compact_rate, _ = project_rate(compact, 0, epochs)
    loader, _ = build_loaders(compact, compact, task="segmentation", batch_size=BATCH_SIZE, num_workers=0,
                              augment=True, input_mode="preprocessed", seed=0, distributed=False, pin_memory=False)
    task, cpu = SegmentationTask(), torch.device("cpu")
    started, derived = time.perf_counter(), 0
    for batch in loader:
        task.targets(batch, cpu)  # weights + distance maps from the label (OpenCV on the CPU)
        derived += batch["image"].shape[0]
    derived_rate = derived / (time.perf_counter() - started)
    name = "spec row (image, label, float32 weights + 2-channel distance map, ellipse)"
    return [
        BenchRow(area="loader", metric="MB per stored training row, compact", project=compact_mb,
                 reference=spec_mb, reference_name=name, higher_is_better=False, note="Arrow files on disk"),
        BenchRow(area="loader", metric=f"rows/s, compact rows, batch {BATCH_SIZE}, 0 workers", project=compact_rate,
                 reference=spec_rate, reference_name=name, note="maps left to the device"),
        BenchRow(area="loader", metric="rows/s, compact + maps derived on CPU", project=derived_rate,
                 reference=spec_rate, reference_name=name,
                 note="loader + SegmentationTask.targets (OpenCV EDT per row): a CPU training step's data cost"),
    ]


def measure(quick: bool = False, rows: int | None = None, workers_options: Sequence[int] = (0, 2),
            unique: int = UNIQUE_FRAMES) -> list[BenchRow]:
    count = rows or (QUICK_ROWS if quick else FULL_ROWS)
    epochs = 1 if quick else 2
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as temp:
        spec_path = make_dataset(Path(temp), count, unique=min(unique, count))
        split = datasets.load_from_disk(str(spec_path))
        for workers in workers_options:
            (project, project_cpu), (reference, reference_cpu) = (project_rate(split, workers, epochs),
                                                                  reference_rate(split, workers, epochs))
            cpu_note = f"; rows per CPU-second {project_cpu:.0f} vs {reference_cpu:.1f}" if not workers else ""
            results.append(BenchRow(
                area="loader", metric=f"rows/s, segmentation batch {BATCH_SIZE}, {workers} workers",
                project=project, reference=reference, reference_name=REFERENCE_NAME,
                note=f"{count} rows x {epochs} epochs (reference {min(REFERENCE_ROWS, count)} rows), "
                     f"augmented{cpu_note}"))
        compact_path = make_dataset(Path(temp), count, unique=min(unique, count), row_layout="compact")
        compact = datasets.load_from_disk(str(compact_path))
        results += compact_rows(split, compact, spec_path, compact_path, epochs)
        del split, compact
    return results


def main(argv: Sequence[str] | None = None) -> int:
    return area_main("steps.bench.loader", __doc__, measure, f"{QUICK_ROWS} rows instead of {FULL_ROWS}",
                     ("rows", "rows in the benchmark dataset"), argv)


if __name__ == "__main__":
    raise SystemExit(main())
