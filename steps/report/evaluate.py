"""Run exported models (onnxruntime) over frames, with their checkpoints (PyTorch) for parity.

The ONNX file is what ships, so every figure comes from onnxruntime's outputs; PyTorch runs only on
the first `parity_rows` rows to measure how far the two disagree. Frames come from a preprocessed
split or from raw camera frames, through the training loader's row reader (steps.data.loading), so
a model sees the same input here as in training: its `input_mode` picks gamma+CLAHE or the raw frame.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import datasets
import numpy as np
import torch

from steps.data import transforms
from steps.data.frames import SEG_CLASSES, normalize_image
from steps.data.loading import InputMode, SplitRows
from steps.data.openeds import FrameError, FramePolicy, find_openeds, frame_sizes, read_frame
from steps.errors import StepError
from steps.inference.pupil import PUPIL, filled_ellipse, find_pupil, pupil_probability, regressed_ellipse
from steps.inference.refine import refine_pupil
from steps.report.exported import ExportedModel
from steps.train.metrics import ConfusionMatrix, ellipse_errors

log = logging.getLogger(__name__)
PR_BINS = 1000  # pupil-probability histogram bins for the precision-recall curve


# ---------------------------------------------------------------- frames

@dataclass
class FrameBatch:
    images: np.ndarray      # uint8 (B, H, W): the model's input before normalization
    labels: np.ndarray      # uint8 (B, H, W) 0/1 pupil mask
    ellipses: np.ndarray    # float32 (B, 4) normalized (cx, cy, rx, ry)
    filenames: list[str]

    @property
    def inputs(self) -> np.ndarray:
        return normalize_image(self.images)[:, None]


def split_rows(dataset: datasets.Dataset, name: str, input_mode: str, max_rows: int | None) -> SplitRows:
    """`input_mode` as an ONNX file's metadata names it ("preprocessed" or "raw")."""
    return SplitRows(dataset, name=name, input_mode=cast(InputMode, input_mode), max_rows=max_rows, seed=0)


def frame_batches(rows: SplitRows, batch_size: int) -> Iterator[FrameBatch]:
    wanted = ("image", "label", "ellipse")
    for start in range(0, len(rows), batch_size):
        fields = [rows.fields(p, wanted) for p in range(start, min(start + batch_size, len(rows)))]
        yield FrameBatch(images=np.stack([f["image"] for f in fields]).astype(np.uint8),
                         labels=np.stack([f["label"] for f in fields]).astype(np.uint8),
                         ellipses=np.stack([f["ellipse"] for f in fields]).astype(np.float32),
                         filenames=[rows.filenames[rows.row_id(p)]
                                    for p in range(start, start + len(fields))])


@dataclass
class RealFrames:
    """Labelled real frames as unprocessed rows (None when none could be read), the original size of
    each frame read ('WIDTHxHEIGHT': count), why the others were skipped, and why none could be
    looked for (`error`: the folder holds no OpenEDS layout)."""

    dataset: datasets.Dataset | None
    sizes: dict[str, int]
    skipped: list[str]
    error: str = ""


def raw_frames_dataset(folder: Path, policy: FramePolicy = "pad") -> RealFrames:
    """Labelled raw OpenEDS frames under `folder` (any layout steps.data.openeds recognises; its test
    split when it has several) as unprocessed rows (`preprocessed=False`, 4-class labels), so the
    row reader applies each model's own preprocessing; frames of another size go onto 640x400 under
    `policy` (labels alike), as predict's geometry would."""
    try:
        layout = find_openeds(folder)
    except FrameError as error:
        log.warning("real frames: %s", error)
        return RealFrames(None, {}, [], str(error))
    frames = layout.splits.get("test") or [frame for split in layout.splits.values() for frame in split]
    images, labels, kept, skipped = [], [], [], []
    for frame in (frame for frame in frames if frame.label is not None):
        try:
            image, label = read_frame(frame, policy)
        except FrameError as error:
            log.warning("real frames: skipping %s", error)
            skipped.append(str(error))
            continue
        images.append(image)
        labels.append(label)
        kept.append(frame)
    if not kept:
        return RealFrames(None, {}, skipped)
    dataset = datasets.Dataset.from_dict({"image": images, "label": labels,
                                          "filename": [frame.image.name for frame in kept],
                                          "preprocessed": [False] * len(kept)})
    return RealFrames(dataset, frame_sizes(kept), skipped)


# ---------------------------------------------------------------- accumulators

class PixelPR:
    """Precision-recall of pupil pixels from histograms of the predicted pupil probability."""

    def __init__(self, bins: int = PR_BINS):
        self.bins = bins
        self.positive = np.zeros(bins, np.int64)
        self.negative = np.zeros(bins, np.int64)

    def add(self, probability: np.ndarray, label: np.ndarray) -> None:
        index = np.minimum((probability.reshape(-1) * self.bins).astype(np.int64), self.bins - 1)
        is_pupil = label.reshape(-1).astype(bool)
        self.positive += np.bincount(index[is_pupil], minlength=self.bins)
        self.negative += np.bincount(index[~is_pupil], minlength=self.bins)

    def curve(self) -> dict[str, Any]:
        """Thresholds k/bins (predict pupil when p >= t): precision, recall, average precision."""
        true_pos = np.cumsum(self.positive[::-1])[::-1].astype(np.float64)
        false_pos = np.cumsum(self.negative[::-1])[::-1].astype(np.float64)
        total = true_pos[0]
        recall = true_pos / total if total else np.zeros_like(true_pos)
        predicted = true_pos + false_pos
        precision = np.divide(true_pos, predicted, out=np.ones_like(true_pos), where=predicted > 0)
        # AP: precision summed over recall steps, from the highest threshold down
        steps = -np.diff(np.append(recall, 0.0))
        return {"thresholds": np.arange(self.bins) / self.bins, "precision": precision, "recall": recall,
                "average_precision": float((steps * precision).sum())}


@dataclass
class OverlaySample:
    filename: str
    image: np.ndarray           # uint8 (H, W), as the model saw it
    label: np.ndarray           # 0/1 true pupil
    prediction: np.ndarray      # 0/1 predicted pupil
    target_ellipse: np.ndarray  # normalized (4,)
    fitted_ellipse: np.ndarray  # normalized (4,), fitted to the predicted mask (NaN when empty)
    pupil_iou: float


@dataclass
class Parity:
    """Max abs difference between onnxruntime and PyTorch over the first `limit` rows."""

    limit: int
    rows: int = 0
    max_abs_diff: float = 0.0

    def check(self, model: ExportedModel, inputs: np.ndarray, outputs: np.ndarray) -> None:
        take = min(self.limit - self.rows, len(inputs))
        if model.torch_model is None or take <= 0:
            return
        with torch.no_grad():
            expected = model.torch_model(torch.from_numpy(inputs[:take])).numpy()
        self.max_abs_diff = max(self.max_abs_diff, float(np.abs(outputs[:take] - expected).max()))
        self.rows += take

    def summary(self) -> dict[str, Any]:
        return {"rows": self.rows, "max_abs_diff": self.max_abs_diff if self.rows else None}


def fitted_ellipses(masks: np.ndarray) -> np.ndarray:
    """(B, 4) normalized ellipses fitted to predicted masks; NaN rows where nothing was predicted."""
    fits = np.full((len(masks), 4), np.nan, np.float32)
    for k, mask in enumerate(masks):
        if mask.any():
            fits[k] = transforms.fit_pupil_ellipse(np.ascontiguousarray(mask, dtype=np.uint8)).normalized()
    return fits


def per_sample_errors(pred: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
    """ellipse_errors per row; NaN where the prediction is NaN (no pupil predicted)."""
    out = {name: np.full(len(pred), np.nan) for name in ("center_error_px", "radius_error_px", "ellipse_iou")}
    valid = ~np.isnan(pred).any(axis=1)
    if valid.any():
        for name, values in ellipse_errors(torch.from_numpy(pred[valid]), torch.from_numpy(target[valid])).items():
            out[name][valid] = values.numpy()
    return out


def nan_stats(values: list[float]) -> dict[str, float | None]:
    array = np.asarray(values, np.float64)
    array = array[~np.isnan(array)]
    if not len(array):
        return {"mean": None, "median": None, "p90": None}
    return {"mean": float(array.mean()), "median": float(np.median(array)), "p90": float(np.percentile(array, 90))}


def pupil_ious(prediction: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Per-frame IoU of the pupil class (1.0 when neither has a pupil pixel)."""
    pred, true = prediction == PUPIL, label == PUPIL
    inter = (pred & true).sum(axis=(1, 2))
    union = (pred | true).sum(axis=(1, 2))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def refined_pupil_ious(batch: FrameBatch, prediction: np.ndarray, probability: np.ndarray) -> np.ndarray:
    """Per-frame pupil IoU of the mask after edge refinement (steps.inference.refine) on the frames
    the model saw."""
    ious = []
    for image, mask, frame_probability, label in zip(batch.images, prediction == PUPIL, probability, batch.labels):
        refined, _ = refine_pupil(image, mask.view(np.uint8), find_pupil(frame_probability))
        ious.append(pupil_ious(refined[None] * PUPIL, label[None])[0])
    return np.asarray(ious, np.float64)


# ---------------------------------------------------------------- segmentation

@dataclass
class SegEvaluation:
    confusion: ConfusionMatrix
    pr: PixelPR
    parity: Parity
    rows: list[dict[str, Any]] = field(default_factory=list)
    overlays: list[OverlaySample] = field(default_factory=list)

    def add(self, batch: FrameBatch, logits: np.ndarray, max_overlays: int) -> None:
        prediction = logits.argmax(axis=1).astype(np.uint8)
        self.confusion.update(torch.from_numpy(prediction), torch.from_numpy(batch.labels))
        self.pr.add(pupil_probability(logits), batch.labels)
        fits = fitted_ellipses(prediction == PUPIL)
        errors = per_sample_errors(fits, batch.ellipses)
        ious = pupil_ious(prediction, batch.labels)
        refined = refined_pupil_ious(batch, prediction, pupil_probability(logits))
        for k, name in enumerate(batch.filenames):
            self.rows.append({"filename": name, "pupil_iou": float(ious[k]), "pupil_iou_refined": float(refined[k]),
                              **{f"fit_{key}": float(values[k]) for key, values in errors.items()}})
            if max_overlays:
                self.keep_worst(OverlaySample(name, batch.images[k].copy(), batch.labels[k].copy(),
                                              prediction[k].copy(), batch.ellipses[k].copy(), fits[k].copy(),
                                              float(ious[k])), max_overlays)

    def keep_worst(self, sample: OverlaySample, limit: int) -> None:
        """The `limit` frames with the lowest pupil IoU so far, worst first (ties: earlier first);
        only their images are kept, so a large split costs no more memory than a small one."""
        self.overlays.append(sample)
        self.overlays.sort(key=lambda s: s.pupil_iou)
        del self.overlays[limit:]

    def summary(self) -> dict[str, Any]:
        scores = self.confusion.compute()
        column = lambda key: [row[key] for row in self.rows]  # noqa: E731
        return {
            "frames": len(self.rows),
            "miou": scores["miou"],
            "iou_per_class": dict(zip(SEG_CLASSES, cast(list[float], scores["iou_per_class"]))),
            "pixel_acc": scores["pixel_acc"],
            "pupil_iou_per_frame": nan_stats(column("pupil_iou")),
            "pupil_iou_refined_per_frame": nan_stats(column("pupil_iou_refined")),
            "pupil_average_precision": self.pr.curve()["average_precision"],
            "fitted_ellipse": {"center_error_px": nan_stats(column("fit_center_error_px")),
                               "radius_error_px": nan_stats(column("fit_radius_error_px")),
                               "ellipse_iou": nan_stats(column("fit_ellipse_iou")),
                               "frames_without_pupil": int(np.isnan(column("fit_center_error_px")).sum())},
            "parity": self.parity.summary(),
        }


def evaluate_segmentation(model: ExportedModel, batches: Iterator[FrameBatch], parity_rows: int,
                          max_overlays: int = 0) -> SegEvaluation:
    """mIoU over the whole split (one confusion matrix), per-frame pupil IoU, the ellipse fitted to
    the predicted mask, the pixel PR histogram and the `max_overlays` worst frames for overlays."""
    result = SegEvaluation(ConfusionMatrix(len(SEG_CLASSES)), PixelPR(), Parity(parity_rows))
    for batch in batches:
        inputs = batch.inputs
        logits = model.run(inputs)
        result.parity.check(model, inputs, logits)
        result.add(batch, logits, max_overlays)
    return result


# ---------------------------------------------------------------- ellipse regression

@dataclass
class EllipseEvaluation:
    parity: Parity
    rows: list[dict[str, Any]] = field(default_factory=list)
    predictions: dict[str, np.ndarray] = field(default_factory=dict)  # filename -> normalized (4,)

    def add(self, batch: FrameBatch, predicted: np.ndarray) -> None:
        errors = per_sample_errors(predicted[:, :4].astype(np.float32), batch.ellipses)
        for k, name in enumerate(batch.filenames):
            self.rows.append({"filename": name, **{f"ellipse_{key}" if key != "ellipse_iou" else key:
                                                   float(values[k]) for key, values in errors.items()},
                              "ellipse_iou_with_angle": ellipse_iou_with_angle(predicted[k], batch.labels[k])})
            self.predictions[name] = predicted[k]

    def summary(self) -> dict[str, Any]:
        column = lambda key: [row[key] for row in self.rows]  # noqa: E731
        return {"frames": len(self.rows),
                "center_error_px": nan_stats(column("ellipse_center_error_px")),
                "radius_error_px": nan_stats(column("ellipse_radius_error_px")),
                "ellipse_iou": nan_stats(column("ellipse_iou")),
                "ellipse_iou_with_angle": nan_stats(column("ellipse_iou_with_angle")),
                "parity": self.parity.summary()}


def ellipse_iou_with_angle(predicted: np.ndarray, label: np.ndarray) -> float:
    """IoU of the predicted ellipse drawn with its angle and the label's fitted ellipse drawn with its
    own (both rasterised by cv2.ellipse); nan for a 4-value (angle-free) model or a pupil-less label."""
    if len(predicted) < 6 or not label.any():
        return float("nan")
    truth = filled_ellipse(transforms.fit_pupil_ellipse(np.ascontiguousarray(label, dtype=np.uint8)), label.shape)
    drawn = filled_ellipse(regressed_ellipse(predicted), label.shape)
    union = np.count_nonzero(truth | drawn)
    return float(np.count_nonzero(truth & drawn) / union) if union else 1.0


def evaluate_ellipse(model: ExportedModel, batches: Iterator[FrameBatch], parity_rows: int) -> EllipseEvaluation:
    result = EllipseEvaluation(Parity(parity_rows))
    for batch in batches:
        inputs = batch.inputs
        predicted = model.run(inputs)
        result.parity.check(model, inputs, predicted)
        result.add(batch, predicted)
    return result


def merge_rows(split: str, *tables: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-sample rows of several evaluations joined by filename (first table's order)."""
    merged: dict[str, dict[str, Any]] = {}
    for table in tables:
        for row in table:
            merged.setdefault(row["filename"], {"split": split, "filename": row["filename"]}).update(row)
    return list(merged.values())


# ---------------------------------------------------------------- one split, every model

@dataclass
class SplitEvaluation:
    """Every model's results on one split; `skipped` says why a model was not evaluated there."""

    name: str
    segmentation: SegEvaluation | None = None
    ellipse: EllipseEvaluation | None = None
    skipped: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"segmentation": self.segmentation.summary() if self.segmentation else None,
                "ellipse": self.ellipse.summary() if self.ellipse else None,
                "skipped": dict(self.skipped)}

    def rows(self) -> list[dict[str, Any]]:
        return merge_rows(self.name, *(e.rows for e in (self.segmentation, self.ellipse) if e is not None))


def evaluate_split(name: str, dataset: datasets.Dataset, models: list[ExportedModel], *, batch_size: int,
                   max_rows: int | None, parity_rows: int, overlays: int) -> SplitEvaluation:
    """Each model reads the split in its own input mode; a model that cannot (a raw-frame model on a
    split holding only gamma+CLAHE images) is skipped with the reason, never fed the wrong input."""
    result = SplitEvaluation(name)
    for model in models:
        try:
            rows = split_rows(dataset, name, model.input_mode, max_rows)
        except StepError as error:
            result.skipped[model.task] = str(error).strip().splitlines()[0]
            log.warning("%s: %s not evaluated: %s", name, model.path.name, result.skipped[model.task])
            continue
        batches = frame_batches(rows, batch_size)
        if model.task == "segmentation":
            result.segmentation = evaluate_segmentation(model, batches, parity_rows, overlays)
        else:
            result.ellipse = evaluate_ellipse(model, batches, parity_rows)
        log.info("%s: %s evaluated on %d frames", name, model.path.name, len(rows))
    return result
