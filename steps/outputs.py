"""Atomic step outputs and their manifests.

A step writes each output into a staging folder beside its final path. Only when the step has
succeeded is the staging folder swapped into place, with `_manifest.json` written inside it: a
folder without a manifest is never a finished output, and a failed run leaves the previous
outputs untouched.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MANIFEST_NAME = "_manifest.json"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def list_files(folder: Path) -> list[dict[str, Any]]:
    """Every file under `folder` (manifest excluded) with size and sha256, sorted by path."""
    entries = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_NAME):
        entries.append({"path": path.relative_to(folder).as_posix(), "size": path.stat().st_size,
                        "sha256": sha256_file(path)})
    return entries


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to a temp file in the same folder, fsync, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(temp, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True, default=str)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def loads_json(text: str | bytes, **options: Any) -> Any:
    """`json.loads` for untrusted text: JSON nested deeper than Python's recursion limit (a 10 KB file
    of `[[[[...`) is a JSONDecodeError like any other malformed JSON, not a RecursionError."""
    try:
        return json.loads(text, **options)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text if isinstance(text, str) else "", 0) from None


def read_manifest(folder: Path) -> dict[str, Any] | None:
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return None
    return loads_json(path.read_text(encoding="utf-8"))


def move_entry(source: Path, target: Path) -> None:
    """Rename `source` to `target`; across filesystems (EXDEV) copy it beside the target under a
    hidden name, rename that into place (atomic there), then remove the source."""
    try:
        os.rename(source, target)
        return
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        if source.is_dir() and not source.is_symlink():
            shutil.copytree(source, partial, symlinks=True)
        else:
            shutil.copy2(source, partial, follow_symlinks=False)
        os.replace(partial, target)
    finally:
        if partial.is_dir() and not partial.is_symlink():
            shutil.rmtree(partial, ignore_errors=True)
        elif partial.exists() or partial.is_symlink():
            partial.unlink()
    shutil.rmtree(source) if source.is_dir() and not source.is_symlink() else source.unlink()


def check_output_targets(outputs: Mapping[str, Path], inputs: Mapping[str, Path]) -> None:
    """ValueError naming the output unless each output folder can be replaced without losing
    anything: not a file, not an input channel's folder nor one holding it (an override such as
    `--output predictions=<the frames folder>` would delete the input), and, when it already holds
    files, an earlier output of a step (its `_manifest.json` there). An output inside an input's
    folder is fine when new (preprocess's report beside the splits it checks)."""
    resolved_inputs = {name: Path(path).resolve() for name, path in inputs.items() if Path(path).exists()}
    for name, final in outputs.items():
        target = Path(final).resolve()
        for channel, source in resolved_inputs.items():
            if source.is_relative_to(target):  # the same folder, or one holding the input
                raise ValueError(f"output '{name}': {final} overlaps input channel '{channel}' ({source}); "
                                 f"writing it would replace the input: give another folder")
        if Path(final).is_symlink() or (target.exists() and not target.is_dir()):
            raise ValueError(f"output '{name}': {final} is {'a link' if Path(final).is_symlink() else 'a file'}, "
                             f"expected a folder (new, empty, or an earlier output of a step)")
        if target.is_dir() and any(not is_staging_leftover(p) for p in target.iterdir()) \
                and not (target / MANIFEST_NAME).is_file():
            raise ValueError(f"output '{name}': {final} holds files that are not an earlier step output (no "
                             f"{MANIFEST_NAME}); the step replaces its output folder: give a new or empty one")


INSIDE_STAGING = ".staging-"  # staging inside the final folder, when its parent cannot be written


def is_staging_leftover(path: Path) -> bool:
    return path.name.startswith(INSIDE_STAGING)


class StagedOutput:
    """One output folder: written in staging, committed by a swap.

    Staging sits beside the final folder. When that parent cannot be written (a read-only root
    with /opt/ml/model and /opt/ml/output mounted on their own: `docker run --read-only`), it sits
    inside the final folder, and the commit moves its entries up.
    """

    def __init__(self, name: str, final: Path):
        self.name = name
        self.final = Path(final)
        self.staging = self.final.parent / f".{self.final.name}.staging-{os.getpid()}"

    def open(self) -> Path:
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.remove_leftovers()
        if self.staging.exists():
            shutil.rmtree(self.staging)
        try:
            self.staging.mkdir(parents=True)
        except OSError as error:
            if error.errno not in (errno.EACCES, errno.EPERM, errno.EROFS) or not self.final.is_dir():
                raise
            self.staging = self.final / f"{INSIDE_STAGING}{os.getpid()}"
            self.staging.mkdir()
        return self.staging

    @property
    def stages_inside(self) -> bool:
        return self.staging.parent == self.final

    def remove_leftovers(self) -> None:
        """Staging/old folders of killed runs (the root lock says no other run is alive)."""
        for pattern in (f".{self.final.name}.staging-*", f".{self.final.name}.old-*"):
            for leftover in self.final.parent.glob(pattern):
                shutil.rmtree(leftover, ignore_errors=True)
        for pattern in (".*.partial-*", f"{INSIDE_STAGING}*"):
            for leftover in self.final.glob(pattern) if self.final.is_dir() else ():
                shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink()

    def commit(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Write the manifest into staging, then swap staging into the final path."""
        manifest = {**manifest, "output": self.name, "files": list_files(self.staging),
                    "created_unix": time.time()}
        write_json_atomic(self.staging / MANIFEST_NAME, manifest)
        if self.stages_inside:
            self._move_contents()
            return manifest
        try:
            self._swap()
        except OSError:
            self._move_contents()  # the final path is a mount point (SageMaker's /opt/ml/model)
        return manifest

    def _swap(self) -> None:
        old = self.final.parent / f".{self.final.name}.old-{os.getpid()}"
        if self.final.exists():
            os.rename(self.final, old)
        try:
            os.rename(self.staging, self.final)
        except OSError:
            if old.exists():
                os.rename(old, self.final)  # put the previous output back for the fallback
            raise
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)  # rmtree leaves a file or link behind

    def _move_contents(self) -> None:
        """Fallback for a final folder that cannot be renamed (a mount point such as SageMaker's
        /opt/ml/model, often on another filesystem than its parent): empty it, move each entry in,
        the manifest last. Readers take a folder without a manifest as unfinished, so the output
        still appears at once, complete."""
        self.final.mkdir(parents=True, exist_ok=True)
        stale = self.final / MANIFEST_NAME
        stale.unlink(missing_ok=True)
        for child in self.final.iterdir():
            if child == self.staging:
                continue
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        for child in sorted(self.staging.iterdir(), key=lambda p: p.name == MANIFEST_NAME):
            move_entry(child, self.final / child.name)
        shutil.rmtree(self.staging, ignore_errors=True)

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
