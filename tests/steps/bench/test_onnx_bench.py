"""The ONNX latency benchmark: onnxruntime and PyTorch eager measured in the same run."""

from __future__ import annotations

import math

import pytest

from steps.bench import format_table
from steps.bench.onnx_latency import measure


@pytest.mark.slow
def test_quick_bench_measures_both_paths_for_the_default_model():
    rows = measure(quick=True)
    assert len(rows) == 1
    (row,) = rows
    assert row.area == "onnx" and "TinyEfficientViT" in row.metric and not row.higher_is_better
    assert row.project > 0 and row.reference > 0 and math.isfinite(row.ratio)
    assert "PyTorch eager" in format_table(rows)
