"""The locked environment: requirements/{cpu,cuda}.lock, every package pinned with its hashes.

    python -m tools.lock          # (re)write both locks from pyproject.toml (needs uv: pip install uv)
    python -m tools.lock --check  # exit 1 when a lock no longer matches pyproject.toml

Each lock starts with a fingerprint of pyproject's dependency lists (runtime and the `test` extra),
so editing them without relocking fails the check (tests/test_lock.py runs it). The CPU lock takes
torch's `+cpu` wheel (found through `--find-links`/the PyTorch CPU index); the CUDA lock takes
PyPI's torch with its nvidia-* wheels. `make setup` installs the CPU lock with --require-hashes.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOCKS = {"cpu": REPO / "requirements" / "cpu.lock", "cuda": REPO / "requirements" / "cuda.lock"}
FINGERPRINT_PREFIX = "# pyproject-dependencies-sha256: "
PYTHON, PLATFORM = "3.11", "x86_64-manylinux_2_28"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
LOCAL_WHEELS = Path("/opt/wheels")


def fingerprint(pyproject: Path = REPO / "pyproject.toml") -> str:
    """sha256 of the dependency lists a lock is built from (order-insensitive)."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    specification = {"dependencies": sorted(project.get("dependencies", [])),
                     "test": sorted(project.get("optional-dependencies", {}).get("test", [])),
                     "requires-python": project.get("requires-python")}
    return hashlib.sha256(json.dumps(specification, sort_keys=True).encode()).hexdigest()


def recorded_fingerprint(lock: Path) -> str | None:
    for line in lock.read_text(encoding="utf-8").splitlines():
        if line.startswith(FINGERPRINT_PREFIX):
            return line[len(FINGERPRINT_PREFIX):].strip()
    return None


def pins(lock: Path) -> dict[str, str]:
    """package name (normalized) -> pinned version."""
    found = re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s\\]+)", lock.read_text(encoding="utf-8"), flags=re.M)
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in found}


def compile_lock(variant: str) -> None:
    """uv pip compile with hashes for one variant; the fingerprint line goes first."""
    # torch's +cpu wheel: a local wheel folder when this machine has one (no other index reachable),
    # else PyTorch's CPU index.
    cpu_source = ["--find-links", str(LOCAL_WHEELS)] if LOCAL_WHEELS.is_dir() else ["--extra-index-url", CPU_INDEX]
    sources = [*cpu_source, "--index-strategy", "unsafe-best-match"] if variant == "cpu" else []
    command = ["uv", "pip", "compile", "pyproject.toml", "--extra", "test", "--generate-hashes", "--no-header",
               "--python-version", PYTHON, "--python-platform", PLATFORM, *sources]
    body = subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True).stdout
    header = (f"# {variant.upper()} lock of openeds-steps (runtime + test extra), Python {PYTHON}, {PLATFORM}.\n"
              f"# Regenerate: python -m tools.lock (uv pip compile --generate-hashes).\n"
              f"{FINGERPRINT_PREFIX}{fingerprint()}\n")
    LOCKS[variant].parent.mkdir(parents=True, exist_ok=True)
    LOCKS[variant].write_text(header + body, encoding="utf-8")


def problems() -> list[str]:
    current = fingerprint()
    found = []
    for lock in LOCKS.values():
        if not lock.is_file():
            found.append(f"{lock.relative_to(REPO)}: missing (run python -m tools.lock)")
        elif recorded_fingerprint(lock) != current:
            found.append(f"{lock.relative_to(REPO)}: does not match pyproject.toml's dependencies "
                         f"(run python -m tools.lock)")
    return found


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--check" in argv:
        for problem in problems():
            print(problem, file=sys.stderr)
        return 1 if problems() else 0
    for variant in LOCKS:
        compile_lock(variant)
        print(f"wrote {LOCKS[variant].relative_to(REPO)} ({len(pins(LOCKS[variant]))} packages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
