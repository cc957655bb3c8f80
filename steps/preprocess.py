"""preprocess: raw OpenEDS frames -> one HF dataset per split (SPEC section 3), or `--validate`.

Normal mode writes `train`, `validation` and `test` (a split without frames becomes a 0-row dataset
of the same schema) and `report/preprocess_report.json`; each split's manifest carries its counts
of rows, skipped (empty pupil), unlabeled and bad frames.

Validate mode (`validate_only=true`) recomputes `validate_samples` rows per split of the
`reference` channel from `raw`, compares every column (images and labels exactly, floats within
1e-4) and writes `report/validate_report.json`; the split outputs are left as they are. Any
mismatch fails the step after the report is committed, naming the first mismatching file and column.
"""

from __future__ import annotations

import logging
import platform
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import datasets

from contracts.preprocess import PreprocessHyperparameters
from steps.data.frames import IMAGE_SHAPE
from steps.data.openeds import OpenEDSLayout, find_openeds, frame_sizes
from steps.data.precompute import SplitReport, features_for, precompute_splits, resolve_workers, row_bytes
from steps.data.reference import TOLERANCE
from steps.data.transforms import PreprocessParams
from steps.data.verify import find_saved_splits, validate_split
from steps.outputs import read_manifest, write_json_atomic
from steps.runtime import FailAfterCommit, StepError, StepHooks, StepIO

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
REPORT_FILE = "preprocess_report.json"
VALIDATE_REPORT_FILE = "validate_report.json"
SOURCE_KEYS = ("source", "dataset", "dataset_version", "seed")


def _layout(io: StepIO) -> OpenEDSLayout:
    raw = io.require_channel("raw")
    try:
        return find_openeds(raw)
    except (OSError, ValueError) as error:
        raise StepError(f"channel 'raw': {error}") from error


def check_inputs(hp: PreprocessHyperparameters, io: StepIO) -> None:
    layout = _layout(io)
    log.info("raw frames: %s", layout.describe())
    if not hp.validate_only:
        if not any(layout.splits.get(split) for split in SPLITS):
            raise StepError(f"channel 'raw': no frames in splits {', '.join(SPLITS)} under {layout.base}")
        return
    reference = io.channel("reference")
    if reference is None:
        raise StepError("channel 'reference': validate_only=true needs the preprocessed dataset to check "
                        "(a saved split folder, or a folder of them)")
    splits = find_saved_splits(reference)
    if not splits:
        raise StepError(f"channel 'reference': no saved dataset (state.json + dataset_info.json) in "
                        f"{reference} or its sub-folders")
    for split, folder in splits.items():
        if split not in layout.splits and len(datasets.load_from_disk(str(folder))):
            raise StepError(f"channel 'reference': split '{split}' has no raw frames in channel 'raw' "
                            f"(raw splits: {', '.join(layout.splits) or 'none'})")


def run(hp: PreprocessHyperparameters, io: StepIO) -> dict[str, Any]:
    layout = _layout(io)
    if hp.validate_only:
        return run_validate(hp, io, layout)
    return run_preprocess(hp, io, layout)


# ---------------------------------------------------------------- normal mode

def camera_frames(layout: str | None, sizes: Mapping[str, int] | None, policy: str | None) -> dict[str, Any] | None:
    """The camera's frames ({layout_description, frame_sizes, frame_policy}) when some were not
    640x400 and so were mapped by `policy`, else None. `sizes`: frame counts by 'WIDTHxHEIGHT'."""
    if not set(sizes or {}) - {f"{IMAGE_SHAPE[1]}x{IMAGE_SHAPE[0]}", "unreadable"}:
        return None
    return {"layout_description": layout, "frame_sizes": dict(sizes or {}), "frame_policy": policy}


def provenance(io: StepIO, layout: OpenEDSLayout) -> dict[str, Any]:
    """Where the frames came from and what made the rows (for manifests and the dataset card)."""
    import cv2
    import datasets
    import numpy
    import scipy

    raw_manifest = read_manifest(io.require_channel("raw")) or {}
    settings = raw_manifest.get("hyperparameters", {})
    # download-kaggle mapped frames of another camera onto 640x400: the original layout, sizes and
    # policy travel on, so a model card still says what the camera's frames were.
    return {
        "layout": layout.kind, "layout_description": layout.describe(),
        "raw_source": {key: settings[key] for key in SOURCE_KEYS if key in settings},
        "camera_frames": camera_frames(raw_manifest.get("layout_description"), raw_manifest.get("frame_sizes"),
                                       raw_manifest.get("frame_policy")),
        "versions": {"python": platform.python_version(), "opencv": cv2.__version__,
                     "numpy": numpy.__version__, "scipy": scipy.__version__,
                     "datasets": datasets.__version__},
    }


def run_preprocess(hp: PreprocessHyperparameters, io: StepIO, layout: OpenEDSLayout) -> dict[str, Any]:
    params = PreprocessParams.from_hyperparameters(hp)
    frames = {split: list(layout.splits.get(split, []))[: hp.max_frames_per_split] for split in SPLITS}
    ignored = sorted(set(layout.splits) - set(SPLITS))
    if ignored:
        log.warning("ignoring raw splits %s (outputs: %s)", ", ".join(ignored), ", ".join(SPLITS))
    origin = provenance(io, layout)
    description = (f"OpenEDS preprocessed per the spec: {params.as_dict()}, backend {hp.backend}; "
                   f"source {origin['layout_description']}")
    started = time.perf_counter()
    features = features_for(hp.row_layout, hp.keep_raw_image)
    reports = precompute_splits(frames, {split: io.output(split) for split in SPLITS}, params,
                                backend=hp.backend, workers=hp.workers, description=description,
                                features=features, frame_policy=hp.frame_policy)
    seconds = time.perf_counter() - started
    _refuse_all_bad(reports)
    total = sum(report.frames for report in reports.values())
    sizes = {split: frame_sizes(split_frames) for split, split_frames in frames.items()}
    log.info("raw frame sizes %s, frame_policy %s", sizes, hp.frame_policy)
    if not origin["camera_frames"]:  # this step mapped them, if any was not 640x400
        all_sizes = sum((Counter(split_sizes) for split_sizes in sizes.values()), Counter[str]())
        origin["camera_frames"] = camera_frames(layout.describe(), all_sizes, hp.frame_policy)
    if origin["camera_frames"]:
        log.info("the camera's frames, before they were mapped onto 640x400: %s", origin["camera_frames"])
    settings = {"preprocessing": params.as_dict(), "backend": hp.backend, "row_layout": hp.row_layout,
                "frame_policy": hp.frame_policy,
                "columns": list(features), "bytes_per_row": row_bytes(features),
                "workers": resolve_workers(hp.workers), "provenance": origin}
    for split, report in reports.items():
        io.annotate(split, rows=report.rows, counts=report.counts(), frame_sizes=sizes[split],
                    skipped_files=sorted(report.skipped),
                    bad_files=report.as_dict()["bad_files"], **settings)
    summary = {"rows": {s: r.rows for s, r in reports.items()},
               "skipped_empty_pupil": {s: len(r.skipped) for s, r in reports.items()},
               "bad": {s: len(r.bad) for s, r in reports.items()},
               "frames": total, "seconds": round(seconds, 3),
               "frames_per_second": round(total / seconds, 2) if seconds > 0 else None}
    write_json_atomic(io.output("report") / REPORT_FILE,
                      {**summary, **settings, "splits": {s: r.as_dict() for s, r in reports.items()}})
    io.annotate("report", rows=summary["rows"])
    return summary


def _refuse_all_bad(reports: dict[str, SplitReport]) -> None:
    """Single bad frames are skipped; a split whose every frame is bad is a broken input."""
    for split, report in reports.items():
        if report.frames and len(report.bad) == report.frames:
            first = report.bad[0]
            raise StepError(f"split {split}: all {report.frames} frames are unreadable or invalid "
                            f"(first: {first['filename']}: {first['reason']})")


# ---------------------------------------------------------------- validate mode

def run_validate(hp: PreprocessHyperparameters, io: StepIO, layout: OpenEDSLayout) -> dict[str, Any]:
    params = PreprocessParams.from_hyperparameters(hp)
    reference = io.require_channel("reference")
    results = [validate_split(split, Path(folder), layout.splits.get(split, []), hp.validate_samples,
                              params, hp.backend)
               for split, folder in find_saved_splits(reference).items()]
    mismatches = [{"split": r["split"], **m} for r in results for m in r["mismatches"]]
    summary = {"validated": {r["split"]: r["checked"] for r in results}, "mismatches": len(mismatches),
               "tolerance": TOLERANCE}
    write_json_atomic(io.output("report") / VALIDATE_REPORT_FILE,
                      {**summary, "ok": not mismatches, "preprocessing": params.as_dict(),
                       "backend": hp.backend, "reference": str(reference), "splits": results})
    for split in SPLITS:
        io.leave_unchanged(split)
    for result in results:
        log.info("validate %s: %d of %d rows checked, %d mismatch(es), max differences %s",
                 result["split"], result["checked"], result["rows"], len(result["mismatches"]),
                 result["max_differences"])
    if mismatches:
        raise FailAfterCommit(_mismatch_message(mismatches), summary=summary)
    return summary


def _mismatch_message(mismatches: list[dict[str, Any]]) -> str:
    first = mismatches[0]
    detail = first.get("reason") or ", ".join(f"{column} differs by {value:.3g}"
                                               for column, value in first.get("differences", {}).items())
    return (f"validate: {len(mismatches)} mismatching row(s); first: {first['split']}/{first['filename']} "
            f"column '{first['column']}' ({detail})\nsee {VALIDATE_REPORT_FILE} in the report output")


HOOKS = StepHooks(run=run, check_inputs=check_inputs)
