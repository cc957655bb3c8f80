"""train-seg: train TinyEfficientViT (or -Micro) pupil segmentation (see steps.train.fit)."""

from __future__ import annotations

from typing import Any

from steps.runtime import StepHooks
from steps.train.device import check_device_available
from steps.train.fit import run_training_step


def channels_optional(hp: Any) -> list[str]:
    """With `hf_repo` the splits come from the Hub (cached), not from channels."""
    return ["train", "validation"] if hp.hf_repo else []


def check_inputs(hp: Any, io: Any) -> None:
    check_device_available(hp.device)


def run(hp: Any, io: Any) -> dict[str, Any]:
    return run_training_step(hp, io)


HOOKS = StepHooks(run=run, check_inputs=check_inputs, channels_optional=channels_optional)
