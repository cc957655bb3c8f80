"""The model card's training-data lines say what the training frames were, and what camera they came from."""

from __future__ import annotations

from steps.report.model_card import training_lines


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
