"""`python -m steps.models`: every registered model with its parameter count against its limit.

    python -m steps.models            # name, tag, task, parameters, limit, output shape
    python -m steps.models --onnx     # also export each (dynamo, dynamic batch) and check it runs:
                                      # ONNX size, nodes, onnxruntime-vs-PyTorch at batch 1 and 3
    python -m steps.models --json     # the same rows as JSON

The ONNX check runs the project's export path (steps.export.onnx_export) on freshly initialized
weights whose BatchNorm statistics come from two random batches, so eval mode is not an identity.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from steps.data.frames import IMAGE_HEIGHT, IMAGE_WIDTH
from steps.models import MODEL_SPECS, count_parameters, create_model, parameter_limit


def calibrate_batchnorm(model: nn.Module, batches: int = 2, batch_size: int = 2) -> nn.Module:
    """Give BatchNorm running statistics from random inputs (a fresh model's are mean 0, var 1)."""
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(batch_size, 1, IMAGE_HEIGHT, IMAGE_WIDTH))
    return model.eval()


def model_row(name: str) -> dict[str, Any]:
    spec = MODEL_SPECS[name]
    model = create_model(name).eval()
    with torch.no_grad():
        output = model(torch.zeros(1, 1, IMAGE_HEIGHT, IMAGE_WIDTH))
    params, limit = count_parameters(model), parameter_limit(name)
    return {"model": name, "model_type": spec.model_type, "task": spec.task, "parameters": params,
            "limit": limit, "within_limit": params < limit, "output": list(output.shape)}


def onnx_facts(name: str, exporter: str = "dynamo") -> dict[str, Any]:
    """Export like export-onnx does (BN fused, debug info stripped) and check batch 1 and 3 against PyTorch."""
    import onnx

    from steps.export.onnx_export import compare_with_pytorch, export_to_onnx, graph_facts, strip_debug_info
    from steps.models.layers import fuse_conv_bn

    torch.manual_seed(0)
    model = calibrate_batchnorm(create_model(name))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{name}.onnx"
        try:
            export_to_onnx(fuse_conv_bn(model), path, MODEL_SPECS[name].task, exporter)  # type: ignore[arg-type]
            proto = onnx.load(str(path))
            strip_debug_info(proto.graph)
            onnx.save(proto, str(path))
            onnx.checker.check_model(str(path), full_check=True)
            parity = compare_with_pytorch(path, model)
        except Exception as error:  # noqa: BLE001 - report any exporter/runtime failure as "no"
            return {"onnx_ok": False, "onnx_error": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"}
        return {"onnx_ok": True, "onnx_kb": round(path.stat().st_size / 1024, 1), **graph_facts(proto),
                "max_abs_diff_b1": parity["batch_1"], "max_abs_diff_b3": parity["batch_3"]}


def format_rows(rows: list[dict[str, Any]]) -> str:
    header = f"{'model':24s} {'model_type':23s} {'task':12s} {'params':>7s} {'limit':>7s} {'ok':3s} {'output':18s}"
    with_onnx = any("onnx_ok" in row for row in rows)
    if with_onnx:
        header += f" {'onnx':4s} {'KB':>6s} {'nodes':>5s} {'diff b1':>8s} {'diff b3':>8s}"
    lines = [header, "-" * len(header)]
    for row in rows:
        line = (f"{row['model']:24s} {row['model_type']:23s} {row['task']:12s} {row['parameters']:7d} "
                f"{row['limit']:7d} {'yes' if row['within_limit'] else 'NO':3s} {'x'.join(map(str, row['output'])):18s}")
        if with_onnx and row.get("onnx_ok"):
            line += (f" {'yes':4s} {row['onnx_kb']:6.1f} {row['nodes']:5d} "
                     f"{row['max_abs_diff_b1']:8.1e} {row['max_abs_diff_b3']:8.1e}")
        elif with_onnx:
            line += f" {'NO':4s} {row['onnx_error']}"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m steps.models", description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", action="store_true", help="export each model and check onnxruntime parity")
    parser.add_argument("--exporter", choices=("dynamo", "legacy"), default="dynamo")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    rows = []
    for name in MODEL_SPECS:
        row = model_row(name)
        if args.onnx:
            row.update(onnx_facts(name, args.exporter))
        rows.append(row)
    print(json.dumps(rows, indent=2) if args.json else format_rows(rows))
    failed = [r["model"] for r in rows if not r["within_limit"] or r.get("onnx_ok") is False]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
