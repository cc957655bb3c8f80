"""The image is its lock and names its base: `pip freeze` inside it is exactly the lock it was built
from (requirements/image-cpu.lock or image-cuda.lock, named by its label), and its base labels hold
an immutable digest of the image it was built FROM.

Needs a Docker engine and the image (`docker/build.sh --offline --tag $OPENEDS_IMAGE`); skips with
the reason without them, unless OPENEDS_REQUIRE_DOCKER=1 (CI), where it fails.
"""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from tests.docker.engine import REPO, docker, image  # noqa: F401 (fixture)
from tools.lock import normalized, pins

pytestmark = pytest.mark.docker


def labels(image: str) -> dict[str, str]:
    return json.loads(docker("image", "inspect", image, check=True).stdout)[0]["Config"]["Labels"] or {}


def test_the_image_installs_exactly_its_lock(image):
    found = labels(image)
    lock = REPO / found["openeds.lock"]
    assert found["openeds.lock"] in ("requirements/image-cpu.lock", "requirements/image-cuda.lock")
    assert found["openeds.lock.sha256"] == hashlib.sha256(lock.read_bytes()).hexdigest(), (
        f"{image} was built from another {found['openeds.lock']} than this checkout's: rebuild it")
    freeze = docker("run", "--rm", image, "python", "-m", "pip", "freeze", "--all", check=True).stdout
    installed, direct = {}, {}
    for line in filter(None, map(str.strip, freeze.splitlines())):
        if " @ " in line:
            name, url = line.split(" @ ", 1)
            direct[normalized(name)] = url
        else:
            name, version = line.split("==", 1)
            installed[normalized(name)] = version
    assert set(direct) == {"openeds-steps"}, direct  # the project, from its source, without dependencies
    installed.pop("pip")  # the base's own pip, which installed the lock
    expected = pins(lock)
    assert installed == expected, {name: (installed.get(name), expected.get(name))
                                   for name in set(installed) | set(expected) if installed.get(name) != expected.get(name)}


def test_the_base_is_named_and_pinned_by_digest(image):
    found = labels(image)
    name, digest = found["org.opencontainers.image.base.name"], found["org.opencontainers.image.base.digest"]
    assert name and re.fullmatch(r"sha256:[0-9a-f]{64}", digest), (name, digest)
    # the digest is the base's image ID (a base with no registry digest) or its registry digest
    for reference in (digest, f"{re.sub(r':[^/:@]+$', '', name.split('@')[0])}@{digest}"):
        base = docker("image", "inspect", reference)
        if base.returncode == 0:
            break
    else:
        pytest.skip(f"the base {name} ({digest}) is not on this engine: cannot compare layers")
    base_layers = json.loads(base.stdout)[0]["RootFS"]["Layers"]
    layers = json.loads(docker("image", "inspect", image, check=True).stdout)[0]["RootFS"]["Layers"]
    assert layers[:len(base_layers)] == base_layers, "the image is not built on the labelled base"
