"""Checkpoints: atomic writes, the resume point chosen (corrupt skipped, other variants refused),
top-k retention, and the best model written in the shared format with its model card."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from steps.models import best_checkpoint_name, create_model, epoch_checkpoint_name, load_checkpoint
from steps.models.checkpoint_file import read_checkpoint
from steps.runtime import StepError
from steps.train import checkpoints as ckpt

MODEL = "tiny_efficientvit"


def state(epoch: int, metric: float, model_name: str = MODEL, batches_done: int = 0, **extra) -> dict:
    """A training-state dict as fit writes it (the tensors are stand-ins: only the shape of the dict matters here)."""
    return {"format": "openeds-checkpoint/1", "model_name": model_name, "model_config": {},
            "state_dict": {"w": torch.full((2,), float(epoch))}, "epoch": epoch, "metrics": {"valid_iou": metric},
            "optimizer": {}, "partial": {"batches_done": batches_done} if batches_done else None, **extra}


def write_epoch(directory, epoch, metric, **kwargs):
    return ckpt.save_training_state(directory, MODEL, state(epoch, metric, **kwargs), epoch_file=True)


def test_save_atomic_keeps_the_previous_file_when_a_write_fails(tmp_path):
    path = tmp_path / "a.pt"
    ckpt.save_atomic({"value": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full, say")

    with pytest.raises(RuntimeError, match="disk full"):
        ckpt.save_atomic({"value": Unpicklable()}, path)
    assert read_checkpoint(path) == {"value": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt"]  # no temp file left behind


def test_resume_picks_the_furthest_point_and_skips_a_truncated_file(tmp_path, caplog):
    write_epoch(tmp_path, 1, 0.5)
    write_epoch(tmp_path, 2, 0.6)
    newest = write_epoch(tmp_path, 3, 0.7)
    newest.write_bytes(newest.read_bytes()[:200])  # a copy cut short
    with caplog.at_level(logging.WARNING):
        resumed = ckpt.load_resume_state(tmp_path, MODEL, {})
    assert resumed["epoch"] == 2
    assert "unreadable" in caplog.text and newest.name in caplog.text


def test_mid_epoch_last_point_beats_the_epoch_before_it(tmp_path):
    write_epoch(tmp_path, 2, 0.6)
    ckpt.save_training_state(tmp_path, MODEL, state(2, 0.6, batches_done=3), epoch_file=False)
    resumed = ckpt.load_resume_state(tmp_path, MODEL, {})
    assert resumed["partial"]["batches_done"] == 3 and resumed["_path"].endswith("_last.pt")
    # a newer epoch file supersedes (and removes) the last file
    write_epoch(tmp_path, 3, 0.7)
    assert not (tmp_path / ckpt.last_checkpoint_name(MODEL)).exists()
    assert ckpt.load_resume_state(tmp_path, MODEL, {})["epoch"] == 3


def test_a_checkpoint_of_another_variant_is_refused_with_its_name(tmp_path):
    path = tmp_path / epoch_checkpoint_name(MODEL, 4)
    ckpt.save_atomic(state(4, 0.5, model_name="tiny_efficientvit_micro"), path)
    with pytest.raises(StepError, match=rf"checkpoint .*{path.name}: saved by model 'tiny_efficientvit_micro'"):
        ckpt.load_resume_state(tmp_path, MODEL, {})


def test_other_models_files_are_ignored(tmp_path, caplog):
    ckpt.save_atomic(state(5, 0.9, model_name="ellipse_regression"), tmp_path / epoch_checkpoint_name("ellipse_regression", 5))
    with caplog.at_level(logging.INFO):
        assert ckpt.load_resume_state(tmp_path, MODEL, {}) is None
    assert "ignoring 1 file(s) of other models" in caplog.text


def test_prune_keeps_the_top_k_and_the_newest(tmp_path):
    for epoch, metric in [(1, 0.5), (2, 0.9), (3, 0.7), (4, 0.8), (5, 0.6)]:
        write_epoch(tmp_path, epoch, metric)
    removed = ckpt.prune_epoch_checkpoints(tmp_path, MODEL, keep_top_k=2, metric="valid_iou")
    assert sorted(p.name for p in removed) == [epoch_checkpoint_name(MODEL, e) for e in (1, 3)]
    kept = sorted(int(p.stem.rsplit("_", 1)[1]) for p in tmp_path.glob("*_epoch_*.pt"))
    assert kept == [2, 4, 5]  # the best two (0.9, 0.8) and the newest (5), needed to resume


def test_best_model_output_loads_and_has_a_model_card(tmp_path):
    torch.manual_seed(0)
    model = create_model(MODEL)
    checkpoints, model_dir = tmp_path / "checkpoints", tmp_path / "model"
    model_dir.mkdir()
    ckpt.save_best(model, checkpoints, model_name=MODEL, model_config={}, epoch=3, metrics={"valid_iou": 0.91},
                   input_mode="preprocessed", hyperparameters={"lr": 0.003}, run_id=None)
    card = ckpt.write_model_output(checkpoints, model_dir, MODEL)
    loaded, payload = load_checkpoint(model_dir / best_checkpoint_name(MODEL))
    assert payload["format"] == "openeds-checkpoint/1" and payload["epoch"] == 3
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)
    written = json.loads((model_dir / ckpt.MODEL_CARD).read_text())
    assert written == card
    assert card["model_type"] == "TinyEfficientViT" and card["checkpoint"] == "best_efficientvit_model.pt"
    assert card["parameters"] == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_missing_best_model_is_a_clear_error(tmp_path):
    with pytest.raises(StepError, match="no best model was saved"):
        ckpt.write_model_output(tmp_path, tmp_path, MODEL)
