"""The offline build's wheelhouse: exactly the files an image lock names, hash-checked.

    python -m tools.wheelhouse requirements/image-cpu.lock wheelhouse/cpu

downloads (`pip download --require-hashes --no-deps`, for the image's CPython 3.11 on manylinux
x86_64, the lock's platform) every pinned distribution into the folder, then checks that each pin
has exactly one file there whose sha256 the lock lists, and nothing else: otherwise
`pip install --require-hashes` would fail inside `docker build`, where no index is reachable. A
package published only as an sdist (kfp-server-api) stays an sdist: a wheel built here would not
have a hash in the lock; the image builds it from the checked sdist, with the locked setuptools and
wheel. Files already in the folder are reused (pip verifies their hash), and a stamp
(`<folder>.lock-sha256`) skips the download while the lock is unchanged; the check always runs.
Standard library only: docker/build.sh runs it with whatever python the host has.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tools.lock import CPU_INDEX, LOCAL_WHEELS, PLATFORM, PYTHON, hashes, normalized, pins

NOISE = "is ignored: it is neither a file nor a directory"  # pip, for file:// indexes without the package


def platforms() -> list[str]:
    """manylinux tags up to the lock's glibc (x86_64-manylinux_2_28 -> manylinux_2_28 ... 2_5 and the
    legacy aliases): pip's --platform takes only the tags it is given."""
    arch, glibc = re.fullmatch(r"(\w+?)-manylinux_2_(\d+)", PLATFORM).groups()  # type: ignore[union-attr]
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(int(glibc), 4, -1)]
    return [*tags, f"manylinux2014_{arch}", f"manylinux2010_{arch}", f"manylinux1_{arch}"]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def distribution(filename: str) -> tuple[str, str] | None:
    """(normalized name, version) of a wheel or sdist file name."""
    wheel = re.fullmatch(r"([^-]+)-([^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl", filename)
    sdist = re.fullmatch(r"(.+)-([^-]+)\.(tar\.gz|zip)", filename)
    found = wheel or sdist
    return (normalized(found.group(1)), found.group(2)) if found else None


def problems(lock: Path, folder: Path) -> list[str]:
    """Every pin has exactly one file with a locked hash, and there is no other file."""
    pinned, accepted = pins(lock), hashes(lock)
    found: dict[str, list[str]] = {}
    wrong = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        name_version = distribution(path.name)
        if name_version is None or name_version[0] not in pinned:
            wrong.append(f"{path.name}: not a distribution the lock pins")
        elif name_version[1] != pinned[name_version[0]]:
            wrong.append(f"{path.name}: the lock pins {name_version[0]}=={pinned[name_version[0]]}")
        elif sha256(path) not in accepted[name_version[0]]:
            wrong.append(f"{path.name}: its sha256 is not among the lock's hashes for {name_version[0]}")
        else:
            found.setdefault(name_version[0], []).append(path.name)
    missing = [f"{name}=={version}: no file" for name, version in sorted(pinned.items()) if name not in found]
    doubled = [f"{name}: {len(files)} files ({', '.join(files)})" for name, files in sorted(found.items())
               if len(files) > 1]
    return [*wrong, *missing, *doubled]


def download(lock: Path, folder: Path) -> None:
    """pip download into a fresh folder (reusing the old one's files), then swap it in."""
    fresh = folder.with_name(folder.name + ".new")
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)
    torch_cpu = ["--find-links", str(LOCAL_WHEELS)] if LOCAL_WHEELS.is_dir() else ["--extra-index-url", CPU_INDEX]
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--require-hashes",
               "--dest", str(fresh), "--python-version", PYTHON, "--implementation", "cp",
               "--abi", f"cp{PYTHON.replace('.', '')}", *[f"--platform={tag}" for tag in platforms()],
               *(["--find-links", str(folder)] if folder.is_dir() else []),
               *(torch_cpu if "+cpu" in pins(lock).get("torch", "") else []), "-r", str(lock)]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PIP_PROGRESS_BAR": "off"})
    sys.stderr.write("".join(line for line in result.stderr.splitlines(keepends=True) if NOISE not in line))
    if result.returncode != 0:
        shutil.rmtree(fresh, ignore_errors=True)
        raise SystemExit(f"pip download failed for {lock} (exit {result.returncode})")
    shutil.rmtree(folder, ignore_errors=True)
    fresh.rename(folder)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    lock, folder = Path(argv[0]), Path(argv[1])
    stamp = folder.with_name(folder.name + ".lock-sha256")
    wanted = sha256(lock)
    if not (folder.is_dir() and stamp.is_file() and stamp.read_text().strip() == wanted):
        stamp.unlink(missing_ok=True)
        download(lock, folder)
    found = problems(lock, folder)
    for problem in found:
        print(f"{folder}: {problem}", file=sys.stderr)
    if found:
        stamp.unlink(missing_ok=True)
        return 1
    stamp.write_text(wanted + "\n")
    files = sorted(p.name for p in folder.iterdir())
    sdists = [name for name in files if not name.endswith(".whl")]
    size = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
    print(f"{folder}: {len(files)} files for {len(pins(lock))} pins of {lock}, every hash in the lock, {size:.0f} MB"
          + (f"; built in the image from its sdist: {', '.join(sdists)}" if sdists else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
