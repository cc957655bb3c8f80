"""What a training run writes about itself: per-epoch metrics (CSV, JSON, curves) and its resolved config."""

from __future__ import annotations

import csv
import logging
import platform
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from steps.outputs import write_json_atomic
from steps.train.training_figures import CURVES, save_curves

log = logging.getLogger(__name__)

METRICS_CSV = "metrics.csv"
METRICS_JSON = "metrics.json"
RESOLVED_CONFIG = "resolved_config.json"
VERSIONED_PACKAGES = ("torch", "numpy", "datasets", "mlflow", "opencv-python-headless", "onnx")


class MetricsLog:
    """Rewrites metrics.csv, metrics.json and curves.png from the whole history after each epoch
    (a resumed run's files therefore cover the epochs before the resume too)."""

    def __init__(self, directory: Path, enabled: bool = True):
        self.directory, self.enabled = Path(directory), enabled

    def write(self, history: Sequence[dict[str, Any]]) -> None:
        if not self.enabled or not history:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        columns: list[str] = []
        for row in history:
            columns += [key for key in row if key not in columns]
        temp = self.directory / f".{METRICS_CSV}.tmp"
        with temp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(history)
        temp.replace(self.directory / METRICS_CSV)
        write_json_atomic(self.directory / METRICS_JSON, list(history))
        try:
            save_curves(history, self.directory / CURVES)
        except Exception as error:  # noqa: BLE001 - a plotting problem must not stop training
            log.warning("could not draw training curves: %s", error)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    versions["cuda"] = torch.version.cuda or "none"
    return versions


def write_resolved_config(config: dict[str, Any], *directories: Path) -> None:
    for directory in directories:
        write_json_atomic(Path(directory) / RESOLVED_CONFIG, config)
