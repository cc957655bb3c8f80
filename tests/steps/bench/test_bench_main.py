"""`python -m steps.bench`: every benchmark module's rows in one table, written as JSON with the
machine; a failing module is reported without hiding the others."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from steps.bench import __main__ as bench

REPO = Path(__file__).resolve().parents[3]


def test_every_module_is_found_in_pipeline_order():
    names = bench.bench_modules()
    assert names[:4] == ["preprocess_speed", "loader", "training_speed", "onnx_latency"]
    assert "__main__" not in names


def test_machine_info_names_the_cpu_cores_and_versions():
    machine = bench.machine_info()
    assert machine["cpu_count"] >= 1 and 1 <= machine["usable_cpus"] <= machine["cpu_count"]
    assert machine["cpu_model"] and machine["torch"] and machine["python"]
    assert "cores usable" in bench.machine_line(machine, bench.load_average())


def test_a_failing_module_is_reported_and_the_others_still_run():
    report = bench.run_all(["no_such_bench"], quick=True)
    assert report["modules"]["no_such_bench"]["error"].startswith("ModuleNotFoundError")
    assert report["rows"] == []


def test_non_finite_figures_become_null_in_json():
    row = bench.BenchRow(area="x", metric="m", project=0.0, reference=1.0, reference_name="r")
    assert bench.finite_or_none(row.to_dict())["ratio"] is None
    json.dumps(bench.finite_or_none(row.to_dict()), allow_nan=False)


@pytest.mark.slow
def test_quick_table_prints_and_writes_every_area_with_ratios(tmp_path):
    target = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "steps.bench", "--quick", "--json", str(target)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(target.read_text())
    assert {row["area"] for row in report["rows"]} == {"preprocess", "loader", "train", "onnx"}
    for row in report["rows"]:
        assert row["project"] > 0 and row["reference"] > 0 and math.isfinite(row["ratio"]), row
        assert row["reference_name"]
    assert report["machine"]["cpu_count"] >= 1 and report["machine"]["torch"]
    assert all(facts["error"] is None for facts in report["modules"].values())
    assert report["table"] in done.stdout and report["machine_line"] in done.stdout
    assert all(row["metric"] in done.stdout for row in report["rows"])
