"""The validation report's PNGs: loss curves, sample overlays, pupil-pixel PR curve, IoU histogram.

Figures are built as `matplotlib.figure.Figure` objects (Agg canvas, no pyplot state), so they
draw the same with or without a display and never leak between calls.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse as EllipsePatch

from steps.data.frames import IMAGE_HEIGHT, IMAGE_WIDTH
from steps.inference.pupil import regressed_ellipse
from steps.report.evaluate import OverlaySample, SplitEvaluation
from steps.train.training_figures import AUGMENTED, save_curves

DPI = 90
TRUE_COLOUR, PREDICTED_COLOUR, FIT_COLOUR, MODEL_COLOUR = "lime", "red", "orange", "cyan"


def read_training_history(folder: Path) -> list[dict[str, Any]]:
    """train-seg's per-epoch rows from its `metrics` output (metrics.json, else metrics.csv)."""
    if (folder / "metrics.json").is_file():
        rows = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        return [row for row in rows if isinstance(row, dict) and "epoch" in row] if isinstance(rows, list) else []
    if (folder / "metrics.csv").is_file():
        with (folder / "metrics.csv").open(newline="", encoding="utf-8") as handle:
            return [{k: _number(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(handle)]
    return []


def _number(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value


def loss_curves(history: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Training curves (the training step's own drawing); None without history."""
    return save_curves(history, path)


def pixel_ellipse(normalized: np.ndarray, colour: str, style: str) -> EllipsePatch:
    """A normalized (cx, cy, rx, ry) ellipse, or an ellipse model's 6 values with the angle, as a patch
    (the y axis points down, as cv2's angle assumes)."""
    e = regressed_ellipse(np.asarray(normalized))
    return EllipsePatch((e.cx, e.cy), 2 * e.rx, 2 * e.ry, angle=e.angle,
                        fill=False, edgecolor=colour, linestyle=style, linewidth=1.2)


def crop_box(sample: OverlaySample, margin: float = 0.6, minimum: tuple[int, int] = (160, 100)) -> tuple[int, int, int, int]:
    """(x0, x1, y0, y1): the truth and predicted pupils' joint box, grown by `margin` of its size and
    to at least `minimum` (w, h), inside the frame; the frame's centre when neither has a pixel."""
    ys, xs = np.nonzero(np.asarray(sample.label).astype(bool) | np.asarray(sample.prediction).astype(bool))
    if len(xs):
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    else:
        x0, x1, y0, y1 = IMAGE_WIDTH // 2, IMAGE_WIDTH // 2, IMAGE_HEIGHT // 2, IMAGE_HEIGHT // 2
    half_w = max((x1 - x0) * (1 + margin), minimum[0]) / 2
    half_h = max((y1 - y0) * (1 + margin), minimum[1]) / 2
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    cx, cy = min(max(cx, half_w), IMAGE_WIDTH - half_w), min(max(cy, half_h), IMAGE_HEIGHT - half_h)
    return int(cx - half_w), int(cx + half_w), int(cy - half_h), int(cy + half_h)


def _outline(axis: Any, mask: np.ndarray, colour: str, style: str) -> None:
    if np.asarray(mask).any():
        axis.contour(np.asarray(mask).astype(float), levels=[0.5], colors=[colour], linestyles=[style], linewidths=1.4)


def overlays(samples: Sequence[OverlaySample], path: Path,
             ellipse_predictions: dict[str, np.ndarray] | None = None, columns: int = 3) -> Path | None:
    """The given frames (validate passes the worst by pupil IoU) cropped around the pupil: the true
    pupil outlined solid green, the predicted one dashed red; ellipses: the true one (green dotted),
    the one fitted to the prediction (orange) and the ellipse model's (cyan)."""
    if not samples:
        return None
    ellipse_predictions = ellipse_predictions or {}
    rows = math.ceil(len(samples) / columns)
    figure = Figure(figsize=(3.6 * min(columns, len(samples)), 2.9 * rows))
    axes = figure.subplots(rows, min(columns, len(samples)), squeeze=False).reshape(-1)
    for axis, sample in zip(axes, samples):
        axis.imshow(sample.image, cmap="gray", vmin=0, vmax=255)
        _outline(axis, sample.label, TRUE_COLOUR, "solid")
        _outline(axis, sample.prediction, PREDICTED_COLOUR, "dashed")
        axis.add_patch(pixel_ellipse(sample.target_ellipse, TRUE_COLOUR, ":"))
        if not np.isnan(sample.fitted_ellipse).any():
            axis.add_patch(pixel_ellipse(sample.fitted_ellipse, FIT_COLOUR, "-"))
        if sample.filename in ellipse_predictions:
            axis.add_patch(pixel_ellipse(ellipse_predictions[sample.filename], MODEL_COLOUR, "-"))
        x0, x1, y0, y1 = crop_box(sample)
        axis.set_xlim(x0, x1)
        axis.set_ylim(y1, y0)  # image rows grow downwards
        axis.set_title(f"{sample.filename}  IoU {sample.pupil_iou:.3f}", fontsize=8)
        axis.set_axis_off()
    for axis in axes[len(samples):]:
        axis.set_axis_off()
    figure.suptitle("worst frames by pupil IoU, cropped: truth outline solid green, prediction dashed red; "
                    "ellipses: true (dotted green), fitted (orange), ellipse model (cyan)", fontsize=8)
    return _save(figure, path)


def pr_curve(curve: dict[str, Any], path: Path, title: str = "pupil pixels") -> Path:
    figure = Figure(figsize=(4.5, 4.0))
    axis = figure.subplots()
    axis.plot(curve["recall"], curve["precision"], linewidth=1.5)
    axis.set_xlim(0, 1.01)
    axis.set_ylim(0, 1.01)
    axis.set_xlabel("recall")
    axis.set_ylabel("precision")
    axis.set_title(f"precision-recall, {title} (AP {curve['average_precision']:.4f})", fontsize=9)
    axis.grid(alpha=0.3)
    return _save(figure, path)


def iou_histogram(ious: Sequence[float], path: Path, title: str = "per-frame pupil IoU") -> Path:
    figure = Figure(figsize=(4.5, 3.4))
    axis = figure.subplots()
    values = np.asarray([v for v in ious if not math.isnan(v)])
    bins = cast(Sequence[float], np.linspace(0, 1, 21))  # hist takes any array of edges; its stubs say Sequence
    axis.hist(values, bins=bins, color="tab:blue", edgecolor="white")
    axis.set_xlabel("pupil IoU")
    axis.set_ylabel("frames")
    axis.set_title(f"{title} (n={len(values)})", fontsize=9)
    return _save(figure, path)


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    return path


def copy_augmented_samples(metrics: Path, out: Path) -> Path | None:
    """train-seg's grid of augmented training frames, copied into the report (None without one)."""
    source = metrics / AUGMENTED
    if not source.is_file():
        return None
    shutil.copyfile(source, out / AUGMENTED)
    return out / AUGMENTED


def report_plots(out: Path, evaluations: dict[str, SplitEvaluation], metrics: Path | None) -> dict[str, str]:
    """Every PNG of the report that can be drawn, file names by title; `metrics`: train-seg's
    metrics folder (loss curves) or None."""
    drawn: dict[str, Path | None] = {}
    drawn["training curves"] = loss_curves(read_training_history(metrics), out / "loss_curves.png") if metrics else None
    drawn["training: augmented samples"] = copy_augmented_samples(metrics, out) if metrics else None
    for name, evaluation in evaluations.items():
        seg, ellipse = evaluation.segmentation, evaluation.ellipse
        if seg is None:
            continue
        predictions = ellipse.predictions if ellipse else None
        drawn[f"{name}: worst frames by pupil IoU"] = overlays(seg.overlays, out / f"overlays_{name}.png", predictions)
        drawn[f"{name}: precision-recall of pupil pixels"] = pr_curve(seg.pr.curve(), out / f"pr_curve_{name}.png")
        drawn[f"{name}: pupil IoU histogram"] = iou_histogram([r["pupil_iou"] for r in seg.rows],
                                                                    out / f"iou_histogram_{name}.png")
    return {title: path.name for title, path in drawn.items() if path is not None}
