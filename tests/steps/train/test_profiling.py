"""Profiling: the slowest-operations table holds real operators; memory columns per epoch."""

from __future__ import annotations

import csv
import json
import logging
import mmap
from pathlib import Path

import pytest
import torch
from torch import nn

from contracts import Layout
from steps.runtime import run_step
from steps.train.profiling import PROFILE_OPS_CSV, PROFILE_OPS_TXT, PROFILE_TRACE, ResourceMonitor, TrainingProfiler


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
    # 64 MB of fresh pages the process really holds: an anonymous mmap, not the allocator, which
    # may hand back memory earlier tests freed but kept resident (RSS would not grow).
    block = mmap.mmap(-1, 64 << 20)
    block.write(b"\x01" * (64 << 20))
    monitor.start_epoch()
    after = monitor.end_epoch()
    monitor.close()
    assert set(before) == {"memory_rss_mb"}  # no CUDA columns on CPU
    assert after["memory_rss_mb"] - before["memory_rss_mb"] > 48
    block.close()


@pytest.mark.slow
def test_train_seg_with_profile_writes_slowest_ops_and_memory_per_epoch(tmp_path, tiny_splits, caplog):
    """2 epochs of 2 steps: the 1 warmup + 2 profiled steps span the epoch boundary."""
    caplog.set_level(logging.INFO)
    layout = Layout.resolve(tmp_path, {"train": tiny_splits["train"], "validation": tiny_splits["validation"]})
    code = run_step("train-seg", layout, {
        "model": "tiny_efficientvit_micro", "epochs": 2, "batch_size": 2, "max_train_rows": 4, "max_valid_rows": 2,
        "device": "cpu", "register_model": False, "profile": True, "profile_steps": 2})
    assert code == 0, (tmp_path / "output" / "failure").read_text()
    metrics_dir = tmp_path / "output" / "data" / "metrics"
    table = (metrics_dir / PROFILE_OPS_TXT).read_text()
    assert table.startswith("slowest operations over 2 profiled training step(s), sorted by self_cpu_ms")
    with (metrics_dir / PROFILE_OPS_CSV).open() as handle:
        names = [row["name"] for row in csv.DictReader(handle)]
    assert {"aten::conv2d", "aten::convolution_backward"} <= set(names)
    assert json.loads((metrics_dir / PROFILE_TRACE).read_text())["traceEvents"]
    assert "slowest operations (by self_cpu_ms)" in caplog.text and "aten::" in caplog.text
    manifest = json.loads((metrics_dir / "_manifest.json").read_text())
    assert {PROFILE_OPS_TXT, PROFILE_OPS_CSV, PROFILE_TRACE} <= {Path(f["path"]).name for f in manifest["files"]}

    rows = json.loads((metrics_dir / "metrics.json").read_text())
    assert len(rows) == 2 and all(row["memory_rss_mb"] > 50 for row in rows)  # a torch process holds >50 MB
    assert "memory_rss_mb" in (metrics_dir / "metrics.csv").read_text().splitlines()[0]
