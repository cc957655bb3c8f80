"""W&B offline: the run directory holds the logged metrics, config and images (no network)."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from contracts.train_seg import TrainSegHyperparameters
from steps.tracking import open_tracker

wandb = pytest.importorskip("wandb")
from wandb.proto import wandb_internal_pb2  # noqa: E402

CANARY = "canary-wandb-51d0e8"
BLOCK, HEADER = 32768, 7  # the .wandb file is a LevelDB-style log: 32 KiB blocks, 7-byte record headers


def read_records(path: Path) -> list[wandb_internal_pb2.Record]:
    """Every complete record of a .wandb transaction log, decoded with wandb's own protobuf schema.

    A record still being written (its header or data past the end of the file) ends the list.
    """
    data = path.read_bytes()
    if data[:4] != b":W&B":
        return []
    records, chunk, pos = [], b"", HEADER  # the file header takes the first 7 bytes
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # block trailer padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if kind == 0 or pos + HEADER + length > len(data):  # zero padding or a partly written record
            break
        chunk += data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind in (1, 4):  # FULL or LAST fragment
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


def wait_for_exit_record(log_file: Path, timeout: float = 60.0) -> list[wandb_internal_pb2.Record]:
    """The records once the run's exit record is in the file.

    finish() returns when W&B's service process has the run's end, not when its writer has flushed
    the file: on a loaded machine the file can still hold only its header (seen in CI).
    """
    deadline = time.monotonic() + timeout
    while True:
        records = read_records(log_file)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def wait_for_files(folder, pattern: str, timeout: float = 20.0) -> list:
    """W&B's service process writes the run file; on a loaded machine it can land after finish()."""
    deadline = time.monotonic() + timeout
    while not (found := sorted(folder.glob(pattern))) and time.monotonic() < deadline:
        time.sleep(0.2)
    return found


def _items(items) -> dict[str, object]:
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}


def test_offline_run_directory_holds_metrics_config_and_images(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", CANARY)
    hp = TrainSegHyperparameters(wandb=True, wandb_project="openeds-test", lr=0.002, hf_repo=f"org/{CANARY}")
    with open_tracker(hp, run_name="seg-offline", model_type="TinyEfficientViT", architecture="tiny_efficientvit",
                      output_dir=tmp_path) as tracker:
        tracker.log_params(hp.model_dump(mode="json"))
        for epoch in (1, 2):
            tracker.log_metrics({"train_loss": 1.0 / epoch, "valid_iou": 0.4 * epoch}, step=epoch)
            tracker.log_images({"prediction": np.full((40, 64, 3), 80 * epoch, np.uint8)}, step=epoch)
    [log_file] = wait_for_files(tmp_path / "wandb", "offline-run-*/run-*.wandb")
    records = wait_for_exit_record(log_file)
    assert [r for r in records if r.WhichOneof("record_type") == "exit"], f"{log_file} has no exit record"
    [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.display_name == "seg-offline" and run.project == "openeds-test"
    config = _items(run.config.update)
    for r in records:
        if r.WhichOneof("record_type") == "config":
            config.update(_items(r.config.update))
    assert config["lr"] == 0.002 and config["model"] == "tiny_efficientvit"
    assert config["tags"] == {"model_type": "TinyEfficientViT", "architecture": "tiny_efficientvit"}
    history = [_items(r.history.item) for r in records if r.WhichOneof("record_type") == "history"]
    assert [(h["_step"], h["train_loss"], h["valid_iou"]) for h in history] == [(1, 1.0, 0.4), (2, 0.5, 0.8)]
    assert all(h["prediction/_type"] == "image-file" for h in history)
    assert len(list(log_file.parent.glob("files/media/images/prediction_*.png"))) == 2
    assert CANARY.encode() not in log_file.read_bytes()
