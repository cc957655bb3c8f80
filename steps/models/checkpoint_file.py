"""Read a checkpoint file without executing anything it holds.

A full unpickle (torch.load outside its weights-only mode) runs whatever a pickle asks for, and
checkpoints arrive through channels, `checkpoints/` and registries: from anyone. Every load in the
project goes through `read_checkpoint`, which uses torch's weights-only unpickler: tensors, numbers,
strings, lists, tuples and dicts, plus numeric numpy arrays (earlier versions of this project stored NumPy's RNG
state that way, and its arrays carry no code). Anything else is refused, naming the file. Nothing
in the project unpickles in full, not even the by-hand conversion of old files.
"""

from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

# What NumPy's RNG state pickles to; object arrays would need further globals, which stay refused.
_NUMERIC_DTYPES = [type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDG"]
_NUMPY_ARRAY_GLOBALS = [np._core.multiarray._reconstruct, np.ndarray, np.dtype,  # type: ignore[attr-defined]
                        *_NUMERIC_DTYPES]


NOT_A_CHECKPOINT = "not a PyTorch checkpoint file: damaged, truncated or another format"


class CheckpointDamaged(pickle.UnpicklingError, ValueError):
    """A file that is not a readable PyTorch checkpoint (damaged, truncated, another format). A
    ValueError like every other unusable checkpoint, so one `except ValueError` serves callers."""

    def __init__(self, detail: str):
        super().__init__(f"{NOT_A_CHECKPOINT} ({detail})")


class CheckpointRefused(ValueError):
    """A file that holds more than plain data (it would run code if unpickled in full); the
    message's first line names it."""


def read_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu",
                    mmap: bool = False) -> dict[str, Any]:
    """The checkpoint dict stored at `path`, loaded weights-only; CheckpointRefused for one that would run
    code, CheckpointDamaged for one that is not a readable checkpoint, OSError for a file not read."""
    path = Path(path)
    with path.open("rb"):
        pass  # a missing or unreadable file is an OSError naming it; any later one is the file's content
    try:
        payload = _load_weights_only(path, _NUMPY_ARRAY_GLOBALS, map_location=map_location, mmap=mmap)
    except pickle.UnpicklingError as error:
        reason = _torch_reason(error)
        if "unsupported global" not in reason.lower():  # damaged, not crafted
            raise CheckpointDamaged(reason) from error
        raise CheckpointRefused(f"{path}: refused, not a plain checkpoint ({reason}); only "
                                f"tensors, numbers, strings, lists and dicts are loaded, so nothing in "
                                f"the file can run. A checkpoint saved by this project before weights-only "
                                f"loading: convert it, if you trust its origin, with "
                                f"`python -m steps.models.checkpoint_file OLD NEW`") from error
    except MemoryError:
        raise
    except OSError as error:  # torch's zip reader on a damaged file (EINVAL), or a read that failed (EIO)
        if error.errno not in (None, errno.EINVAL):
            raise
        raise CheckpointDamaged(f"torch.load: {error}") from error
    except Exception as error:  # torch's readers on a file of another kind raise anything (KeyError, IndexError...)
        detail = " ".join([type(error).__name__, *(str(error).strip().splitlines() or [])[:1]])[:160]
        raise CheckpointDamaged(f"torch.load: {detail}") from error
    if not isinstance(payload, dict):
        raise CheckpointRefused(f"{path}: not an openeds checkpoint (holds a {type(payload).__name__}, "
                                f"expected a dict)")
    return payload


def _load_weights_only(path: Path, allowed: list[Any], **options: Any) -> Any:
    """torch.load with the weights-only unpickler, `allowed` the only globals beyond plain data."""
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, weights_only=True, **options)


def _torch_reason(error: Exception) -> str:
    """The one specific line of torch's long weights-only message (what it refused, or why)."""
    boilerplate = ("Weights only load failed", "Check the documentation", "Please file an issue")
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    specific = [line for line in lines if not line.startswith(boilerplate)]
    return (specific or lines or [type(error).__name__])[0].removeprefix("WeightsUnpickler error: ")[:200]


# What earlier versions of this project also stored: NumPy scalars (metrics such as np.float32).
_CONVERTIBLE_GLOBALS = [*_NUMPY_ARRAY_GLOBALS, np._core.multiarray.scalar]  # type: ignore[attr-defined]


def convert_trusted_checkpoint(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Rewrite a checkpoint that `read_checkpoint` refuses, for a file whose origin you trust.

    It runs only by hand, on a file the user names, and still never unpickles in full (a trusted
    file may have been swapped): the weights-only unpickler, allowed NumPy scalars as well; they
    become Python numbers, and tensors, strings, containers and numeric numpy arrays are kept.
    Anything else is refused, naming the file.
    """
    source = Path(source)
    try:
        payload = _load_weights_only(source, _CONVERTIBLE_GLOBALS, map_location="cpu")
    except pickle.UnpicklingError as error:
        raise CheckpointRefused(f"{source}: refused, holds more than tensors, numbers, strings, "
                                f"containers and numpy values ({_torch_reason(error)})") from error
    plain = _plain(payload, "checkpoint")
    torch.save(plain, Path(target))
    read_checkpoint(target)  # the converted file must load the safe way
    return Path(target)


def _plain(value: Any, where: str) -> Any:
    if isinstance(value, (torch.Tensor, str, int, float, bool, type(None))):
        return value
    if isinstance(value, np.ndarray) and value.dtype != object:
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {key: _plain(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_plain(item, f"{where}[{index}]") for index, item in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    raise CheckpointRefused(f"{where}: holds a {type(value).__module__}.{type(value).__qualname__}, "
                            f"which a plain checkpoint cannot")


def main(argv: list[str] | None = None) -> int:
    """`python -m steps.models.checkpoint_file OLD NEW`: convert a trusted old checkpoint."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m steps.models.checkpoint_file OLD.pt NEW.pt   (OLD: a file you trust)",
              file=sys.stderr)
        return 2
    try:
        print(f"wrote {convert_trusted_checkpoint(args[0], args[1])}: it loads weights-only")
    except (CheckpointRefused, pickle.UnpicklingError, OSError, RuntimeError) as error:
        print(f"error: {str(error).splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
