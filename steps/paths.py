"""Paths read from files (model cards, workspace pointers, settings) stay inside their folder.

A file a step is handed can name another file; joined unchecked, `"../../elsewhere/x.pt"` would
make the step read (or unpickle) something outside what it was given.
"""

from __future__ import annotations

import os
from pathlib import Path


class PathOutsideFolder(ValueError):
    """A path named inside a file leads out of the folder it must stay in."""


def inside_folder(folder: Path, named: str | Path, what: str) -> Path:
    """`folder / named`, refused (naming `what`, e.g. "model_card.json field 'checkpoint'") when
    it resolves outside `folder`, links followed."""
    candidate = Path(folder) / Path(named)
    if Path(named).is_absolute() or not candidate.resolve().is_relative_to(Path(folder).resolve()):
        raise PathOutsideFolder(f"{what}: {str(named)[:200]!r} leads outside {folder}")
    return candidate


def link_leading_out(folder: Path) -> Path | None:
    """A link under `folder` (relative to it; the same one on every run) that resolves outside it or
    not at all (a loop), else None: an extracted archive or a download cache must not reach other files.
    One scandir walk, links not followed (a tree of 500,000 files is read once)."""
    root = Path(folder).resolve()
    pending = [Path(folder)]
    while pending:
        with os.scandir(pending.pop()) as found:
            entries = sorted(found, key=lambda entry: entry.name)
        for entry in entries:
            if entry.is_symlink():
                try:
                    inside = Path(entry.path).resolve().is_relative_to(root)
                except (OSError, RuntimeError):  # a link loop
                    inside = False
                if not inside:
                    return Path(entry.path).relative_to(folder)
            elif entry.is_dir(follow_symlinks=False):
                pending.append(Path(entry.path))
    return None
