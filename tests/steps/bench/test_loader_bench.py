"""The loader benchmark compares like with like: both paths deliver the same batches."""

from __future__ import annotations

import math

import datasets
import pytest
import torch

from steps.bench import format_table
from steps.bench.loader import PythonListRows, make_dataset, measure
from steps.data.loading import build_loaders, set_loader_epoch


@pytest.fixture(scope="module")
def bench_split(tmp_path_factory) -> datasets.Dataset:
    return datasets.load_from_disk(str(make_dataset(tmp_path_factory.mktemp("bench"), rows=6, unique=3)))


@pytest.mark.slow
def test_reference_path_delivers_the_same_rows_as_the_loader(bench_split):
    assert len(bench_split) == 6 and bench_split[0]["filename"] == bench_split[3]["filename"]
    reference = PythonListRows(bench_split, seed=0)
    reference.epoch = 4
    train, _ = build_loaders(bench_split, bench_split, task="segmentation", batch_size=3, num_workers=0,
                             augment=True, input_mode="preprocessed", seed=0, distributed=False, pin_memory=False)
    set_loader_epoch(train, 4)
    for batch in train:
        for k, index in enumerate(batch["index"].tolist()):
            expected = reference[index]
            assert batch["filename"][k] == expected["filename"]
            for key in ("image", "label", "spatial_weights", "dist_map", "ellipse"):
                assert torch.equal(batch[key][k], expected[key]), key


@pytest.mark.slow
def test_measure_reports_both_paths_in_one_run():
    rows = measure(rows=8, workers_options=(0,), unique=2)
    row, size, compact, derived = rows
    assert row.area == "loader" and row.project > 0 and row.reference > 0 and math.isfinite(row.ratio)
    assert "rows/s" in format_table(rows)
    # the compact row beside the spec row: 7x fewer bytes, both rates measured in this run
    assert size.metric.startswith("MB per stored training row") and not size.higher_is_better
    assert size.project == pytest.approx(0.512, rel=0.05) and size.reference == pytest.approx(3.584, rel=0.05)
    assert compact.project > 0 and derived.project > 0 and compact.reference == derived.reference
