"""Shard scheduling of preprocess: spawned workers and the parent share the shards, each once."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from steps.data.openeds import find_openeds
from steps.data.precompute import FEATURES, plan_shards, run_shards
from steps.data.synthetic import generate_openeds
from steps.data.transforms import PreprocessParams


def shard_bytes(results) -> dict[int, bytes]:
    return {result.index: Path(result.path).read_bytes() for result in results}


def test_workers_and_the_parent_write_every_shard_once_as_one_process_does(tmp_path):
    root = generate_openeds(tmp_path / "raw", {"train": 8}, seed=5, closed_fraction=0.0)
    frames = list(find_openeds(root).splits["train"])

    def plan(folder: str):  # 8 frames over 2 workers: 8 shards of one frame, more than the pool holds
        return plan_shards({"train": frames}, {"train": tmp_path / folder}, PreprocessParams(), "opencv", 2)

    assert len(plan("shared")) == len(frames)
    shared = list(run_shards(plan("shared"), workers=2))
    alone = list(run_shards(plan("alone"), workers=1))
    assert sorted(result.index for result in shared) == list(range(len(frames)))
    assert sum(result.rows for result in shared) == len(frames)
    assert shard_bytes(shared) == shard_bytes(alone)  # the same rows, whichever process wrote them
    table = pa.ipc.open_stream(Path(shared[0].path).read_bytes()).read_all()
    assert table.schema.names == list(FEATURES)
