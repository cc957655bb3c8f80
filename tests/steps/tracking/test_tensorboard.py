"""TensorBoard: scalars and images per epoch in output_dir/tensorboard, read back from the event file."""

from __future__ import annotations

import numpy as np
import pytest

from contracts.train_seg import TrainSegHyperparameters
from steps.tracking import open_tracker

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def test_event_file_holds_scalars_images_and_params(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    hp = TrainSegHyperparameters(tensorboard=True, lr=0.005)
    with open_tracker(hp, run_name="seg-tb", model_type="TinyEfficientViT-Micro", architecture="tiny_efficientvit_micro",
                      output_dir=tmp_path) as tracker:
        tracker.log_params(hp.model_dump(mode="json"))
        for epoch in (1, 2, 3):
            tracker.log_metrics({"train_loss": 1.0 / epoch, "valid_iou": 0.3 * epoch}, step=epoch)
            tracker.log_images({"prediction": np.full((40, 64, 3), 60 * epoch, np.uint8)}, step=epoch)
    events = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    assert [(e.step, round(e.value, 5)) for e in events.Scalars("valid_iou")] == [(1, 0.3), (2, 0.6), (3, 0.9)]
    assert [e.step for e in events.Scalars("train_loss")] == [1, 2, 3]
    images = events.Images("prediction")
    assert [(i.step, i.width, i.height) for i in images] == [(1, 64, 40), (2, 64, 40), (3, 64, 40)]
    params = events.Tensors("params/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| lr | 0.005 |" in params
