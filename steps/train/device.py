"""Where and how training computes: device choice, mixed precision, CUDA settings, seeds, RNG state.

Every function here also runs on CPU, so the CPU path exercises the same code the GPU path uses;
CUDA-only settings are switched on by `configure_backends` and `prepare_model` only on CUDA.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from steps.errors import StepError

log = logging.getLogger(__name__)

# cuBLAS needs a fixed workspace to be deterministic (CUDA >= 10.2).
CUBLAS_DETERMINISTIC_WORKSPACE = ":4096:8"


def check_device_available(requested: str) -> None:
    """Fail before any heavy work when the requested device is not there."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise StepError("hyperparameter 'device': cuda requested but no CUDA device is available\n"
                        "use --device auto (falls back to CPU) or --device cpu")


def select_device(requested: str, local_rank: int = 0) -> torch.device:
    """`auto` takes CUDA when present (warning on the CPU fallback); `cuda` without a GPU is an error."""
    check_device_available(requested)
    has_cuda = torch.cuda.is_available()
    if requested == "cpu" or not has_cuda:
        if requested == "auto":
            log.warning("no CUDA device found: training on CPU, which is much slower")
        return torch.device("cpu")
    index = local_rank % torch.cuda.device_count()
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


@dataclass(frozen=True)
class Precision:
    """Mixed precision of the forward pass: the autocast dtype (None: full fp32) and the scaler."""

    dtype: torch.dtype | None
    use_scaler: bool

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self, device: torch.device) -> AbstractContextManager:
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)

    def grad_scaler(self, device: torch.device) -> torch.amp.GradScaler | None:
        """fp16 needs loss scaling against gradient underflow; bf16 has fp32's range and does not."""
        return torch.amp.GradScaler(device.type) if self.use_scaler else None


def resolve_precision(amp: str, device: torch.device) -> Precision:
    """`auto`: bf16 where the GPU supports it, else fp16 with a GradScaler; always off on CPU."""
    if device.type != "cuda" or amp == "off":
        if device.type != "cuda" and amp in ("bf16", "fp16"):
            log.warning("amp=%s ignored: mixed precision is used on CUDA only", amp)
        return Precision(None, False)
    if amp == "auto":
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if amp == "bf16":
        return Precision(torch.bfloat16, False)
    return Precision(torch.float16, True)


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's CPU threads set to `threads` (None: unchanged) and restored afterwards, so runs
    sharing a process (tune's trials, tests) do not inherit each other's setting."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def configure_backends(device: torch.device, deterministic: bool) -> None:
    """Fast kernels on CUDA (cudnn autotuning, TF32); deterministic algorithms on request.

    On CUDA a few kernels this project uses (bilinear upsampling backward) have no deterministic
    version: `warn_only` keeps training running and says so instead of failing.
    """
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC_WORKSPACE)
    # Set either way: several runs in one process (tune's trials, tests) must not inherit the mode.
    torch.use_deterministic_algorithms(deterministic, warn_only=device.type == "cuda")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
        torch.set_float32_matmul_precision("high")  # TF32 matmuls
        torch.backends.cudnn.allow_tf32 = True


def prepare_model(model: nn.Module, device: torch.device, *, channels_last: bool, compile_model: bool) -> nn.Module:
    """Move to the device; channels_last and torch.compile (max-autotune) only on CUDA."""
    model = model.to(device)
    if device.type == "cuda" and channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # stubs lack it
    if compile_model:
        if device.type != "cuda":
            log.warning("compile=true ignored: torch.compile is used on CUDA only")
        else:
            return cast(nn.Module, torch.compile(model, mode="max-autotune"))
    return model


def move_batch(tensor: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    """Host-to-device copy that overlaps compute (the loader pins memory on CUDA)."""
    tensor = tensor.to(device, non_blocking=True)
    if channels_last and device.type == "cuda" and tensor.dim() == 4:
        tensor = tensor.contiguous(memory_format=torch.channels_last)
    return tensor


def seed_everything(seed: int) -> None:
    """One seed for Python, NumPy and torch (all CUDA devices included)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every generator training draws from, for an exact resume."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    threads = torch.get_num_threads()
    return f"cpu ({threads} thread{'s' if threads != 1 else ''})"
