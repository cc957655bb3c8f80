"""Profiling: the slowest-operations table holds real operators; memory columns per epoch."""

from __future__ import annotations

import csv
import json
import logging

import torch
from torch import nn

from steps.train.profiling import (PROFILE_OPS_CSV, PROFILE_OPS_TXT, PROFILE_TRACE, ResourceMonitor,
                                   TrainingProfiler)


def _train_steps(profiler: TrainingProfiler, steps: int) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    images = torch.randn(2, 1, 24, 32)
    labels = torch.randint(0, 2, (2, 24, 32))
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        profiler.step()


def test_profiler_writes_trace_and_slowest_ops_table(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="steps.train.profiling")
    with TrainingProfiler(tmp_path, steps=2, device="cpu") as profiler:
        _train_steps(profiler, steps=5)  # 1 warmup + 2 profiled, then the profiler is off
    report = profiler.report
    assert report is not None and report.steps == 2 and report.sort_by == "self_cpu_ms"
    names = [op.name for op in report.ops]
    assert "aten::conv2d" in names and "aten::convolution_backward" in names
    self_times = [op.self_cpu_ms for op in report.ops]
    assert self_times == sorted(self_times, reverse=True) and self_times[0] > 0
    conv = next(op for op in report.ops if op.name == "aten::conv2d")
    assert conv.calls == 2 * 2  # two conv layers, two profiled steps: the warmup step is not counted

    table = (tmp_path / PROFILE_OPS_TXT).read_text()
    assert "aten::conv2d" in table and "self CPU ms" in table
    with (tmp_path / PROFILE_OPS_CSV).open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["name"] for row in rows] == names
    trace = json.loads((tmp_path / PROFILE_TRACE).read_text())
    assert any(event.get("name") == "aten::conv2d" for event in trace["traceEvents"])
    assert "slowest operations" in caplog.text and names[0] in caplog.text


def test_short_run_still_reports_what_it_saw_and_disabled_profiler_writes_nothing(tmp_path, caplog):
    with TrainingProfiler(tmp_path / "short", steps=10, device="cpu") as profiler:
        _train_steps(profiler, steps=3)  # stops inside the window: the partial window is written
    assert profiler.report is not None and (tmp_path / "short" / PROFILE_OPS_TXT).is_file()

    with TrainingProfiler(tmp_path / "warmup-only", steps=2, device="cpu") as profiler:
        _train_steps(profiler, steps=1)
    assert profiler.report is None and "no profile written" in caplog.text

    with TrainingProfiler(tmp_path / "off", steps=2, device="cpu", enabled=False) as profiler:
        _train_steps(profiler, steps=4)
    assert profiler.report is None and not (tmp_path / "off").exists()


def test_resource_monitor_reports_process_memory_on_cpu():
    monitor = ResourceMonitor("cpu")
    monitor.start_epoch()
    before = monitor.end_epoch()
    block = torch.ones(64, 1024, 1024, dtype=torch.uint8)  # 64 MB the process really holds
    block.fill_(1)
    monitor.start_epoch()
    after = monitor.end_epoch()
    monitor.close()
    assert set(before) == {"memory_rss_mb"}  # no CUDA columns on CPU
    assert after["memory_rss_mb"] - before["memory_rss_mb"] > 48
    del block
