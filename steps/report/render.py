"""The validation report's files: report.json (machine), per_sample.csv, report.md (people).

report.md is rendered from the same dict that becomes report.json, so the two never disagree.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from steps.data.openeds import describe_sizes
from steps.outputs import write_json_atomic

REPORT_JSON, PER_SAMPLE_CSV, REPORT_MD = "report.json", "per_sample.csv", "report.md"
SAMPLE_COLUMNS = ("split", "filename", "pupil_iou", "fit_center_error_px", "fit_radius_error_px",
                  "fit_ellipse_iou", "ellipse_center_error_px", "ellipse_radius_error_px", "ellipse_iou",
                  "ellipse_iou_with_angle")
STAGE_NOTES = {"raw": "camera frames, perturbed before each model's own preprocessing",
               "enhanced": "the split stores only gamma+CLAHE images, so they are perturbed after the enhancement"}
SPLIT_TITLES = {"fixtures": "Real OpenEDS frames (fixtures)"}


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.0f}" if value.is_integer() and abs(value) >= 1000 else f"{value:.{digits}g}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(cell) for cell in row) + " |" for row in rows]
    return lines + [""]


def write_per_sample(rows: list[dict[str, Any]], path: Path) -> Path:
    """One row per evaluated frame and split; empty cells where a model did not run."""
    extra = sorted({key for row in rows for key in row} - set(SAMPLE_COLUMNS))
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*SAMPLE_COLUMNS, *extra], restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    return path


def gate_lines(report: dict[str, Any]) -> list[str]:
    verdict = "PASSED" if report["passed"] else "FAILED"
    rows = [(g["name"], g["model"], g["label"], g["value"], ("< " if g.get("strict") else "") + fmt(g["limit"]),
             f"skipped: {g['reason']}" if g.get("skipped") else "pass" if g["passed"]
             else f"**FAIL** {g.get('reason', '')}".strip()) for g in report["gates"]]
    return [f"**Gates: {verdict}**", "", *table(("gate", "model", "figure", "value", "limit", "result"), rows)]


def model_lines(report: dict[str, Any]) -> list[str]:
    rows = []
    for file, model in report["models"].items():
        latency = model.get("latency", {})
        rows.append((file, model["model_type"], model["parameters"], f"{model['size_kb']:.1f}", model["input_mode"],
                     latency.get("onnxruntime", {}).get("median_ms"), latency.get("pytorch", {}).get("median_ms"),
                     model.get("source_run_id") or "-"))
    return ["## Models", "", *table(("file", "model", "parameters", "size (KB)", "input", "onnxruntime ms",
                                     "PyTorch eager ms", "source run"), rows),
            "Latency: CPU, batch 1 (1x1x400x640), 1 thread, median after warmup.", ""]


def seg_lines(seg: dict[str, Any]) -> list[str]:
    fitted = seg["fitted_ellipse"]
    rows = [("mIoU", seg["miou"]), ("pixel accuracy", seg["pixel_acc"]),
            *((f"IoU {name}", value) for name, value in seg["iou_per_class"].items()),
            ("pupil IoU per frame (mean / median)", f"{fmt(seg['pupil_iou_per_frame']['mean'])} / "
                                                    f"{fmt(seg['pupil_iou_per_frame']['median'])}"),
            ("pupil IoU per frame, edge-refined (mean / median)",
             f"{fmt(seg['pupil_iou_refined_per_frame']['mean'])} / {fmt(seg['pupil_iou_refined_per_frame']['median'])}"),
            ("pupil pixel average precision", seg["pupil_average_precision"]),
            ("fitted ellipse center error px (mean / p90)", f"{fmt(fitted['center_error_px']['mean'])} / "
                                                            f"{fmt(fitted['center_error_px']['p90'])}"),
            ("fitted ellipse IoU (mean)", fitted["ellipse_iou"]["mean"]),
            ("frames without a predicted pupil", fitted["frames_without_pupil"]),
            ("ONNX vs PyTorch max abs diff (rows)", f"{fmt(seg['parity']['max_abs_diff'])} ({seg['parity']['rows']})")]
    return [f"Segmentation, {seg['frames']} frames:", "", *table(("figure", "value"), rows)]


def ellipse_lines(ellipse: dict[str, Any]) -> list[str]:
    figures = [("center error (px)", "center_error_px"), ("radius error (px)", "radius_error_px"),
               ("ellipse IoU (angle-free, as the seed's 4 numbers)", "ellipse_iou")]
    if (ellipse.get("ellipse_iou_with_angle") or {}).get("mean") is not None:
        figures.append(("ellipse IoU with the angle (drawn, against the label's fitted ellipse)", "ellipse_iou_with_angle"))
    rows = [(name, ellipse[key]["mean"], ellipse[key]["median"], ellipse[key]["p90"]) for name, key in figures]
    parity = ellipse["parity"]
    return [f"Ellipse model, {ellipse['frames']} frames (ONNX vs PyTorch max abs diff "
            f"{fmt(parity['max_abs_diff'])} over {parity['rows']} rows):", "",
            *table(("figure", "mean", "median", "p90"), rows)]


def split_title(name: str, evaluated_split: str | None = None) -> str:
    """The heading of an evaluation: the split validate was fed under `test` is named as what it is."""
    if name == "test":
        return f"{(evaluated_split or 'test').capitalize()} split"
    return SPLIT_TITLES.get(name, name)


def split_lines(name: str, evaluation: dict[str, Any] | None, note: str = "", evaluated_split: str | None = None) -> list[str]:
    lines = [f"## {split_title(name, evaluated_split)}", ""]
    if evaluation is None:
        return lines + [note or "not evaluated", ""]
    lines += [note, ""] if note else []
    if evaluation.get("segmentation"):
        lines += seg_lines(evaluation["segmentation"])
    if evaluation.get("ellipse"):
        lines += ellipse_lines(evaluation["ellipse"])
    lines += [f"- {task} model not evaluated: {reason}" for task, reason in evaluation.get("skipped", {}).items()]
    return lines + [""]


def robustness_set_lines(name: str, frame_set: dict[str, Any], kinds: dict[str, list[str]]) -> list[str]:
    """One table: a row per kind (clean first, then mean and worst), pupil IoU / detection per predictor."""
    predictors = frame_set["predictors"]
    lines = [f"{SPLIT_TITLES.get(name, name)}: {frame_set['frames']} frames with a pupil "
             f"({STAGE_NOTES[frame_set['stage']]}).", ""]
    lines += [f"- {predictor} not run: {reason}" for predictor, reason in frame_set["skipped"].items()]
    if not predictors:
        return lines + [""]
    cell = lambda f: f"{fmt(f['pupil_iou'], 3)} / {f['detection_rate']:.0%}" if f else "-"  # noqa: E731
    rows = [("clean", "none", *(cell(p["clean"]) for p in predictors.values()))]
    rows += [(kind, ", ".join(levels), *(cell(p["kinds"].get(kind)) for p in predictors.values()))
             for kind, levels in kinds.items()]
    rows.append(("**mean over kinds**", "", *(f"{fmt(p['mean_pupil_iou'], 3)} / {p['mean_detection_rate']:.0%}"
                                              for p in predictors.values())))
    rows.append(("**worst kind**", "", *(f"{p['worst_kind']} {fmt(p['worst_kind_pupil_iou'], 3)}"
                                         for p in predictors.values())))
    return lines + table(("kind", "levels", *predictors), rows) + sweep_lines(predictors)


SWEEP_KINDS = ("scale", "translation")


def sweep_lines(predictors: dict[str, Any]) -> list[str]:
    """Centre / radius error (px) of each predictor's pupil ellipse per level of the geometric sweeps:
    does the ellipse follow the pupil when it grows or moves?"""
    px = lambda f: f"{fmt(f.get('center_error_px'), 3)} / {fmt(f.get('radius_error_px'), 3)}" if f else "-"  # noqa: E731
    rows = [("clean", *(px(p["clean"]) for p in predictors.values()))]
    for kind in SWEEP_KINDS:
        levels: dict[str, Any] = next((p["kinds"][kind]["levels"] for p in predictors.values() if kind in p["kinds"]), {})
        rows += [(level, *(px(p["kinds"].get(kind, {}).get("levels", {}).get(level)) for p in predictors.values()))
                 for level in levels]
    if len(rows) == 1:
        return [""]
    return ["", "Pupil ellipse centre / radius error (px) along the scale and translation sweeps:", "",
            *table(("level", *predictors), rows), ""]


def robustness_lines(robustness: dict[str, Any] | None) -> list[str]:
    if robustness is None:
        return []
    classical = robustness["classical"]
    lines = ["## Robustness", "",
             f"Pupil IoU / detection rate (one pupil ellipse centre within {robustness['detect_px']:g} px) on "
             "perturbed frames, per kind (mean over its levels and frames); the label moves with geometric "
             "perturbations. `classical`: " + (classical["name"] + ", " + classical["note"] if classical["available"]
                                                else "not run: " + classical["note"]) + ".", ""]
    for name, frame_set in robustness["sets"].items():
        lines += robustness_set_lines(name, frame_set, robustness["kinds"])
    return lines


def fixtures_note(fixtures: dict[str, Any]) -> str:
    """Where the real frames came from, their sizes (and how they were mapped), what was skipped."""
    sizes = fixtures.get("frame_sizes") or {}
    mapped = [size for size in sizes if size != "640x400"]
    note = f"Frames from `{fixtures.get('path')}`; never used for training."
    if mapped:
        note += (f" Frame sizes {describe_sizes(sizes)}, mapped onto "
                 f"640x400 by frame_policy {fixtures.get('frame_policy')}.")
    skipped = fixtures.get("skipped") or []
    if skipped:
        note += f" {len(skipped)} labelled frame(s) skipped, the first: {skipped[0]}"
    return note


def render_markdown(report: dict[str, Any]) -> str:
    lines = ["# Validation report", "", *gate_lines(report), *model_lines(report)]
    fixtures = report.get("fixtures", {})
    for name, evaluation in report["evaluations"].items():
        note = fixtures_note(fixtures) if name == "fixtures" else ""
        lines += split_lines(name, evaluation, note, report.get("evaluated_split"))
    if "fixtures" not in report["evaluations"]:
        lines += split_lines("fixtures", None, fixtures.get("note", "not found"))
    lines += robustness_lines(report.get("robustness"))
    if report.get("plots"):
        lines += ["## Plots", ""] + [f"![{title}]({file})\n" for title, file in report["plots"].items()]
    if report.get("warnings"):
        lines += ["## Warnings", ""] + [f"- {warning}" for warning in report["warnings"]] + [""]
    return "\n".join(lines).rstrip() + "\n"


def json_safe(value: Any) -> Any:
    """NaN and infinities become null: report.json stays strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def write_report(folder: Path, report: dict[str, Any], rows: list[dict[str, Any]]) -> list[Path]:
    write_json_atomic(folder / REPORT_JSON, json_safe(report))
    write_per_sample(rows, folder / PER_SAMPLE_CSV)
    (folder / REPORT_MD).write_text(render_markdown(report), encoding="utf-8")
    return [folder / REPORT_JSON, folder / PER_SAMPLE_CSV, folder / REPORT_MD]
