"""Paths read from files (model cards, workspace pointers, settings) stay inside their folder.

A file a step is handed can name another file; joined unchecked, `"../../elsewhere/x.pt"` would
make the step read (or unpickle) something outside what it was given.
"""

from __future__ import annotations

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
    """The first link under `folder` (its path relative to `folder`) that resolves outside it or not
    at all (a loop), else None: a tree handed to a step must not reach files it was not given."""
    root = Path(folder).resolve()
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_symlink():
            continue
        try:
            inside = path.resolve().is_relative_to(root)
        except (OSError, RuntimeError):  # a link loop
            inside = False
        if not inside:
            return path.relative_to(folder)
    return None
