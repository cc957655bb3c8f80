"""The training contract's bounds."""

from __future__ import annotations

import pytest

from contracts.training import TrainingHyperparameters


def test_camera_rotation_goes_up_to_180_degrees_for_any_camera_roll():
    assert TrainingHyperparameters(camera_rotation_deg=180).camera_rotation_deg == 180
    with pytest.raises(ValueError, match="camera_rotation_deg"):
        TrainingHyperparameters(camera_rotation_deg=180.1)
