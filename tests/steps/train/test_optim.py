"""Optimizers and schedules build from the hyperparameters and move the learning rate as named."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from contracts.train_seg import TrainSegHyperparameters
from steps.train.optim import MIN_LR_RATIO, build_optimizer, build_scheduler, current_lr, optimizer_steps_per_epoch

STEPS_PER_EPOCH = 5


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))


def lr_trace(**settings) -> list[float]:
    """The lr used at every optimizer step of a whole run (epoch schedules step after each epoch)."""
    hp = TrainSegHyperparameters(**settings)
    model = small_model()
    optimizer = build_optimizer(model, hp)
    schedule = build_scheduler(optimizer, hp, STEPS_PER_EPOCH)
    trace = []
    for _epoch in range(hp.epochs):
        for _ in range(STEPS_PER_EPOCH):
            trace.append(current_lr(optimizer))
            optimizer.step()
            schedule.after_optimizer_step()
        schedule.after_epoch(0.5)  # a flat validation metric
    return trace


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd", "rmsprop"])
def test_optimizers_build_step_and_skip_decay_on_biases_and_norms(name):
    hp = TrainSegHyperparameters(optimizer=name, lr=0.01, weight_decay=0.1)
    model = small_model()
    optimizer = build_optimizer(model, hp)
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decayed["params"]) and all(p.ndim == 1 for p in plain["params"])
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.randn(2, 1, 8, 8)).sum().backward()
    optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_cosine_warmup_rises_to_the_peak_then_decays_to_the_floor():
    trace = lr_trace(scheduler="cosine_warmup", lr=0.01, epochs=4, warmup_epochs=1)
    warmup = trace[:STEPS_PER_EPOCH]
    assert warmup == sorted(warmup) and warmup[0] < 0.01 * 0.5
    assert max(trace) == pytest.approx(0.01)
    assert trace.index(max(trace)) == STEPS_PER_EPOCH
    decay = trace[STEPS_PER_EPOCH:]
    assert decay == sorted(decay, reverse=True)
    assert trace[-1] == pytest.approx(0.01 * MIN_LR_RATIO, rel=0.2)


def test_linear_warmup_decays_linearly():
    trace = lr_trace(scheduler="linear_warmup", lr=0.01, epochs=3, warmup_epochs=1)
    decay = trace[STEPS_PER_EPOCH:]
    steps = [a - b for a, b in zip(decay, decay[1:])]
    assert steps == pytest.approx([steps[0]] * len(steps))


def test_cosine_reaches_the_floor_over_the_whole_run():
    trace = lr_trace(scheduler="cosine", lr=0.01, epochs=3)
    assert trace[0] == pytest.approx(0.01) and trace == sorted(trace, reverse=True)
    assert trace[-1] < 0.01 * 0.05


def test_onecycle_runs_exactly_the_planned_steps():
    trace = lr_trace(scheduler="onecycle", lr=0.01, epochs=3, warmup_epochs=1)
    assert max(trace) == pytest.approx(0.01, rel=1e-3) and trace[0] < 0.001 and trace[-1] < 0.001


def test_step_schedule_decays_per_epoch():
    trace = lr_trace(scheduler="step", lr=0.01, epochs=4, step_size=2, step_gamma=0.5)
    per_epoch = trace[::STEPS_PER_EPOCH]
    assert per_epoch == pytest.approx([0.01, 0.01, 0.005, 0.005])


def test_plateau_decays_when_the_metric_stops_improving():
    trace = lr_trace(scheduler="plateau", lr=0.01, epochs=4, plateau_patience=1, step_gamma=0.1)
    per_epoch = trace[::STEPS_PER_EPOCH]
    # metric flat at 0.5: epoch 1 sets the best, epoch 2 is bad epoch 1, epoch 3 bad epoch 2 > patience
    assert per_epoch == pytest.approx([0.01, 0.01, 0.01, 0.001])


def test_none_keeps_the_rate():
    assert set(lr_trace(scheduler="none", lr=0.02, epochs=2)) == {0.02}


def test_schedule_state_round_trip_continues_identically():
    hp = TrainSegHyperparameters(scheduler="cosine_warmup", lr=0.01, epochs=3, warmup_epochs=1)
    model = small_model()
    optimizer = build_optimizer(model, hp)
    schedule = build_scheduler(optimizer, hp, STEPS_PER_EPOCH)
    for _ in range(7):
        optimizer.step()
        schedule.after_optimizer_step()
    other_optimizer = build_optimizer(small_model(), hp)
    other = build_scheduler(other_optimizer, hp, STEPS_PER_EPOCH)
    other_optimizer.load_state_dict(optimizer.state_dict())
    other.load_state_dict(schedule.state_dict())
    for _ in range(5):
        for opt, sched in ((optimizer, schedule), (other_optimizer, other)):
            opt.step()
            sched.after_optimizer_step()
        assert current_lr(other_optimizer) == current_lr(optimizer)


def test_steps_per_epoch_counts_the_partial_accumulation_window():
    assert optimizer_steps_per_epoch(10, 1) == 10
    assert optimizer_steps_per_epoch(10, 4) == 3
    assert optimizer_steps_per_epoch(3, 8) == 1


@pytest.mark.parametrize("name", ["cosine", "cosine_warmup", "linear_warmup"])
@pytest.mark.parametrize("steps_per_epoch", [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH])  # the same or another batch size
def test_a_resumed_schedule_continues_as_if_planned_for_this_run(name, steps_per_epoch):
    """A 2-epoch run resumed for 4 epochs continues as a 4-epoch run would, down to the floor. A
    restored cosine state used to keep its old length and climb back to the peak after it, and with
    another batch size every schedule counted steps at the old steps per epoch."""
    short = TrainSegHyperparameters(scheduler=name, lr=0.01, epochs=2, warmup_epochs=1)
    optimizer = build_optimizer(small_model(), short)
    schedule = build_scheduler(optimizer, short, STEPS_PER_EPOCH)
    for _ in range(2 * STEPS_PER_EPOCH):
        optimizer.step()
        schedule.after_optimizer_step()
    longer = short.model_copy(update={"epochs": 4})
    resumed_optimizer = build_optimizer(small_model(), longer)
    resumed = build_scheduler(resumed_optimizer, longer, steps_per_epoch)
    resumed_optimizer.load_state_dict(optimizer.state_dict())
    resumed.load_state_dict(schedule.state_dict())
    resumed.resume_at(2 * steps_per_epoch)
    trace = []
    for _ in range(2 * steps_per_epoch):
        trace.append(current_lr(resumed_optimizer))
        resumed_optimizer.step()
        resumed.after_optimizer_step()
    planned = TrainSegHyperparameters(scheduler=name, lr=0.01, epochs=4, warmup_epochs=1)
    planned_optimizer = build_optimizer(small_model(), planned)
    planned_schedule = build_scheduler(planned_optimizer, planned, steps_per_epoch)
    expected = []
    for _ in range(4 * steps_per_epoch):
        expected.append(current_lr(planned_optimizer))
        planned_optimizer.step()
        planned_schedule.after_optimizer_step()
    assert trace == pytest.approx(expected[2 * steps_per_epoch:], rel=1e-6)
    assert trace == sorted(trace, reverse=True) and trace[-1] < 0.01 * 0.05
