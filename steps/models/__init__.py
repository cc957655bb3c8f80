"""The model registry: every architecture by name, with its tracking tag and checkpoint names.

Architectures live one family per file (efficientvit.py, ellipse.py); this module only maps names to
factories so steps, export and validate never import a class directly.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    name: str            # registry name, used in hyperparameters
    model_type: str      # MLflow `model_type` tag
    task: str            # "segmentation" or "ellipse"
    factory: str         # "module:function" returning an nn.Module from **config
    checkpoint_stem: str  # best_<stem>.pt, <stem>_epoch_{n}.pt: distinct per model, never colliding


MODEL_SPECS: dict[str, ModelSpec] = {
    spec.name: spec for spec in (
        ModelSpec("tiny_efficientvit", "TinyEfficientViT", "segmentation",
                  "steps.models.efficientvit:tiny_efficientvit", "efficientvit_model"),
        ModelSpec("tiny_efficientvit_micro", "TinyEfficientViT-Micro", "segmentation",
                  "steps.models.efficientvit:tiny_efficientvit_micro", "efficientvit_tiny_model"),
        ModelSpec("ellipse_regression", "EllipseRegressionNet", "ellipse",
                  "steps.models.ellipse:ellipse_regression", "ellipse_model"),
    )
}


# Trainable-parameter budgets (SPEC 3: default < 60,000, micro < 10,000; the ellipse net "tens of
# thousands at most"). `python -m steps.models` and the model tests check them.
PARAMETER_LIMITS: dict[str, int] = {
    "tiny_efficientvit": 60_000,
    "tiny_efficientvit_micro": 10_000,
    "ellipse_regression": 60_000,
}


def parameter_limit(name: str) -> int:
    """Parameters a registered model must stay under."""
    return PARAMETER_LIMITS[get_spec(name).name]


def get_spec(name: str) -> ModelSpec:
    if name not in MODEL_SPECS:
        raise KeyError(f"unknown model '{name}' (models: {', '.join(MODEL_SPECS)})")
    return MODEL_SPECS[name]


def create_model(name: str, **config: Any) -> nn.Module:
    """Build a registered model; `config` overrides the variant's defaults."""
    module_name, function = get_spec(name).factory.split(":")
    return getattr(importlib.import_module(module_name), function)(**config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def best_checkpoint_name(name: str) -> str:
    return f"best_{get_spec(name).checkpoint_stem}.pt"


def epoch_checkpoint_name(name: str, epoch: int) -> str:
    return f"{get_spec(name).checkpoint_stem}_epoch_{epoch}.pt"


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under torch.compile (`_orig_mod`) and DDP (`.module`) wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel) or (
                hasattr(model, "module") and isinstance(getattr(model, "module"), nn.Module)):
            model = model.module
        else:
            return model


def portable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Unwrapped, contiguous CPU tensors: loads anywhere, no `_orig_mod.`/`module.` prefixes."""
    return {k: v.detach().cpu().contiguous() for k, v in unwrap(model).state_dict().items()}


CHECKPOINT_FORMAT = "openeds-checkpoint/1"


def load_checkpoint(path: Any, map_location: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint was saved from and load its weights (strict).

    Checkpoints are plain dicts: format, model_name, model_config, state_dict, plus training facts;
    they are read weights-only (`steps.models.checkpoint_file`), so loading one runs no code.
    """
    from steps.models.checkpoint_file import read_checkpoint

    checkpoint = read_checkpoint(path, map_location=map_location)
    if "state_dict" not in checkpoint or "model_name" not in checkpoint:
        raise ValueError(f"{path}: not an openeds checkpoint (expected a dict with model_name and state_dict)")
    model = create_model(checkpoint["model_name"], **checkpoint.get("model_config", {}))
    model.load_state_dict(checkpoint["state_dict"], strict=True)
    return model.eval(), checkpoint
