"""The robustness suite: every model, and the classical detector, on perturbed frames, per kind.

Frames come as camera frames where the split has them (real frames, rows stored unprocessed or
with a `raw_image` column): a perturbation is applied to the camera frame and then each model's own
preprocessing (gamma + CLAHE for a preprocessed-input model), as a real camera would feed it. A
split that stores only gamma+CLAHE images is perturbed after the enhancement (said in the report).

Per predictor and kind: mean pupil IoU of the predicted mask against the perturbed label, and the
detection rate (the one pupil ellipse's centre within `DETECT_PX` of the label's). A kind's figure is
the mean over its levels and frames; the suite's mean is the mean over kinds (each kind counts once,
whatever its number of levels); the worst kind is the lowest. The unperturbed frames are reported
as `clean` for reference and count in neither.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import datasets
import numpy as np

from steps.data import transforms
from steps.data.frames import normalize_image
from steps.data.loading import SplitRows
from steps.errors import StepError
from steps.inference.pupil import PUPIL, filled_ellipse, find_pupil, pupil_probability, regressed_ellipse
from steps.inference.refine import refine_pupil
from steps.report import classical
from steps.report.exported import ExportedModel
from steps.report.perturb import KINDS, Perturbation, perturb, suite

log = logging.getLogger(__name__)
DETECT_PX = 5.0
REFINED_SUFFIX = " + edge refinement"
CLEAN = Perturbation("clean", (), "none")
PupilEllipse = transforms.Ellipse | None
Prediction = tuple[np.ndarray, PupilEllipse]  # 0/1 pupil mask, the one pupil ellipse (None: no pupil)
Entry = tuple[Perturbation, float, bool, float, float]  # perturbation, IoU, detected, centre and radius error


@dataclass
class FrameSet:
    """Frames to perturb: images at `stage` ("raw" camera frames or "enhanced" gamma+CLAHE)."""

    name: str
    images: list[np.ndarray]
    masks: list[np.ndarray]
    stage: str


def frame_set(name: str, dataset: datasets.Dataset, max_rows: int | None) -> FrameSet:
    """Up to `max_rows` rows with a pupil (the row reader leaves closed eyes out), as camera frames
    when the split holds them."""
    try:
        rows, stage = SplitRows(dataset, name=name, input_mode="raw", max_rows=max_rows, seed=0), "raw"
    except StepError:
        rows, stage = SplitRows(dataset, name=name, input_mode="preprocessed", max_rows=max_rows, seed=0), "enhanced"
    result = FrameSet(name, [], [], stage)
    for position in range(len(rows)):
        fields = rows.fields(position, ("image", "label"))
        result.images.append(np.array(fields["image"], np.uint8))
        result.masks.append(np.array(fields["label"], np.uint8))
    return result


# ---------------------------------------------------------------- predictors

@dataclass
class Predictor:
    """A name, a task and a batch function from frames at a stage to predictions."""

    name: str
    task: str
    predict: Callable[[list[np.ndarray], str], list[Prediction]]
    skip: Callable[[str], str | None] = lambda stage: None


def model_images(model: ExportedModel, images: list[np.ndarray], stage: str) -> list[np.ndarray]:
    """The frames as the model sees them: its own preprocessing of camera frames (steps.data.transforms)."""
    if model.input_mode != "raw" and stage == "raw":
        return [transforms.enhance_image(image, transforms.PreprocessParams()) for image in images]
    return images


def model_inputs(model: ExportedModel, images: list[np.ndarray], stage: str) -> np.ndarray:
    """The model's normalized input batch."""
    return normalize_image(np.stack(model_images(model, images, stage)))[:, None]


def raw_mode_skip(model: ExportedModel) -> Callable[[str], str | None]:
    def skip(stage: str) -> str | None:
        if model.input_mode == "raw" and stage == "enhanced":
            return "input_mode=raw, but this split stores only gamma+CLAHE images"
        return None
    return skip


def segmentation_predictor(model: ExportedModel, batch_size: int, refine: bool = False) -> Predictor:
    """The argmax pupil mask and its one pupil ellipse; with `refine`, both moved onto the image's
    pupil border (steps.inference.refine), reported under the model's name + REFINED_SUFFIX."""
    def predict(images: list[np.ndarray], stage: str) -> list[Prediction]:
        out: list[Prediction] = []
        for start in range(0, len(images), batch_size):
            seen = model_images(model, images[start:start + batch_size], stage)
            logits = model.run(normalize_image(np.stack(seen))[:, None])
            probability = pupil_probability(logits)
            for k, mask in enumerate((logits.argmax(axis=1) == PUPIL).astype(np.uint8)):
                fit = find_pupil(probability[k])
                if refine:
                    mask, fit = refine_pupil(seen[k], mask, fit)
                out.append((mask, fit.ellipse))
        return out
    name = model.path.name + (REFINED_SUFFIX if refine else "")
    return Predictor(name, "segmentation", predict, raw_mode_skip(model))


def ellipse_predictor(model: ExportedModel, batch_size: int) -> Predictor:
    """The regressed ellipse (with its angle when the model gives one), rasterised to a mask."""
    def predict(images: list[np.ndarray], stage: str) -> list[Prediction]:
        out: list[Prediction] = []
        for start in range(0, len(images), batch_size):
            for values in model.run(model_inputs(model, images[start:start + batch_size], stage)):
                drawn = regressed_ellipse(values)
                mask = filled_ellipse(drawn, images[0].shape)
                out.append((mask, drawn if mask.any() else None))
        return out
    return Predictor(model.path.name, "ellipse", predict, raw_mode_skip(model))


def classical_predictor() -> Predictor:
    def predict(images: list[np.ndarray], stage: str) -> list[Prediction]:
        return [classical.detect(image) for image in images]
    return Predictor("classical", "classical", predict)


def predictors(models: list[ExportedModel], batch_size: int, refine: bool = True) -> tuple[list[Predictor], str | None]:
    """A predictor per exported model (with `refine`, the segmentation model once more with edge
    refinement), then the classical detector when it is installed."""
    chosen = []
    for m in models:
        if m.task == "segmentation":
            chosen.append(segmentation_predictor(m, batch_size))
            if refine:
                chosen.append(segmentation_predictor(m, batch_size, refine=True))
        else:
            chosen.append(ellipse_predictor(m, batch_size))
    reason = classical.unavailable_reason()
    if reason is None:
        chosen.append(classical_predictor())
    return chosen, reason


# ---------------------------------------------------------------- scoring

def pupil_iou(prediction: np.ndarray, mask: np.ndarray) -> float:
    union = np.count_nonzero(prediction | mask)
    return float(np.count_nonzero(prediction & mask) / union) if union else 1.0


def ellipse_errors(ellipse: PupilEllipse, mask: np.ndarray) -> tuple[float, float]:
    """(centre error, mean-radius error) in pixels against the label's fitted ellipse; nan when
    either has no pupil."""
    if ellipse is None or not mask.any():
        return math.nan, math.nan
    truth = transforms.fit_pupil_ellipse(mask)
    return (math.hypot(ellipse.cx - truth.cx, ellipse.cy - truth.cy),
            abs((ellipse.rx + ellipse.ry) - (truth.rx + truth.ry)) / 2)


def entry(perturbation: Perturbation, prediction: Prediction, mask: np.ndarray) -> Entry:
    """One scored frame; detected: the predicted centre within DETECT_PX of the label's."""
    center_error, radius_error = ellipse_errors(prediction[1], mask)
    return (perturbation, pupil_iou(prediction[0], mask), bool(center_error <= DETECT_PX), center_error, radius_error)


def perturbation_rng(frames: FrameSet, index: int, perturbation: Perturbation) -> np.random.Generator:
    """Each (set, frame, perturbation) has its own seed: a frame's noise never depends on the others."""
    key = zlib.crc32(f"{frames.name}/{perturbation.kind}/{perturbation.name}".encode())
    return np.random.default_rng([key, index])


def perturbed(frames: FrameSet, perturbation: Perturbation) -> tuple[list[np.ndarray], list[np.ndarray]]:
    if perturbation is CLEAN:
        return frames.images, frames.masks
    pairs = [perturb(image, mask, perturbation, perturbation_rng(frames, k, perturbation))
             for k, (image, mask) in enumerate(zip(frames.images, frames.masks))]
    return [p[0] for p in pairs], [p[1] for p in pairs]


@dataclass
class Scores:
    """Per predictor: (perturbation, pupil IoU, detected) for every perturbed frame."""

    rows: dict[str, list[Entry]] = field(default_factory=dict)

    def add(self, name: str, perturbation: Perturbation, predictions: list[Prediction],
            masks: list[np.ndarray]) -> None:
        self.rows.setdefault(name, []).extend(entry(perturbation, prediction, mask)
                                              for prediction, mask in zip(predictions, masks))


def score(frames: FrameSet, chosen: list[Predictor], perturbations: list[Perturbation]) -> Scores:
    scores = Scores()
    for perturbation in [CLEAN, *perturbations]:
        images, masks = perturbed(frames, perturbation)
        for predictor in chosen:
            scores.add(predictor.name, perturbation, predictor.predict(images, frames.stage), masks)
    return scores


# ---------------------------------------------------------------- summaries

def _mean_found(values: list[float]) -> float | None:
    found = [v for v in values if not math.isnan(v)]
    return float(np.mean(found)) if found else None


def figures(entries: list[Entry]) -> dict[str, Any]:
    """Mean pupil IoU and detection rate over the frames; centre and radius errors over the frames
    where a pupil was predicted."""
    return {"pupil_iou": float(np.mean([e[1] for e in entries])),
            "detection_rate": float(np.mean([e[2] for e in entries])), "frames": len(entries),
            "center_error_px": _mean_found([e[3] for e in entries]),
            "radius_error_px": _mean_found([e[4] for e in entries])}


def grouped(entries: list[Entry], key: Callable[[Perturbation], str]) -> Iterator[
        tuple[str, list[Entry]]]:
    groups: dict[str, list[Entry]] = {}
    for entry in entries:
        groups.setdefault(key(entry[0]), []).append(entry)
    return iter(groups.items())


def predictor_summary(task: str, entries: list[Entry]) -> dict[str, Any]:
    clean = [e for e in entries if e[0] is CLEAN]
    kinds = {}
    for kind, group in grouped([e for e in entries if e[0] is not CLEAN], lambda p: p.kind):
        kinds[kind] = {**figures(group), "levels": {name: figures(level) for name, level in
                                                   grouped(group, lambda p: p.name)}}
    means = {kind: value["pupil_iou"] for kind, value in kinds.items()}
    worst = min(means, key=means.__getitem__) if means else None
    return {"task": task, "clean": figures(clean) if clean else None, "kinds": kinds,
            "mean_pupil_iou": float(np.mean(list(means.values()))) if means else None,
            "mean_detection_rate": float(np.mean([v["detection_rate"] for v in kinds.values()])) if kinds else None,
            "worst_kind": worst, "worst_kind_pupil_iou": means[worst] if worst else None}


def run_suite(frames: FrameSet, chosen: list[Predictor], perturbations: list[Perturbation]) -> dict[str, Any]:
    """The suite on one frame set: a summary per predictor (skipped ones with the reason)."""
    skipped = {p.name: reason for p in chosen if (reason := p.skip(frames.stage))}
    active = [p for p in chosen if p.name not in skipped]
    summary: dict[str, Any] = {"frames": len(frames.images), "stage": frames.stage, "predictors": {}, "skipped": skipped}
    if not frames.images:
        return summary
    scores = score(frames, active, perturbations)
    for predictor in active:
        summary["predictors"][predictor.name] = predictor_summary(predictor.task, scores.rows[predictor.name])
    log.info("robustness on %s: %d frames x %d perturbations, %d predictor(s)", frames.name, len(frames.images),
             len(perturbations), len(active))
    return summary


def robustness_summary(splits: dict[str, tuple[datasets.Dataset, int | None]], models: list[ExportedModel], *,
                       max_levels: int | None, batch_size: int, refine: bool = True) -> dict[str, Any]:
    """The suite on each named split (dataset, at most that many rows): report.json's `robustness`."""
    perturbations = suite(max_levels)
    chosen, classical_reason = predictors(models, batch_size, refine)
    sets = {name: run_suite(frame_set(name, dataset, rows), chosen, perturbations)
            for name, (dataset, rows) in splits.items()}
    return {"sets": sets, "detect_px": DETECT_PX,
            "kinds": {kind: [p.name for p in perturbations if p.kind == kind] for kind in KINDS},
            "classical": {"available": classical_reason is None, "name": classical.NAME,
                          "note": classical_reason or "a fresh Detector2D per frame, on the frame as the camera "
                                                      "gives it (no gamma/CLAHE); its ellipse rasterised to a mask"}}
