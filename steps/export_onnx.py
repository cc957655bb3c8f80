"""export-onnx: the best segmentation (and ellipse) model to checked ONNX files with metadata.

Writes `best_efficientvit_model.onnx` (or `best_efficientvit_tiny_model.onnx` for the micro
variant), `best_ellipse_model.onnx` when the ellipse channel is given, `export_report.json` and MODEL_CARD.md
(validate writes the card again with its evaluation).
"""

from __future__ import annotations

import logging
from typing import Any

from contracts.export_onnx import ExportOnnxHyperparameters
from steps.export.onnx_export import ExportResult, check_size, export_checked, load_source_model
from steps.outputs import write_json_atomic
from steps.report.model_card import write_model_card
from steps.runtime import StepHooks, StepIO

log = logging.getLogger(__name__)
CHANNEL_TASKS = {"seg_model": "segmentation", "ellipse_model": "ellipse"}
REPORT_NAME = "export_report.json"


def check_inputs(hp: ExportOnnxHyperparameters, io: StepIO) -> None:
    """Every given model folder loads into its registered architecture before anything is exported."""
    for channel, task in CHANNEL_TASKS.items():
        folder = io.channel(channel)
        if folder is not None:
            load_source_model(folder, task)


def run(hp: ExportOnnxHyperparameters, io: StepIO) -> dict[str, Any]:
    out = io.output("onnx")
    results: list[ExportResult] = []
    for channel, task in CHANNEL_TASKS.items():
        folder = io.channel(channel)
        if folder is None:
            continue
        result = export_checked(load_source_model(folder, task), out, hp.exporter, hp.opset, hp.max_abs_diff)
        check_size(result, hp.max_seg_size_kb)
        log.info("%s: %s, %.1f KB, %d nodes, max abs diff vs PyTorch %.2g (batch 1 and 3)",
                 result.model_name, result.file, result.size_kb, result.nodes, result.max_abs_diff)
        results.append(result)
    write_model_card(out, [(out / r.file, r.metadata) for r in results])
    write_json_atomic(out / REPORT_NAME, {"exporter": hp.exporter, "opset": hp.opset,
                                          "models": [r.to_dict() for r in results]})
    facts = {r.file: {"model_name": r.model_name, "size_bytes": r.size_bytes, "size_kb": round(r.size_kb, 2),
                      "nodes": r.nodes, "parameters": r.parameters, "max_abs_diff": r.max_abs_diff,
                      "parity": r.parity} for r in results}
    io.annotate("onnx", models=facts)
    return {"models": {r.model_name: {"file": r.file, "size_kb": round(r.size_kb, 2),
                                      "max_abs_diff": r.max_abs_diff} for r in results}}


HOOKS = StepHooks(run=run, check_inputs=check_inputs)
