"""Execute tasks of a compiled KFP pipeline YAML the way KFP's launcher does, on this machine.

KFP resolves each executor's placeholders (artifact paths, parameter values, Concat, IfPresent)
and runs the container's command. Doing the same here, with folders standing in for artifact
storage, checks that the compiled YAML's wiring and arguments really drive the steps. Only what
our pipeline uses is supported; anything else raises.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

PLACEHOLDER = re.compile(r"\{\{\$\.(inputs|outputs)\.(artifacts|parameters)\['([^']+)'\](\.path)?\}\}")


def load(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pipeline spec, kubernetes platform spec or {})."""
    documents = list(yaml.safe_load_all(path.read_text()))
    platform = documents[1]["platforms"]["kubernetes"] if len(documents) > 1 else {}
    return documents[0], platform


def executor_of(spec: Mapping[str, Any], task: str) -> dict[str, Any]:
    component = spec["root"]["dag"]["tasks"][task]["componentRef"]["name"]
    label = spec["components"][component]["executorLabel"]
    return spec["deploymentSpec"]["executors"][label]["container"]


def substitute(text: str, inputs: Mapping[str, str], outputs: Mapping[str, str],
               parameters: Mapping[str, str]) -> str:
    def replace(match: re.Match) -> str:
        side, kind, name, _ = match.groups()
        if kind == "parameters":
            return parameters[name]
        return (inputs if side == "inputs" else outputs)[name]
    return PLACEHOLDER.sub(replace, text)


EXECUTOR_INPUT = "{{$}}"


def executor_input(outputs: Mapping[str, str], output_file: str) -> dict[str, Any]:
    """The part of KFP's executor input our launcher reads: output artifacts and the output file."""
    return {"outputs": {"outputFile": output_file,
                        "artifacts": {name: {"artifacts": [{"name": name, "uri": path}]} for name, path in outputs.items()}}}


def resolve_args(args: Sequence[Any], inputs: Mapping[str, str], outputs: Mapping[str, str],
                 parameters: Mapping[str, str], output_file: str = "/kfp/executor_output.json") -> list[str]:
    resolved: list[str] = []
    for arg in args:
        item = json.loads(arg) if isinstance(arg, str) and arg.startswith('{"') else arg
        if isinstance(item, dict) and "Concat" in item:
            resolved.append("".join(resolve_args(item["Concat"], inputs, outputs, parameters, output_file)))
        elif isinstance(item, dict) and "IfPresent" in item:
            branch = item["IfPresent"]
            present = branch["InputName"] in inputs or branch["InputName"] in parameters
            resolved += resolve_args(branch.get("Then" if present else "Else", []), inputs, outputs, parameters,
                                     output_file)
        elif item == EXECUTOR_INPUT:
            resolved.append(json.dumps(executor_input(outputs, output_file)))
        elif isinstance(item, str):
            resolved.append(substitute(item, inputs, outputs, parameters))
        else:
            raise ValueError(f"unsupported placeholder {item!r}")
    return resolved


def task_parameters(spec: Mapping[str, Any], task: str, pipeline_arguments: Mapping[str, Any]) -> dict[str, str]:
    """Parameter values of a task: pipeline arguments (or their defaults) or constants."""
    root = spec["root"]
    defaults = {name: p.get("defaultValue") for name, p in root["inputDefinitions"]["parameters"].items()}
    values = {**defaults, **pipeline_arguments}
    parameters = {}
    for name, source in root["dag"]["tasks"][task].get("inputs", {}).get("parameters", {}).items():
        if "componentInputParameter" in source:
            value = values[source["componentInputParameter"]]
        else:
            value = source["runtimeValue"]["constant"]
        parameters[name] = value if isinstance(value, str) else json.dumps(value)
    return parameters


def run_task(spec: Mapping[str, Any], task: str, storage: Path, paths: Mapping[str, Path],
             pipeline_arguments: Mapping[str, Any] | None = None) -> subprocess.CompletedProcess:
    """Run one task's container command as a local process; artifacts live under `storage`, and
    container paths in the arguments (`/opt/ml`, `/workspace`) are mapped by `paths`."""
    dag_task = spec["root"]["dag"]["tasks"][task]
    inputs = {name: str(storage / source["taskOutputArtifact"]["producerTask"] /
                        source["taskOutputArtifact"]["outputArtifactKey"])
              for name, source in dag_task.get("inputs", {}).get("artifacts", {}).items()}
    component = spec["components"][dag_task["componentRef"]["name"]]
    outputs = {name: str(storage / task / name)
               for name in component.get("outputDefinitions", {}).get("artifacts", {})}
    container = executor_of(spec, task)
    args = resolve_args(container["args"], inputs, outputs,
                        task_parameters(spec, task, pipeline_arguments or {}),
                        output_file=str(storage / task / "executor_output.json"))
    args = [str(paths[a]) if a in paths else a for a in args]
    command = [sys.executable if part == "python" else part for part in container["command"]]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=900)
