"""`python -m steps.models`: the parameter table of every registered model."""

from __future__ import annotations

import json

import pytest

from steps.models import MODEL_SPECS, count_parameters, create_model
from steps.models.__main__ import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_table_lists_every_model_with_its_count_and_limit(capsys):
    assert main([]) == 0
    table = capsys.readouterr().out
    for name, spec in MODEL_SPECS.items():
        line = next(line for line in table.splitlines() if line.startswith(name + " "))
        count = count_parameters(create_model(name))
        assert spec.model_type in line and f" {count} " in line and " yes " in line


def test_json_rows_carry_limits_and_output_shapes(capsys):
    assert main(["--json"]) == 0
    rows = {row["model"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["tiny_efficientvit"]["limit"] == 60_000 and rows["tiny_efficientvit_micro"]["limit"] == 10_000
    assert rows["tiny_efficientvit"]["output"] == [1, 2, 400, 640]
    assert rows["ellipse_regression"]["output"] == [1, 6]
    assert all(row["within_limit"] for row in rows.values())
