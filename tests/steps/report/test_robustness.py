"""The robustness suite: labels follow geometric perturbations, figures per kind, the classical
detector beside the models (when pupil-detectors is installed), gates on the mean and worst kind."""

from __future__ import annotations

import sys

import datasets
import numpy as np
import pytest

from contracts.validate import ValidateHyperparameters
from steps.inference.pupil import find_pupil
from steps.report import classical
from steps.report.evaluate import raw_frames_dataset
from steps.report.gates import validation_gates
from steps.report.perturb import KINDS, suite
from steps.report.render import robustness_lines
from steps.report.robustness import FrameSet, Predictor, frame_set, pupil_iou, robustness_summary, run_suite
from tests.steps.report.test_perturb import eye


def frames(count: int = 2) -> FrameSet:
    pairs = [eye(cx=200 + 40 * k, cy=200 - 10 * k) for k in range(count)]
    return FrameSet("test", [p[0] for p in pairs], [p[1] for p in pairs], "raw")


def threshold_predictor() -> Predictor:
    """Dark pixels are pupil: follows the image wherever the pupil moves."""
    def predict(images, stage):
        out = []
        for image in images:
            mask = (image < 75).astype(np.uint8)
            fit = find_pupil(mask.astype(np.float32))
            out.append((mask, fit.ellipse))
        return out
    return Predictor("threshold", "segmentation", predict)


def frozen_predictor(masks) -> Predictor:
    """Always answers the unperturbed labels: right only where the label did not move."""
    def predict(images, stage):
        return [(m, find_pupil(m.astype(np.float32)).ellipse) for m in masks]
    return Predictor("frozen", "segmentation", predict)


def test_a_predictor_that_follows_the_pupil_scores_on_every_geometric_kind():
    result = run_suite(frames(), [threshold_predictor()], suite(max_levels=2))
    summary = result["predictors"]["threshold"]
    assert set(summary["kinds"]) == set(KINDS) and summary["clean"]["pupil_iou"] > 0.999
    for kind in ("flip", "scale", "translation", "occlusion", "gain"):
        # the lid's dark lash line along its margin fools a threshold a little
        assert summary["kinds"][kind]["pupil_iou"] > (0.9 if kind == "occlusion" else 0.95), kind
        assert summary["kinds"][kind]["detection_rate"] == 1.0, kind
    # sd 25 noise on a fixed threshold: many false pixels, so noise is the worst kind
    assert summary["worst_kind"] == "noise" and summary["kinds"]["noise"]["pupil_iou"] < 0.9
    levels = summary["kinds"]["noise"]["levels"]
    assert list(levels) == ["sd 5", "sd 25"] and levels["sd 5"]["pupil_iou"] > levels["sd 25"]["pupil_iou"]
    # its ellipse follows the pupil along the sweeps: centre and radius within a pixel
    for kind in ("scale", "translation"):
        for level in summary["kinds"][kind]["levels"].values():
            assert level["center_error_px"] < 1.0 and level["radius_error_px"] < 1.0, (kind, level)
    kind_means = [v["pupil_iou"] for v in summary["kinds"].values()]
    assert summary["mean_pupil_iou"] == pytest.approx(np.mean(kind_means))
    assert summary["worst_kind_pupil_iou"] == pytest.approx(min(kind_means))


def test_labels_move_with_geometric_kinds_and_stay_with_photometric_ones():
    data = frames()
    result = run_suite(data, [frozen_predictor(data.masks)], suite(max_levels=1))["predictors"]["frozen"]
    for kind in ("noise", "gain", "blur", "glint"):
        assert result["kinds"][kind]["pupil_iou"] == 1.0, kind
    assert result["kinds"]["flip"]["pupil_iou"] == 0.0  # pupils off the centre line land elsewhere
    assert result["kinds"]["translation"]["pupil_iou"] < 0.5
    assert result["kinds"]["scale"]["pupil_iou"] == pytest.approx(1 / 1.1**2, abs=0.03)
    assert result["kinds"]["occlusion"]["pupil_iou"] == pytest.approx(0.8, abs=0.02)


def test_frame_set_takes_camera_frames_when_the_split_has_them(tmp_path):
    image, mask = eye()
    rows = datasets.Dataset.from_dict({"image": [image, image], "label": [mask * 3, mask * 0],
                                       "filename": ["a.png", "closed.png"], "preprocessed": [False, False]})
    found = frame_set("test", rows, None)
    assert found.stage == "raw" and len(found.images) == 1  # the closed eye has nothing to perturb about
    np.testing.assert_array_equal(found.images[0], image)
    np.testing.assert_array_equal(found.masks[0], mask)


def test_skipped_predictors_and_gates_on_mean_and_worst_kind():
    chosen = [threshold_predictor(), Predictor("raw-only", "ellipse", lambda i, s: [], lambda stage: "no raw")]
    result = run_suite(frames(1), chosen, suite(max_levels=1))
    assert result["skipped"] == {"raw-only": "no raw"} and list(result["predictors"]) == ["threshold"]
    robustness = {"sets": {"test": result}}
    models = {"threshold": {"task": "segmentation", "parameters": 1, "size_kb": 1.0,
                            "latency": {"onnxruntime": {"median_ms": 1.0}}}}
    test = {"segmentation": {"miou": 1.0, "parity": {"max_abs_diff": 0.0}}, "skipped": {}}
    figures = result["predictors"]["threshold"]
    off = validation_gates(ValidateHyperparameters(), models, test, robustness)
    assert not [g for g in off if "robustness" in g.name]  # off by default
    assert figures["mean_pupil_iou"] < 1.0
    hp = ValidateHyperparameters(min_robustness_mean=1.0, min_robustness_worst_kind=0.0)
    gates = {g.name: g for g in validation_gates(hp, models, test, robustness) if "robustness" in g.name}
    assert not gates["min_robustness_mean"].passed and gates["min_robustness_worst_kind"].passed
    assert "(test)" in gates["min_robustness_mean"].label
    missing = {g.name: g for g in validation_gates(hp, models, test, None) if "robustness" in g.name}
    assert not missing["min_robustness_mean"].passed
    assert missing["min_robustness_mean"].reason.startswith("robustness suite not run: robustness is off")
    empty = {g.name: g for g in validation_gates(hp, models, test, {"sets": {}}) if "robustness" in g.name}
    assert empty["min_robustness_mean"].reason == ("robustness suite not run: no frames (robustness_rows 0 and no "
                                                   "real frames)")


def test_report_tables_put_models_and_the_detector_side_by_side():
    result = run_suite(frames(1), [threshold_predictor(), frozen_predictor(frames(1).masks)], suite(max_levels=1))
    text = "\n".join(robustness_lines({"sets": {"test": result}, "detect_px": 5.0,
                                      "kinds": {k: ["x"] for k in KINDS},
                                      "classical": {"available": False, "name": "c", "note": "not installed"}}))
    assert "| kind | levels | threshold | frozen |" in text and "not run: not installed" in text
    assert "| flip | x | 1 / 100% | 0 / 0% |" in text and "**worst kind**" in text
    assert "ellipse centre / radius error (px) along the scale and translation sweeps" in text
    assert "| shift +40,+0 | 0 / 0 | 40 / 0 |" in text  # the threshold's ellipse moves; frozen's stays


def test_without_pupil_detectors_the_suite_says_so(monkeypatch):
    monkeypatch.setattr(classical.importlib.util, "find_spec", lambda name: None)
    assert "pupil-detectors is not installed" in classical.unavailable_reason()
    summary = robustness_summary({}, [], max_levels=1, batch_size=2)
    assert summary["classical"]["available"] is False and "openeds-steps[classical]" in summary["classical"]["note"]


def test_a_pupil_detectors_that_does_not_import_is_reported_not_fatal(tmp_path, monkeypatch):
    """Installed but broken (a native library missing): the suite notes it and runs without it."""
    package = tmp_path / "pupil_detectors"
    package.mkdir()
    (package / "__init__.py").write_text('raise ImportError("libopencv_core.so.4.5: cannot open shared object file")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "pupil_detectors", raising=False)
    reason = classical.unavailable_reason()
    assert reason is not None and "installed but does not import (ImportError: libopencv_core.so.4.5" in reason
    summary = robustness_summary({}, [], max_levels=1, batch_size=2)
    assert summary["classical"]["available"] is False and "does not import" in summary["classical"]["note"]


def test_classical_detector_on_real_frames_fresh_per_frame(real_frames_dir):
    pytest.importorskip("pupil_detectors")
    data = frame_set("fixtures", raw_frames_dataset(real_frames_dir).dataset, None)
    ious = [pupil_iou(classical.detect(image)[0], mask) for image, mask in zip(data.images, data.masks)]
    assert min(ious) > 0.95  # SPEC section 8: about 0.97 on the three labelled frames
    first = classical.detect(data.images[0])
    classical.detect(data.images[1])
    np.testing.assert_array_equal(classical.detect(data.images[0])[0], first[0])  # no prior carried over
    blank = np.full_like(data.images[0], 128)
    mask, center = classical.detect(blank)
    assert center is None and not mask.any()
