"""The weight average: an EMA with a warmed-up decay, of parameters and BatchNorm statistics."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from steps.train.averaging import WeightAverage, build_weight_average


def test_the_average_is_the_warmed_up_ema_of_every_update():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3))
    average = WeightAverage(model, decay=0.9)
    expected: dict[str, np.ndarray] = {}
    for update in range(25):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter))
        model(torch.randn(2, 1, 6, 6))  # training mode: moves BatchNorm's running statistics
        average.update_parameters(model)
        current = {k: v.double().numpy().copy() for k, v in model.state_dict().items() if v.is_floating_point()}
        decay = min(0.9, update / (9 + update))  # (1 + n) / (10 + n) with n = update - 1
        expected = current if update == 0 else {k: decay * expected[k] + (1 - decay) * current[k] for k in current}
    averaged = average.module.state_dict()
    for name, value in expected.items():
        np.testing.assert_allclose(averaged[name].double().numpy(), value, rtol=1e-5, atol=1e-5, err_msg=name)
    assert int(averaged["1.num_batches_tracked"]) == 25 and int(average.n_averaged) == 25


def test_a_resumed_average_goes_on_as_the_uninterrupted_one():
    torch.manual_seed(1)
    model = nn.Linear(4, 2)
    first = WeightAverage(model, decay=0.99)
    for _ in range(3):
        with torch.no_grad():
            model.weight.add_(1.0)
        first.update_parameters(model)
    resumed = WeightAverage(copy.deepcopy(model), decay=0.99)
    resumed.load_state_dict(first.state_dict())
    for average in (first, resumed):
        average.update_parameters(model)
    assert resumed.updates == first.updates == 4
    assert torch.equal(resumed.module.weight, first.module.weight)


def test_decay_zero_is_off_and_out_of_range_is_refused():
    assert build_weight_average(nn.Linear(2, 2), 0.0) is None
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(nn.Linear(2, 2), 1.0)


def test_a_weight_average_that_does_not_fit_the_model_is_refused_naming_the_checkpoint(caplog):
    from types import SimpleNamespace

    from steps.errors import StepError
    from steps.train.fit import resume_average

    run = SimpleNamespace(average=WeightAverage(nn.Linear(2, 2), decay=0.9))
    with pytest.raises(StepError, match=r"checkpoint runs/c/x\.pt: its weight average does not fit the model"):
        resume_average(run, {"weight_average": {"module.weight": torch.zeros(3)}, "_path": "runs/c/x.pt"})
    resume_average(run, {"_path": "old.pt"})  # an older checkpoint without one: the average restarts
    assert "restarts" in caplog.text
