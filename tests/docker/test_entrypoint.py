"""The image's entrypoint as a module (no Docker needed): which root it looks at, whom it runs as,
and the HOME it leaves. tests/docker/test_image.py runs it in the image."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def load_entrypoint():
    spec = importlib.util.spec_from_file_location("openeds_entrypoint", REPO / "docker" / "entrypoint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


entrypoint = load_entrypoint()


def test_the_root_is_the_commands_own_then_sagemakers_then_opt_ml():
    env = {"SAGEMAKER_BASE_DIR": "/sm"}
    assert entrypoint.step_root(env, ["download-kaggle", "--root", "/work/run"]) == Path("/work/run")
    assert entrypoint.step_root(env, ["train-seg", "--epochs", "1", "--root=/work/r2"]) == Path("/work/r2")
    assert entrypoint.step_root(env, ["train"]) == Path("/sm")
    assert entrypoint.step_root({}, ["list", "--root"]) == Path("/opt/ml")


@pytest.mark.skipif(os.geteuid() != 0, reason="gives folders to other users")
def test_it_runs_as_the_owner_of_the_root_the_command_names(tmp_path):
    users_tree = tmp_path / "mounted"
    users_tree.mkdir()
    os.chown(users_tree, 4321, 4322)
    assert entrypoint.run_as({}, ["preprocess", "--root", str(users_tree)]) == (4321, 4322, "/tmp")
    # a root the step will create inside the user's tree: its nearest existing folder decides
    assert entrypoint.run_as({}, ["preprocess", "--root", str(users_tree / "run" / "1")]) == (4321, 4322, "/tmp")
    (users_tree / "output").mkdir()
    os.chown(users_tree / "output", 1000, 1000)  # output/ decides over the root
    assert entrypoint.run_as({}, ["--root", str(users_tree)]) == (1000, 1000, "/home/openeds")
    roots_tree = tmp_path / "roots"
    roots_tree.mkdir()
    assert entrypoint.run_as({}, ["preprocess", "--root", str(roots_tree)]) is None  # SageMaker's folders
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp: the image's user, as before --root was looked at
    assert entrypoint.run_as({}, ["preprocess", "--root", str(shared / "run")]) == entrypoint.IMAGE_USER


def test_home_falls_back_to_tmp_when_it_cannot_be_written(tmp_path):
    env = {"HOME": str(tmp_path / "missing")}
    entrypoint.ensure_writable_home(env)
    assert env["HOME"] == "/tmp"
    env = {"HOME": str(tmp_path)}
    entrypoint.ensure_writable_home(env)
    assert env["HOME"] == str(tmp_path)
