"""Progress inside a training epoch: a log line every N batches with speed, data wait and ETA.

An epoch on the full dataset takes minutes to hours; without this the log says nothing until it
ends. Each line splits the time per batch into waiting for the loader (`data`) and everything else
(`compute`: forward, backward, optimizer step; on a GPU the host's share of it, as kernels run
asynchronously), so a starved loader shows up at once.

    epoch 3/10  batch 50/70  11.8 img/s  data 0.004 s + compute 0.165 s per batch  ETA 3.4 s
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

log = logging.getLogger("steps.train.fit")


@dataclass
class EpochMeter:
    """Times one epoch's batches; `loaded()` when a batch arrives, `done(images)` after its step."""

    epoch: int
    epochs: int
    total_batches: int
    every: int                 # log every this many batches (0: never)
    enabled: bool = True       # rank 0 only
    data_seconds: float = 0.0
    compute_seconds: float = 0.0
    batches: int = 0
    images: int = 0
    _mark: float = field(default_factory=time.perf_counter)

    def loaded(self) -> None:
        now = time.perf_counter()
        self.data_seconds += now - self._mark
        self._mark = now

    def done(self, images: int, batch_number: int) -> None:
        """After batch `batch_number` (1-based, counting batches a resumed epoch had done)."""
        now = time.perf_counter()
        self.compute_seconds += now - self._mark
        self._mark = now
        self.batches += 1
        self.images += images
        if self.enabled and self.every and batch_number % self.every == 0 and batch_number < self.total_batches:
            log.info("%s", self.line(batch_number))

    def line(self, batch_number: int) -> str:
        elapsed = self.data_seconds + self.compute_seconds
        per_batch = elapsed / max(self.batches, 1)
        eta = per_batch * (self.total_batches - batch_number)
        return (f"epoch {self.epoch}/{self.epochs}  batch {batch_number}/{self.total_batches}  "
                f"{self.images / max(elapsed, 1e-9):.1f} img/s  data {self.data_seconds / max(self.batches, 1):.3f} s "
                f"+ compute {self.compute_seconds / max(self.batches, 1):.3f} s per batch  ETA {format_seconds(eta)}")


def format_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"
