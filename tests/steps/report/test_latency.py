"""Latency figures: medians of real timed calls, thread settings honoured and restored."""

from __future__ import annotations

import torch

from steps.export.onnx_export import load_source_model
from steps.report.latency import onnx_latency, paired_latency
from tests.steps.export.model_folders import exported_folder


def test_onnx_latency_alone_and_paired_with_pytorch(tmp_path):
    channels = exported_folder(tmp_path, {"seg_model": "tiny_efficientvit_micro"})
    threads = torch.get_num_threads()
    path = channels["onnx"] / "best_efficientvit_tiny_model.onnx"
    alone = onnx_latency(path, runs=3, warmup=1)
    paired = paired_latency(path, load_source_model(channels["seg_model"]).model, runs=3, warmup=1)
    for figure in (alone, *paired):
        assert figure.runs == 3 and figure.threads == 1 and figure.batch == 1
        assert 0 < figure.min_ms <= figure.median_ms <= figure.p90_ms
    assert torch.get_num_threads() == threads
