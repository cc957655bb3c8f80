"""Shared test fixtures. Area-specific fixtures live in the conftest.py of each test folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# A real PostgreSQL server (fixtures `postgres_server`, `postgres_database`) for the `postgres` tests.
pytest_plugins = ["tests.postgres_server"]

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO.parent / "shared" / "fixtures" / "openeds-sample"

# Tests never wait minutes on a network that is not there.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
# validate reports the real frames when its settings name them, as `make pipeline` does.
if (FIXTURES / "images").is_dir():
    os.environ.setdefault("OPENEDS_FIXTURES_DIR", str(FIXTURES))


@pytest.fixture
def one_torch_thread():
    """Small tensors: one thread is faster, and two stall badly on a shared, oversubscribed CPU."""
    from steps.train.device import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def real_frames_dir() -> Path:
    """The five real OpenEDS frames from ../shared; skipped in a user's fresh clone without it."""
    if not (FIXTURES / "images").is_dir():
        pytest.skip(f"real OpenEDS sample frames not found at {FIXTURES} (only in the project checkout)")
    return FIXTURES


# The CI log names each test that needs a server (pass, skip or fail), not just a count of dots.
SUMMARISED_MARKERS = ("postgres", "docker")
_marked_outcomes: dict[str, list[str]] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or (report.when == "setup" and not report.passed):
        for marker in SUMMARISED_MARKERS:
            if marker in report.keywords:
                _marked_outcomes.setdefault(marker, []).append(f"{report.outcome.upper()} {report.nodeid}")


def pytest_terminal_summary(terminalreporter) -> None:
    for marker, lines in _marked_outcomes.items():
        terminalreporter.section(f"tests marked {marker}")
        for line in lines:
            terminalreporter.line(line)
