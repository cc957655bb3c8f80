"""Training-data provenance for the model card, read from the train split's manifest."""

from __future__ import annotations

import json

from steps.outputs import StagedOutput, read_manifest
from steps.train.provenance import add_training_data, training_data


def preprocess_manifest(folder, source):
    """A committed output with the manifest fields preprocess writes (steps.preprocess)."""
    staged = StagedOutput("train", folder)
    staged.open()
    (staged.staging / "data.arrow").write_bytes(b"rows")
    staged.commit({"rows": 140, "preprocessing": {"gamma": 0.7, "clahe_clip_limit": 2.0, "clahe_tile_grid": 4},
                   "provenance": {"layout_description": "Kaggle copy (openEDS/openEDS): train 150",
                                  "raw_source": {"source": source, "dataset": "soumicksarker/openeds-dataset"}}})
    return folder


def test_generated_and_real_training_data_are_told_apart(tmp_path):
    generated = training_data(preprocess_manifest(tmp_path / "gen", "synthetic"))
    assert generated["generated"] is True and generated["dataset"] is None and generated["rows"] == 140
    assert generated["preprocessing"]["gamma"] == 0.7
    real = training_data(preprocess_manifest(tmp_path / "real", "kaggle"))
    assert real == {**generated, "source": "kaggle", "generated": False, "dataset": "soumicksarker/openeds-dataset"}
    assert training_data(tmp_path / "no-manifest") == {} and training_data(None, "Conner/sddec25-01")["source"] == "hf"
    assert read_manifest(tmp_path / "gen")["rows"] == 140


def test_the_card_gets_the_facts_and_keeps_the_rest(tmp_path):
    card = tmp_path / "model_card.json"
    card.write_text(json.dumps({"checkpoint": "best.pt", "epoch": 3}))
    assert add_training_data(card, {"source": "synthetic"}) == {"checkpoint": "best.pt", "epoch": 3,
                                                                 "training_data": {"source": "synthetic"}}
    assert json.loads(card.read_text())["training_data"] == {"source": "synthetic"}
