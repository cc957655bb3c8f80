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
