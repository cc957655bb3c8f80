"""Latency figures: medians of real timed calls, thread settings honoured and restored."""

from __future__ import annotations

import torch

from steps.report.latency import onnx_latency, torch_latency
from tests.steps.export.model_folders import exported_folder


def test_onnx_and_torch_latency_of_one_model(tmp_path):
    channels = exported_folder(tmp_path, {"seg_model": "tiny_efficientvit_micro"})
    from steps.export.onnx_export import load_source_model

    threads = torch.get_num_threads()
    ort_figure = onnx_latency(channels["onnx"] / "best_efficientvit_tiny_model.onnx", runs=3, warmup=1)
    torch_figure = torch_latency(load_source_model(channels["seg_model"]).model, runs=3, warmup=1)
    for figure in (ort_figure, torch_figure):
        assert figure.runs == 3 and figure.threads == 1 and figure.batch == 1
        assert 0 < figure.min_ms <= figure.median_ms <= figure.p90_ms
    assert torch.get_num_threads() == threads
