"""Read what a file says about its size before reading the file.

A `.npy` header can claim any shape (numpy then allocates it: 238 GiB for a crafted label), and a
PNG's header any width and height; both are checked against what the reader expects first.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class HeaderError(ValueError):
    """A header that cannot be read; the message says why (the caller names the file)."""


def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from a .npy file's header, reading nothing else."""
    with open(path, "rb") as handle:
        try:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version in ((2, 0), (3, 0)):
                shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                raise HeaderError(f"unknown .npy version {version}")
        except (ValueError, EOFError) as error:
            raise HeaderError(str(error).splitlines()[0] if str(error) else type(error).__name__) from error
    return tuple(shape), dtype


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, reading 24 bytes."""
    with open(path, "rb") as handle:
        head = handle.read(24)
    if len(head) < 24 or not head.startswith(PNG_SIGNATURE) or head[12:16] != b"IHDR":
        raise HeaderError("not a PNG file (no PNG signature and IHDR header)")
    width, height = struct.unpack(">II", head[16:24])
    return width, height
