"""Helpers of the reliability tests: run a step the way users do and check how it failed.

- `StepRun`: one step invocation (step, root, channel/output overrides, hyperparameters.json
  content, command-line flags, extra environment) that runs either as a real process
  (`python -m steps NAME --root R ...`) or in this process through `steps.runtime.run_step`;
- `Outcome`: its exit code, failure file text and (for a process) stdout/stderr;
- `snapshot` / `assert_failed_cleanly`: the three checks of a bad input (non-zero exit, a failure
  file whose first line names the problem, no output that looks complete, and earlier outputs
  left byte for byte as they were).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from contracts import Layout, get_contract
from steps.outputs import MANIFEST_NAME

REPO = Path(__file__).resolve().parents[2]
# Variables that would point a step at something outside the test (a tracking server, SageMaker).
HERMETIC_DROP = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_REGISTRY_URI", "SM_HPS",
                 "SM_MODEL_DIR", "SM_OUTPUT_DATA_DIR", "SM_CHECKPOINT_DIR", "SAGEMAKER_BASE_DIR",
                 "OPENEDS_CHECKPOINT_DIR", "OPENEDS_STEP")


def write_hyperparameters(root: Path, values: Mapping[str, Any] | str | bytes) -> Path:
    """`root/input/config/hyperparameters.json`: a dict as JSON, or raw text/bytes as given."""
    path = Layout(root=Path(root)).hyperparameters_file
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(values, bytes):
        path.write_bytes(values)
    else:
        path.write_text(values if isinstance(values, str) else json.dumps(dict(values)), encoding="utf-8")
    return path


def step_environment(extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """This process's environment without outside pointers, plus `extra` (None removes a name)."""
    env = {k: v for k, v in os.environ.items() if k not in HERMETIC_DROP and not k.startswith("OPENEDS_")}
    env.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("WANDB_MODE", "offline")
    for name, value in (extra or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


@dataclass
class Outcome:
    code: int
    failure: str | None  # the failure file's text, None when there is none
    stdout: str = ""
    stderr: str = ""

    @property
    def first_line(self) -> str:
        return (self.failure or "").splitlines()[0] if self.failure else ""


@dataclass
class StepRun:
    """One step invocation; `flags` are command-line words after the step name and root."""

    step: str
    root: Path
    channels: dict[str, Path] = field(default_factory=dict)
    outputs: dict[str, Path] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    env: dict[str, str | None] = field(default_factory=dict)
    hyperparameters: Mapping[str, Any] | str | bytes | None = None
    entry: list[str] | None = None  # argv instead of `STEP --root ROOT ...` (e.g. ["train"])

    @property
    def layout(self) -> Layout:
        return Layout.resolve(self.root, self.channels, self.outputs, env={})

    def argv(self) -> list[str]:
        if self.entry is not None:
            return list(self.entry)
        words = [self.step, "--root", str(self.root)]
        words += [w for name, path in self.channels.items() for w in ("--channel", f"{name}={path}")]
        words += [w for name, path in self.outputs.items() for w in ("--output", f"{name}={path}")]
        return words + list(self.flags)

    def prepare(self) -> None:
        if self.hyperparameters is not None:
            write_hyperparameters(self.root, self.hyperparameters)

    def run_process(self, timeout: float = 300, prelude: str | None = None) -> Outcome:
        """`python -m steps ...` as a real process. `prelude`: Python run before the CLI in the same
        process (only to point a client library at a local test server)."""
        self.prepare()
        if prelude is None:
            command = [sys.executable, "-m", "steps", *self.argv()]
        else:
            launcher = f"{prelude}\nimport sys\nfrom steps.__main__ import main\nsys.exit(main(sys.argv[1:]))"
            command = [sys.executable, "-c", launcher, *self.argv()]
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                              env=step_environment(self.env))
        return Outcome(done.returncode, read_failure(self.root), done.stdout, done.stderr)

    def run_in_process(self, monkeypatch: pytest.MonkeyPatch) -> Outcome:
        """Through `steps.__main__.main` in this process (same parsing as the CLI, no start-up cost)."""
        from steps.__main__ import main

        self.prepare()
        for name in HERMETIC_DROP:
            monkeypatch.delenv(name, raising=False)
        for name, value in self.env.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        code = main(self.argv())
        return Outcome(code, read_failure(self.root))


def read_failure(root: Path) -> str | None:
    path = Layout(root=Path(root)).failure_file
    return path.read_text(encoding="utf-8") if path.is_file() else None


# ---------------------------------------------------------------- what a run left behind

def output_folders(step: str, layout: Layout) -> dict[str, Path]:
    """Where each of the step's outputs goes under this layout (overrides honoured)."""
    return {o.name: layout.output(o.name, o.path, env={}) for o in get_contract(step).outputs}


def hash_tree(path: Path) -> dict[str, str]:
    """Relative path -> sha256 (links: their target) of everything under `path` (or the file)."""
    if not path.exists() and not path.is_symlink():
        return {}
    if path.is_file():
        return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()}
    hashes = {}
    for item in sorted(path.rglob("*")):
        relative = item.relative_to(path).as_posix()
        if item.is_symlink():
            hashes[relative] = "link:" + os.readlink(item)
        elif item.is_file():
            hashes[relative] = hashlib.sha256(item.read_bytes()).hexdigest()
        elif item.is_dir():
            hashes[relative + "/"] = "dir"
    return hashes


def snapshot(step: str, layout: Layout) -> dict[str, dict[str, str]]:
    """Every output folder's files and the run manifest, hashed."""
    shot = {name: hash_tree(path) for name, path in output_folders(step, layout).items()}
    shot["<run manifest>"] = hash_tree(layout.run_manifest_file)
    return shot


def leftover_staging(step: str, layout: Layout) -> list[Path]:
    """Staging folders of a step's outputs (the runtime removes them when a run fails)."""
    found = []
    for path in output_folders(step, layout).values():
        if path.parent.is_dir():
            found += sorted(path.parent.glob(f".{path.name}.staging-*"))
    return found


def assert_failed_cleanly(run: StepRun, outcome: Outcome, expected: str | Sequence[str],
                          before: dict[str, dict[str, str]] | None = None) -> None:
    """The three checks of a bad input, plus: outputs that existed before are unchanged."""
    context = f"{run.step}: exit {outcome.code}, failure {outcome.failure!r}\n{outcome.stderr[-2000:]}"
    assert outcome.code != 0, context
    assert outcome.failure is not None, f"no failure file; {context}"
    first = outcome.first_line
    for needle in [expected] if isinstance(expected, str) else expected:
        assert needle in first, f"first line {first!r} does not name {needle!r}"
    layout = run.layout
    if before is None:
        for name, path in output_folders(run.step, layout).items():
            assert not (path / MANIFEST_NAME).exists(), f"output {name} looks complete after a failed run"
        assert not layout.run_manifest_file.exists(), "a run manifest was written by a failed run"
    else:
        assert snapshot(run.step, layout) == before, "a failed run changed an earlier run's outputs"
    assert leftover_staging(run.step, layout) == [], "staging folders left behind"


# ---------------------------------------------------------------- a folder no one can write to

@contextlib.contextmanager
def read_only_folder(folder: Path) -> Iterator[str]:
    """Make `folder` unwritable for this process; yields how. chmod does not stop root, so as root
    the folder is made immutable (`chattr +i`, which stops root too); skips when neither works."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        mode = folder.stat().st_mode
        folder.chmod(0o555)
        try:
            yield "chmod 555"
        finally:
            folder.chmod(mode)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("running as root, where chmod does not stop writes, and `chattr +i` is not available "
                    "on this file system")
    try:
        probe = folder / ".write-probe"
        try:
            probe.mkdir()
        except OSError:
            pass
        else:
            probe.rmdir()
            pytest.skip("running as root and `chattr +i` did not make the folder read-only here")
        yield "chattr +i (root)"
    finally:
        subprocess.run([chattr, "-i", str(folder)], check=True)
