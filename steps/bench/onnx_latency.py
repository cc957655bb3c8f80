"""Per-frame CPU latency of each exported model: onnxruntime (the project's path) against PyTorch
eager (the reference), batch 1 at 400x640, one thread each, measured in the same run with the calls
alternating (steps.report.latency.paired_latency).

    python -m steps.bench.onnx_latency [--quick]
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
import torch

from steps.bench import BenchRow, area_main
from steps.export.onnx_export import INPUT_NAME, cpu_session, export_to_onnx, onnx_file_name
from steps.models import MODEL_SPECS, count_parameters, create_model
from steps.models.layers import fuse_conv_bn
from steps.report.latency import frame_input, paired_latency, time_calls

MODELS = tuple(MODEL_SPECS)  # tiny_efficientvit, tiny_efficientvit_micro, ellipse_regression
THREADS = 1


def measure_model(name: str, folder: Path, runs: int, warmup: int) -> BenchRow:
    torch.manual_seed(0)
    model = create_model(name).eval()
    path = folder / onnx_file_name(name)
    export_to_onnx(fuse_conv_bn(model), path, MODEL_SPECS[name].task)
    project, reference = paired_latency(path, model, runs=runs, warmup=warmup, threads=THREADS)
    return BenchRow(area="onnx", metric=f"ms/frame ({MODEL_SPECS[name].model_type}, batch 1, {THREADS} thread)",
                    project=project.median_ms, reference=reference.median_ms,
                    reference_name="PyTorch eager CPU", higher_is_better=False,
                    note=f"{count_parameters(model)} params, {path.stat().st_size / 1024:.0f} KB ONNX")


def measure_against_previous(folder: Path, runs: int, warmup: int) -> BenchRow:
    """The default model's ONNX against the previous default architecture's ONNX, calls alternating."""
    from steps.bench._previous import PREVIOUS_DEFAULT, PREVIOUS_NAME

    name, timings = "tiny_efficientvit", {}
    for label, overrides in (("current", {}), ("previous", PREVIOUS_DEFAULT)):
        torch.manual_seed(0)
        path = folder / f"{label}_{onnx_file_name(name)}"
        export_to_onnx(fuse_conv_bn(create_model(name, **overrides).eval()), path, MODEL_SPECS[name].task)
        timings[label] = cpu_session(path, threads=THREADS)
    feed = {INPUT_NAME: frame_input(1)}
    times: dict[str, list[float]] = {label: [] for label in timings}
    for _ in range(warmup):
        for session in timings.values():
            session.run(None, feed)
    for _ in range(runs):
        for label, session in timings.items():
            times[label] += time_calls(functools.partial(session.run, None, feed), 1, 0)
    return BenchRow(area="onnx", metric=f"ms/frame ({MODEL_SPECS[name].model_type} vs previous, batch 1)",
                    project=float(np.median(times["current"])), reference=float(np.median(times["previous"])),
                    reference_name=PREVIOUS_NAME, higher_is_better=False, note="onnxruntime both, calls alternating")


def measure(quick: bool = False) -> list[BenchRow]:
    """One row per registry model, and the default against its previous architecture (quick: the
    default segmentation model, fewer calls)."""
    names = MODELS[:1] if quick else MODELS
    runs, warmup = (5, 1) if quick else (30, 5)
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as folder:
        rows = [measure_model(name, Path(folder), runs, warmup) for name in names]
        return rows if quick else [*rows, measure_against_previous(Path(folder), runs, warmup)]


def main(argv: list[str] | None = None) -> int:
    return area_main("steps.bench.onnx_latency", __doc__, measure, "default segmentation model only, fewer calls", argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
