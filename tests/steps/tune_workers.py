"""Tune worker processes on a shared study, for tests/steps/test_tune_workers.py and
tests/bench_tune_workers.py: real `python -m steps tune` processes, each with its own root and
log file, and the study read back from the database."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from steps.train import search, study_storage
from tests.reliability.conftest import REPO, StepRun, step_environment

GOOD_LR, FROZEN_LR = 1e-2, 1e-9
MODEL = "tiny_efficientvit_micro"
# Tiny, deterministic trials (seconds each); the search is lr in {GOOD_LR, FROZEN_LR}.
SETTINGS = {"model": MODEL, "batch_size": 2, "device": "cpu", "cpu_threads": 1, "deterministic": True, "seed": 3,
            "scheduler": "none", "augment": False, "epochs": 2, "sampler": "random", "study_name": "shared",
            "search_space": {"lr": {"type": "categorical", "choices": [GOOD_LR, FROZEN_LR]}},
            "enqueue_trials": [{"lr": GOOD_LR}], "pruner": "median", "pruner_startup_trials": 1,
            "pruner_warmup_epochs": 0}
WAIT_S = 300


@dataclass
class Worker:
    root: Path
    process: subprocess.Popen
    log: Path

    def finish(self) -> int:
        return self.process.wait(timeout=WAIT_S)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def study_json(self) -> dict:
        return json.loads((self.root / "output" / "data" / "study" / search.STUDY_JSON).read_text())

    def trial_numbers(self, study: optuna.Study) -> set[int]:
        """The trials this process ran, by the worker (host:pid) each trial recorded."""
        return {t.number for t in study.trials if t.user_attrs.get(search.WORKER, "").endswith(f":{self.process.pid}")}


def start_worker(root: Path, splits: Mapping[str, Path], env: Mapping[str, str | None], **settings: Any) -> Worker:
    """`python -m steps tune` on `root` with SETTINGS overridden by `settings`, `env` added (None: removed)."""
    run = StepRun("tune", root, channels={"train": splits["train"], "validation": splits["validation"]},
                  hyperparameters={**SETTINGS, **settings}, env=dict(env))
    run.prepare()
    log = root.parent / f"{root.name}.log"
    with log.open("wb") as handle:  # a file, not a pipe: nobody reads while the test polls
        process = subprocess.Popen([sys.executable, "-m", "steps", *run.argv()], cwd=REPO, stdout=handle,
                                   stderr=subprocess.STDOUT, env=step_environment(run.env))
    return Worker(root, process, log)


def wait_until(condition: Callable[[], bool], workers: list[Worker], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        for worker in workers:
            assert worker.process.poll() is None, f"{worker.root.name} exited before {what}:\n{worker.output()[-3000:]}"
        assert time.monotonic() < deadline, f"not within {WAIT_S} s: {what}"
        time.sleep(0.2)


def load_study(postgres_server: Any, database: str) -> optuna.Study:
    """The study as the database holds it (read with the password in the URL: this is no step)."""
    url = study_storage.with_driver(postgres_server.url(database, with_password=True))
    return optuna.load_study(study_name=SETTINGS["study_name"], storage=optuna.storages.RDBStorage(url))
