"""The errors the library raises for people to read; a leaf module, so the library (data, models,
train, tracking, export, report) needs nothing from the step runtime, which maps these errors to
failure files and exit codes."""

from __future__ import annotations

from typing import Any


class StepError(RuntimeError):
    """A failure with a message meant for people; its first line names the field, file or gate."""


class FailAfterCommit(StepError):
    """A failure whose outputs are complete and worth keeping (a validation report with a missed
    gate): the runtime commits them, with `failure` in their manifest, then fails the step."""

    def __init__(self, message: str, summary: dict[str, Any] | None = None):
        super().__init__(message)
        self.summary = summary or {}
