"""The pipeline as data: its tasks and artifact edges, the single source for KFP and local runs.

A task is one step (task name = step name). An edge says which upstream output feeds which input
channel of a downstream task. `pipelines.kfp_components`/`pipelines.full` render this to KFP v2;
`pipelines.local` runs the same tasks as processes or `docker run`, wiring the same edges as
folders. Per-task default hyperparameters come from `pipelines/defaults.yaml` (profiles).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from contracts import StepContract, get_contract
from contracts.base import ContractError, decode_value
from contracts.tune import TuneHyperparameters

DEFAULTS_FILE = Path(__file__).with_name("defaults.yaml")
TASKS = ("download-kaggle", "preprocess", "push-hf", "train-seg", "train-ellipse", "export-onnx",
         "validate")
# The optional branch (`--tune`): an Optuna search whose best parameters feed train-seg.
TUNE_TASK = "tune"
ALL_TASKS = (*TASKS[:3], TUNE_TASK, *TASKS[3:])
EvaluateSplit = Literal["validation", "test"]


class DagError(ValueError):
    """The DAG disagrees with the contracts, or a setting names an unknown task or field."""


@dataclass(frozen=True)
class Edge:
    """`source_task`'s output `source_output` feeds `target_task`'s input channel `channel`."""

    source_task: str
    source_output: str
    target_task: str
    channel: str

    def __str__(self) -> str:
        return f"{self.source_task}.{self.source_output} -> {self.target_task}.{self.channel}"


def _tune_edges() -> list[Edge]:
    return [*(Edge("preprocess", split, TUNE_TASK, split) for split in ("train", "validation")),
            Edge(TUNE_TASK, "study", "train-seg", "tuned")]


def _edges(evaluate_split: EvaluateSplit) -> tuple[Edge, ...]:
    edges = [Edge("download-kaggle", "raw", "preprocess", "raw")]
    edges += [Edge("preprocess", split, "push-hf", split) for split in ("train", "validation", "test")]
    for trainer in ("train-seg", "train-ellipse"):
        edges += [Edge("preprocess", split, trainer, split) for split in ("train", "validation")]
    edges += [
        Edge("train-seg", "model", "export-onnx", "seg_model"),
        Edge("train-ellipse", "model", "export-onnx", "ellipse_model"),
        Edge("export-onnx", "onnx", "validate", "onnx"),
        Edge("train-seg", "model", "validate", "seg_model"),
        Edge("train-ellipse", "model", "validate", "ellipse_model"),
        # The default evaluates the validation split: it always has rows, while the test split
        # may be empty (generated data with 0 test frames, or a source without one).
        Edge("preprocess", evaluate_split, "validate", "test"),
        Edge("train-seg", "metrics", "validate", "seg_metrics"),
    ]
    return tuple(edges)


@dataclass(frozen=True)
class Dag:
    tasks: tuple[str, ...]
    edges: tuple[Edge, ...]

    def contract(self, task: str) -> StepContract:
        return get_contract(task)

    def inputs_of(self, task: str) -> dict[str, Edge]:
        """Channel name -> the edge that feeds it."""
        return {edge.channel: edge for edge in self.edges if edge.target_task == task}

    def upstream(self, task: str) -> list[str]:
        """Tasks this task depends on, in pipeline order."""
        sources = {edge.source_task for edge in self.edges if edge.target_task == task}
        return [name for name in self.tasks if name in sources]

    def downstream(self, task: str) -> set[str]:
        """Every task that depends on `task`, directly or not."""
        found: set[str] = set()
        frontier = [task]
        while frontier:
            current = frontier.pop()
            for edge in self.edges:
                if edge.source_task == current and edge.target_task not in found:
                    found.add(edge.target_task)
                    frontier.append(edge.target_task)
        return found

    def dependencies(self) -> dict[str, set[str]]:
        return {task: set(self.upstream(task)) for task in self.tasks}

    def order(self) -> list[str]:
        """Tasks in a dependency-respecting order (stable: pipeline order among equals)."""
        done: list[str] = []
        pending = list(self.tasks)
        while pending:
            ready = [t for t in pending if set(self.upstream(t)) <= set(done)]
            if not ready:
                raise DagError(f"cycle among tasks: {', '.join(pending)}")
            done.append(ready[0])
            pending.remove(ready[0])
        return done

    def validate(self) -> None:
        """Every edge names an existing output and channel; every required channel is fed once."""
        problems = []
        for task in self.tasks:
            self.contract(task)
        for edge in self.edges:
            problems += _edge_problems(self, edge)
        for task in self.tasks:
            fed = [edge.channel for edge in self.edges if edge.target_task == task]
            problems += [f"{task}.{name}: fed by {fed.count(name)} edges" for name in set(fed)
                         if fed.count(name) > 1]
            problems += [f"{task}.{ch.name}: required channel is not fed by any edge"
                         for ch in self.contract(task).channels if ch.required and ch.name not in fed]
        if problems:
            raise DagError("pipeline DAG disagrees with the contracts: " + "; ".join(problems))
        self.order()


def _edge_problems(dag: Dag, edge: Edge) -> list[str]:
    problems = []
    for task in (edge.source_task, edge.target_task):
        if task not in dag.tasks:
            problems.append(f"{edge}: unknown task {task!r}")
    if problems:
        return problems
    outputs = [o.name for o in dag.contract(edge.source_task).outputs]
    channels = [c.name for c in dag.contract(edge.target_task).channels]
    if edge.source_output not in outputs:
        problems.append(f"{edge}: {edge.source_task} has no output {edge.source_output!r} ({outputs})")
    if edge.channel not in channels:
        problems.append(f"{edge}: {edge.target_task} has no channel {edge.channel!r} ({channels})")
    return problems


def build_dag(evaluate_split: EvaluateSplit = "validation", tune: bool = False) -> Dag:
    """The pipeline of SPEC section 1; `evaluate_split` picks the split `validate` evaluates;
    `tune` adds the optional search branch (preprocess -> tune -> train-seg's `tuned` channel)."""
    if evaluate_split not in ("validation", "test"):
        raise DagError(f"evaluate_split: expected 'validation' or 'test', got {evaluate_split!r}")
    edges = _edges(evaluate_split)
    dag = Dag(tasks=ALL_TASKS if tune else TASKS, edges=(*edges, *_tune_edges()) if tune else edges)
    dag.validate()
    return dag


# -- hyperparameters per task ---------------------------------------------------------------

def load_settings(path: Path = DEFAULTS_FILE) -> dict[str, Any]:
    """defaults.yaml: `profiles` (per-task hyperparameters) and `kubernetes` (KFP settings)."""
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def load_profile(profile: str, path: Path = DEFAULTS_FILE) -> dict[str, dict[str, Any]]:
    """One profile of defaults.yaml: {task: {hyperparameter: value}}."""
    profiles = load_settings(path).get("profiles", {})
    if profile not in profiles:
        raise DagError(f"profile {profile!r}: not in {path.name} (profiles: {', '.join(profiles)})")
    return profiles[profile] or {}


def parse_assignments(assignments: Iterable[str]) -> dict[str, dict[str, Any]]:
    """`task.field=value` strings (values decoded like SageMaker's) -> {task: {field: value}}."""
    parsed: dict[str, dict[str, Any]] = {}
    for text in assignments:
        target, sep, value = text.partition("=")
        task, dot, key = target.partition(".")
        if not sep or not dot or not task or not key:
            raise DagError(f"--set {text!r}: expected TASK.FIELD=VALUE (e.g. train-seg.epochs=3)")
        if task not in ALL_TASKS:
            raise DagError(f"--set {text!r}: unknown task {task!r} (tasks: {', '.join(ALL_TASKS)})")
        key = key.replace("-", "_")
        parsed.setdefault(task, {})[key] = decode_value(get_contract(task).hyperparameters, key, value)
    return parsed


def resolve_hyperparameters(base: Mapping[str, Mapping[str, Any]],
                            overrides: Mapping[str, Mapping[str, Any]] | None = None,
                            tasks: Sequence[str] = TASKS) -> dict[str, dict[str, Any]]:
    """Profile values plus overrides per task, each validated against its step's contract.

    Returns only the explicitly set values (JSON-ready), so the step's own defaults still apply
    to everything else and the written hyperparameters.json stays short.
    """
    unknown = set(base) - set(ALL_TASKS) | set(overrides or {}) - set(ALL_TASKS)
    if unknown:
        raise DagError(f"hyperparameters for unknown task(s): {', '.join(sorted(unknown))}")
    absent = set(overrides or {}) - set(tasks)
    if absent:  # e.g. --set tune.n_trials=4 without --tune: the setting would silently do nothing
        raise DagError(f"--set for task(s) not in this pipeline: {', '.join(sorted(absent))}"
                       + (" (add --tune for the tune branch)" if TUNE_TASK in absent else ""))
    resolved, parsed = {}, {}
    for task in tasks:
        values = {**(base.get(task) or {}), **((overrides or {}).get(task) or {})}
        try:
            parsed[task] = get_contract(task).parse_hyperparameters(values)
        except ContractError as error:
            raise DagError(f"task {task}: {str(error).splitlines()[0]}") from error
        resolved[task] = json.loads(json.dumps(values))
    tune = parsed.get(TUNE_TASK)
    if isinstance(tune, TuneHyperparameters):
        _refuse_overridden_search_keys(tune.search_space, (overrides or {}).get("train-seg") or {})
    return resolved


def _refuse_overridden_search_keys(search_space: Mapping[str, Any], train_seg_overrides: Mapping[str, Any]) -> None:
    """With the tune branch, tune's best values replace train-seg's for the searched keys (its
    `tuned` channel outranks hyperparameters.json): a --set of such a key would be silently lost."""
    clash = sorted(set(search_space) & set(train_seg_overrides))
    if clash:
        raise DagError(f"--set train-seg.{clash[0]}: tune searches {', '.join(clash)} and its best value replaces "
                       f"train-seg's; set tune.search_space without it, or run without --tune")
