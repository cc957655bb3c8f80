"""The order of training batches: epoch e's batches depend only on (seed, e).

Shared by the loader (steps.data.loading) and the device-resident split (steps.data.resident), so
both visit the same rows in the same order; numpy and torch only (no datasets, no pyarrow).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler


class EpochBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of (epoch, position) keys: the order of epoch e depends only on (seed, e).

    Training shuffles (torch's DistributedSampler when distributed: padded so every rank runs the
    same number of steps); validation keeps the stored order and, when distributed, gives each rank
    every world-th row without padding, so summed confusion matrices count each row once.
    """

    def __init__(self, size: int, batch_size: int, *, shuffle: bool, seed: int, drop_last: bool,
                 distributed: bool):
        self.size, self.batch_size, self.shuffle, self.seed = size, batch_size, shuffle, seed
        self.drop_last, self.epoch, self.start_batch = drop_last, 0, 0
        # DistributedSampler needs only len() of its dataset: a range of positions is enough.
        self.sampler: DistributedSampler[int] | None = (
            DistributedSampler(cast("Dataset[int]", range(size)), shuffle=shuffle, seed=seed)
            if distributed and shuffle else None)
        self.rank, self.world = ((torch.distributed.get_rank(), torch.distributed.get_world_size())
                                 if distributed else (0, 1))

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)

    def positions(self) -> list[int]:
        if self.sampler is not None:
            return list(self.sampler)
        if self.shuffle:
            order = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch])).permutation(self.size)
        else:
            order = np.arange(self.size)
        return order[self.rank::self.world].tolist()

    def _batches(self) -> list[list[int]]:
        positions = self.positions()
        batches = [positions[i:i + self.batch_size] for i in range(0, len(positions), self.batch_size)]
        if self.drop_last and len(batches) > 1 and len(batches[-1]) < self.batch_size:
            batches.pop()
        return batches[self.start_batch:]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch in self._batches():
            yield [(self.epoch, position) for position in batch]

    def __len__(self) -> int:
        return len(self._batches())
