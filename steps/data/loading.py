"""Training data: preprocessed splits -> batched tensors, fast and reproducible.

Public interface (the training engine's):
- `load_split(path, hf_repo=, split=, data_dir=)`: a split from a save_to_disk folder or a HF repo
  id cached under `data_dir` (steps.data.hf_cache).
- `build_loaders(train, valid, task=, batch_size=, ...)`: (train DataLoader, validation DataLoader).
- `set_loader_epoch(loader, epoch)`: call before every epoch; shuffling and augmentations of epoch
  e depend only on (seed, e, row), so a run resumed at an epoch boundary repeats them exactly.

Batches are dicts: "image" uint8 (B,1,400,640) (the augmented frame, not yet normalized), "label"
uint8 (B,400,640) 0/1, "spatial_weights" float32 (B,400,640), "dist_map" float32 (B,2,400,640),
"ellipse" float32 (B,4) (cx, cy, rx, ry normalized), "filename" list[str], "index" int64 (B,) (the
dataset row). task="ellipse" batches hold image, label, ellipse, filename and index. Image and label
stay uint8: 1 byte per pixel to write and to copy to the GPU (not float32's 4 or int64's 8). The
training tasks finish them on the device, after the copy: `steps.train.tasks.batch_inputs`
normalizes the image (bit-identical to steps.data.frames.normalize_image) and
`SegmentationTask.targets` casts the label to int64.

Speed: rows are read as zero-copy numpy views of the memory-mapped Arrow columns and written once,
already augmented (flip, lines, blur), into the batch tensors. With num_workers=0 (fastest on a few
cores) the rows of a batch are written by up to 4 threads (numpy/OpenCV release the GIL) into
private memory the allocator reuses, and on CUDA the next batches are built in a background thread
while the GPU works. With worker processes each batch is allocated in shared memory directly, so
nothing is copied again on the way to the main process (but every batch pays fresh page faults).

Maps: "spatial_weights" and "dist_map" ship only when the split stores them (row_layout=spec) and
no augmentation moved the label; otherwise the batch has none and the device derives them from the
batch's label (steps.train.label_maps, in SegmentationTask.targets). Camera augmentation
(steps.data.camera_augment, `camera=`) acts on the camera frame (`raw_image`, or the image of a row
stored without preprocessing), then gamma + CLAHE; its ellipse is refitted to the moved label.

Rows needing runtime work: `preprocessed=False` rows (or a split without the derived columns) get
gamma + CLAHE, the ellipse fit, spatial weights and distance maps from steps.data.transforms at load
time; such rows without any pupil pixel are skipped, each logged (as preprocess does).

input_mode="raw" (inference-aligned: the model sees camera frames, no gamma, no CLAHE). A
preprocessed row stores the gamma+CLAHE image, which cannot be undone, so raw mode reads the camera
frame from a `raw_image` column when the split has one, or uses the stored image of
`preprocessed=False` rows (camera frames) as is, deriving label, weights, distance maps and
ellipse at run time. A split of preprocessed rows without `raw_image` is refused with a clear error
rather than silently training on enhanced images (the original project's inference-aligned app did
exactly that).
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import datasets
import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader

from steps.data import camera_augment, transforms
from steps.data.augment import AugmentParams, augment_row, params_for
from steps.data.camera_augment import CameraAugment
from steps.data.frames import IMAGE_SHAPE
from steps.data.sampling import EpochBatchSampler
from steps.errors import StepError

log = logging.getLogger(__name__)

Task = Literal["segmentation", "ellipse"]
InputMode = Literal["preprocessed", "raw"]

ARRAY_COLUMNS: dict[str, tuple[tuple[int, ...], np.dtype]] = {
    "image": (IMAGE_SHAPE, np.dtype(np.uint8)),
    "raw_image": (IMAGE_SHAPE, np.dtype(np.uint8)),
    "label": (IMAGE_SHAPE, np.dtype(np.uint8)),
    "spatial_weights": (IMAGE_SHAPE, np.dtype(np.float32)),
    "dist_map": ((2, *IMAGE_SHAPE), np.dtype(np.float32)),
}
ELLIPSE_COLUMNS = ("cx", "cy", "rx", "ry")
# A row counts as preprocessed with these; the maps are optional (a compact row has none: they
# are derived per batch on the device, steps.train.label_maps).
DERIVED_COLUMNS = ("label", *ELLIPSE_COLUMNS)
MAP_COLUMNS = ("spatial_weights", "dist_map")
TASK_FIELDS: dict[str, tuple[str, ...]] = {
    "segmentation": ("image", "label", "spatial_weights", "dist_map", "ellipse"),
    "ellipse": ("image", "label", "ellipse"),  # the label supervises the ellipse model's pupil map
}
BATCH_DTYPES = {"label": torch.uint8, "spatial_weights": torch.float32, "dist_map": torch.float32,
                "ellipse": torch.float32}


# ---------------------------------------------------------------- loading a split

def load_split(path: Path | None, *, hf_repo: str | None, split: str, data_dir: str) -> datasets.Dataset:
    """A split from a save_to_disk folder (`path`), or from HF repo `hf_repo` cached under `data_dir`."""
    if hf_repo:
        from steps.data.hf_cache import load_hf_split  # hub client only when asked for
        if path is not None:
            log.info("hf_repo=%s given: loading split '%s' from it, not from %s", hf_repo, split, path)
        return load_hf_split(hf_repo, split=split, data_dir=data_dir)
    if path is None:
        raise StepError(f"{split}: no dataset given\nPass the '{split}' channel (a preprocess output) "
                        "or set hf_repo to a Hugging Face dataset repo id.")
    return load_disk_split(Path(path), split)


def load_disk_split(path: Path, split: str) -> datasets.Dataset:
    """A `save_to_disk` Dataset folder, or the `split` of a saved DatasetDict."""
    if (path / "state.json").is_file():
        try:
            return datasets.load_from_disk(str(path))
        except IndexError as error:  # datasets saves a 0-row Dataset without any data file, then cannot load it
            raise StepError(f"{split}: {path} holds no rows (a 0-row save_to_disk folder has no data file)") from error
    if (path / "dataset_dict.json").is_file():
        splits = datasets.load_from_disk(str(path))
        if split not in splits:
            raise StepError(f"{split}: split not in the dataset at {path}\nSplits there: {', '.join(splits)}")
        return splits[split]
    raise StepError(f"{split}: {path} is not a saved dataset\nExpected a datasets.save_to_disk folder "
                    "(state.json, dataset_info.json, *.arrow), as preprocess writes.")


# ---------------------------------------------------------------- zero-copy row access

@dataclass(frozen=True)
class ColumnViews:
    """Per Arrow chunk of one column, a read-only numpy view (rows, *shape); `starts`: first rows."""

    views: list[np.ndarray]
    starts: np.ndarray

    def row(self, row: int) -> np.ndarray:
        chunk = int(np.searchsorted(self.starts, row, side="right")) - 1
        return self.views[chunk][row - self.starts[chunk]]


def _column_views(table: pa.Table, name: str) -> ColumnViews | None:
    """Zero-copy views of a fixed-shape array column, or None when its storage is anything else."""
    shape = ARRAY_COLUMNS[name][0]
    chunks = table.column(name).chunks
    views = []
    for chunk in chunks:
        values = chunk.storage if isinstance(chunk, pa.ExtensionArray) else chunk
        while pa.types.is_list(values.type) or pa.types.is_large_list(values.type) \
                or pa.types.is_fixed_size_list(values.type):
            values = values.flatten()
        if chunk.null_count or values.null_count or len(values) != len(chunk) * math.prod(shape) \
                or not pa.types.is_primitive(values.type):
            return None  # not a plain fixed-shape array column: read it through the formatter
        views.append(values.to_numpy(zero_copy_only=True).reshape(len(chunk), *shape))
    return ColumnViews(views, np.cumsum([0, *(len(chunk) for chunk in chunks)]))


class SplitRows:
    """One split's rows as numpy arrays: zero-copy views, or runtime preprocessing where needed.

    `positions` 0..len-1 address the rows in use (after `max_rows` and skipping empty runtime rows);
    `row_id(position)` is the dataset row (the key of the augmentation generator).
    """

    def __init__(self, dataset: datasets.Dataset, *, name: str, input_mode: InputMode,
                 max_rows: int | None, seed: int):
        if getattr(dataset, "_indices", None) is not None:
            dataset = dataset.flatten_indices()  # a select()/shuffle() view: make rows physical
        self.dataset, self.name, self.input_mode = dataset, name, input_mode
        self._views: dict[str, ColumnViews | None] | None = None
        self._numpy_dataset: datasets.Dataset | None = None
        columns = set(dataset.column_names)
        if "image" not in columns:
            raise StepError(f"{name}: the dataset has no 'image' column\nColumns: {', '.join(sorted(columns))}")
        table = self._table()
        self.filenames: list[str] = (table.column("filename").to_pylist() if "filename" in columns
                                     else [f"{name}-{i}" for i in range(len(dataset))])
        flags = (table.column("preprocessed").to_numpy(zero_copy_only=False).astype(bool)
                 if "preprocessed" in columns else np.zeros(len(dataset), bool))
        self.runtime = ~flags if set(DERIVED_COLUMNS) <= columns else np.ones(len(dataset), bool)
        self.image_column = "raw_image" if input_mode == "raw" and "raw_image" in columns else "image"
        self.stores_maps = set(MAP_COLUMNS) <= columns
        self.has_raw_image = "raw_image" in columns
        if self.runtime.any() and "label" not in columns:
            raise StepError(f"{name}: the dataset has no 'label' column\nRows without preprocessing "
                            f"(preprocessed=False, or no {', '.join(DERIVED_COLUMNS[1:])} columns) need the "
                            "label to derive the pupil mask, weights, distance maps and ellipse.")
        self._check_raw_mode(columns)
        self.ellipses = (np.stack([table.column(c).to_numpy(zero_copy_only=False) for c in ELLIPSE_COLUMNS],
                                  axis=1).astype(np.float32)
                         if set(ELLIPSE_COLUMNS) <= columns else np.full((len(dataset), 4), np.nan, np.float32))
        self.rows = self._rows_in_use(max_rows, seed)

    def _table(self) -> pa.Table:
        data = self.dataset.data
        return getattr(data, "table", data)

    def _check_raw_mode(self, columns: set[str]) -> None:
        if self.input_mode == "raw" and self.image_column == "image" and not self.runtime.all():
            raise StepError(
                f"{self.name}: input_mode=raw needs camera frames, but this split stores gamma+CLAHE "
                f"images ({int((~self.runtime).sum())} rows with preprocessed=True) and has no 'raw_image' column\n"
                "Raw mode trains on un-enhanced frames; give it a split with a 'raw_image' column or rows "
                "with preprocessed=False (camera image + label), or use input_mode=preprocessed.")

    def _rows_in_use(self, max_rows: int | None, seed: int) -> np.ndarray:
        rows = np.arange(len(self.dataset))
        if max_rows is not None and max_rows < len(rows):
            # A fixed random subset (not the first rows: splits are often ordered by subject).
            rows = np.sort(np.random.default_rng(np.random.SeedSequence([seed, len(rows)]))
                           .choice(len(rows), max_rows, replace=False))
        runtime_rows = rows[self.runtime[rows]]
        if len(runtime_rows):
            empty = [int(r) for r in runtime_rows if not self._pupil_mask(self._array(int(r), "label")).any()]
            for row in empty:
                log.warning("%s: skipping %s: no pupil pixels in its label", self.name, self.filenames[row])
            rows = np.setdiff1d(rows, empty)
        if not len(rows):
            raise StepError(f"{self.name}: no usable rows (empty split, or no row with a pupil)")
        return rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self) -> dict[str, Any]:
        # Views over the memory map are rebuilt in each worker, never pickled (that would copy the data).
        return {**self.__dict__, "_views": None, "_numpy_dataset": None}

    def row_id(self, position: int) -> int:
        return int(self.rows[position])

    def zero_copy(self) -> bool:
        """Every array column is read through views (thread-safe reads; builds them once)."""
        self._chunk_views("image")
        if self._views is None:
            raise AssertionError("_chunk_views builds the views")
        return all(views is not None for views in self._views.values())

    def _chunk_views(self, column: str) -> ColumnViews | None:
        if self._views is None:
            table = self._table()
            names = set(self.dataset.column_names) & set(ARRAY_COLUMNS)
            self._views = {name: _column_views(table, name) for name in names}
        return self._views.get(column)

    def _array(self, row: int, column: str) -> np.ndarray:
        """One row of an array column, zero-copy where the storage allows."""
        views = self._chunk_views(column)
        if views is None:
            if self._numpy_dataset is None:
                self._numpy_dataset = self.dataset.with_format("numpy", dtype=None)
            shape, dtype = ARRAY_COLUMNS[column]
            return np.asarray(self._numpy_dataset[row][column], dtype=dtype).reshape(shape)
        array = views.row(row)
        return array if array.dtype == ARRAY_COLUMNS[column][1] else array.astype(ARRAY_COLUMNS[column][1])

    @staticmethod
    def _pupil_mask(label: np.ndarray) -> np.ndarray:
        """0/1 mask: binary labels as they are, OpenEDS 4-class labels binarized (pupil = 3)."""
        return label if label.max(initial=0) <= 1 else transforms.binarize(label)

    def fields(self, position: int, wanted: tuple[str, ...]) -> dict[str, np.ndarray]:
        """The row's source arrays for the batch fields `wanted` (views: read-only)."""
        row = self.row_id(position)
        if self.runtime[row]:
            return self._runtime_fields(row, wanted)
        source = {name: self._array(row, self.image_column if name == "image" else name)
                  for name in wanted if name != "ellipse"}
        if "ellipse" in wanted:
            source["ellipse"] = self.ellipses[row]
        return source

    def camera_frame(self, position: int) -> tuple[np.ndarray, np.ndarray, bool]:
        """(frame, 0/1 pupil mask, enhance): the sensor's frame where the split has it (`raw_image`,
        or the image of a row stored without preprocessing) and whether the model's input is that
        frame enhanced (preprocessed mode); else the stored image as it is."""
        row = self.row_id(position)
        mask = self._pupil_mask(self._array(row, "label"))
        if self.has_raw_image:
            return self._array(row, "raw_image"), mask, self.input_mode == "preprocessed"
        return self._array(row, "image"), mask, bool(self.runtime[row]) and self.input_mode == "preprocessed"

    def _runtime_fields(self, row: int, wanted: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Spec preprocessing at load time (steps.data.transforms) for a row stored without it."""
        image = self._array(row, "image")
        mask = self._pupil_mask(self._array(row, "label"))
        source: dict[str, np.ndarray] = {
            "image": image if self.input_mode == "raw" else transforms.enhance_image(image, transforms.PreprocessParams()),
            "ellipse": transforms.fit_pupil_ellipse(mask).normalized(),
        }
        if "label" in wanted:
            source["label"] = mask
        if "spatial_weights" in wanted:
            source["spatial_weights"] = transforms.spatial_weights(mask, transforms.PreprocessParams().weight_sigma)
        if "dist_map" in wanted:
            source["dist_map"] = transforms.signed_distance_maps(mask)
        return source


# ---------------------------------------------------------------- batches

def _batch_tensor(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Uninitialized batch storage; in a DataLoader worker it lives in shared memory already, so
    handing the batch to the main process copies nothing (what default_collate does too)."""
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    return torch.empty(0, dtype=dtype).set_(torch.UntypedStorage._new_shared(nbytes), 0, shape, ())  # () = contiguous


class TrainingBatches(torch.utils.data.Dataset):
    """Map-style dataset whose `__getitems__` builds a whole batch; keys are (epoch, position).

    `threads` > 1: in the main process (num_workers=0) the rows of a batch are written by that many
    threads; the copies, flips and augmentations run in numpy/OpenCV without the GIL, into private
    memory that the allocator reuses batch after batch (worker processes must allocate fresh shared
    memory for every batch instead, and pay its page faults).
    """

    def __init__(self, rows: SplitRows, *, task: Task, augment: bool, seed: int, threads: int = 1,
                 camera: CameraAugment = camera_augment.OFF):
        self.rows, self.task, self.augment, self.seed, self.threads = rows, task, augment, seed, threads
        self.camera = camera if augment and camera.enabled else camera_augment.OFF
        # Maps ship only when stored and still true to the label; else the device derives them.
        keep_maps = rows.stores_maps and not self.camera.moves_label
        self.fields = tuple(name for name in TASK_FIELDS[task] if keep_maps or name not in MAP_COLUMNS)
        self.epoch = 0  # used only for plain integer keys (callers other than our samplers)
        self._pool: ThreadPoolExecutor | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pool": None}

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        return self.__getitems__([key])

    def augment_params(self, epoch: int, position: int) -> AugmentParams:
        return params_for(self.seed, epoch, self.rows.row_id(position), self.augment)

    def _camera_fields(self, epoch: int, position: int) -> dict[str, np.ndarray]:
        """The row through camera augmentation (steps.data.camera_augment), then enhanced as
        preprocess would when the model's input is the enhanced frame."""
        frame, mask, enhance = self.rows.camera_frame(position)
        rng = camera_augment.camera_rng(self.seed, epoch, self.rows.row_id(position))
        image, moved = camera_augment.apply(frame, mask, self.camera, rng)
        source = self.rows.fields(position, tuple(n for n in self.fields if n in MAP_COLUMNS or n == "ellipse"))
        source["image"] = transforms.enhance_image(image, transforms.PreprocessParams()) if enhance else image
        if "label" in self.fields:
            source["label"] = moved
        if moved is not mask:
            source["ellipse"] = transforms.fit_pupil_ellipse(moved).normalized()
        return source

    def _fill_row(self, arrays: dict[str, np.ndarray], k: int, epoch: int, position: int) -> None:
        source = (self._camera_fields(epoch, position) if self.camera.enabled
                  else self.rows.fields(position, self.fields))
        targets = {name: arrays[name][k] for name in self.fields[1:]}
        augment_row(source, self.augment_params(epoch, position), {"image": arrays["image"][k, 0], **targets})

    def _executor(self) -> ThreadPoolExecutor | None:
        if self.threads <= 1 or torch.utils.data.get_worker_info() is not None or not self.rows.zero_copy():
            return None
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="batch-rows")
        return self._pool

    def __getitems__(self, keys: list[int | tuple[int, int]]) -> dict[str, Any]:
        pairs = [key if isinstance(key, tuple) else (self.epoch, int(key)) for key in keys]
        size = len(pairs)
        batch: dict[str, Any] = {"image": _batch_tensor((size, 1, *IMAGE_SHAPE), torch.uint8)}
        for name in self.fields[1:]:
            shape = (size, 4) if name == "ellipse" else (size, *ARRAY_COLUMNS[name][0])
            batch[name] = _batch_tensor(shape, BATCH_DTYPES[name])
        arrays = {name: batch[name].numpy() for name in self.fields}
        # Rows go to threads (enhance_image keeps one CLAHE object per thread).
        pool = self._executor()
        if pool is None:
            for k, key in enumerate(pairs):
                self._fill_row(arrays, k, *key)
        else:
            for job in [pool.submit(self._fill_row, arrays, k, *key) for k, key in enumerate(pairs)]:
                job.result()
        batch["filename"] = [self.rows.filenames[self.rows.row_id(p)] for _, p in pairs]
        batch["index"] = torch.tensor([self.rows.row_id(p) for _, p in pairs], dtype=torch.int64)
        return batch


def _identity(batch: dict[str, Any]) -> dict[str, Any]:
    return batch


def _init_worker(worker_id: int) -> None:
    # One thread each: the workers are the parallelism (and OpenCV's pool must not oversubscribe).
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


@dataclass(frozen=True)
class LoaderOptions:
    batch_size: int
    num_workers: int
    seed: int
    distributed: bool
    pin_memory: bool


class BatchLoader(DataLoader):
    """A DataLoader that, loading in the main process, can build the next batches in a background
    thread (`background=True`: on CUDA, so the GPU is fed while the next batch is assembled; off
    on CPU, where the model's own threads already use every core)."""

    background = False
    depth = 2

    # The background iterator is a generator, not a _BaseDataLoaderIter: callers only iterate it.
    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        iterator = super().__iter__()
        if self.num_workers or not self.background:
            return iterator
        return _prefetched(iterator, self.depth)


_DONE = object()


def _prefetched(iterator: Iterator[Any], depth: int) -> Iterator[Any]:
    """Items of `iterator`, produced `depth` ahead by a daemon thread; errors re-raised here."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[Any, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                items.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in iterator:
                if not put((item, None)):
                    return
            put((_DONE, None))
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            put((_DONE, error))

    thread = threading.Thread(target=produce, name="batch-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = items.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item
    finally:  # the consumer stopped early (break, exception): let the producer end
        stop.set()
        thread.join(timeout=5)


def _loader(batches: TrainingBatches, sampler: EpochBatchSampler, options: LoaderOptions) -> DataLoader:
    workers = options.num_workers
    loader = BatchLoader(
        # __getitems__ builds the whole batch, so collate_fn gets that dict, not a list of samples
        batches, batch_sampler=sampler, collate_fn=_identity, num_workers=workers,  # type: ignore[arg-type]
        pin_memory=options.pin_memory and torch.cuda.is_available(),
        # A private generator: creating an iterator never consumes the global torch RNG.
        generator=torch.Generator().manual_seed(options.seed),
        worker_init_fn=_init_worker if workers else None,
        # spawn: forked workers deadlock once OpenCV's thread pool has started (SPEC 6).
        multiprocessing_context="spawn" if workers else None,
        persistent_workers=workers > 0,  # the epoch travels in the keys, so workers can stay
        prefetch_factor=2 if workers else None)
    loader.background = options.pin_memory and torch.cuda.is_available()
    return loader


def build_loaders(train: datasets.Dataset, valid: datasets.Dataset, *, task: Task, batch_size: int,
                  num_workers: int, augment: bool, input_mode: InputMode, seed: int, distributed: bool,
                  pin_memory: bool, max_train_rows: int | None = None, max_valid_rows: int | None = None,
                  camera: CameraAugment = camera_augment.OFF) -> tuple[DataLoader, DataLoader]:
    """(train loader, validation loader). Call `set_loader_epoch(train_loader, epoch)` every epoch.

    The training loader drops a last partial batch when there is more than one batch (a batch of
    one breaks BatchNorm); validation keeps every row and is never augmented.
    """
    if task not in TASK_FIELDS:
        raise ValueError(f"task must be one of {', '.join(TASK_FIELDS)}, got {task!r}")
    options = LoaderOptions(batch_size, num_workers, seed, distributed, pin_memory)
    train_rows = SplitRows(train, name="train", input_mode=input_mode, max_rows=max_train_rows, seed=seed)
    valid_rows = SplitRows(valid, name="validation", input_mode=input_mode, max_rows=max_valid_rows, seed=seed)
    log.info("loader: %d train rows (%d preprocessed at run time), %d validation rows; task=%s, "
             "input_mode=%s (train image column '%s'), augment=%s, camera augmentation %s", len(train_rows),
             int(train_rows.runtime[train_rows.rows].sum()), len(valid_rows), task, input_mode,
             train_rows.image_column, augment, camera.as_dict() if augment and camera.enabled else "off")
    if augment and camera.enabled and not train_rows.has_raw_image and not train_rows.runtime.all() \
            and input_mode == "preprocessed":
        log.warning("train: no 'raw_image' column: camera augmentation acts on the stored gamma+CLAHE "
                    "images, not on the camera frames (preprocess keep_raw_image=true stores them)")
    train_sampler = EpochBatchSampler(len(train_rows), batch_size, shuffle=True, seed=seed,
                                      drop_last=True, distributed=distributed)
    valid_sampler = EpochBatchSampler(len(valid_rows), batch_size, shuffle=False, seed=seed,
                                      drop_last=False, distributed=distributed)
    threads = assembly_threads(num_workers)
    return (_loader(TrainingBatches(train_rows, task=task, augment=augment, seed=seed, threads=threads,
                                    camera=camera),
                    train_sampler, options),
            _loader(TrainingBatches(valid_rows, task=task, augment=False, seed=seed, threads=threads),
                    valid_sampler, options))


def assembly_threads(num_workers: int) -> int:
    """Threads that write a batch's rows: the usable cores (at most 4) when loading in the main
    process, one inside each worker process."""
    if num_workers:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, cores))


def set_loader_epoch(loader: Any, epoch: int, start_batch: int = 0) -> None:
    """Reseed shuffling and augmentation for `epoch` (DistributedSampler.set_epoch when distributed).

    `start_batch` > 0 (resuming mid-epoch): this epoch yields its batches from that one on, the
    same batches as an uninterrupted epoch, without loading the ones before (len() shrinks too).
    A device-resident loader (steps.data.resident.ResidentLoader) is set through its own set_epoch.
    """
    if not isinstance(loader, DataLoader) and callable(getattr(loader, "set_epoch", None)):
        loader.set_epoch(epoch, start_batch)
        return
    sampler, dataset = loader.batch_sampler, loader.dataset
    if not isinstance(sampler, EpochBatchSampler) or not isinstance(dataset, TrainingBatches):
        raise TypeError("set_loader_epoch: the loader was not built by build_loaders")
    sampler.set_epoch(epoch, start_batch)
    dataset.epoch = epoch
