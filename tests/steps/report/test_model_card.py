"""The model card's training-data lines say what the training frames were, and what camera they came from."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from steps.report.model_card import how_to_run, robustness_line, training_lines


def card_model(training_data: dict) -> dict:
    return {"training_data": training_data, "checkpoint_metrics": {}}


def test_frames_of_another_camera_are_named_with_their_sizes_and_policy():
    camera = {"layout_description": "2019 OpenEDS challenge release (Semantic_Segmentation_Dataset): train 3",
              "frame_sizes": {"400x640": 3}, "frame_policy": "crop"}
    lines = training_lines(card_model({"source": "local", "dataset": "mine", "rows": 3, "camera_frames": camera}))
    assert lines[0] == "- Training data: mine (local); 3 training rows."
    assert lines[1] == ("- Camera frames: 2019 OpenEDS challenge release (Semantic_Segmentation_Dataset): train 3 "
                        "(3 of 400x640), mapped onto 640x400 by frame_policy crop; give `predict --geometry` the "
                        "same policy.")


def test_frames_already_640x400_add_no_camera_line():
    lines = training_lines(card_model({"source": "synthetic", "generated": True, "rows": 5, "camera_frames": None}))
    assert len(lines) == 1 and "**generated frames**" in lines[0] and "5 training rows" in lines[0]


def test_the_card_gives_the_robustness_suite_results_beside_the_classical_detector():
    figures = {"mean_pupil_iou": 0.91234, "worst_kind": "noise", "worst_kind_pupil_iou": 0.88}
    robustness = {"kinds": {"noise": [], "blur": []}, "sets": {"fixtures": {"predictors": {
        "seg.onnx": figures, "seg.onnx + edge refinement": {**figures, "mean_pupil_iou": 0.94},
        "classical": {**figures, "mean_pupil_iou": 0.567}}}}}
    assert robustness_line(robustness, "seg.onnx") == (
        "- Robustness suite (pupil IoU under noise, blur): real OpenEDS sample frames: mean 0.912, worst kind noise "
        "0.880 (edge-refined: mean 0.940); classical detector mean 0.567.")
    assert robustness_line(None, "seg.onnx") == "- Robustness suite: not run (validate `--no-robustness`)."
    assert "segmentation models" in robustness_line(robustness, "ellipse.onnx")


def test_a_capped_training_says_the_rows_it_used_of_the_split():
    lines = training_lines(card_model({"source": "local", "dataset": "d", "rows": 40, "rows_in_split": 568}))
    assert lines[0] == "- Training data: d (local); 40 training rows (of 568 in the split)."


@pytest.mark.parametrize("input_mode", ["preprocessed", "raw"])
def test_the_cards_standalone_recipe_runs_where_the_project_is_absent(tmp_path, input_mode):
    """The card's onnxruntime + OpenCV + NumPy recipe, run with `steps` and `contracts` unimportable,
    gives the logits the project's own input path gives."""
    import cv2
    import onnxruntime as ort

    from steps.inference.model_input import ModelInput, prepare_frame
    from tests.steps.inference.dark_model import dark_pupil_onnx, eye_frame

    dark_pupil_onnx(tmp_path / "seg.onnx", input_mode=input_mode)
    frame = eye_frame(640, 400, (300.0, 210.0, 40.0, 32.0, 15.0))
    cv2.imwrite(str(tmp_path / "frame.png"), frame)
    card = "\n".join(how_to_run(["seg.onnx"]))
    recipe = card.split("Without it")[1].split("```python\n")[1].split("```")[0]
    (tmp_path / "recipe.py").write_text(recipe + '\nnp.save("logits.npy", logits)\n')
    blocked = "import sys; sys.modules['steps'] = sys.modules['contracts'] = None; exec(open('recipe.py').read())"
    done = subprocess.run([sys.executable, "-I", "-c", blocked], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    session = ort.InferenceSession(str(tmp_path / "seg.onnx"))
    batch, _ = prepare_frame(frame, ModelInput.from_metadata(session.get_modelmeta().custom_metadata_map), "pad")
    (expected,) = session.run(None, {"image": batch})
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), expected, atol=1e-5)
