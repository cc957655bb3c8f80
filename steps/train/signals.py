"""SIGTERM during training: finish the current optimizer step, save a resume point, leave cleanly.

SageMaker (StopTrainingJob, a managed-spot interruption), Kubernetes (pod eviction, KFP cancel) and
`docker stop` send SIGTERM and, after a grace period (SageMaker: 120 s; Kubernetes: 30 s by
default), SIGKILL. The handler only sets a flag: the loop checks it after each optimizer step, so
the stop takes at most one step (plus the rest of an evaluation, when the signal lands in one) and
one checkpoint write; the saved point is always mid-epoch and resumes exactly. The step then exits
with code 143 (128 + SIGTERM, what an orchestrator expects of a process ended by SIGTERM) and a
failure file saying where to resume; its outputs are not committed, since training did not finish.
Running the step again resumes from the saved point.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from types import FrameType
from typing import Any

from steps.errors import StepError
from steps.sigterm import sigterm_handler

log = logging.getLogger(__name__)


class TrainingInterrupted(StepError):
    """Training stopped by SIGTERM after saving a resume point."""

    exit_code = 128 + signal.SIGTERM


class StopRequest:
    """Context manager: while active, SIGTERM sets `requested` instead of killing the process."""

    def __init__(self) -> None:
        self.requested = False
        self._installed: contextlib.AbstractContextManager[None] = sigterm_handler(self._handle)

    def __enter__(self) -> StopRequest:
        self._installed.__enter__()
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.requested:
            log.warning("SIGTERM received: finishing the current step, then saving a resume point")
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        self._installed.__exit__(*exc)
