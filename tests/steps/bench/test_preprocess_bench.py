"""The preprocessing benchmark runs both paths on a few generated frames and returns well-formed
rows (no timing asserts: the figures depend on the machine)."""

from __future__ import annotations

import math

from steps.bench import BenchRow, format_table
from steps.bench.preprocess_speed import REFERENCE_NAME, measure


def test_quick_measure_returns_well_formed_rows():
    rows = measure(quick=True, frames=6)
    assert [row.metric.split(",")[1].strip() for row in rows] == ["6 generated frames end to end",
                                                                   "transforms only"]
    for row in rows:
        assert isinstance(row, BenchRow) and row.area == "preprocess" and row.higher_is_better
        assert row.project > 0 and row.reference > 0 and math.isfinite(row.ratio)
        assert row.reference_name
    assert rows[0].reference_name == REFERENCE_NAME
    assert "max |diff|" in rows[0].note and "workers" in rows[0].note
    table = format_table(rows)
    assert "preprocess" in table and REFERENCE_NAME in table
