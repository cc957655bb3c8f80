"""Compare MLflow runs: a leaderboard by validation mIoU, overlaid curves, config differences.

    python -m steps.tracking.compare leaderboard --experiment openeds [--metric valid_iou] [--json]
    python -m steps.tracking.compare curves --runs RUN_ID RUN_ID --metric valid_iou --out curves.png
    python -m steps.tracking.compare diff RUN_A RUN_B [--json]

The tracking server comes from MLFLOW_TRACKING_URI. A run's score is the best value of the metric
over its epochs (its metric history), not the last epoch's.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from steps.errors import StepError
from steps.tracking.mlflow_backend import check_reachable, tracking_uri

log = logging.getLogger(__name__)

DEFAULT_METRIC = "valid_iou"


@dataclass
class LeaderboardRow:
    rank: int
    run_id: str
    run_name: str
    model_type: str
    architecture: str
    score: float           # best value of the metric over the run's epochs
    best_step: int | None  # the epoch it was reached
    epochs: int
    status: str


def _client() -> Any:
    import mlflow

    uri = tracking_uri()
    if uri is None:
        raise StepError("MLFLOW_TRACKING_URI: not set\nPoint it at the tracking server (http://host:5000) "
                        "or store (sqlite:///path/mlflow.db) whose runs to compare.")
    check_reachable(uri)
    return mlflow.MlflowClient(tracking_uri=uri)


def _experiment_id(client: Any, experiment: str) -> str:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = ", ".join(e.name for e in client.search_experiments(max_results=50))
        raise StepError(f"--experiment: no MLflow experiment named '{experiment}'\nExperiments: {names or 'none'}")
    return found.experiment_id


def _best(client: Any, run_id: str, metric: str, higher_is_better: bool) -> tuple[float, int | None, int]:
    history = [m for m in client.get_metric_history(run_id, metric) if math.isfinite(m.value)]
    if not history:
        return math.nan, None, 0
    best = (max if higher_is_better else min)(history, key=lambda m: m.value)
    return best.value, best.step, len({m.step for m in history})


def leaderboard(experiment: str, metric: str = DEFAULT_METRIC, *, higher_is_better: bool = True,
                max_runs: int = 200) -> list[LeaderboardRow]:
    """The experiment's runs ranked by their best `metric` (runs without it come last)."""
    client = _client()
    runs = client.search_runs([_experiment_id(client, experiment)], max_results=max_runs)
    rows = []
    for run in runs:
        score, step, epochs = _best(client, run.info.run_id, metric, higher_is_better)
        tags = run.data.tags
        rows.append(LeaderboardRow(0, run.info.run_id, run.info.run_name or "", tags.get("model_type", ""),
                                   tags.get("architecture", ""), score, step, epochs, run.info.status))
    rows.sort(key=lambda r: (math.isnan(r.score), -r.score if higher_is_better else r.score))
    for rank, row in enumerate(rows, start=1):
        row.rank = rank
    return rows


def format_leaderboard(rows: list[LeaderboardRow], metric: str) -> str:
    header = f"{'#':>3} {'run id':32} {'run name':28} {'model_type':24} {metric:>10} {'epoch':>5} {'epochs':>6}  status"
    lines = [header, "-" * len(header)]
    for r in rows:
        score = "-" if math.isnan(r.score) else f"{r.score:.4f}"
        lines.append(f"{r.rank:>3} {r.run_id:32} {r.run_name[:28]:28} {r.model_type[:24]:24} {score:>10} "
                     f"{'-' if r.best_step is None else r.best_step:>5} {r.epochs:>6}  {r.status}")
    return "\n".join(lines)


def plot_curves(run_ids: Sequence[str], metric: str, out: Path) -> Path:
    """One PNG with the `metric` of every run against the epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    client = _client()
    figure, axes = plt.subplots(figsize=(8, 5))
    for run_id in run_ids:
        run = client.get_run(run_id)
        history = sorted(client.get_metric_history(run_id, metric), key=lambda m: m.step)
        if not history:
            log.warning("run %s has no metric '%s'", run_id, metric)
            continue
        axes.plot([m.step for m in history], [m.value for m in history], marker="o", markersize=3,
                  label=f"{run.info.run_name or run_id[:8]} ({run_id[:8]})")
    axes.set(xlabel="epoch", ylabel=metric, title=f"{metric} per epoch")
    axes.grid(alpha=0.3)
    if axes.lines:
        axes.legend(fontsize=8)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return out


def diff_runs(run_a: str, run_b: str) -> list[dict[str, str | None]]:
    """Params whose values differ between the two runs (None: the run has no such param)."""
    client = _client()
    params_a, params_b = client.get_run(run_a).data.params, client.get_run(run_b).data.params
    return [{"param": key, "a": params_a.get(key), "b": params_b.get(key)}
            for key in sorted(params_a.keys() | params_b.keys()) if params_a.get(key) != params_b.get(key)]


def format_diff(rows: list[dict[str, str | None]], run_a: str, run_b: str) -> str:
    if not rows:
        return f"runs {run_a} and {run_b} have the same params"
    width = max(len(r["param"] or "") for r in rows)
    lines = [f"{'param':{width}}  {run_a[:12]:>24}  {run_b[:12]:>24}"]
    lines += [f"{r['param']:{width}}  {str(r['a']) if r['a'] is not None else '(absent)':>24}  "
              f"{str(r['b']) if r['b'] is not None else '(absent)':>24}" for r in rows]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m steps.tracking.compare", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    board = commands.add_parser("leaderboard", help="runs of an experiment ranked by validation mIoU")
    board.add_argument("--experiment", required=True)
    board.add_argument("--metric", default=DEFAULT_METRIC)
    board.add_argument("--lower-is-better", action="store_true", help="rank ascending (losses, errors)")
    board.add_argument("--json", action="store_true")
    curves = commands.add_parser("curves", help="overlay a metric of several runs in one PNG")
    curves.add_argument("--runs", nargs="+", required=True)
    curves.add_argument("--metric", default=DEFAULT_METRIC)
    curves.add_argument("--out", type=Path, default=Path("curves.png"))
    diff = commands.add_parser("diff", help="params that differ between two runs")
    diff.add_argument("run_a")
    diff.add_argument("run_b")
    diff.add_argument("--json", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from mlflow.exceptions import MlflowException

    args = _parser().parse_args(argv)
    try:
        if args.command == "leaderboard":
            rows = leaderboard(args.experiment, args.metric, higher_is_better=not args.lower_is_better)
            records = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(r).items()}
                       for r in rows]
            print(json.dumps(records, indent=2) if args.json else format_leaderboard(rows, args.metric))
        elif args.command == "curves":
            print(plot_curves(args.runs, args.metric, args.out))
        else:
            diff = diff_runs(args.run_a, args.run_b)
            print(json.dumps(diff, indent=2) if args.json else format_diff(diff, args.run_a, args.run_b))
    except (StepError, MlflowException) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
