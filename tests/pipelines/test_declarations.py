"""A pipeline task is declared in three places: its contract (registered in contracts/__init__),
its DAG entry (pipelines/dag.py) and its profile defaults and resources (pipelines/defaults.yaml).
Everything else (CLI, KFP component, artifact types, docs) is generated from those. This test names
whatever is missing when a step is added."""

from __future__ import annotations

import importlib
from pathlib import Path

import contracts
from contracts import all_contracts
from pipelines.dag import ALL_TASKS, load_settings
from steps.runtime import StepHooks

CONTRACT_HELPERS = {"__init__", "base", "layout", "training"}  # modules of contracts/ that hold no step


def contract_modules() -> list[str]:
    folder = Path(contracts.__file__).parent
    return sorted(p.stem for p in folder.glob("*.py") if p.stem not in CONTRACT_HELPERS)


def test_every_contract_module_is_registered():
    missing = [m for m in contract_modules() if m not in contracts._MODULES]
    assert not missing, f"contracts/{missing[0]}.py is not in contracts._MODULES: add it there"
    for module in contract_modules():
        assert hasattr(importlib.import_module(f"contracts.{module}"), "CONTRACT"), \
            f"contracts/{module}.py defines no CONTRACT"


def test_every_dag_task_has_a_contract_and_hooks():
    steps = all_contracts()
    for task in ALL_TASKS:
        assert task in steps, f"DAG task {task!r} has no contract (contracts/<module>.py with CONTRACT)"
        hooks = getattr(importlib.import_module(steps[task].module), "HOOKS", None)
        assert isinstance(hooks, StepHooks), f"step module {steps[task].module} defines no HOOKS"


def test_every_dag_task_has_profile_defaults_and_resources():
    settings = load_settings()
    for profile, tasks in settings["profiles"].items():
        missing = [task for task in ALL_TASKS if task not in (tasks or {})]
        assert not missing, f"pipelines/defaults.yaml profile {profile!r} has no entry for {missing}"
    missing = [task for task in ALL_TASKS if task not in settings["kubernetes"]["resources"]]
    assert not missing, f"pipelines/defaults.yaml kubernetes.resources has no entry for {missing}"


def test_profiles_and_resources_name_only_dag_tasks():
    settings = load_settings()
    named = {task for tasks in settings["profiles"].values() for task in (tasks or {})}
    named |= set(settings["kubernetes"]["resources"])
    unknown = sorted(named - set(ALL_TASKS))
    assert not unknown, f"pipelines/defaults.yaml names tasks the DAG does not have: {unknown}"
