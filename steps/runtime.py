"""Run one step under a root: validate the contract, run, commit outputs atomically, write the
manifest, or write `output/failure` and exit non-zero.

Each step module declares `HOOKS = StepHooks(run=..., check_inputs=..., channels_optional=...)`:
`run(hp, io) -> dict` (a summary: metrics, row counts), optional `check_inputs(hp, io)` for deeper
input checks that must pass before any heavy work, and optional `channels_optional(hp)` naming the
required channels a setting makes unnecessary. A misspelt hook is a TypeError at import.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import importlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from pydantic import create_model
from pydantic_settings import BaseSettings, DotEnvSettingsSource, SettingsConfigDict

from contracts import ContractError, Hyperparameters, Layout, StepContract, get_contract
from contracts.base import shorten
from steps.errors import FailAfterCommit, StepError
from steps.outputs import StagedOutput, check_output_targets, loads_json, write_json_atomic
from steps.secrets import RedactingFilter, redact, redact_obj
from steps.sigterm import sigterm_handler

log = logging.getLogger("steps")


@dataclass
class StepIO:
    """What a step's `run` sees: its input channels, staging folders for its outputs, checkpoints."""

    contract: StepContract
    layout: Layout
    outputs: dict[str, StagedOutput] = field(default_factory=dict)
    extra_manifest: dict[str, dict[str, Any]] = field(default_factory=dict)
    unchanged: set[str] = field(default_factory=set)

    def channel(self, name: str) -> Path | None:
        """The channel's folder, or None for an optional channel that was not given."""
        self.contract.channel(name)  # a typo in step code fails loudly
        path = self.layout.channel(name)
        return path if _has_content(path) else None

    def require_channel(self, name: str) -> Path:
        path = self.channel(name)
        if path is None:
            raise StepError(f"channel '{name}': missing or empty folder {self.layout.channel(name)}")
        return path

    def output(self, name: str) -> Path:
        """The staging folder to write output `name` into (committed only on success)."""
        return self.outputs[name].staging

    def final_output(self, name: str) -> Path:
        """Where output `name` will be once committed: the path to show a user (the staging folder
        is gone by the time they look)."""
        return self.outputs[name].final

    @property
    def checkpoints(self) -> Path:
        """The checkpoints folder, checked writable before training starts (not at epoch 1's save)."""
        folder = self.layout.checkpoints
        try:
            probe_writable(folder)
        except OSError as error:
            raise StepError(f"checkpoints: cannot write {folder} ({error.strerror or error}); give the step's "
                            f"user write access, or another folder (SM_CHECKPOINT_DIR, OPENEDS_CHECKPOINT_DIR)") from error
        return folder

    def annotate(self, output: str, **values: Any) -> None:
        """Add facts (row counts, metrics) to one output's manifest."""
        self.extra_manifest.setdefault(output, {}).update(values)

    def leave_unchanged(self, output: str) -> None:
        """This run does not produce `output` (a check-only mode): its folder is left as it was."""
        self.contract.output(output)
        self.unchanged.add(output)


@dataclass(frozen=True)
class StepHooks:
    """What a step module gives the runtime; the contract names the module (`contract.module`)."""

    run: Callable[[Any, StepIO], dict[str, Any] | None]
    check_inputs: Callable[[Any, StepIO], None] | None = None
    channels_optional: Callable[[Any], Iterable[str]] | None = None


def hooks_of(contract: StepContract) -> StepHooks:
    """The step module's HOOKS; a module without them is a broken step, said at once."""
    hooks = getattr(importlib.import_module(contract.module), "HOOKS", None)
    if not isinstance(hooks, StepHooks):
        raise TypeError(f"step {contract.name}: module {contract.module} defines no HOOKS = StepHooks(...)")
    return hooks


def _has_content(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir()) or path.is_file()


def load_raw_hyperparameters(layout: Layout, env: Mapping[str, str]) -> dict[str, Any]:
    """hyperparameters.json, or SageMaker's SM_HPS when the file is absent."""
    path = layout.hyperparameters_file
    if path.exists() or path.is_symlink():
        return _read_settings_file(path, "hyperparameters.json")
    if env.get("SM_HPS"):
        return _decode_settings_object(env["SM_HPS"], "SM_HPS")
    return {}


# A settings file is a few KB; anything this large is not one (and is not read into memory).
MAX_SETTINGS_FILE_BYTES = 1 << 20


def _read_settings_file(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from a regular file: a folder, FIFO or dangling link is refused, not skipped."""
    if not path.is_file():
        kind = "a dangling link" if path.is_symlink() and not path.exists() else \
            "a folder" if path.is_dir() else "not a regular file"
        raise ContractError(f"{what}: {path} is {kind}; expected a JSON file")
    try:
        size = path.stat().st_size
        if size > MAX_SETTINGS_FILE_BYTES:
            raise ContractError(f"{what}: {path} is {size:,} bytes (at most {MAX_SETTINGS_FILE_BYTES:,})")
        # utf-8-sig: Windows PowerShell 5 writes a byte-order mark by default
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:  # e.g. saved as UTF-16 by an editor
        raise ContractError(f"{what}: not UTF-8 text ({error.reason} at byte {error.start}) "
                            f"in {path}; save it as UTF-8") from error
    except OSError as error:  # e.g. written readable by root only (SageMaker local mode as root)
        raise ContractError(f"{what}: cannot read {path} ({error.strerror or error})") from error
    return _decode_settings_object(text or "{}", what, f" in {path}")


class _KeyGivenTwice(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all different: a setting given twice would silently keep the last."""
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise _KeyGivenTwice(key)
        found[key] = value
    return found


def _decode_settings_object(text: str, what: str, where: str = "") -> dict[str, Any]:
    try:
        raw = loads_json(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as error:
        raise ContractError(f"{what}: not valid JSON ({error.msg} at line {error.lineno} column "
                            f"{error.colno}){where}") from error
    except _KeyGivenTwice as error:
        raise ContractError(f"{what}: key {shorten(repr(error.key))} is given twice{where}") from None
    if not isinstance(raw, dict):
        raise ContractError(f"{what}: expected a JSON object, got {type(raw).__name__}{where}")
    return raw


ENV_PREFIX = "OPENEDS_"


def settings_from_environment(contract: StepContract, env: Mapping[str, str]) -> dict[str, Any]:
    """Hyperparameters given as OPENEDS_<NAME> variables or in a .env file (pydantic-settings).

    The .env file is `OPENEDS_ENV_FILE` or `./.env`; the environment wins over the file. Values
    stay strings here and are decoded like SageMaker's, so every source validates the same way.
    """
    fields: dict[str, Any] = {name: (str | None, None) for name in contract.hyperparameters.model_fields}
    settings_cls = create_model("EnvironmentSettings", __base__=BaseSettings, **fields)
    settings_cls.model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")
    env_file = Path(env.get("OPENEDS_ENV_FILE", ".env"))
    from_file = DotEnvSettingsSource(settings_cls, env_file=env_file, env_prefix=ENV_PREFIX)() \
        if env_file.is_file() else {}
    from_env = {name: env[ENV_PREFIX + name.upper()] for name in fields if ENV_PREFIX + name.upper() in env}
    return {**from_file, **from_env}


def load_channel_settings(contract: StepContract, layout: Layout) -> dict[str, Any]:
    """Values from the fed settings channels (e.g. train-seg's `tuned`: tune's best_params.json)."""
    values: dict[str, Any] = {}
    for channel in contract.channels:
        folder = layout.channel(channel.name)
        if channel.settings_file is None or not _has_content(folder):
            continue
        path = folder / channel.settings_file if folder.is_dir() else folder
        if folder.is_dir() and not path.resolve().is_relative_to(folder.resolve()):
            raise ContractError(f"channel '{channel.name}': {path} leads outside the channel folder {folder}")
        if not path.exists() and not path.is_symlink():
            raise ContractError(f"channel '{channel.name}': no {channel.settings_file} in {folder} ({channel.doc})")
        try:
            found = _read_settings_file(path, f"channel '{channel.name}'")
        except ContractError as error:  # the file the channel fed is the one thing to name
            raise ContractError(f"channel '{channel.name}': {path} is not a usable settings file, a JSON object "
                                f"({str(error).split(': ', 1)[-1]})") from error
        log.info("channel %s: %s from %s", channel.name,
                 shorten(", ".join(f"{key}={value!r}" for key, value in sorted(found.items())) or "nothing"), path)
        values.update(found)
    return values


def resolve_hyperparameters(contract: StepContract, layout: Layout, cli_values: Mapping[str, Any],
                            env: Mapping[str, str] | None = None) -> Hyperparameters:
    """Precedence, lowest first: contract defaults < hyperparameters.json (or SM_HPS) < settings
    channels (train-seg's `tuned`) < .env file < OPENEDS_<NAME> environment variables < command-line
    flags. Then validate the whole."""
    env = os.environ if env is None else env
    raw = load_raw_hyperparameters(layout, env)
    raw.update(load_channel_settings(contract, layout))
    raw.update(settings_from_environment(contract, env))
    raw.update(cli_values)
    return contract.parse_hyperparameters(raw)


def undeclared_channels(contract: StepContract, layout: Layout) -> list[str]:
    """Folders in <root>/input/data that are none of the step's channels: a misspelt `tunned`, or a
    SageMaker job's `training` channel, would otherwise be ignored without a word."""
    folder = layout.root / "input" / "data"
    declared = {channel.name for channel in contract.channels}
    found = sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []
    return [name for name in found if name not in declared]


def check_channels(contract: StepContract, layout: Layout, hp: Hyperparameters) -> None:
    optional_when = hooks_of(contract).channels_optional
    skip = set(optional_when(hp)) if optional_when else set()
    unknown = undeclared_channels(contract, layout)
    declared = ", ".join(channel.name for channel in contract.channels)
    if unknown:
        log.warning("input/data: %s %s not a channel of %s (its channels: %s); ignored",
                    ", ".join(unknown), "is" if len(unknown) == 1 else "are", contract.name, declared)
    for channel in contract.channels:
        path = layout.channel(channel.name)
        if channel.required and channel.name not in skip and not _has_content(path):
            received = f"; input/data holds {', '.join(unknown)}, not a channel here" if unknown else ""
            raise ContractError(f"channel '{channel.name}': missing or empty folder {path} "
                                f"({channel.doc}){received}")


class RootInUse(StepError):
    """Another run holds the root: refuse without writing there (its failure file is not ours)."""


class StepLock:
    """One run per root at a time: a second run refuses instead of corrupting the first."""

    def __init__(self, path: Path, fallback: Path | None = None):
        self.path = path
        self.fallback = fallback  # where the lock goes when the root itself is read-only
        self.handle: TextIO | None = None

    def _open(self) -> TextIO:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return open(self.path, "a+")
        except OSError as error:
            if self.fallback is None or error.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            if self.path.is_file():  # another user's lock: flock works on a read-only handle too
                return open(self.path)
            self.path = self.fallback  # e.g. `docker run --read-only` with /opt/ml/output mounted
            return open(self.path, "a+")

    def __enter__(self) -> StepLock:
        handle = self.handle = self._open()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            handle.close()
            raise RootInUse(f"root {self.path.parent} is in use by another running step "
                            f"(lock {self.path}); wait for it or use another root") from error
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


# SageMaker shows the first 1,024 characters of the failure file.
MAX_REASON_CHARS = 1_000


def write_failure(layout: Layout, reason: str, details: str = "") -> Path | None:
    """First line: the reason; then details. Best effort: an unwritable root is already being
    reported on stderr, and must not turn into a second, raw error."""
    lines = reason.strip().splitlines()
    first = shorten(redact(lines[0] if lines else "step failed"), MAX_REASON_CHARS)
    rest = redact("\n".join(lines[1:]) + ("\n" + details if details else ""))
    temp = layout.failure_file.with_name(".failure.tmp")
    try:
        layout.failure_file.parent.mkdir(parents=True, exist_ok=True)
        temp.write_text(first + "\n" + rest.strip() + "\n", encoding="utf-8")
        os.replace(temp, layout.failure_file)
    except OSError as error:
        log.error("cannot write the failure file %s (%s)", layout.failure_file, error.strerror or error)
        return None
    return layout.failure_file


def fail(layout: Layout, name: str, reason: str, details: str = "", code: int = 2) -> int:
    """The failure contract: failure file, one line on stderr naming the cause, non-zero exit."""
    write_failure(layout, reason, details)
    log.error("step %s failed: %s", name, shorten(redact(reason.strip().splitlines()[0] if reason.strip()
                                                          else "step failed"), MAX_REASON_CHARS))
    return code


def check_root(layout: Layout) -> None:
    """A root the step can work in: a folder (or creatable) whose output/ can be written."""
    root = layout.root
    if root.exists() and not root.is_dir():
        raise StepError(f"root {root}: is a file, not a folder")
    try:
        probe_writable(layout.failure_file.parent)
    except OSError as error:
        raise StepError(f"root {root}: cannot write {layout.failure_file.parent} ({error.strerror or error})") \
            from error


def probe_writable(folder: Path) -> None:
    """Create `folder` if needed and write a file there (a unique name: hosts may share the folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-probe-"):
        pass


def check_outputs(contract: StepContract, layout: Layout) -> None:
    """Each output folder can be replaced without losing an input or a user's files (ContractError)."""
    try:
        check_output_targets({o.name: layout.output(o.name, o.path) for o in contract.outputs},
                             {c.name: layout.channel(c.name) for c in contract.channels})
    except ValueError as error:
        raise ContractError(str(error)) from None


def execute(contract: StepContract, layout: Layout, hp: Hyperparameters) -> dict[str, Any]:
    """Run the step module with staged outputs; commit them only when it succeeds."""
    hooks = hooks_of(contract)
    io = StepIO(contract=contract, layout=layout)
    # Non-zero torchrun ranks stage into a private folder: they never touch the real outputs.
    scratch = None if is_primary_rank() else Path(tempfile.mkdtemp(prefix="openeds-rank-"))
    io.outputs = {o.name: StagedOutput(o.name, scratch / o.name if scratch else layout.output(o.name, o.path))
                  for o in contract.outputs}
    if hooks.check_inputs is not None:
        hooks.check_inputs(hp, io)
    started = time.time()
    try:
        for staged in io.outputs.values():
            staged.open()
        kept_failure = None
        try:
            summary = hooks.run(hp, io) or {}
        except FailAfterCommit as error:
            kept_failure = error
            summary = {**error.summary, "failure": str(error).strip().splitlines()[0]}
        if scratch is not None:  # torchrun: rank 0 alone commits outputs and manifests
            shutil.rmtree(scratch, ignore_errors=True)
            return {"step": contract.name, "summary": summary, "seconds": round(time.time() - started, 3)}
        base = {"step": contract.name, "hyperparameters": hp.model_dump(mode="json"),
                "summary": summary, "seconds": round(time.time() - started, 3)}
        with SIGTERM_POLICY.commit():
            manifests = {name: staged.commit(redact_obj({**base, **io.extra_manifest.get(name, {})}))
                         for name, staged in io.outputs.items() if name not in io.unchanged}
            run_manifest = {**base, "outputs": {name: {"path": str(io.outputs[name].final),
                                                       "files": len(m["files"])} for name, m in manifests.items()}}
            write_json_atomic(layout.run_manifest_file, redact_obj(run_manifest))
    finally:
        for staged in io.outputs.values():
            staged.discard()
    if kept_failure is not None:
        raise kept_failure
    return run_manifest


def is_primary_rank(env: Mapping[str, str] | None = None) -> bool:
    """False on the non-zero ranks of a torchrun job: those run the step but write no outputs."""
    return (os.environ if env is None else env).get("RANK", "0") in ("", "0")


class StepTerminated(BaseException):
    """SIGTERM outside training (which saves a resume point instead): stop, commit nothing. Not an
    Exception: the broad `except Exception` of a frame reader or a tracker must not swallow it."""

    exit_code = 128 + signal.SIGTERM


STOPPED_BY_SIGTERM = ("stopped by SIGTERM; nothing was committed (the previous outputs, if any, are unchanged)"
                      "\nrun the step again to redo it")
# A handler's exception can still be lost (raised inside a finalizer, or caught by a library's
# `except BaseException`): then the step leaves this long after the signal all the same.
SIGTERM_BACKSTOP_S = 15.0


class SigtermPolicy:
    """Outside training SIGTERM stops the step at once (`docker stop`, a KFP cancel, an eviction),
    except during the commit of its outputs: that finishes first, so no output is left half
    swapped, and the step then ends normally with its outputs complete."""

    def __init__(self) -> None:
        self.committing = False
        self.layout: Layout | None = None
        self._backstop: threading.Timer | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.committing:
            log.warning("SIGTERM received while committing the outputs: finishing the commit first")
            return
        if self._backstop is None:
            self._backstop = threading.Timer(SIGTERM_BACKSTOP_S, self._hard_stop)
            self._backstop.daemon = True
            self._backstop.start()
        raise StepTerminated(STOPPED_BY_SIGTERM)

    def _hard_stop(self) -> None:
        log.error("SIGTERM: the stop was caught somewhere and did not end the step in %.0f s; exiting",
                  SIGTERM_BACKSTOP_S)
        if self.layout is not None and is_primary_rank():
            write_failure(self.layout, STOPPED_BY_SIGTERM)
        os._exit(128 + signal.SIGTERM)

    @contextlib.contextmanager
    def active(self, layout: Layout | None) -> Iterator[None]:
        """Answer SIGTERM for the step running in `layout` inside the block."""
        self.layout = layout
        try:
            with sigterm_handler(self):
                yield
        finally:
            if self._backstop is not None:
                self._backstop.cancel()
                self._backstop = None

    @contextlib.contextmanager
    def commit(self) -> Iterator[None]:
        self.committing = True
        try:
            yield
        finally:
            self.committing = False


SIGTERM_POLICY = SigtermPolicy()


def run_step(name: str, layout: Layout, cli_values: Mapping[str, Any] | None = None) -> int:
    """The whole step lifecycle; returns the process exit code."""
    configure_logging()
    with SIGTERM_POLICY.active(layout):
        return _run_step(name, layout, cli_values)


def _run_step(name: str, layout: Layout, cli_values: Mapping[str, Any] | None) -> int:
    try:
        contract = get_contract(name)
        primary = is_primary_rank()
        if primary:
            check_root(layout)
        with StepLock(layout.lock_file, layout.failure_file.parent / ".step.lock") if primary \
                else contextlib.nullcontext():
            if primary:
                layout.failure_file.unlink(missing_ok=True)
            hp = resolve_hyperparameters(contract, layout, cli_values or {})
            check_channels(contract, layout, hp)
            if primary:
                check_outputs(contract, layout)
            log.info("step %s: root %s", name, layout.root)
            manifest = execute(contract, layout, hp)
        log.info("step %s: done in %.1fs; manifest %s", name, manifest["seconds"], layout.run_manifest_file)
        return 0
    except StepTerminated as error:
        if not is_primary_rank():  # torchrun stopping the other ranks after rank 0 failed: its reason stands
            log.error("step %s stopped by SIGTERM (rank %s)", name, os.environ.get("RANK"))
            return error.exit_code
        return fail(layout, name, str(error), code=error.exit_code)
    except RootInUse as error:  # stderr only: a failure file here would be the running step's
        log.error("step %s refused: %s", name, redact(str(error)))
        return 2
    except (ContractError, StepError) as error:
        return fail(layout, name, str(error), code=getattr(error, "exit_code", 2))
    except KeyboardInterrupt:  # Ctrl-C: the user knows where; a traceback adds nothing
        return fail(layout, name, "interrupted (SIGINT); nothing was committed\nrun the step again to redo it "
                    "(training resumes from its last checkpoint)", code=130)
    except Exception as error:  # noqa: BLE001 - every failure must reach the failure file
        return fail(layout, name, failure_reason(error), traceback.format_exc(), code=1)


# System errors that are the cause to name even beneath another error (an earlier, handled OSError
# such as a missing cache file is not).
RESOURCE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.ENOMEM})


def failure_reason(error: BaseException) -> str:
    """The one line for an unexpected error. When a system error lies beneath it, that is the cause
    to name: a full disk under torch.save reads "unexpected pos 704 vs 598" otherwise."""
    described = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    cause, seen = error.__cause__ or error.__context__, {id(error)}
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, OSError) and cause.errno in RESOURCE_ERRNOS and not isinstance(error, OSError):
            return f"{type(cause).__name__}: {cause} (then {shorten(described, 200)})"
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return described


def configure_logging(level: int = logging.INFO) -> None:
    root = logging.getLogger()
    if any(isinstance(f, RedactingFilter) for h in root.handlers for f in h.filters):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(level)
