"""The GPU benchmark's CPU smoke run (`python -m steps.bench.gpu --quick --device cpu`): every speed
row, data path and check runs; it stays out of the default table; it runs without datasets,
pyarrow and pydantic (what a lent GPU machine may lack)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from steps.bench import __main__ as bench
from steps.bench import gpu

REPO = Path(__file__).resolve().parents[3]
QUICK = ["-m", "steps.bench.gpu", "--quick", "--device", "cpu"]
# Runs the quick bench with these packages made unimportable.
BLOCKED = """
import importlib.abc, importlib.machinery, runpy, sys
class Missing(importlib.abc.Loader):
    def create_module(self, spec):
        raise ImportError(f"{spec.name} is blocked (as if not installed)")
    def exec_module(self, module):
        pass
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {"datasets", "pyarrow", "pydantic", "pandas", "scipy"}:
            return importlib.machinery.ModuleSpec(name, Missing())
sys.meta_path.insert(0, Block())
sys.argv = ["steps.bench.gpu", *sys.argv[1:]]
runpy.run_module("steps.bench.gpu", run_name="__main__")
"""


def run(arguments: list[str], target: Path) -> tuple[subprocess.CompletedProcess, dict]:
    done = subprocess.run([sys.executable, *arguments, "--json", str(target)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done, json.loads(target.read_text())


def test_quick_cpu_run_measures_every_path_and_passes_its_checks(tmp_path):
    done, report = run(QUICK, tmp_path / "gpu.json")
    speeds = report["speed"]
    assert {row["model"] for row in speeds} == set(gpu.QUICK.models)
    assert len(speeds) == len(gpu.QUICK.models) * len(gpu.QUICK.configs)
    assert all(row["images_per_second"] > 0 for row in speeds)
    assert [row["path"].split()[0] for row in report["data_paths"]] == ["resident", "loader"]
    statuses = {check["check"]: check["status"] for check in report["checks"]}
    assert set(statuses) == set(gpu.CHECKS) and "FAIL" not in statuses.values()
    assert statuses["torch.compile"] == statuses["pinned memory"] == "SKIP"  # CUDA only
    assert statuses["torch label maps on the device"] == statuses["process group (nccl; gloo on cpu)"] == "PASS"
    assert "all checks passed" in done.stdout and report["failed"] == []


def test_it_runs_without_datasets_pyarrow_and_pydantic(tmp_path):
    done, report = run(["-c", BLOCKED, *QUICK[2:]], tmp_path / "gpu.json")
    assert [row["path"].split()[0] for row in report["data_paths"]] == ["resident"]
    assert "loader rows SKIP" in done.stdout
    assert all(check["status"] != "FAIL" for check in report["checks"])


def test_it_is_not_in_the_default_table_and_asks_for_a_gpu():
    assert "gpu" not in bench.bench_modules()
    if not torch.cuda.is_available():
        assert gpu.main(["--device", "cuda"]) == 2


@pytest.mark.parametrize("sizes", [gpu.FULL, gpu.QUICK])
def test_sizes_are_consistent(sizes):
    assert sizes.warmup >= 1 and sizes.steps >= 1 and sizes.maps_rows <= sizes.maps_batch
    assert set(sizes.models) <= set(gpu.MODEL_SPECS) and set(sizes.compile_batches) <= set(sizes.batches)
