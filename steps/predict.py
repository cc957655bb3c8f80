"""predict: pupil ellipses, confidences and masks for your own frames (library: steps.inference).

    python -m steps predict --root runs/predict \\
        --channel model=runs/default/export-onnx/model --channel input=path/to/frames_or_video

Writes `predictions`: ellipses.csv / ellipses.jsonl (one row per frame, frame pixels), masks/, and
an annotated video or contact sheet. A frame that cannot be read inside a folder or video is listed
in skipped.jsonl and the run goes on; an input or model that cannot be used fails the step.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from contracts.predict import PredictHyperparameters
from steps.data.frames import IMAGE_SHAPE
from steps.data.geometry import Region
from steps.inference.model_input import ModelMismatch
from steps.inference.pupil import Plausibility
from steps.inference.results import PredictionWriter, resolve_annotation
from steps.inference.runner import PredictOptions, Timing, predict_frames
from steps.inference.segmenters import PupilModel, open_model
from steps.inference.sources import SourceError, SourceFrame, open_source
from steps.runtime import StepError, StepHooks, StepIO

log = logging.getLogger(__name__)


def load_model(hp: PredictHyperparameters, io: StepIO) -> PupilModel:
    try:
        return open_model(io.require_channel("model"), hp.backend, hp.threads)
    except ModelMismatch as error:
        raise StepError(f"channel 'model': {error}") from None


def check_inputs(hp: PredictHyperparameters, io: StepIO) -> None:
    """The model loads and is a segmentation model; the input is a readable kind of thing."""
    model = load_model(hp, io)
    try:
        open_source(io.require_channel("input"), model.spec.input_mode, hp.input_bits)
    except SourceError as error:
        raise StepError(f"channel 'input': {error}") from None


def options(hp: PredictHyperparameters) -> PredictOptions:
    rules = Plausibility(hp.min_area_px, hp.max_area_fraction, hp.min_axis_ratio)
    return PredictOptions(policy=hp.geometry, batch_size=hp.batch_size, rules=rules, max_frames=hp.max_frames,
                          refine_border=hp.refine_border, quarter_turns=hp.rotate // 90,
                          region=Region(*hp.roi) if hp.roi else None)


def run(hp: PredictHyperparameters, io: StepIO) -> dict[str, Any]:
    model = load_model(hp, io)
    log.info("model %s (%s): %s", model.path.name, model.backend, model.spec.describe())
    kind, frames = open_source(io.require_channel("input"), model.spec.input_mode, hp.input_bits)
    writer = PredictionWriter(io.output("predictions"), masks=hp.masks,
                              annotations=resolve_annotation(hp.annotate, kind), sheet_frames=hp.sheet_frames)
    timing, found, first_skip, sizes = Timing(), 0, "", Counter[str]()
    try:
        for item in predict_frames(model, frames, options(hp), timing):
            if isinstance(item, SourceFrame):
                log.warning("skipped: %s", item.error)
                writer.skip(item)
                first_skip = first_skip or item.error
                continue
            writer.add(item)
            found += item.ellipse is not None
            sizes[f"{item.mask.shape[1]}x{item.mask.shape[0]}"] += 1
    except SourceError as error:
        raise StepError(f"channel 'input': {error}") from None
    finally:
        written = writer.close()
    if not timing.frames:
        raise StepError(f"channel 'input': no frame could be read ({timing.skipped} skipped, the first: {first_skip})")
    summary = {**timing.summary(), "pupils_found": found, "input_kind": kind, "model": model.path.name,
               "backend": model.backend, "geometry": hp.geometry, "rotate": hp.rotate,
               "roi": list(hp.roi) if hp.roi else None, "frame_sizes": dict(sorted(sizes.items())),
               "files": written["files"]}
    log.info("%d frames (%d skipped), pupil found in %d, %.1f frames/s (model alone %.1f frames/s); frame sizes "
             "%s onto the model's %dx%d by geometry %s", summary["frames"], summary["skipped"], found,
             summary["frames_per_s"] or 0, summary["model_frames_per_s"] or 0, summary["frame_sizes"],
             IMAGE_SHAPE[1], IMAGE_SHAPE[0], hp.geometry)
    io.annotate("predictions", **{k: v for k, v in summary.items() if k != "files"})
    return summary


HOOKS = StepHooks(run=run, check_inputs=check_inputs)
