"""The locked environment: requirements/{cpu,cuda}.lock and the image's requirements/image-{cpu,cuda}.lock,
every package pinned with its hashes.

    python -m tools.lock          # (re)write the four locks from pyproject.toml (needs uv: pip install uv)
    python -m tools.lock --image  # rewrite only the image locks from the current full locks
    python -m tools.lock --check  # exit 1 when a lock no longer matches pyproject.toml (or its full lock)

Each lock starts with a fingerprint of pyproject's dependency lists (runtime and the `test` extra),
so editing them without relocking fails the check (tests/test_lock.py runs it). The CPU lock takes
torch's `+cpu` wheel (found through `--find-links`/the PyTorch CPU index); the CUDA lock takes
PyPI's torch with its nvidia-* wheels. `make setup` installs the CPU lock with --require-hashes.

The image locks are what docker/Dockerfile installs (`pip install --require-hashes --no-deps`): the
runtime dependencies only (no `test` extra) plus the build tools that install the project itself
with --no-build-isolation (pyproject's build-system requires, and wheel), compiled with the matching
full lock as a constraint (`-c`), so every package they share has the same version and hashes.
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
IMAGE_LOCKS = {"cpu": REPO / "requirements" / "image-cpu.lock", "cuda": REPO / "requirements" / "image-cuda.lock"}
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


def shown(path: Path) -> Path:
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lock: Path) -> dict[str, str]:
    """package name (normalized) -> pinned version."""
    found = re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s\\]+)", lock.read_text(encoding="utf-8"), flags=re.M)
    return {normalized(name): version for name, version in found}


def hashes(lock: Path) -> dict[str, frozenset[str]]:
    """package name (normalized) -> the sha256 digests the lock accepts for it."""
    found: dict[str, set[str]] = {}
    name = None
    for line in lock.read_text(encoding="utf-8").splitlines():
        entry = re.match(r"^([A-Za-z0-9_.\-]+)==", line)
        if entry:
            name = normalized(entry.group(1))
            found[name] = set()
        elif not line.startswith(" "):
            name = None
        if name is not None:
            found[name].update(re.findall(r"--hash=sha256:([0-9a-f]{64})", line))
    return {key: frozenset(value) for key, value in found.items()}


def build_tools(pyproject: Path = REPO / "pyproject.toml") -> list[str]:
    """What the image needs to install the project with --no-build-isolation: pyproject's build-system
    requires (setuptools>=77), and wheel."""
    requires = tomllib.loads(pyproject.read_text(encoding="utf-8"))["build-system"]["requires"]
    return [*requires, *([] if "wheel" in {requirement_name(r) for r in requires} else ["wheel"])]


def requirement_name(requirement: str) -> str:
    return normalized(re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0])


def uv_compile(variant: str, arguments: list[str], stdin: str | None = None) -> str:
    # torch's +cpu wheel: a local wheel folder when this machine has one (no other index reachable),
    # else PyTorch's CPU index.
    cpu_source = ["--find-links", str(LOCAL_WHEELS)] if LOCAL_WHEELS.is_dir() else ["--extra-index-url", CPU_INDEX]
    sources = [*cpu_source, "--index-strategy", "unsafe-best-match"] if variant == "cpu" else []
    command = ["uv", "pip", "compile", *arguments, "--generate-hashes", "--no-header",
               "--python-version", PYTHON, "--python-platform", PLATFORM, *sources]
    return subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True, input=stdin).stdout


def compile_lock(variant: str) -> None:
    """uv pip compile with hashes for one variant; the fingerprint line goes first."""
    body = uv_compile(variant, ["pyproject.toml", "--extra", "test"])
    header = (f"# {variant.upper()} lock of openeds-steps (runtime + test extra), Python {PYTHON}, {PLATFORM}.\n"
              f"# Regenerate: python -m tools.lock (uv pip compile --generate-hashes).\n"
              f"{FINGERPRINT_PREFIX}{fingerprint()}\n")
    LOCKS[variant].parent.mkdir(parents=True, exist_ok=True)
    LOCKS[variant].write_text(header + body, encoding="utf-8")


def compile_image_lock(variant: str) -> None:
    """The image's lock: runtime dependencies and the build tools (read from stdin: they carry no
    `via` line), constrained by the full lock so that every shared pin is the same."""
    full = LOCKS[variant].relative_to(REPO)
    tools = build_tools()
    body = uv_compile(variant, ["pyproject.toml", "-", "--constraint", str(full)], stdin="\n".join(tools) + "\n")
    header = (f"# {variant.upper()} image lock of openeds-steps (runtime dependencies, no test extra, and the\n"
              f"# build tools {', '.join(tools)}), Python {PYTHON}, {PLATFORM}; the same pins as {full}.\n"
              f"# docker/Dockerfile installs it with pip install --require-hashes --no-deps.\n"
              f"# Regenerate: python -m tools.lock (uv pip compile --generate-hashes -c {full}).\n"
              f"{FINGERPRINT_PREFIX}{fingerprint()}\n")
    IMAGE_LOCKS[variant].write_text(header + body, encoding="utf-8")


def image_lock_differences(variant: str) -> list[str]:
    """Pins of the image lock that are not the full lock's (version or hashes), or not in it at all
    (only a build tool may be absent from the full lock)."""
    image, full = IMAGE_LOCKS[variant], LOCKS[variant]
    image_pins, image_hashes, full_pins, full_hashes = pins(image), hashes(image), pins(full), hashes(full)
    tool_names = {requirement_name(tool) for tool in build_tools()}
    found = []
    for name, version in sorted(image_pins.items()):
        if name not in full_pins:
            if name not in tool_names:
                found.append(f"{shown(image)}: {name} is not in {full.name}")
        elif version != full_pins[name] or image_hashes[name] != full_hashes[name]:
            found.append(f"{shown(image)}: {name}=={version} differs from {full.name}'s "
                         f"{name}=={full_pins[name]} (version or hashes)")
    return found


def problems() -> list[str]:
    current = fingerprint()
    found = []
    for lock in [*LOCKS.values(), *IMAGE_LOCKS.values()]:
        if not lock.is_file():
            found.append(f"{shown(lock)}: missing (run python -m tools.lock)")
        elif recorded_fingerprint(lock) != current:
            found.append(f"{shown(lock)}: does not match pyproject.toml's dependencies "
                         f"(run python -m tools.lock)")
    for variant in IMAGE_LOCKS:
        if IMAGE_LOCKS[variant].is_file() and LOCKS[variant].is_file():
            found.extend(image_lock_differences(variant))
    return found


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--check" in argv:
        found = problems()
        for problem in found:
            print(problem, file=sys.stderr)
        return 1 if found else 0
    for variant in [] if "--image" in argv else LOCKS:
        compile_lock(variant)
        print(f"wrote {LOCKS[variant].relative_to(REPO)} ({len(pins(LOCKS[variant]))} packages)")
    for variant in IMAGE_LOCKS:  # after the full locks: they constrain these
        compile_image_lock(variant)
        print(f"wrote {IMAGE_LOCKS[variant].relative_to(REPO)} ({len(pins(IMAGE_LOCKS[variant]))} packages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
