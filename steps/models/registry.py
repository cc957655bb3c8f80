"""The model registry: one `ModelSpec` per variant, registered in its family's file (as timm does).

A spec holds everything the rest of the project needs to know about a variant: its name, task and
tracking tag, how to build it (the family's constructor and the variant's config), the input it
takes (geometry and normalization), the names of its outputs, its parameter budget and its
checkpoint names. Contracts list the model choices from here, export writes the spec into the ONNX
metadata, checkpoints and validate read it. Adding a variant is one `register_model` call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from steps.data.frames import IMAGE_HEIGHT, IMAGE_WIDTH, INPUT_MEAN, INPUT_STD, SEG_CLASSES

ELLIPSE_OUTPUTS = ("cx", "cy", "rx", "ry")


@dataclass(frozen=True)
class ModelSpec:
    name: str                      # registry name, used in hyperparameters
    model_type: str                # MLflow `model_type` tag
    task: str                      # "segmentation" or "ellipse"
    build: Callable[[Any], Any]    # the family's constructor, called with the variant's config
    config: Any                    # the family's config dataclass for this variant
    checkpoint_stem: str           # best_<stem>.pt, <stem>_epoch_{n}.pt: distinct per model
    parameter_limit: int           # trainable parameters the variant must stay under
    input_channels: int = 1
    input_size: tuple[int, int] = (IMAGE_HEIGHT, IMAGE_WIDTH)  # (height, width)
    input_mean: float = INPUT_MEAN  # (x / 255 - mean) / std on uint8 grayscale
    input_std: float = INPUT_STD
    outputs: tuple[str, ...] = field(default=())  # class names (segmentation) or output values (ellipse)

    def __post_init__(self) -> None:
        if not self.outputs:
            object.__setattr__(self, "outputs", SEG_CLASSES if self.task == "segmentation" else ELLIPSE_OUTPUTS)

    def input_shape(self, batch: int) -> tuple[int, int, int, int]:
        """(batch, channels, height, width) of an input batch."""
        return (batch, self.input_channels, *self.input_size)

    @property
    def tracking_tags(self) -> dict[str, str]:
        """`model_type` tells variants apart in MLflow; `architecture` is the registry name."""
        return {"model_type": self.model_type, "architecture": self.name}


MODEL_SPECS: dict[str, ModelSpec] = {}


def make_config(config_type: type, defaults: Any, overrides: dict[str, Any]) -> Any:
    """The variant's defaults with `overrides` applied; an unknown key is a one-line error naming it."""
    known = {f.name for f in dataclasses.fields(config_type)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"{config_type.__name__}: unknown option(s) {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(known))})")
    return dataclasses.replace(defaults, **overrides)


def register_model(spec: ModelSpec) -> ModelSpec:
    if spec.name in MODEL_SPECS or any(s.checkpoint_stem == spec.checkpoint_stem for s in MODEL_SPECS.values()):
        raise ValueError(f"model {spec.name!r}: name or checkpoint stem {spec.checkpoint_stem!r} already registered")
    MODEL_SPECS[spec.name] = spec
    return spec


def get_spec(name: str) -> ModelSpec:
    if name not in MODEL_SPECS:
        raise KeyError(f"unknown model '{name}' (models: {', '.join(MODEL_SPECS)})")
    return MODEL_SPECS[name]


def model_names(task: str | None = None) -> tuple[str, ...]:
    """Registered names, in registration order; of one task when given."""
    return tuple(name for name, spec in MODEL_SPECS.items() if task is None or spec.task == task)
