"""The Docker engine and the project image, for every test that runs the image (tests/docker,
tests/sagemaker): skipped with the reason when absent, failed instead when OPENEDS_REQUIRE_DOCKER=1."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("OPENEDS_IMAGE", "openeds-steps:test")


def docker(*args: str, timeout: float = 600, check: bool = False, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=check,
                          **kwargs)


def unavailable(reason: str) -> None:
    if os.environ.get("OPENEDS_REQUIRE_DOCKER") == "1":
        pytest.fail(f"OPENEDS_REQUIRE_DOCKER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def image() -> str:
    if shutil.which("docker") is None:
        unavailable("no docker client on PATH (install Docker; CI: docker/setup-engine.sh)")
    try:
        info = docker("info", timeout=30)
    except subprocess.TimeoutExpired:
        info = None
    if info is None or info.returncode != 0:
        unavailable("no Docker engine answers `docker info` (start dockerd; CI: docker/setup-engine.sh)")
    if docker("image", "inspect", IMAGE, timeout=30).returncode != 0:
        if os.environ.get("OPENEDS_DOCKER_BUILD") != "1":
            unavailable(f"image {IMAGE} is not built (docker/build.sh --offline --tag {IMAGE}, "
                        "or OPENEDS_DOCKER_BUILD=1 to build it in the test session)")
        subprocess.run([str(REPO / "docker" / "build.sh"), "--offline", "--tag", IMAGE], check=True, timeout=3000)
    return IMAGE
