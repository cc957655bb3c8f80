"""Wall time of 8 tune trials with one worker and with two workers on one PostgreSQL study, in the
same run on this machine (not collected by pytest: run it by hand).

    python -m tests.bench_tune_workers [--trials 8] [--epochs 2]

Both sides run the same trials (no pruning, so every trial trains every epoch): one process with
n_trials=8, then two processes started together with n_trials=4 each. Wall time counts from the
first process start to the last exit, process start-up included (about 10 s of imports each).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from tests.postgres_server import PostgresServer, find_bindir, start_server, stop_server
from tests.steps.train.tiny_data import write_tiny_splits
from tests.steps.tune_workers import load_study, start_worker

SPACE = {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}


def run_workers(server: PostgresServer, folder: Path, splits: dict[str, Path], trials: list[int],
                epochs: int) -> dict:
    """`len(trials)` workers started together on a new database; their wall time and trial times."""
    database = server.create_database(f"bench_{folder.name}")
    env = {"OPTUNA_STORAGE": server.url(database), "PGPASSWORD": server.password}
    started = time.perf_counter()
    workers = [start_worker(folder / f"worker{i}", splits, env, n_trials=n, epochs=epochs, pruner="none",
                            search_space=SPACE, enqueue_trials=[], sampler_seed=i)
               for i, n in enumerate(trials)]
    codes = [worker.finish() for worker in workers]
    wall = time.perf_counter() - started
    if any(codes):
        failed = next(w for w, code in zip(workers, codes) if code)
        raise SystemExit(f"a worker failed ({codes}):\n{failed.output()[-3000:]}")
    study = load_study(server, database)
    seconds = [t.user_attrs["seconds"] for t in study.trials]
    return {"workers": len(trials), "trials": len(study.trials), "wall_s": round(wall, 1),
            "trial_s_mean": round(sum(seconds) / len(seconds), 2),
            "trials_per_worker": [len(w.trial_numbers(study)) for w in workers]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("no PostgreSQL binaries (apt-get install postgresql)")
    with tempfile.TemporaryDirectory(prefix="bench-tune-") as tmp:
        folder = Path(tmp)
        splits = write_tiny_splits(folder / "splits", train_rows=4, valid_rows=2)
        server = start_server(bindir)
        try:
            one = run_workers(server, folder / "one", splits, [args.trials], args.epochs)
            half = args.trials // 2
            two = run_workers(server, folder / "two", splits, [half, args.trials - half], args.epochs)
        finally:
            stop_server(server)
    result = {"cpus": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2), "one_worker": one,
              "two_workers": two, "speedup": round(one["wall_s"] / two["wall_s"], 2)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
