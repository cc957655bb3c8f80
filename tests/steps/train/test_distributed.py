"""DDP: metrics summed across ranks over gloo, and a 2-process torchrun run of train-seg in which
only rank 0 logs epochs and writes checkpoints and outputs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from steps.models import epoch_checkpoint_name
from steps.models.checkpoint_file import read_checkpoint
from steps.train.distributed import DistInfo, any_rank, dist_info_from_env, process_group
from steps.train.metrics import ConfusionMatrix, RunningMeans

MODEL = "tiny_efficientvit_micro"


def free_port() -> int:
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


def test_env_gives_one_process_without_torchrun():
    assert dist_info_from_env({}) == DistInfo(0, 0, 1)
    info = dist_info_from_env({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4"})
    assert (info.rank, info.local_rank, info.world_size, info.is_primary) == (3, 1, 4, False)
    assert any_rank(True, torch.device("cpu")) is True  # no process group: the local value


def _reduce_worker(rank: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    with process_group(DistInfo(rank=rank, local_rank=rank, world_size=2), torch.device("cpu")):
        matrix = ConfusionMatrix(2)
        # rank 0 sees 3 correct background pixels; rank 1 one pupil pixel predicted as background
        if rank == 0:
            matrix.update(torch.tensor([0, 0, 0]), torch.tensor([0, 0, 0]))
        else:
            matrix.update(torch.tensor([0]), torch.tensor([1]))
        matrix.reduce_()
        means = RunningMeans()
        means.add_means({"loss": torch.tensor(float(rank + 1))}, 1 + rank)  # 1 x 1.0 and 2 x 2.0
        means.reduce_()
        stop = any_rank(rank == 1, torch.device("cpu"))
        results[rank] = (matrix.matrix.tolist(), means.compute()["loss"], stop)
    assert not dist.is_initialized()  # torn down on the way out


def test_metrics_are_summed_across_two_gloo_ranks():
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_reduce_worker, args=(free_port(), results), nprocs=2, join=True)
        for rank in (0, 1):
            matrix, loss, stop = results[rank]
            assert matrix == [[3, 0], [1, 0]]
            assert loss == pytest.approx((1.0 + 2 * 2.0) / 3)
            assert stop is True  # a SIGTERM on any rank stops every rank at the same step


@pytest.mark.slow
def test_torchrun_two_processes_train_and_only_rank_0_writes(tmp_path, tiny_splits):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "steps", "train-seg", "--root", str(tmp_path),
               "--channel", f"train={tiny_splits['train']}", "--channel", f"validation={tiny_splits['validation']}",
               "--model", MODEL, "--epochs", "2", "--batch-size", "2", "--checkpoint-every", "1",
               "--device", "cpu", "--no-register-model"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "rank 1/2 joined the gloo process group" in output
    assert output.count("[metrics] epoch=1 ") == 1 and output.count("[metrics] epoch=2 ") == 1  # rank 0 logs alone
    checkpoints = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert checkpoints == sorted([f"best_{'efficientvit_tiny_model'}.pt", epoch_checkpoint_name(MODEL, 1),
                                  epoch_checkpoint_name(MODEL, 2)])
    state = read_checkpoint(tmp_path / "checkpoints" / epoch_checkpoint_name(MODEL, 2))
    assert state["world_size"] == 2
    assert not any(k.startswith("module.") for k in state["state_dict"])  # unwrapped from DDP
    config = json.loads((tmp_path / "model" / "resolved_config.json").read_text())
    assert config["world_size"] == 2
    # rank 1 committed nothing: no leftover staging folders, one manifest per output
    leftovers = [p for p in Path(tmp_path).rglob(".*staging*")]
    assert not leftovers
    manifest = json.loads((tmp_path / "output" / "manifest.json").read_text())
    assert manifest["summary"]["world_size"] == 2
