"""Fixtures of the training tests: tiny preprocessed splits, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.steps.train.tiny_data import write_tiny_splits


@pytest.fixture(scope="session")
def tiny_splits(tmp_path_factory) -> dict[str, Path]:
    """8 train rows and 4 validation rows (synthetic frames, real preprocessing)."""
    return write_tiny_splits(tmp_path_factory.mktemp("tiny_splits"), train_rows=8, valid_rows=4)
