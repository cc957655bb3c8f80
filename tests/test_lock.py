"""The locked environment matches pyproject.toml: fingerprints, and every direct requirement pinned
to a version its specifier allows, in both the CPU and the CUDA lock; the image locks (what
docker/Dockerfile installs) hold the runtime dependencies and the build tools, at the full locks' pins."""

from __future__ import annotations

import re
import tomllib

from packaging.requirements import Requirement

from tools.lock import IMAGE_LOCKS, LOCKS, REPO, build_tools, fingerprint, hashes, pins, problems


def direct_requirements(extras: bool = True) -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    test = project["optional-dependencies"]["test"] if extras else []
    return [Requirement(text) for text in [*project["dependencies"], *test]]


def assert_pinned_within_specifiers(lock, requirements):
    pinned = pins(lock)
    for requirement in requirements:
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        assert name in pinned, f"{lock.name}: {requirement.name} is not locked"
        version = pinned[name].split("+")[0]  # torch's +cpu local version
        assert requirement.specifier.contains(version, prereleases=True), (lock.name, requirement, version)


def test_the_locks_match_pyproject():
    assert problems() == [], "\n".join(problems())


def test_every_direct_requirement_is_pinned_within_its_specifier():
    for lock in LOCKS.values():
        assert_pinned_within_specifiers(lock, direct_requirements())
    assert pins(LOCKS["cpu"])["torch"].endswith("+cpu") and "nvidia-cublas" in pins(LOCKS["cuda"])


def test_the_image_locks_hold_the_runtime_dependencies_and_the_build_tools_only():
    test_only = {"pytest", "hypothesis", "mypy", "ruff", "ipykernel", "pupil-detectors"}  # nbformat: mlflow's too
    assert test_only <= {re.sub(r"[-_.]+", "-", r.name).lower() for r in direct_requirements()}
    for variant, lock in IMAGE_LOCKS.items():
        assert_pinned_within_specifiers(lock, [*direct_requirements(extras=False), *map(Requirement, build_tools())])
        assert not test_only & set(pins(lock)), f"{lock.name}: test-only packages {sorted(test_only & set(pins(lock)))}"
        assert len(pins(lock)) < len(pins(LOCKS[variant]))
    assert pins(IMAGE_LOCKS["cpu"])["torch"].endswith("+cpu") and "nvidia-cublas" in pins(IMAGE_LOCKS["cuda"])


def test_every_pin_of_an_image_lock_is_its_full_locks_pin():
    """Same version and same hashes; only a build tool the full lock lacks (wheel) may be new."""
    tools = {re.sub(r"[-_.]+", "-", Requirement(tool).name).lower() for tool in build_tools()}
    for variant, lock in IMAGE_LOCKS.items():
        full, full_hashes, image_hashes = pins(LOCKS[variant]), hashes(LOCKS[variant]), hashes(lock)
        for name, version in pins(lock).items():
            if name in full:
                assert (version, image_hashes[name]) == (full[name], full_hashes[name]), (lock.name, name)
            else:
                assert name in tools, f"{lock.name}: {name}=={version} is not in {LOCKS[variant].name}"


def test_the_check_reports_an_image_pin_that_drifted(tmp_path, monkeypatch):
    import tools.lock as lock_module

    drifted = tmp_path / "image-cpu.lock"
    text = IMAGE_LOCKS["cpu"].read_text(encoding="utf-8")
    drifted.write_text(re.sub(r"^numpy==[^ ]+", "numpy==1.0.0", text, flags=re.M), encoding="utf-8")
    monkeypatch.setitem(lock_module.IMAGE_LOCKS, "cpu", drifted)
    found = lock_module.problems()
    assert len(found) == 1 and "numpy==1.0.0 differs" in found[0], found


def test_every_pin_has_a_hash():
    for lock in [*LOCKS.values(), *IMAGE_LOCKS.values()]:
        body = "\n".join(line for line in lock.read_text(encoding="utf-8").splitlines() if not line.startswith("#"))
        entries = re.split(r"\n(?=[A-Za-z0-9])", body)
        for entry in entries:
            if "==" in entry:
                assert "--hash=sha256:" in entry, (lock.name, entry.splitlines()[0])
        assert len(hashes(lock)) == len(pins(lock)) and all(hashes(lock).values()), lock.name


def test_a_changed_dependency_list_changes_the_fingerprint(tmp_path):
    original = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    edited = tmp_path / "pyproject.toml"
    edited.write_text(original.replace('"numpy>=2.0",', '"numpy>=2.1",'), encoding="utf-8")
    reordered = tmp_path / "reordered.toml"
    reordered.write_text(original.replace('  "numpy>=2.0",\n', '').replace(
        '  "scipy>=1.13",\n', '  "scipy>=1.13",\n  "numpy>=2.0",\n'), encoding="utf-8")
    assert fingerprint(edited) != fingerprint() and fingerprint(reordered) == fingerprint()
