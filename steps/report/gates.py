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


def validation_gates(hp: Any, models: dict[str, dict[str, Any]], test: dict[str, Any],
                     robustness: dict[str, Any] | None = None) -> list[Gate]:
    """The gates of ValidateHyperparameters over the models (report rows by file), the test split and
    the robustness suite's summary (steps.report.robustness; None: not run)."""
    gates = robustness_gates(hp, models, robustness)
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
    order = ("min_miou", "min_robustness_mean", "min_robustness_worst_kind", "max_center_error_px", "max_parity_diff",
             "max_latency_ms", "max_seg_params", "max_seg_size_kb")
    return sorted(gates, key=lambda gate: order.index(gate.name))


def robustness_gates(hp: Any, models: dict[str, dict[str, Any]], robustness: dict[str, Any] | None) -> list[Gate]:
    """min_robustness_mean / min_robustness_worst_kind (when set) for the segmentation model on every
    frame set the suite ran on; a gate set while the suite did not run fails as not measured."""
    gates = []
    sets = (robustness or {}).get("sets") or {"-": {}}
    not_run = ("robustness suite not run: robustness is off (turn it on, or null min_robustness_* to drop these gates)"
               if robustness is None else "robustness suite not run: no frames (robustness_rows 0 and no real frames)")
    limits = (("min_robustness_mean", "mean_pupil_iou", "mean over kinds"),
              ("min_robustness_worst_kind", "worst_kind_pupil_iou", "worst kind"))
    for file in (f for f, model in models.items() if model["task"] == "segmentation"):
        for name, key, what in limits:
            limit = getattr(hp, name)
            if limit is None:
                continue
            for set_name, frame_set in sets.items():
                figures = frame_set.get("predictors", {}).get(file)
                reason = frame_set.get("skipped", {}).get(file) or (not_run if not frame_set else "no frame with a pupil")
                gates.append(Gate(name, file, f"robustness pupil IoU, {what} ({set_name})",
                                  _figure(figures, key), limit, minimum=True, reason=reason))
    return gates
