"""Training figures: loss and IoU curves per epoch, and prediction overlays for the tracker."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

CURVES = "curves.png"
AUGMENTED = "augmented_samples.png"
# (panel title, metric names) drawn when present in the history
PANELS = (
    ("loss", ("train_loss", "valid_loss")),
    ("IoU", ("train_iou", "valid_iou", "iou_pupil")),
    ("loss components (train)", ("ce_loss", "dice_loss", "surface_loss")),
    ("ellipse error (px)", ("center_error_px", "radius_error_px")),
)


def save_curves(history: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """One PNG with a panel per metric group that the history holds; None for an empty history."""
    panels = [(title, [m for m in names if any(m in row for row in history)]) for title, names in PANELS]
    panels = [(title, names) for title, names in panels if names]
    if not history or not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.4), squeeze=False)
    for axis, (title, names) in zip(axes[0], panels):
        for name in names:
            points = [(row["epoch"], row[name]) for row in history if name in row]
            axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, label=name)
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def overlay(image: np.ndarray, target: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """HxWx3 uint8: the frame in gray, target pupil in green, prediction in red (overlap yellow)."""
    gray = np.asarray(image, dtype=np.float32)
    if gray.min() < 0:  # model input in [-1, 1]
        gray = (gray * 0.5 + 0.5) * 255
    rgb = np.repeat(np.clip(gray, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    target, pred = np.asarray(target).astype(bool), np.asarray(pred).astype(bool)
    rgb[pred, 0] = 255
    rgb[target, 1] = 255
    rgb[pred | target, 2] //= 3
    return rgb


def augmented_grid(batch: dict[str, Any], path: Path, columns: int = 4) -> Path | None:
    """The training frames as the model sees them in epoch 1 (flips, lines, blur applied), the
    target pupil outlined in green: what augmentation does, at a glance. None for an empty batch."""
    from matplotlib.figure import Figure

    images = np.asarray(batch["image"])[:, 0]
    if not len(images):
        return None
    labels = np.asarray(batch["label"]) if "label" in batch else None
    rows = -(-len(images) // columns)
    figure = Figure(figsize=(3.2 * min(columns, len(images)), 2.2 * rows))
    axes = figure.subplots(rows, min(columns, len(images)), squeeze=False).reshape(-1)
    for k, axis in enumerate(axes):
        axis.set_axis_off()
        if k >= len(images):
            continue
        axis.imshow(images[k], cmap="gray", vmin=0, vmax=255)
        if labels is not None and labels[k].any():
            axis.contour(labels[k].astype(float), levels=[0.5], colors=["lime"], linewidths=1.0)
        axis.set_title(str(batch["filename"][k]), fontsize=7)
    figure.suptitle("augmented training samples (epoch 1), target pupil in green", fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    return path
