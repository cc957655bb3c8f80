"""Validation gates: each a hyperparameter limit on one figure of one model.

A gate whose figure could not be measured for a model that exists fails (a model that cannot be
evaluated must not pass); only the parity gate of a model whose checkpoint was not given (an
optional channel) is skipped, with the reason in the report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Gate:
    name: str              # the hyperparameter: min_miou, max_latency_ms, ...
    model: str             # ONNX file name
    label: str             # what the figure is, for people: "mIoU", "latency (ms)"
    value: float | None    # None: not measured
    limit: float
    minimum: bool          # True: value must be >= limit; False: value must be <= limit
    strict: bool = False   # maximum gates only: value must be < limit
    reason: str = ""       # why the value is missing
    skipped: bool = False  # not applicable here (reason says why): neither passed nor failed

    @property
    def passed(self) -> bool:
        if self.skipped:
            return True
        if self.value is None or self.value != self.value:  # missing or NaN
            return False
        if self.minimum:
            return self.value >= self.limit
        return self.value < self.limit if self.strict else self.value <= self.limit

    def message(self) -> str:
        """`gate min_miou failed: mIoU 0.7312 < 0.999` (or why it was not measured)."""
        if self.value is None or self.value != self.value:
            return f"gate {self.name} failed: {self.label} of {self.model} not measured ({self.reason or 'no value'})"
        sign = "<" if self.minimum else (">=" if self.strict else ">")
        return f"gate {self.name} failed: {self.label} {self.value:.4g} {sign} {self.limit:g} ({self.model})"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def failure_text(gates: list[Gate]) -> str | None:
    """First line: the first failed gate (and how many more); then every failed gate."""
    failed = [gate for gate in gates if not gate.passed]
    if not failed:
        return None
    first = failed[0].message() + (f"; {len(failed) - 1} more gate(s) failed" if len(failed) > 1 else "")
    return "\n".join([first, *(gate.message() for gate in failed), "the report was written; see report.md"])


def _figure(summary: dict[str, Any] | None, *keys: str) -> float | None:
    value: Any = summary
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return None if value is None else float(value)


def validation_gates(hp: Any, models: dict[str, dict[str, Any]], test: dict[str, Any]) -> list[Gate]:
    """The gates of ValidateHyperparameters over the models (report rows by file) and the test split."""
    gates = []
    for file, model in models.items():
        task = model["task"]
        evaluation = test.get(task)
        skipped = test.get("skipped", {}).get(task, "")
        no_checkpoint = not model.get("has_checkpoint")
        gates.append(Gate("max_parity_diff", file, "ONNX vs PyTorch max abs diff",
                          _figure(evaluation, "parity", "max_abs_diff"), hp.max_parity_diff, minimum=False,
                          reason="no PyTorch checkpoint given" if no_checkpoint else skipped,
                          skipped=no_checkpoint))
        gates.append(Gate("max_latency_ms", file, "onnxruntime latency (ms, batch 1, 1 thread)",
                          _figure(model, "latency", "onnxruntime", "median_ms"), hp.max_latency_ms, minimum=False))
        if task == "segmentation":
            gates += [
                Gate("min_miou", file, "mIoU", _figure(evaluation, "miou"), hp.min_miou, minimum=True, reason=skipped),
                Gate("max_seg_params", file, "parameters", float(model["parameters"]), hp.max_seg_params, minimum=False),
                Gate("max_seg_size_kb", file, "ONNX size (KB)", model["size_kb"], hp.max_seg_size_kb,
                     minimum=False, strict=True),
            ]
        else:
            gates.append(Gate("max_center_error_px", file, "mean ellipse center error (px)",
                              _figure(evaluation, "center_error_px", "mean"), hp.max_center_error_px,
                              minimum=False, reason=skipped))
    order = ("min_miou", "max_center_error_px", "max_parity_diff", "max_latency_ms", "max_seg_params", "max_seg_size_kb")
    return sorted(gates, key=lambda gate: order.index(gate.name))
