"""Container-side entry of a KFP task: hand KFP's inputs to the step in its /opt/ml contract.

    python -m pipelines.launch STEP --hyperparameters JSON [--workspace DIR] -- STEP_ARGS...

- writes JSON to `<root>/input/config/hyperparameters.json`, the file SageMaker also uses;
- runs `python -m steps STEP STEP_ARGS` in this process (so signals reach the step directly);
- with `--workspace DIR` (a PVC mounted in every task), each output is written to
  `DIR/<step>/<output>` instead of KFP's artifact path, and the artifact holds only a pointer
  (`_workspace.json`) plus a copy of the output's manifest: large datasets stay on the volume
  and are not copied through the object store between steps. A channel whose artifact is such a
  pointer reads the folder it points to. Checkpoints go to `DIR/<step>/checkpoints`, so a retried
  task resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from contracts.layout import DEFAULT_ROOT, Layout
from pipelines.kfp_ui import write_ui_outputs
from steps.outputs import loads_json
from steps.paths import PathOutsideFolder

POINTER_FILE = "_workspace.json"
MANIFEST_FILE = "_manifest.json"


def split_pairs(args: Sequence[str], flag: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Take every `FLAG NAME=PATH` out of `args`; returns (other args, [(NAME, PATH)])."""
    rest, pairs = [], []
    items = iter(args)
    for item in items:
        if item == flag:
            name, _, path = next(items, "").partition("=")
            pairs.append((name, path))
        elif item.startswith(flag + "="):
            name, _, path = item[len(flag) + 1:].partition("=")
            pairs.append((name, path))
        else:
            rest.append(item)
    return rest, pairs


def root_of(args: Sequence[str]) -> Path:
    for index, item in enumerate(args):
        if item == "--root" and index + 1 < len(args):
            return Path(args[index + 1])
        if item.startswith("--root="):
            return Path(item.split("=", 1)[1])
    return Path(os.environ.get("SAGEMAKER_BASE_DIR") or DEFAULT_ROOT)


def write_hyperparameters(root: Path, text: str) -> Path:
    """Written as given: the step validates it and names any bad key in its failure file."""
    path = root / "input" / "config" / "hyperparameters.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def resolve_channel(path: str, workspace: Path | None) -> str:
    """A workspace pointer artifact stands for the folder it names, which must be on the workspace."""
    pointer = Path(path) / POINTER_FILE
    if not pointer.is_file():
        return path
    if workspace is None:
        raise PathOutsideFolder(f"{pointer}: a workspace pointer, but this task has no --workspace")
    try:
        named = json.loads(pointer.read_text(encoding="utf-8"))["path"]
    except (ValueError, KeyError, TypeError) as error:
        raise PathOutsideFolder(f"{pointer}: not a workspace pointer ({type(error).__name__})") from error
    target = Path(str(named)).resolve()
    if not target.is_relative_to(workspace.resolve()):
        raise PathOutsideFolder(f"{pointer} field 'path': {str(named)[:200]!r} leads outside the workspace {workspace}")
    return str(target)


def write_pointer(artifact: Path, target: Path) -> None:
    """The artifact KFP uploads: where the data is, and its manifest for lineage."""
    artifact.mkdir(parents=True, exist_ok=True)
    manifest = target / MANIFEST_FILE
    if manifest.is_file():
        shutil.copyfile(manifest, artifact / MANIFEST_FILE)
    (artifact / POINTER_FILE).write_text(json.dumps({"path": str(target)}) + "\n", encoding="utf-8")


def build_step_args(step_args: Sequence[str], step: str,
                    workspace: Path | None) -> tuple[list[str], dict[Path, Path]]:
    """The step's command line, and {KFP artifact path: workspace folder} for outputs."""
    rest, channels = split_pairs(step_args, "--channel")
    rest, outputs = split_pairs(rest, "--output")
    args = list(rest)
    for name, path in channels:
        args += ["--channel", f"{name}={resolve_channel(path, workspace)}"]
    redirected: dict[Path, Path] = {}
    for name, path in outputs:
        target = Path(path)
        if workspace is not None:
            target = workspace / step / name
            redirected[Path(path)] = target
        args += ["--output", f"{name}={target}"]
    return args, redirected


def merge_parameters(text: str, pairs: Sequence[str]) -> str:
    """The typed pipeline parameters (`NAME=VALUE`) over the JSON object; a JSON that is not an
    object is passed on as is, for the step to refuse with its own message."""
    if not pairs:
        return text
    try:
        values = loads_json(text)
    except json.JSONDecodeError:
        return text
    if not isinstance(values, dict):
        return text
    for pair in pairs:
        name, _, value = pair.partition("=")
        try:
            values[name] = loads_json(value)
        except json.JSONDecodeError:
            values[name] = value  # a string parameter (model variant) arrives unquoted
    return json.dumps(values)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own, step_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(prog="python -m pipelines.launch")
    parser.add_argument("step")
    parser.add_argument("--hyperparameters", default="{}", help="JSON object of the step's hyperparameters")
    parser.add_argument("--workspace", default=None, help="a shared volume for outputs and checkpoints")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="a typed pipeline parameter; wins over the same key in --hyperparameters")
    parser.add_argument("--ui-output", action="append", default=[], metavar="NAME=PATH",
                        help="a KFP UI output (Metrics, Markdown) to write after the step")
    parser.add_argument("--executor-input", default=None, help="KFP's executor input (JSON)")
    args = parser.parse_args(own)
    workspace = Path(args.workspace) if args.workspace else None
    write_hyperparameters(root_of(step_args), merge_parameters(args.hyperparameters, args.param))
    if workspace is not None:
        os.environ["OPENEDS_CHECKPOINT_DIR"] = str(workspace / args.step / "checkpoints")
    from steps.__main__ import main as steps_main
    from steps.runtime import configure_logging, fail

    try:
        command, redirected = build_step_args(step_args, args.step, workspace)
    except PathOutsideFolder as error:
        configure_logging()
        return fail(Layout.resolve(root_of(step_args)), args.step, str(error))

    code = steps_main([args.step, *command])
    if code == 0:
        for artifact, target in redirected.items():
            write_pointer(artifact, target)
    ui_paths = dict(pair.split("=", 1) for pair in args.ui_output)
    outputs = dict(split_pairs(command, "--output")[1])
    executor_input = json.loads(args.executor_input) if args.executor_input else None
    write_ui_outputs(args.step, root_of(step_args), outputs, ui_paths, executor_input)  # a missed gate too
    return code


if __name__ == "__main__":
    sys.exit(main())
