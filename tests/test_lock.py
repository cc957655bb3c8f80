"""The locked environment matches pyproject.toml: fingerprints, and every direct requirement pinned
to a version its specifier allows, in both the CPU and the CUDA lock."""

from __future__ import annotations

import re
import tomllib

from packaging.requirements import Requirement

from tools.lock import LOCKS, REPO, fingerprint, pins, problems


def direct_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return [Requirement(text) for text in [*project["dependencies"], *project["optional-dependencies"]["test"]]]


def test_the_locks_match_pyproject():
    assert problems() == [], "\n".join(problems())


def test_every_direct_requirement_is_pinned_within_its_specifier():
    for lock in LOCKS.values():
        pinned = pins(lock)
        for requirement in direct_requirements():
            name = re.sub(r"[-_.]+", "-", requirement.name).lower()
            assert name in pinned, f"{lock.name}: {requirement.name} is not locked"
            version = pinned[name].split("+")[0]  # torch's +cpu local version
            assert requirement.specifier.contains(version, prereleases=True), (lock.name, requirement, version)
    assert pins(LOCKS["cpu"])["torch"].endswith("+cpu") and "nvidia-cublas" in pins(LOCKS["cuda"])


def test_every_pin_has_a_hash():
    for lock in LOCKS.values():
        entries = re.split(r"\n(?=[A-Za-z0-9])", lock.read_text(encoding="utf-8").split("\n", 3)[3])
        for entry in entries:
            if "==" in entry:
                assert "--hash=sha256:" in entry, entry.splitlines()[0]


def test_a_changed_dependency_list_changes_the_fingerprint(tmp_path):
    original = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    edited = tmp_path / "pyproject.toml"
    edited.write_text(original.replace('"numpy>=2.0",', '"numpy>=2.1",'), encoding="utf-8")
    reordered = tmp_path / "reordered.toml"
    reordered.write_text(original.replace('  "numpy>=2.0",\n', '').replace(
        '  "scipy>=1.13",\n', '  "scipy>=1.13",\n  "numpy>=2.0",\n'), encoding="utf-8")
    assert fingerprint(edited) != fingerprint() and fingerprint(reordered) == fingerprint()
