"""Gates: which figure against which limit, and the failure line people read first."""

from __future__ import annotations

from contracts.validate import ValidateHyperparameters
from steps.report.gates import Gate, failure_text, validation_gates


def test_a_missed_minimum_names_the_gate_and_the_figure():
    gate = Gate("min_miou", "seg.onnx", "mIoU", 0.7312, 0.999, minimum=True)
    assert not gate.passed
    assert gate.message() == "gate min_miou failed: mIoU 0.7312 < 0.999 (seg.onnx)"
    assert Gate("min_miou", "seg.onnx", "mIoU", 0.999, 0.999, minimum=True).passed


def test_maximum_gates_and_the_strict_size_limit():
    assert Gate("max_latency_ms", "m", "latency", 200.0, 200.0, minimum=False).passed
    size = Gate("max_seg_size_kb", "m", "size", 300.0, 300.0, minimum=False, strict=True)
    assert not size.passed and size.message().startswith("gate max_seg_size_kb failed: size 300 >= 300")


def test_an_unmeasured_figure_fails_with_its_reason():
    gate = Gate("min_miou", "seg.onnx", "mIoU", None, 0.5, minimum=True, reason="input_mode=raw needs camera frames")
    assert not gate.passed and "not measured (input_mode=raw needs camera frames)" in gate.message()
    assert not Gate("min_miou", "m", "mIoU", float("nan"), 0.5, minimum=True).passed


def test_failure_text_leads_with_the_first_failed_gate_and_counts_the_rest():
    gates = [Gate("min_miou", "a", "mIoU", 0.1, 0.8, minimum=True),
             Gate("max_latency_ms", "a", "latency", 5.0, 200.0, minimum=False),
             Gate("max_seg_params", "a", "parameters", 90_000.0, 60_000, minimum=False)]
    lines = failure_text(gates).splitlines()
    assert lines[0] == "gate min_miou failed: mIoU 0.1 < 0.8 (a); 1 more gate(s) failed"
    assert lines[2].startswith("gate max_seg_params failed: parameters 9e+04 > 60000")
    assert failure_text(gates[1:2]) is None


def test_validation_gates_cover_every_model_and_say_why_one_is_skipped():
    hp = ValidateHyperparameters(min_miou=0.5, max_center_error_px=10)
    models = {"seg.onnx": {"task": "segmentation", "parameters": 30_000, "size_kb": 180.0, "has_checkpoint": True,
                           "latency": {"onnxruntime": {"median_ms": 9.0}}},
              "ell.onnx": {"task": "ellipse", "parameters": 50_000, "size_kb": 250.0, "has_checkpoint": False,
                           "latency": {"onnxruntime": {"median_ms": 12.0}}}}
    test = {"segmentation": {"miou": 0.9, "parity": {"max_abs_diff": 1e-6}},
            "ellipse": {"center_error_px": {"mean": 4.0}, "parity": {"max_abs_diff": None}}, "skipped": {}}
    gates = {(g.name, g.model): g for g in validation_gates(hp, models, test)}
    assert set(gates) == {("min_miou", "seg.onnx"), ("max_seg_params", "seg.onnx"), ("max_seg_size_kb", "seg.onnx"),
                          ("max_parity_diff", "seg.onnx"), ("max_latency_ms", "seg.onnx"),
                          ("max_center_error_px", "ell.onnx"), ("max_parity_diff", "ell.onnx"),
                          ("max_latency_ms", "ell.onnx")}
    assert all(g.passed for g in gates.values())
    parity = gates[("max_parity_diff", "ell.onnx")]  # optional checkpoint not given: skipped, not passed
    assert parity.skipped and parity.value is None and parity.reason == "no PyTorch checkpoint given"
