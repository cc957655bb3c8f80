"""Models by name: building them, their checkpoints, their parameters.

Architectures live one family per file (efficientvit.py, ellipse.py), and each file registers its
variants (`steps.models.registry`); steps, export and validate never import a class directly.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, cast

import torch
from torch import nn

# The families register their variants on import.
from steps.models import efficientvit as _efficientvit  # noqa: F401
from steps.models import ellipse as _ellipse  # noqa: F401
from steps.models.registry import MODEL_SPECS, ModelSpec, get_spec, make_config, model_names, register_model

__all__ = ["CHECKPOINT_FORMAT", "MODEL_SPECS", "ModelSpec", "best_checkpoint_name", "count_parameters", "variant_config",
           "create_model", "epoch_checkpoint_name", "get_spec", "load_checkpoint", "model_names",
           "parameter_limit", "portable_state_dict", "register_model", "unwrap"]


def parameter_limit(name: str) -> int:
    """Parameters a registered model must stay under."""
    return get_spec(name).parameter_limit


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build a registered variant; `overrides` change fields of its config."""
    spec = get_spec(name)
    return spec.build(make_config(type(spec.config), spec.config, overrides))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def best_checkpoint_name(name: str) -> str:
    return f"best_{get_spec(name).checkpoint_stem}.pt"


def epoch_checkpoint_name(name: str, epoch: int) -> str:
    return f"{get_spec(name).checkpoint_stem}_epoch_{epoch}.pt"


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under torch.compile (`_orig_mod`) and DDP (`.module`) wrappers."""
    while True:
        if isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = cast(nn.Module, model._orig_mod)
        elif isinstance(getattr(model, "module", None), nn.Module):  # DDP, DataParallel
            model = cast(nn.Module, model.module)
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
    try:
        model.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as error:  # a checkpoint from an older architecture that stored no full config
        raise ValueError(f"{path}: its weights do not fit {checkpoint['model_name']} as its config describes "
                         f"({str(error).splitlines()[1].strip() if len(str(error).splitlines()) > 1 else error}); "
                         f"retrain, or load it with the code that wrote it") from error
    return model.eval(), checkpoint


def variant_config(name: str) -> dict[str, Any]:
    """A variant's whole config as JSON-ready values: checkpoints store it, so they keep loading after
    the registry's defaults change."""
    return json.loads(json.dumps(dataclasses.asdict(get_spec(name).config)))
