"""Fixtures for the raw-data tests: one tiny generated OpenEDS copy, made once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from steps.data.synthetic import generate_openeds

TINY_FRAMES = {"train": 3, "validation": 2, "test": 1}


@pytest.fixture(scope="session")
def tiny_openeds(tmp_path_factory) -> Path:
    """Generated Kaggle layout (`<root>/openEDS/openEDS/{split}/...`), all eyes open. Read only."""
    return generate_openeds(tmp_path_factory.mktemp("tiny-openeds"), TINY_FRAMES, seed=7, closed_fraction=0.0)
