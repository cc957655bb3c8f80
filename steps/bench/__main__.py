"""One benchmark table: the figures of every `steps/bench/*.py` module, each measured beside its
reference path in the same run (a ratio, >1 is better), printed as one table and written as JSON
with the machine it ran on.

    python -m steps.bench [--quick] [--json PATH] [--only MODULE ...]

Modules (each exposes `measure(quick) -> list[BenchRow]`): preprocess (images/s), loader (rows/s),
train (training images/s per model), onnx (ms/frame per model); a new module is picked up by name
(bar STANDALONE ones: `python -m steps.bench.gpu` is the GPU machine's run).
The full table runs each module at the sizes in FULL_SIZES, so that the whole command stays under
5 minutes on a 2-core machine; a module run alone (`python -m steps.bench.preprocess_speed`) uses its
own, larger defaults. A module that fails is reported in the table's JSON and the exit code, and
the others still run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import math
import os
import pkgutil
import platform
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import steps.bench
from steps.bench import BenchRow, format_table

DEFAULT_JSON = Path("runs") / "bench.json"
# The pipeline's order; others follow by name.
ORDER = ("preprocess_speed", "loader", "training_speed", "onnx_latency")
# Run on their own, not in the table: gpu (python -m steps.bench.gpu) needs a lent GPU machine and
# prints PASS/FAIL checks besides its speeds.
STANDALONE = ("gpu",)
# Sizes of the full table (module -> keyword arguments of its `measure`).
FULL_SIZES: dict[str, dict[str, Any]] = {"preprocess_speed": {"frames": 96}, "loader": {"rows": 32}}


def bench_modules() -> list[str]:
    """Every module in steps/bench/ with a `measure` function, pipeline order first."""
    names = [m.name for m in pkgutil.iter_modules(steps.bench.__path__)
             if not m.name.startswith("_") and m.name not in STANDALONE]
    return sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def _first_line(path: Path, key: str) -> str | None:
    try:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    """What the figures depend on: CPU, cores, memory, accelerator, library versions, load."""
    import numpy
    import torch

    info: dict[str, Any] = {
        "cpu_model": _first_line(Path("/proc/cpuinfo"), "model name") or platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory": _first_line(Path("/proc/meminfo"), "MemTotal"),
        "platform": platform.platform(), "python": platform.python_version(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "numpy": numpy.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    for module in ("onnxruntime", "cv2", "datasets"):
        try:
            info[module] = importlib.import_module(module).__version__
        except ImportError:
            info[module] = None
    return info


def load_average() -> list[float] | None:
    """The 1/5/15-minute load: a busy machine slows both paths of a ratio, not always alike."""
    return [round(value, 2) for value in os.getloadavg()] if hasattr(os, "getloadavg") else None


def run_module(name: str, quick: bool) -> tuple[list[BenchRow], dict[str, Any]]:
    """(rows, facts): the module's rows, or none and the error when it fails."""
    kwargs = {} if quick else FULL_SIZES.get(name, {})
    started = time.perf_counter()
    try:
        module = importlib.import_module(f"steps.bench.{name}")
        rows = list(module.measure(quick=quick, **kwargs))
        error = None
    except Exception as failure:  # noqa: BLE001 - one broken benchmark must not hide the others
        rows, error = [], f"{type(failure).__name__}: {failure}"
        traceback.print_exc()
    return rows, {"seconds": round(time.perf_counter() - started, 1), "kwargs": kwargs, "rows": len(rows),
                  "error": error}


def finite_or_none(value: Any) -> Any:
    """JSON has no NaN: a ratio that cannot be computed is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    return value


def machine_line(machine: dict[str, Any], load: list[float] | None) -> str:
    accelerator = machine["cuda"] or "no GPU"
    return (f"machine: {machine['cpu_model']}, {machine['usable_cpus']} of {machine['cpu_count']} cores usable, "
            f"{accelerator}; torch {machine['torch']} ({machine['torch_threads']} threads); load average {load}")


def run_all(modules: Sequence[str], quick: bool) -> dict[str, Any]:
    """Every module's rows and timing, the table text and the machine, as one JSON-able report."""
    started, load_before = time.perf_counter(), load_average()
    rows: list[BenchRow] = []
    facts = {}
    for name in modules:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        module_rows, facts[name] = run_module(name, quick)
        rows += module_rows
        print(f"[bench] {name}: {facts[name]['seconds']} s{'  FAILED: ' + facts[name]['error'] if facts[name]['error'] else ''}",
              file=sys.stderr, flush=True)
    machine = machine_info()
    return {"created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "quick": quick,
            "seconds": round(time.perf_counter() - started, 1), "machine": machine,
            "load_average": {"start": load_before, "end": load_average()}, "modules": facts,
            "rows": [finite_or_none(row.to_dict()) for row in rows], "table": format_table(rows),
            "machine_line": machine_line(machine, load_before)}


def main(argv: Sequence[str] | None = None) -> int:
    available = bench_modules()
    parser = argparse.ArgumentParser(prog="python -m steps.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="each module's small, fast variant (for tests)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"where to write the table (default {DEFAULT_JSON})")
    parser.add_argument("--only", nargs="+", choices=available, metavar="MODULE",
                        help=f"run these modules only ({', '.join(available)})")
    args = parser.parse_args(argv)
    report = run_all(args.only or available, args.quick)
    print(report["machine_line"])
    print(report["table"])
    print(f"total {report['seconds']} s; JSON: {args.json}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    temp = args.json.with_name(f".{args.json.name}.tmp")
    temp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    os.replace(temp, args.json)
    failed = [name for name, facts in report["modules"].items() if facts["error"]]
    if failed:
        print(f"benchmarks failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
