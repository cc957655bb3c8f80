"""torchrun DDP: process group setup and teardown, rank facts, and the few collectives training uses.

`torchrun --nproc_per_node N -m steps train-seg ...` starts N copies of the step; each reads
RANK / LOCAL_RANK / WORLD_SIZE from the environment. A single process (no torchrun) is world size 1
and every helper here is then a no-op, so the single-process path runs the same code.
NCCL on GPUs, gloo on CPU. Only rank 0 logs per-epoch lines, saves and tracks.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)

# A rank that died leaves the others waiting in a collective; fail instead of hanging for 30 minutes.
DEFAULT_TIMEOUT = timedelta(minutes=10)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_primary(self) -> bool:
        return self.rank == 0


def dist_info_from_env(env: Mapping[str, str] | None = None) -> DistInfo:
    """The torchrun (or any `env://` launcher) variables; absent means one process."""
    env = os.environ if env is None else env
    return DistInfo(rank=int(env.get("RANK", "0")), local_rank=int(env.get("LOCAL_RANK", "0")),
                    world_size=int(env.get("WORLD_SIZE", "1")))


def is_primary_process(env: Mapping[str, str] | None = None) -> bool:
    """Rank 0 (or no torchrun at all): the process that writes outputs, checkpoints and tracking."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return dist_info_from_env(env).is_primary


@contextmanager
def process_group(info: DistInfo, device: torch.device) -> Iterator[DistInfo]:
    """Join the process group for the run and always leave it, also on errors."""
    if not info.enabled:
        yield info
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, init_method="env://", rank=info.rank,
                            world_size=info.world_size, timeout=DEFAULT_TIMEOUT)
    log.info("rank %d/%d joined the %s process group", info.rank, info.world_size, backend)
    try:
        yield info
    finally:
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if _active():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` across ranks in place (a no-op in a single process)."""
    if _active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when it is true on any: ranks must stop at the same batch or DDP hangs."""
    if not _active():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def broadcast_object(obj: Any, device: torch.device, src: int = 0) -> Any:
    """Rank `src`'s object on every rank (e.g. the resume checkpoint rank 0 found)."""
    if not _active():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src, device=device if device.type == "cuda" else None)
    return holder[0]


def wrap_ddp(model: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """DistributedDataParallel when world size > 1 (gradients averaged across ranks)."""
    if not info.enabled:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
