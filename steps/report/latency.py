"""Per-frame CPU latency of an ONNX file (onnxruntime) and of its PyTorch model (eager), batch 1.

Both run on the same input with the same thread count, after a warmup; the median of `runs` timed
calls is the figure (robust to the odd slow call on a shared machine). `paired_latency` alternates
the two calls, so a busy spell on the machine slows both alike and their ratio stays fair.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from steps.data.frames import IMAGE_HEIGHT, IMAGE_WIDTH
from steps.export.onnx_export import INPUT_NAME, cpu_session
from steps.train.device import torch_threads


@dataclass
class Latency:
    median_ms: float
    p90_ms: float
    min_ms: float
    runs: int
    warmup: int
    threads: int
    batch: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def frame_input(batch: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (batch, 1, IMAGE_HEIGHT, IMAGE_WIDTH)).astype(np.float32)


def time_calls(call: Callable[[], Any], runs: int, warmup: int) -> list[float]:
    """Milliseconds of each of `runs` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000.0)
    return times


def summarize(times: list[float], runs: int, warmup: int, threads: int, batch: int) -> Latency:
    array = np.asarray(times)
    return Latency(median_ms=float(np.median(array)), p90_ms=float(np.percentile(array, 90)),
                   min_ms=float(array.min()), runs=runs, warmup=warmup, threads=threads, batch=batch)


def onnx_latency(path: Path, runs: int = 30, warmup: int = 5, threads: int = 1, batch: int = 1) -> Latency:
    """onnxruntime CPU, `threads` intra-op threads (1: the edge-device figure)."""
    session = cpu_session(path, threads=threads)
    feed = {INPUT_NAME: frame_input(batch)}
    return summarize(time_calls(lambda: session.run(None, feed), runs, warmup), runs, warmup, threads, batch)


def paired_latency(path: Path, model: nn.Module, runs: int = 30, warmup: int = 5, threads: int = 1,
                   batch: int = 1) -> tuple[Latency, Latency]:
    """(onnxruntime, PyTorch eager) latencies from alternating calls on the same input."""
    session = cpu_session(path, threads=threads)
    inputs = frame_input(batch)
    feed, tensor = {INPUT_NAME: inputs}, torch.from_numpy(inputs)
    model = model.eval()
    onnx_times: list[float] = []
    torch_times: list[float] = []
    with torch_threads(threads), torch.inference_mode():
        time_calls(lambda: (session.run(None, feed), model(tensor)), 0, warmup)
        for _ in range(runs):
            onnx_times += time_calls(lambda: session.run(None, feed), 1, 0)
            torch_times += time_calls(lambda: model(tensor), 1, 0)
    return (summarize(onnx_times, runs, warmup, threads, batch), summarize(torch_times, runs, warmup, threads, batch))
