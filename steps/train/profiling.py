"""Training profiling and resource logging.

- `TrainingProfiler`: torch.profiler over the first few training steps (one warmup step skipped),
  then a Chrome trace and a table of the slowest operations in the metrics folder.
- `ResourceMonitor`: memory (CUDA allocated/reserved/peak on GPU, process RSS always) and GPU
  utilisation per epoch, as metric columns.

The engine calls `profiler.step()` after each training step and `monitor.start_epoch()` /
`monitor.end_epoch()` around each epoch; both are cheap no-ops when switched off.
"""

from __future__ import annotations

import csv
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import torch
from torch.profiler import ProfilerActivity, profile, schedule

log = logging.getLogger(__name__)

PROFILE_TRACE = "profile_trace.json"
PROFILE_OPS_TXT = "profile_ops.txt"
PROFILE_OPS_CSV = "profile_ops.csv"
WARMUP_STEPS = 1  # the first step pays for lazy init and allocator growth: not representative
TOP_OPS_LOGGED = 10
MB = 1024 ** 2


@dataclass(frozen=True)
class OpTiming:
    """One operator aggregated over the profiled steps (times in milliseconds)."""

    name: str
    calls: int
    self_cpu_ms: float
    cpu_total_ms: float
    self_device_ms: float
    device_total_ms: float

    @classmethod
    def from_event(cls, event: Any) -> OpTiming:
        return cls(name=event.key, calls=int(event.count),
                   self_cpu_ms=event.self_cpu_time_total / 1000, cpu_total_ms=event.cpu_time_total / 1000,
                   self_device_ms=event.self_device_time_total / 1000,
                   device_total_ms=event.device_time_total / 1000)


@dataclass
class ProfileReport:
    """What a finished profile wrote: the files and the operators, slowest first."""

    trace: Path
    table: Path
    csv: Path
    sort_by: str
    steps: int
    ops: list[OpTiming] = field(default_factory=list)


def slowest_ops(events: Any, on_cuda: bool) -> tuple[list[OpTiming], str]:
    """Operators sorted by self CUDA time on GPU (where the work runs), self CPU time otherwise."""
    # ProfilerStep#N is the profiler's own step marker, not work.
    ops = [OpTiming.from_event(event) for event in events if not event.key.startswith("ProfilerStep")]
    key = "self_device_ms" if on_cuda else "self_cpu_ms"
    return sorted(ops, key=lambda op: getattr(op, key), reverse=True), key


def write_ops_csv(path: Path, ops: list[OpTiming]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "calls", "self_cpu_ms", "cpu_total_ms", "self_device_ms", "device_total_ms"])
        for op in ops:
            writer.writerow([op.name, op.calls, f"{op.self_cpu_ms:.4f}", f"{op.cpu_total_ms:.4f}",
                             f"{op.self_device_ms:.4f}", f"{op.device_total_ms:.4f}"])


def format_ops(ops: list[OpTiming], limit: int | None = None) -> str:
    """A fixed-width table, slowest first."""
    shown = ops if limit is None else ops[:limit]
    width = max([len("operator")] + [len(op.name) for op in shown])
    header = f"{'operator':<{width}}  {'calls':>7}  {'self CPU ms':>12}  {'CPU total ms':>12}  " \
             f"{'self CUDA ms':>12}  {'CUDA total ms':>13}"
    rows = [f"{op.name:<{width}}  {op.calls:>7}  {op.self_cpu_ms:>12.3f}  {op.cpu_total_ms:>12.3f}  "
            f"{op.self_device_ms:>12.3f}  {op.device_total_ms:>13.3f}" for op in shown]
    return "\n".join([header, "-" * len(header), *rows])


class TrainingProfiler:
    """torch.profiler over `steps` training steps after one warmup step; reports once when done.

    Use as a context manager around the epoch loop and call `step()` after every training step;
    the profiled window may span epochs. A run shorter than the window still writes what it saw.
    """

    def __init__(self, out_dir: Path, steps: int, device: torch.device | str, enabled: bool = True):
        self.out_dir = Path(out_dir)
        self.steps = steps
        self.on_cuda = torch.device(device).type == "cuda"
        self.enabled = enabled
        self.report: ProfileReport | None = None
        self._profiler: profile | None = None
        self._steps_seen = 0

    def __enter__(self) -> TrainingProfiler:
        if not self.enabled:
            return self
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.on_cuda else [])
        self._profiler = profile(
            activities=activities,
            schedule=schedule(wait=0, warmup=WARMUP_STEPS, active=self.steps, repeat=1),
            on_trace_ready=self._write_report, record_shapes=False, profile_memory=True)
        self._profiler.__enter__()
        return self

    def step(self) -> None:
        """Mark the end of one training step."""
        if self._profiler is None:
            return
        self._steps_seen += 1
        self._profiler.step()
        if self.report is not None:  # the window is over: stop paying the profiler's overhead
            self._close()

    def __exit__(self, *exc: Any) -> None:
        if self._profiler is not None:
            self._close()
            if self.report is None and exc[0] is None:
                log.warning("profile: only %d training step(s) ran, fewer than the %d warmup step(s) "
                            "plus one; no profile written", self._steps_seen, WARMUP_STEPS)

    def _close(self) -> None:
        profiler, self._profiler = self._profiler, None
        if profiler is not None:
            profiler.__exit__(None, None, None)

    def _write_report(self, profiler: profile) -> None:
        if self._steps_seen <= WARMUP_STEPS:  # stopped right after warmup: an empty window
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        ops, sort_by = slowest_ops(profiler.key_averages(), self.on_cuda)
        report = ProfileReport(trace=self.out_dir / PROFILE_TRACE, table=self.out_dir / PROFILE_OPS_TXT,
                               csv=self.out_dir / PROFILE_OPS_CSV, sort_by=sort_by,
                               steps=min(self._steps_seen - WARMUP_STEPS, self.steps), ops=ops)
        profiler.export_chrome_trace(str(report.trace))
        report.table.write_text(
            f"slowest operations over {report.steps} profiled training step(s), sorted by {sort_by}\n"
            + format_ops(ops) + "\n", encoding="utf-8")
        write_ops_csv(report.csv, ops)
        log.info("profile: %d step(s); trace %s; slowest operations (by %s):\n%s",
                 report.steps, report.trace, sort_by, format_ops(ops, TOP_OPS_LOGGED))
        self.report = report


def gpu_utilization(device: torch.device) -> float | None:
    """Percent of time a kernel ran over the last sample period; None without NVML (pynvml)."""
    try:
        return float(torch.cuda.utilization(device))
    except Exception:  # noqa: BLE001 - no pynvml / no NVML driver: utilisation is optional
        return None


class _UtilizationSampler(threading.Thread):
    """Samples GPU utilisation once a second, so the epoch mean reflects training, not the end."""

    def __init__(self, device: torch.device, interval_s: float = 1.0):
        super().__init__(daemon=True, name="gpu-utilization")
        self.device, self.interval_s = device, interval_s
        self.samples: list[float] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            value = gpu_utilization(self.device)
            if value is not None:
                self.samples.append(value)

    def finish(self) -> list[float]:
        self._stop_event.set()
        self.join(timeout=5)
        return self.samples


class ResourceMonitor:
    """Memory and GPU utilisation per epoch, as metric columns (MB and percent).

    Always `memory_rss_mb` (the process); on CUDA also `cuda_memory_allocated_mb`,
    `cuda_memory_reserved_mb`, `cuda_memory_peak_mb` (peak since the epoch started) and, with
    NVML, `gpu_utilization_pct` (mean of one-second samples) and `gpu_utilization_max_pct`.
    """

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.on_cuda = self.device.type == "cuda"
        self._process = psutil.Process()
        self._sampler: _UtilizationSampler | None = None

    def start_epoch(self) -> None:
        if not self.on_cuda:
            return
        torch.cuda.reset_peak_memory_stats(self.device)
        if gpu_utilization(self.device) is not None:
            self._sampler = _UtilizationSampler(self.device)
            self._sampler.start()

    def end_epoch(self) -> dict[str, float]:
        stats = {"memory_rss_mb": self._process.memory_info().rss / MB}
        if not self.on_cuda:
            return stats
        stats.update(cuda_memory_allocated_mb=torch.cuda.memory_allocated(self.device) / MB,
                     cuda_memory_reserved_mb=torch.cuda.memory_reserved(self.device) / MB,
                     cuda_memory_peak_mb=torch.cuda.max_memory_allocated(self.device) / MB)
        samples = self._stop_sampler() or [v for v in [gpu_utilization(self.device)] if v is not None]
        if samples:
            stats.update(gpu_utilization_pct=sum(samples) / len(samples), gpu_utilization_max_pct=max(samples))
        return stats

    def close(self) -> None:
        self._stop_sampler()

    def _stop_sampler(self) -> list[float]:
        sampler, self._sampler = self._sampler, None
        return sampler.finish() if sampler is not None else []
