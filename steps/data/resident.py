"""Training data resident on the device: a split decoded once into GPU memory, batches drawn there.

The loader (steps.data.loading) assembles every batch on the host and copies it to the GPU; with
a tiny model on a large GPU that host work, not the GPU, bounds the speed. `ResidentSplit` decodes
the split once, through the loader's own row reader (SplitRows: compact rows and spec rows,
preprocessed or preprocessed at load time, input_mode raw or preprocessed), into device tensors:

- image uint8 (N, 1, 400, 640) and, for segmentation, label uint8 (N, 400, 640) 0/1;
- ellipse float32 (N, 4) (cx, cy, rx, ry normalized) and the mirrored cx float32 (N,).

Stored spatial weights and distance maps are NOT copied (they would be 2.8 MB a row more): the
segmentation task derives them per batch on the device (`SegmentationTask.targets` ->
steps.train.label_maps, the exact torch EDT), as it does for compact rows.

`ResidentLoader` yields batches in the loader's format (image uint8 (B,1,400,640), label uint8
(B,400,640), ellipse float32 (B,4) on the device; index int64 (B,) and filename list on the host)
minus the maps, so SegmentationTask, EllipseTask and steps.train.engine consume them unchanged.
Order: the loader's own `EpochBatchSampler` (steps.data.sampling): epoch e's permutation comes from
np.random.default_rng(SeedSequence([seed, e])), the last partial batch is dropped, and with
torch.distributed each rank takes its DistributedSampler share (each process holds the whole split).

Augmentation on the device: the horizontal flip only. Whether a row is flipped in epoch e is
`steps.data.augment.params_for(seed, e, row).flip`, the very draw the CPU loader uses, so a
resident epoch flips the same rows: torch.flip of image and label, and cx mirrored with
steps.data.augment.mirror_cx's convention (cx' = (639 - 640 cx) / 640, precomputed per row, so it
is bit-identical to the loader's). Not applied: RITnet's photometric line and blur augmentations
(they draw on single frames with OpenCV; a resident epoch's frames are the loader's minus those)
and camera augmentation (steps.data.camera_augment moves the label and refits the ellipse on the
CPU): `resident_loader` refuses camera augmentation with a StepError rather than drop it silently.

Memory (`memory_bytes`): 512,020 bytes a segmentation row (image 256,000 + label 256,000 +
ellipse 16 + mirrored cx 4), 256,020 an ellipse row. The Kaggle copy of OpenEDS taken as 27,000
frames (a round figure: the exact count of that copy was not checked here):

    task          rows     bytes on device   GiB    left on 40 GiB   80 GiB   139 GiB (H200)
    segmentation  27,000   13,824,540,000    12.9   27.1             67.1     126.1
    ellipse       27,000    6,912,540,000     6.4   33.6             73.6     132.6

("left": what the card (A100 40 GB: 40 GiB; A100/H100 80 GB: about 80 GiB; H200 141 GB: about
139 GiB as torch reports it) keeps beside the split for the CUDA context, the model, its optimizer
state and the activations; a tiny model at batch 128 needs a few GiB of those.) It
fits on all three. Before allocating, `ResidentSplit` compares the need with
torch.cuda.mem_get_info and refuses (StepError, naming max_train_rows) what does not fit.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from steps.data.augment import mirror_cx, params_for
from steps.data.camera_augment import OFF, CameraAugment
from steps.data.frames import IMAGE_SHAPE
from steps.data.sampling import EpochBatchSampler
from steps.errors import StepError

if TYPE_CHECKING:
    import datasets

log = logging.getLogger(__name__)

PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
# Bytes per row on the device: uint8 image and label (the ellipse model's pupil map learns from the
# label too), float32 ellipse (4) and mirrored cx.
ROW_BYTES = {"segmentation": 2 * PIXELS + 4 * 4 + 4, "ellipse": 2 * PIXELS + 4 * 4 + 4}
# Kept free on the device besides the split (CUDA context, model, optimizer state, activations).
HEADROOM_BYTES = 2 * 1024**3
DECODE_CHUNK_ROWS = 64  # rows decoded on the host per copy to the device (~33 MB staged)


def memory_bytes(rows: int, task: str = "segmentation") -> int:
    """Device bytes a resident split of `rows` rows takes (what ResidentSplit allocates)."""
    if task not in ROW_BYTES:
        raise ValueError(f"task must be one of {', '.join(ROW_BYTES)}, got {task!r}")
    return rows * ROW_BYTES[task]


class RowSource(Protocol):
    """What ResidentSplit reads: steps.data.loading.SplitRows, or ArrayRows (no datasets needed)."""

    filenames: list[str]

    def __len__(self) -> int: ...
    def row_id(self, position: int) -> int: ...
    def fields(self, position: int, wanted: tuple[str, ...]) -> dict[str, np.ndarray]: ...


class ArrayRows:
    """In-memory rows (numpy): image uint8 (N, 400, 640), label uint8 (N, 400, 640) 0/1, ellipse
    float32 (N, 4). The row source of the GPU benchmark, which runs without datasets/pyarrow."""

    def __init__(self, image: np.ndarray, label: np.ndarray, ellipse: np.ndarray,
                 filenames: Sequence[str] | None = None):
        if image.shape[1:] != IMAGE_SHAPE or label.shape != image.shape or ellipse.shape != (len(image), 4):
            raise ValueError(f"ArrayRows: expected image and label (N, {IMAGE_SHAPE[0]}, {IMAGE_SHAPE[1]}) "
                             f"and ellipse (N, 4), got {image.shape}, {label.shape}, {ellipse.shape}")
        self.image, self.label = image.astype(np.uint8, copy=False), label.astype(np.uint8, copy=False)
        self.ellipse = ellipse.astype(np.float32, copy=False)
        self.filenames = list(filenames) if filenames is not None else [f"row-{i}" for i in range(len(image))]

    def __len__(self) -> int:
        return len(self.image)

    def row_id(self, position: int) -> int:
        return position

    def fields(self, position: int, wanted: tuple[str, ...]) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {"image": self.image, "label": self.label, "ellipse": self.ellipse}
        return {name: arrays[name][position] for name in wanted}


class ResidentSplit:
    """A split's rows decoded once into `device` memory; `__getitems__` builds a batch there.

    Device-agnostic (a CPU device works, for tests); training uses it on CUDA only (fit.build_run).
    Keys are (epoch, position) pairs, as the loader's TrainingBatches takes them.
    """

    def __init__(self, rows: RowSource, device: torch.device | str, *, task: str = "segmentation",
                 seed: int = 0, augment: bool = True, chunk_rows: int = DECODE_CHUNK_ROWS):
        self.device, self.task, self.seed, self.augment = torch.device(device), task, seed, augment
        count = len(rows)
        need = memory_bytes(count, task)
        self._check_fits(need, count)
        self.row_ids = np.array([rows.row_id(p) for p in range(count)], dtype=np.int64)
        self.filenames = [rows.filenames[int(r)] for r in self.row_ids]
        self.image = torch.empty((count, 1, *IMAGE_SHAPE), dtype=torch.uint8, device=self.device)
        self.label: torch.Tensor | None = torch.empty((count, *IMAGE_SHAPE), dtype=torch.uint8, device=self.device)
        ellipse = np.empty((count, 4), np.float32)
        wanted = ("image", "label", "ellipse") if self.label is not None else ("image", "ellipse")
        for start in range(0, count, chunk_rows):
            stop = min(count, start + chunk_rows)
            images = np.empty((stop - start, *IMAGE_SHAPE), np.uint8)
            labels = np.empty((stop - start, *IMAGE_SHAPE), np.uint8) if self.label is not None else None
            for k, position in enumerate(range(start, stop)):
                source = rows.fields(position, wanted)
                images[k] = source["image"]
                if labels is not None:
                    labels[k] = source["label"]
                ellipse[position] = source["ellipse"]
            self.image[start:stop, 0].copy_(torch.from_numpy(images))
            if self.label is not None and labels is not None:
                self.label[start:stop].copy_(torch.from_numpy(labels))
        mirrored = np.array([mirror_cx(cx) for cx in ellipse[:, 0]], dtype=np.float32)
        self.ellipse = torch.from_numpy(ellipse).to(self.device)
        self.mirrored_cx = torch.from_numpy(mirrored).to(self.device)
        self.nbytes = need
        self.epoch = 0

    def _check_fits(self, need: int, count: int) -> None:
        if self.device.type != "cuda":
            return
        free, total = torch.cuda.mem_get_info(self.device)
        if need + HEADROOM_BYTES > free:
            raise StepError(
                f"resident_data: {count} train rows need {need / 2**30:.1f} GiB on {self.device}, but only "
                f"{free / 2**30:.1f} of {total / 2**30:.1f} GiB are free ({HEADROOM_BYTES / 2**30:.0f} GiB kept "
                "for the model and activations)\nset max_train_rows lower, or resident_data=false")

    def __len__(self) -> int:
        return len(self.row_ids)

    def flips(self, epoch: int, positions: Sequence[int]) -> np.ndarray:
        """Which of these rows epoch `epoch` flips: the CPU loader's draw (params_for)."""
        return np.array([params_for(self.seed, epoch, int(self.row_ids[p]), self.augment).flip for p in positions],
                        dtype=bool)

    def batch(self, epoch: int, positions: Sequence[int]) -> dict[str, Any]:
        """The rows at `positions` as one batch on the device, flipped as epoch `epoch` flips them."""
        index = torch.as_tensor(np.asarray(positions, dtype=np.int64)).to(self.device, non_blocking=True)
        flips = self.flips(epoch, positions)
        flipped = torch.from_numpy(np.flatnonzero(flips)).to(self.device, non_blocking=True)
        image = self.image.index_select(0, index)
        ellipse = self.ellipse.index_select(0, index)
        batch: dict[str, Any] = {"image": image}
        if flips.any():
            image[flipped] = image[flipped].flip(-1)
            ellipse[flipped, 0] = self.mirrored_cx.index_select(0, index)[flipped]
        if self.label is not None:
            label = self.label.index_select(0, index)
            if flips.any():
                label[flipped] = label[flipped].flip(-1)
            batch["label"] = label
        batch["ellipse"] = ellipse
        rows = self.row_ids[np.asarray(positions, dtype=np.int64)]
        batch["filename"] = [self.filenames[p] for p in positions]
        batch["index"] = torch.from_numpy(rows.copy())
        return batch

    def __getitems__(self, keys: list[tuple[int, int]]) -> dict[str, Any]:
        """A batch of (epoch, position) keys (one epoch per batch, as the sampler makes them)."""
        epochs = {epoch for epoch, _ in keys}
        if len(epochs) > 1:
            raise ValueError(f"ResidentSplit: one epoch per batch, got {sorted(epochs)}")
        return self.batch(epochs.pop() if epochs else self.epoch, [position for _, position in keys])


class ResidentLoader:
    """The train loader over a ResidentSplit: len(), iteration, `set_epoch(epoch, start_batch)`
    (what steps.data.loading.set_loader_epoch calls), and `.dataset` (the split) as a DataLoader has."""

    def __init__(self, split: ResidentSplit, batch_size: int, *, seed: int, distributed: bool = False):
        self.dataset = split
        self.batch_size = batch_size
        self.batch_sampler = EpochBatchSampler(len(split), batch_size, shuffle=True, seed=seed, drop_last=True,
                                               distributed=distributed)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.batch_sampler.set_epoch(epoch, start_batch)
        self.dataset.epoch = epoch

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for keys in self.batch_sampler:
            yield self.dataset.__getitems__(keys)


def resident_loader(train: datasets.Dataset, device: torch.device, *, task: str, batch_size: int, augment: bool,
                    input_mode: str, seed: int, distributed: bool, max_rows: int | None = None,
                    camera: CameraAugment = OFF) -> ResidentLoader:
    """The train split decoded onto `device` (the rows build_loaders would train on), as a loader."""
    from steps.data.loading import SplitRows  # datasets and pyarrow only when reading a split

    if augment and camera.enabled:
        raise StepError("resident_data: camera augmentation (camera_probability > 0) runs on the CPU loader "
                        "and cannot be applied to device-resident data\nset camera_probability=0 or "
                        "resident_data=false")
    rows = SplitRows(train, name="train", input_mode=input_mode,  # type: ignore[arg-type]
                     max_rows=max_rows, seed=seed)
    split = ResidentSplit(rows, device, task=task, seed=seed, augment=augment)
    log.info("resident data: %d train rows decoded onto %s (%.2f GiB); augmentation on the device: %s",
             len(split), device, split.nbytes / 2**30,
             "horizontal flip only (RITnet's line and blur augmentations are not applied)" if augment else "off")
    return ResidentLoader(split, batch_size, seed=seed, distributed=distributed)
