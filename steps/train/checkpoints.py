"""Checkpoints: the best model, epoch checkpoints (top-k kept) and the resume point.

Files, with `<stem>` from the model registry (distinct per model, so they never collide):

- `checkpoints/<stem>_epoch_{n}.pt`: every `checkpoint_every` epochs and at the last epoch; the
  full training state. Only the `keep_top_k` best (by the validation metric) are kept, plus the
  newest, which a resume needs.
- `checkpoints/<stem>_last.pt`: the full state at the end of an epoch that wrote no epoch
  checkpoint, or mid-epoch when SIGTERM stopped training. A resume never loses more than an epoch.
- `checkpoints/best_<stem>.pt`: the best model so far (plain dict, the shared `model` format); the
  step copies it into its `model` output at the end. It lives in `checkpoints/` because that folder
  survives a killed run, while an uncommitted output does not.

Every write is atomic (temp file, fsync, rename): a kill mid-write leaves the previous file, and a
truncated file (a copy cut short) is skipped with a warning when resuming.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from steps.errors import StepError
from steps.models import (
    CHECKPOINT_FORMAT,
    MODEL_SPECS,
    best_checkpoint_name,
    count_parameters,
    create_model,
    epoch_checkpoint_name,
    get_spec,
    portable_state_dict,
)
from steps.models.checkpoint_file import CheckpointRefused, read_checkpoint
from steps.outputs import write_json_atomic

log = logging.getLogger(__name__)

MODEL_CARD = "model_card.json"


def save_atomic(payload: Any, path: Path) -> Path:
    """torch.save to a temp file in the same folder, fsync, rename over `path`, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temp, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    return path


def last_checkpoint_name(model_name: str) -> str:
    return f"{get_spec(model_name).checkpoint_stem}_last.pt"


def model_payload(model: nn.Module, *, model_name: str, model_config: dict[str, Any], epoch: int,
                  metrics: dict[str, Any], input_mode: str, hyperparameters: dict[str, Any],
                  run_id: str | None) -> dict[str, Any]:
    """The shared checkpoint dict that `steps.models.load_checkpoint` reads."""
    return {"format": CHECKPOINT_FORMAT, "model_name": model_name, "model_config": dict(model_config),
            "state_dict": portable_state_dict(model), "epoch": epoch, "metrics": dict(metrics),
            "input_mode": input_mode, "hyperparameters": dict(hyperparameters), "run_id": run_id}


def save_best(model: nn.Module, directory: Path, **facts: Any) -> Path:
    """`best_<stem>.pt` in `directory` (facts: the keyword arguments of `model_payload`)."""
    return save_atomic(model_payload(model, **facts), directory / best_checkpoint_name(facts["model_name"]))


def write_model_output(checkpoints: Path, model_dir: Path, model_name: str) -> dict[str, Any]:
    """Copy the best checkpoint into the model output and write its model card beside it."""
    source = checkpoints / best_checkpoint_name(model_name)
    if not source.is_file():
        raise StepError(f"checkpoint {source}: no best model was saved (no epoch had a finite "
                        f"validation metric)")
    target = model_dir / source.name
    shutil.copyfile(source, target)
    payload = read_checkpoint(target)
    card = {"model_name": model_name, "model_type": get_spec(model_name).model_type, "checkpoint": target.name,
            "parameters": count_parameters(_model_from_payload(payload)), "input_mode": payload["input_mode"],
            "metrics": payload["metrics"], "epoch": payload["epoch"], "run_id": payload["run_id"]}
    write_json_atomic(model_dir / MODEL_CARD, card)
    return card


def _model_from_payload(payload: dict[str, Any]) -> nn.Module:
    model = create_model(payload["model_name"], **payload.get("model_config", {}))
    model.load_state_dict(payload["state_dict"], strict=True)
    return model


# -- epoch checkpoints and the resume point ---------------------------------------------------------

@dataclass(frozen=True)
class CheckpointFile:
    path: Path
    epoch: int          # completed epochs (a mid-epoch resume point: the epoch before)
    is_last: bool


def list_resume_files(directory: Path, model_name: str) -> list[CheckpointFile]:
    """This model's epoch checkpoints and its `last` file, newest progress first (by file name)."""
    stem = get_spec(model_name).checkpoint_stem
    pattern = re.compile(rf"^{re.escape(stem)}_epoch_(\d+)\.pt$")
    found = [CheckpointFile(p, int(m.group(1)), False) for p in directory.glob(f"{stem}_epoch_*.pt")
             if (m := pattern.match(p.name))]
    last = directory / last_checkpoint_name(model_name)
    if last.is_file():
        found.append(CheckpointFile(last, -1, True))  # its progress is only known once loaded
    return sorted(found, key=lambda f: f.epoch, reverse=True)


def progress(state: dict[str, Any]) -> tuple[int, int]:
    """(completed epochs, batches done in the next epoch): how far a resume point got."""
    partial = state.get("partial") or {}
    return state["epoch"], int(partial.get("batches_done", 0))


def load_resume_state(directory: Path, model_name: str, model_config: dict[str, Any]) -> dict[str, Any] | None:
    """The furthest valid resume point for this model, or None. Corrupt files are skipped with a
    warning; a file of this model's name saved from another variant or config is refused."""
    note_other_models(directory, model_name)
    best: dict[str, Any] | None = None
    for candidate in list_resume_files(directory, model_name):
        if best is not None and not candidate.is_last and candidate.epoch < best["epoch"]:
            continue  # cannot beat what is already loaded
        try:
            state = read_checkpoint(candidate.path)
            if "optimizer" not in state or "state_dict" not in state:
                raise ValueError("not a training-state checkpoint")
        except CheckpointRefused as error:  # crafted, not damaged: refuse it rather than skip it
            raise StepError(str(error)) from error
        except Exception as error:  # noqa: BLE001 - any unreadable file is skipped, never fatal
            log.warning("checkpoint %s is unreadable (%s: %s); skipping it", candidate.path,
                        type(error).__name__, str(error).splitlines()[0] if str(error) else "")
            continue
        check_same_variant(candidate.path, state, model_name, model_config)
        if best is None or progress(state) > progress(best):
            best = {**state, "_path": str(candidate.path)}
    return best


def check_same_variant(path: Path, state: dict[str, Any], model_name: str, model_config: dict[str, Any]) -> None:
    saved_name, saved_config = state.get("model_name"), state.get("model_config", {})
    if saved_name != model_name or dict(saved_config) != dict(model_config):
        raise StepError(
            f"checkpoint {path}: saved by model {saved_name!r} {saved_config}, but this run trains "
            f"{model_name!r} {model_config}\nresume needs the same model variant; move the old checkpoints "
            f"away or point the step at another checkpoints folder")


def note_other_models(directory: Path, model_name: str) -> None:
    own = get_spec(model_name).checkpoint_stem
    others = [p.name for p in sorted(directory.glob("*.pt"))
              if any(p.name.startswith((f"{s.checkpoint_stem}_", f"best_{s.checkpoint_stem}."))
                     for s in MODEL_SPECS.values() if s.checkpoint_stem != own)
              and not p.name.startswith((f"{own}_", f"best_{own}."))]
    if others:
        log.info("checkpoints: ignoring %d file(s) of other models in %s (%s)", len(others), directory,
                 ", ".join(others[:5]))


def save_training_state(directory: Path, model_name: str, state: dict[str, Any], *, epoch_file: bool) -> Path:
    """Write the full state as `<stem>_epoch_{n}.pt` (epoch_file) or `<stem>_last.pt`.

    An epoch file makes an older `last` file redundant, so it is removed.
    """
    last = directory / last_checkpoint_name(model_name)
    if epoch_file:
        path = save_atomic(state, directory / epoch_checkpoint_name(model_name, state["epoch"]))
        last.unlink(missing_ok=True)
        return path
    return save_atomic(state, last)


def prune_epoch_checkpoints(directory: Path, model_name: str, keep_top_k: int, metric: str) -> list[Path]:
    """Keep the `keep_top_k` epoch checkpoints with the highest `metric` and the newest one."""
    files = [f for f in list_resume_files(directory, model_name) if not f.is_last]
    if len(files) <= keep_top_k:
        return []
    newest = max(files, key=lambda f: f.epoch)
    scored = [(read_metric(f.path, metric), f.epoch, f) for f in files]
    ranked = sorted(scored, key=lambda item: (item[0], item[1]), reverse=True)
    keep = {item[2].path for item in ranked[:keep_top_k]} | {newest.path}
    removed = [f.path for f in files if f.path not in keep]
    for path in removed:
        path.unlink(missing_ok=True)
    if removed:
        log.info("checkpoints: kept the top %d by %s and the newest; removed %s", keep_top_k, metric,
                 ", ".join(p.name for p in removed))
    return removed


def read_metric(path: Path, metric: str) -> float:
    """The stored validation metric of a checkpoint (-inf when unreadable: pruned first)."""
    try:
        state = read_checkpoint(path, mmap=True)
        value = float(state.get("metrics", {}).get(metric, float("-inf")))
        return value if value == value else float("-inf")  # nan ranks last
    except Exception:  # noqa: BLE001 - an unreadable file is the first to go
        return float("-inf")

