"""Training `model` output folders for export and validate tests, written as the engine writes them.

No training: a freshly initialised registry model is saved in the checkpoint format of the common
brief (plain dict + model_card.json). `wrap` saves the state dict of a wrapped model instead, as a
user who bypasses `portable_state_dict` would: "compile" (torch.compile: `_orig_mod.` keys) or
"ddp" (DistributedDataParallel on a one-process gloo group: `module.` keys).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from steps.models import CHECKPOINT_FORMAT, best_checkpoint_name, count_parameters, create_model, get_spec, portable_state_dict


def wrapped_state_dict(model: nn.Module, wrap: str | None, scratch: Path) -> dict[str, torch.Tensor]:
    if wrap is None:
        return portable_state_dict(model)
    if wrap == "compile":
        return dict(torch.compile(model).state_dict())  # compiles lazily: nothing runs here
    if wrap == "ddp":
        store = dist.FileStore(str(scratch / "ddp-store"), 1)
        dist.init_process_group("gloo", store=store, rank=0, world_size=1)
        try:
            return dict(nn.parallel.DistributedDataParallel(model).state_dict())
        finally:
            dist.destroy_process_group()
    raise ValueError(wrap)


def write_model_folder(folder: Path, name: str, *, wrap: str | None = None, seed: int = 0,
                       input_mode: str = "preprocessed", run_id: str | None = None) -> Path:
    """A model folder holding best_<stem>.pt and model_card.json; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = create_model(name).eval()
    checkpoint_name = best_checkpoint_name(name)
    torch.save({"format": CHECKPOINT_FORMAT, "model_name": name, "model_config": {},
                "state_dict": wrapped_state_dict(model, wrap, folder), "epoch": 3,
                "metrics": {"valid_iou": 0.5}, "input_mode": input_mode,
                "hyperparameters": {"epochs": 3}, "run_id": run_id}, folder / checkpoint_name)
    card = {"model_name": name, "model_type": get_spec(name).model_type, "checkpoint": checkpoint_name,
            "parameters": count_parameters(model), "input_mode": input_mode, "metrics": {"valid_iou": 0.5},
            "run_id": run_id}
    (folder / "model_card.json").write_text(json.dumps(card), encoding="utf-8")
    return folder


def exported_folder(root: Path, names: dict[str, str], exporter: str = "legacy",
                    run_ids: dict[str, str] | None = None) -> dict[str, Path]:
    """Model folders (channel -> registry name) and their ONNX files under root/onnx, as
    export-onnx writes them; returns {channel: folder, "onnx": folder}. The legacy exporter is the
    fast one (the dynamo default is tested on its own)."""
    from steps.export.onnx_export import export_checked, load_source_model

    run_ids = run_ids or {}
    folders = {channel: write_model_folder(root / channel, name, run_id=run_ids.get(channel))
               for channel, name in names.items()}
    onnx_dir = root / "onnx"
    onnx_dir.mkdir(parents=True, exist_ok=True)
    for folder in folders.values():
        export_checked(load_source_model(folder), onnx_dir, exporter=exporter)
    return {**folders, "onnx": onnx_dir}
