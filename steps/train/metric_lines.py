"""The one log line per epoch that SageMaker (and any log scraper) reads metrics from.

    [metrics] epoch=3 train_loss=0.41237 valid_loss=0.39811 train_iou=0.8123 valid_iou=0.8342 ...

Stable and documented (README, "SageMaker"): `[metrics]`, then `name=value` pairs separated by one
space, values as plain or e-notation floats, only finite values. `METRIC_DEFINITIONS` holds the
regexes for an Estimator's or ModelTrainer's `metric_definitions` and a tuning job's objective.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

PREFIX = "[metrics]"
# In this order on the line; each appears when the epoch has it (segmentation or ellipse).
METRIC_NAMES = ("epoch", "train_loss", "valid_loss", "train_iou", "valid_iou", "iou_pupil", "center_error_px",
                "radius_error_px", "ellipse_iou", "lr", "images_per_second", "epoch_seconds")
_NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"


def metric_line(row: Mapping[str, Any]) -> str:
    """`[metrics] epoch=N name=value ...` for the finite numbers of one epoch's row."""
    parts = [PREFIX]
    for name in METRIC_NAMES:
        value = row.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            parts.append(f"{name}={value}" if isinstance(value, int) else f"{name}={value:.6g}")
    return " ".join(parts)


def metric_regex(name: str) -> str:
    """The regex SageMaker applies to each log line; its one group is the value."""
    return rf"\[metrics\].* {name}={_NUMBER}"


METRIC_DEFINITIONS = [{"Name": name, "Regex": metric_regex(name)} for name in METRIC_NAMES]


def parse_metric_lines(log_text: str, definitions: list[dict[str, str]] = METRIC_DEFINITIONS) -> dict[str, list[float]]:
    """What SageMaker would scrape from `log_text`: every match of every definition, in order."""
    found: dict[str, list[float]] = {}
    for line in log_text.splitlines():
        for definition in definitions:
            match = re.search(definition["Regex"], line)
            if match:
                found.setdefault(definition["Name"], []).append(float(match.group(1)))
    return found
