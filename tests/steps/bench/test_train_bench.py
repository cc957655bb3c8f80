"""The training benchmark compares like with like: the project's path and the plain loop start
from the same weights and compute the same loss on the same batch; only the loop differs."""

from __future__ import annotations

import math

import pytest
import torch

from steps.bench import format_table
from steps.bench.training_speed import BATCH_SIZE, ProjectPath, ReferencePath, measure, training_rows, training_settings
from steps.train.tasks import batch_inputs


@pytest.fixture(scope="module")
def rows():
    return training_rows(BATCH_SIZE)


def test_both_paths_start_equal_and_compute_the_same_loss(rows):
    device = torch.device("cpu")
    project = ProjectPath(training_settings("tiny_efficientvit_micro", device), rows, device)
    reference = ReferencePath(project, device)
    assert project.batch["image"].shape == (BATCH_SIZE, 1, 400, 640)
    ours, theirs = project.run.model.state_dict(), reference.model.state_dict()
    assert all(torch.equal(ours[name], theirs[name]) for name in ours)
    image, targets = batch_inputs(project.batch, device, False), project.run.task.targets(project.batch, device)
    assert torch.equal(image, reference.image)  # the reference trains on the same normalized frames
    with torch.no_grad():
        losses = [project.run.task.loss(project.run.loss_fn, model.eval()(image), targets)["loss"]
                  for model in (project.run.model, reference.model)]
    assert torch.equal(losses[0], losses[1]) and math.isfinite(float(losses[0]))
    before = {name: value.clone() for name, value in reference.model.state_dict().items()}
    reference.steps(1)
    project.steps(1)
    assert any(not torch.equal(before[n], reference.model.state_dict()[n]) for n in before)  # both trained
    assert any(not torch.equal(before[n], project.run.model.state_dict()[n]) for n in before)


@pytest.mark.slow
def test_quick_measure_reports_both_paths():
    (row,) = measure(quick=True)
    assert row.area == "train" and f"batch {BATCH_SIZE}" in row.metric and row.higher_is_better
    assert row.project > 0 and row.reference > 0 and math.isfinite(row.ratio)
    assert "plain fp32 loop" in format_table([row])
