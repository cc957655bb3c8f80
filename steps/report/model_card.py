"""MODEL_CARD.md: what a model folder's ONNX files are for, what they were trained on, how to feed
them, how well they did, how fast and big they are, where they fail, and how to run them.

export-onnx writes it beside the ONNX files from their metadata (no evaluation yet); validate
writes it again with the evaluation, latency and gates of its report, and logs it with the
registered ONNX model. Everything comes from the ONNX metadata (steps.export.onnx_export) and the
validation report, so the card never disagrees with the files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from steps.data.openeds import describe_sizes
from steps.outputs import loads_json, sha256_file

MODEL_CARD_FILE = "MODEL_CARD.md"
TASK_TITLES = {"segmentation": "pupil segmentation", "ellipse": "pupil ellipse regression"}
EVALUATION_NAMES = {"test": "the evaluated split", "fixtures": "real OpenEDS sample frames"}


def _json(metadata: dict[str, str], key: str, default: Any) -> Any:
    try:
        return loads_json(metadata.get(key, ""))
    except json.JSONDecodeError:
        return default


def model_facts(path: Path, metadata: dict[str, str]) -> dict[str, Any]:
    """One ONNX file as the card shows it."""
    size = path.stat().st_size
    return {"file": path.name, "size_kb": round(size / 1024, 1), "sha256": sha256_file(path), **metadata,
            "training_data": _json(metadata, "training_data", {}),
            "checkpoint_metrics": _json(metadata, "checkpoint_metrics", {})}


def intended_use() -> list[str]:
    return ["## Intended use", "",
            "Finding the pupil in near-eye infrared grayscale frames (OpenEDS-like headset cameras) for eye "
            "tracking on small devices: the segmentation model's mask gives the pupil ellipse "
            "(`python -m steps predict`), the ellipse model regresses it directly.",
            "Not intended for: identifying people (biometrics), medical diagnosis, visible-light or colour "
            "face images, or any safety-critical use without validating on frames from your own camera.", ""]


def training_lines(model: dict[str, Any]) -> list[str]:
    data = model["training_data"]
    if not data:
        return ["- Training data: not recorded (the model folder predates training-data provenance)."]
    if data.get("generated"):
        what = ("**generated frames** (the pipeline's default: OpenEDS-like eyes drawn by "
                "`steps.data.synthetic`, no real eye); train on the real dataset (`download-kaggle --source "
                "kaggle`) before trusting it on real frames")
    else:
        what = f"{data.get('dataset') or data.get('source')} ({data.get('source')})"
    of_split = f" (of {data['rows_in_split']} in the split)" if data.get("rows_in_split") else ""
    lines = [f"- Training data: {what}; {data.get('rows', '?')} training rows{of_split}"
             + (f", {data['layout']}" if data.get("layout") else "") + "."]
    camera = data.get("camera_frames")
    if camera:
        sizes = describe_sizes(camera.get("frame_sizes") or {})
        lines.append(f"- Camera frames: {camera.get('layout_description', '?')} ({sizes}), mapped onto 640x400 "
                     f"by frame_policy {camera.get('frame_policy', '?')}; give `predict --geometry` the same policy.")
    metrics = model["checkpoint_metrics"]
    if metrics:
        shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()
                          if k in ("valid_iou", "iou_pupil", "center_error_px", "valid_loss") and isinstance(v, float))
        lines.append(f"- Best checkpoint: epoch {model.get('checkpoint_epoch', '?')}" + (f" ({shown})" if shown else "")
                     + f", source run `{model.get('source_run_id') or 'untracked'}`.")
    return lines


def contract_lines(model: dict[str, Any]) -> list[str]:
    return [f"- Input `{model.get('input_name', 'image')}`: {model.get('input_dtype', 'float32')} "
            f"{model.get('input_shape', '')} ({model.get('input_layout', 'NCHW')}), dynamic batch.",
            f"- Preprocessing the frame must have had: {model.get('preprocessing', 'unknown')} "
            f"(`input_mode` {model.get('input_mode', 'preprocessed')}; parameters in the metadata key "
            f"`preprocessing_params`).",
            f"- Normalization: {model.get('normalization', 'unknown')}.",
            f"- Output `{model.get('output_name', '')}`: {model.get('output', '')}.",
            "- Other frame sizes: `steps.data.geometry` (pad, crop or resize onto 640x400, mapped back exactly)."]


def model_section(model: dict[str, Any], report: dict[str, Any] | None) -> list[str]:
    title = TASK_TITLES.get(model.get("task", ""), model.get("task", "model"))
    lines = [f"## {model['file']}: {model.get('model_type', '?')} ({title})", "",
             f"- Size {model['size_kb']} KB, {model.get('parameters', '?')} parameters, opset {model.get('opset', '?')} "
             f"({model.get('exporter', '?')} exporter), sha256 `{model['sha256'][:16]}`.",
             *training_lines(model), "", "### Input contract", "", *contract_lines(model), ""]
    return lines + evaluation_section(model, report)


def _seg_row(name: str, seg: dict[str, Any]) -> str:
    fit = seg["fitted_ellipse"]["center_error_px"]["mean"]
    return (f"| {name} | {seg['frames']} | {seg['miou']:.4f} | {seg['iou_per_class']['pupil']:.4f} | "
            f"{'n/a' if fit is None else f'{fit:.2f}'} |")


def _ellipse_row(name: str, ellipse: dict[str, Any]) -> str:
    centre, iou = ellipse["center_error_px"]["mean"], ellipse["ellipse_iou"]["mean"]
    return (f"| {name} | {ellipse['frames']} | {'n/a' if centre is None else f'{centre:.2f}'} | "
            f"{'n/a' if iou is None else f'{iou:.4f}'} |")


def evaluation_section(model: dict[str, Any], report: dict[str, Any] | None) -> list[str]:
    if report is None:
        return ["### Evaluation", "", "Not evaluated yet: validate writes this card again with its metrics.", ""]
    task, split = model.get("task"), report.get("evaluated_split") or "test"
    header = ("| data | frames | mIoU | pupil IoU | fitted-ellipse centre error (px) |\n| --- | --- | --- | --- | --- |"
              if task == "segmentation" else "| data | frames | centre error (px) | ellipse IoU |\n| --- | --- | --- | --- |")
    rows = []
    evaluations = report.get("evaluations", {})
    for key in sorted(evaluations, key=lambda k: k != "test"):
        result = (evaluations[key] or {}).get(task)
        if result:
            name = f"{split} split" + (" (generated frames)" if model["training_data"].get("generated") else "") \
                if key == "test" else EVALUATION_NAMES.get(key, key)
            rows.append(_seg_row(name, result) if task == "segmentation" else _ellipse_row(name, result))
    facts = report.get("models", {}).get(model["file"], {})
    latency = facts.get("latency", {}).get("onnxruntime", {})
    gates = [g for g in report.get("gates", []) if g["model"] == model["file"]]
    lines = ["### Evaluation", "", header, *rows, "",
             fixtures_line(report.get("fixtures") or {}),
             robustness_line(report.get("robustness"), model["file"]),
             f"- Latency: {latency.get('median_ms', float('nan')):.2f} ms median per frame (onnxruntime CPU, "
             f"batch 1, 1 thread, {latency.get('runs', '?')} runs)." if latency else "- Latency: not measured.",
             gate_line(gates), ""]
    return lines


def robustness_line(robustness: dict[str, Any] | None, file: str) -> str:
    """The robustness suite's pupil IoU for this model per frame set: mean over kinds, worst kind,
    beside the classical detector's mean (validate's report has the tables)."""
    if robustness is None:
        return "- Robustness suite: not run (validate `--no-robustness`)."
    parts = []
    for set_name, frame_set in (robustness.get("sets") or {}).items():
        predictors = frame_set.get("predictors") or {}
        mine, classical = predictors.get(file), predictors.get("classical")
        if not mine:
            continue
        text = (f"{EVALUATION_NAMES.get(set_name, set_name)}: mean {mine['mean_pupil_iou']:.3f}, worst kind "
                f"{mine['worst_kind']} {mine['worst_kind_pupil_iou']:.3f}")
        refined = predictors.get(f"{file} + edge refinement")
        text += f" (edge-refined: mean {refined['mean_pupil_iou']:.3f})" if refined else ""
        parts.append(text + (f"; classical detector mean {classical['mean_pupil_iou']:.3f}" if classical else ""))
    kinds = ", ".join(robustness.get("kinds") or {})
    return (f"- Robustness suite (pupil IoU under {kinds}): {'; '.join(parts)}." if parts
            else "- Robustness suite: pupil IoU is measured for segmentation models (validate's report.md has the rest).")


def fixtures_line(fixtures: dict[str, Any]) -> str:
    if fixtures.get("found"):
        return f"- Real sample frames: {fixtures['frames']} labelled OpenEDS frames ({fixtures['path']}), never trained on."
    return f"- Real sample frames: {fixtures.get('note') or 'not evaluated'}."


def gate_line(gates: list[dict[str, Any]]) -> str:
    if not gates:
        return "- Gates: none applied."
    failed = [g["name"] for g in gates if not g["passed"]]
    verdict = f"FAILED {', '.join(failed)}" if failed else "all passed"
    return f"- Gates: {verdict} ({', '.join(g['name'] for g in gates)})."


def limitations() -> list[str]:
    return ["## Limitations", "",
            "- Trained and evaluated at 640x400; other sizes go through a geometry policy, and pupils much "
            "smaller or larger than OpenEDS's (about 300 to 10,000 pixels) are outside what it saw.",
            "- Dark regions that are not pupil (lens edges, eyecup rims, shadowed lids, lash clumps) are the "
            "usual false positives; predict keeps only the largest plausible component.",
            "- Closed or mostly covered eyes have no pupil; a frame may get a low-confidence ellipse or none.",
            "- A model trained on generated frames has never seen a real eye: the real sample frames above are "
            "the only real-eye figures, and there are very few of them.", ""]


# Runs where this project is absent: onnxruntime, OpenCV and NumPy only, the preprocessing read from
# the model's own metadata (a test runs it with the project unimportable and compares the mask).
STANDALONE_RECIPE = """import json
import cv2
import numpy as np
import onnxruntime as ort

session = ort.InferenceSession("{seg}")
meta = session.get_modelmeta().custom_metadata_map
gray = cv2.imread("frame.png", cv2.IMREAD_GRAYSCALE)  # 640 wide x 400 tall (pad, crop or resize other sizes)
if meta.get("input_mode", "preprocessed") == "preprocessed":  # the gamma LUT, then CLAHE, it was trained on
    params = json.loads(meta["preprocessing_params"])
    lut = (255.0 * np.linspace(0.0, 1.0, 256) ** params["gamma"]).astype(np.uint8)
    grid = params["clahe_tile_grid"]
    gray = cv2.createCLAHE(params["clahe_clip_limit"], (grid, grid)).apply(cv2.LUT(gray, lut))
mean, std = float(meta.get("input_mean", 0.5)), float(meta.get("input_std", 0.5))
batch = ((gray.astype(np.float32) / 255.0 - mean) / std)[None, None]
(logits,) = session.run(None, {{session.get_inputs()[0].name: batch}})
pupil = (logits[0, 1] > logits[0, 0]).astype(np.uint8)  # 0/1 mask, 400 x 640"""


def how_to_run(files: list[str]) -> list[str]:
    seg = next((f for f in files if "ellipse" not in f), files[0] if files else "model.onnx")
    return ["## How to run", "",
            "With this project installed (`predict` also maps any frame size, fits the pupil ellipse and, by "
            "default, refines its border on the image; `--no-refine-border` gives the model's own mask):", "",
            "```bash",
            "python -m steps predict --root runs/p --channel model=<this folder> --channel input=<image, folder or video>",
            "```", "", "```python", "import onnxruntime as ort",
            "from steps.inference.model_input import ModelInput, prepare_frame",
            f'session = ort.InferenceSession("{seg}")',
            "spec = ModelInput.from_metadata(session.get_modelmeta().custom_metadata_map)",
            'batch, geometry = prepare_frame(gray_frame, spec, "pad")',
            '(logits,) = session.run(None, {"image": batch})',
            "```", "", "Without it (onnxruntime, OpenCV and NumPy only; the model's own mask):", "",
            "```python", STANDALONE_RECIPE.format(seg=seg), "```", ""]


def render_model_card(models: list[dict[str, Any]], report: dict[str, Any] | None = None) -> str:
    status = ("validated: all gates passed" if report and report.get("passed") else
              "validated: gates FAILED" if report else "exported, not yet validated")
    lines = ["# Model card: OpenEDS pupil models", "", f"Status: {status}.", "", *intended_use()]
    for model in models:
        lines += model_section(model, report)
    return "\n".join(lines + limitations() + how_to_run([m["file"] for m in models]))


def write_model_card(folder: Path, onnx_files: list[tuple[Path, dict[str, str]]],
                     report: dict[str, Any] | None = None) -> Path:
    """MODEL_CARD.md in `folder` for (ONNX path, metadata) pairs, segmentation model first."""
    models = sorted((model_facts(path, meta) for path, meta in onnx_files), key=lambda m: m.get("task") != "segmentation")
    path = folder / MODEL_CARD_FILE
    path.write_text(render_model_card(models, report), encoding="utf-8")
    return path
