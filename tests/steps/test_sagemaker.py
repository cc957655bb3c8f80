"""SageMaker's side of the contract without Docker: step selection in every encoding the SDKs send,
visible failures, the cluster from resourceconfig.json, and a real two-host DDP run (two processes
standing in for algo-1 and algo-2)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from contracts import ContractError, Layout, get_contract
from steps.__main__ import main as steps_main
from steps.runtime import load_raw_hyperparameters
from steps.sagemaker import Cluster, cluster_from, is_sagemaker_invocation, select_step, torchrun_command
from steps.train.metric_lines import METRIC_DEFINITIONS, parse_metric_lines
from tests.steps.train.tiny_data import write_tiny_splits

REPO = Path(__file__).resolve().parents[2]


def write_config(root: Path, name: str, payload) -> None:
    config = root / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / name).write_text(payload if isinstance(payload, str) else json.dumps(payload))


@pytest.mark.parametrize("value", ["train-ellipse", json.dumps("train-ellipse")])
def test_the_step_selector_in_both_sdk_encodings(value):
    assert select_step({"step": value}, {}) == "train-ellipse"


def test_the_step_defaults_to_train_seg_and_the_environment_wins():
    assert select_step({}, {}) == "train-seg"
    assert select_step({"step": "train-seg"}, {"OPENEDS_STEP": "train-ellipse"}) == "train-ellipse"


def test_an_unknown_step_names_the_steps():
    with pytest.raises(ContractError, match=r"unknown step 'nope' \(steps: download-kaggle"):
        select_step({"step": json.dumps("nope")}, {})


@pytest.mark.parametrize("sent, expected", [("True", True), ("true", True), ("False", False), ("false", False)])
def test_booleans_in_every_sdk_encoding(sent, expected):
    """v2's plain Estimator sends str(v) ("True"); v2 with entry_point and v3 send json.dumps ("true")."""
    hp = get_contract("train-seg").parse_hyperparameters({"augment": sent, "epochs": "3", "optimizer": '"sgd"'})
    assert hp.augment is expected and hp.epochs == 3 and hp.optimizer == "sgd"


def test_sagemaker_invocation_is_recognised_by_its_files_or_environment(tmp_path):
    assert not is_sagemaker_invocation(tmp_path, {})
    assert is_sagemaker_invocation(tmp_path, {"SM_CURRENT_HOST": "algo-1"})
    write_config(tmp_path, "resourceconfig.json", {"current_host": "algo-1", "hosts": ["algo-1"]})
    assert is_sagemaker_invocation(tmp_path, {})


def test_the_cluster_comes_from_resourceconfig_then_the_environment(tmp_path):
    layout = Layout.resolve(tmp_path, env={})
    assert cluster_from(layout, {}).hosts == ("localhost",)
    env = {"SM_HOSTS": '["algo-1", "algo-2"]', "SM_CURRENT_HOST": "algo-2"}
    assert cluster_from(layout, env) == Cluster(("algo-1", "algo-2"), "algo-2")
    write_config(tmp_path, "resourceconfig.json", {"current_host": "algo-1", "hosts": ["algo-1", "algo-2"],
                                                   "network_interface_name": "eth0"})
    assert cluster_from(layout, env) == Cluster(("algo-1", "algo-2"), "algo-1", "eth0")


def test_an_inconsistent_resourceconfig_is_refused(tmp_path):
    write_config(tmp_path, "resourceconfig.json", {"current_host": "algo-3", "hosts": ["algo-1", "algo-2"]})
    with pytest.raises(ContractError, match="algo-3"):
        cluster_from(Layout.resolve(tmp_path, env={}), {})


def test_every_host_runs_torchrun_with_the_first_host_as_rendezvous():
    cluster = Cluster(("algo-1", "algo-2"), "algo-2")
    command = torchrun_command(cluster, {"SM_NUM_GPUS": "0"}, [])
    joined = " ".join(command)
    assert "--nnodes 2 --node_rank 1 --nproc_per_node 1 --master_addr algo-1" in joined
    assert command[-3:] == ["-m", "steps", "train"] or command[-2:] == ["steps", "train"]
    assert torchrun_command(cluster, {"RANK": "0"}, []) is None  # already inside torchrun
    assert torchrun_command(Cluster(("algo-1",), "algo-1"), {}, []) is None


def train_entry(root: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m steps train` the way the image runs it under SageMaker (root from SAGEMAKER_BASE_DIR)."""
    full_env = {**os.environ, "SAGEMAKER_BASE_DIR": str(root), **(env or {})}
    return subprocess.run([sys.executable, "-m", "steps", "train"], cwd=REPO, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("hyperparameters, reason", [
    ({"step": '"nope"'}, "hyperparameter 'step': unknown step"),
    ('{"epochs": "2",', "hyperparameters.json: not valid JSON"),
])
def test_a_failure_under_train_prints_its_reason_on_stderr(tmp_path, hyperparameters, reason):
    write_config(tmp_path, "hyperparameters.json", hyperparameters)
    done = train_entry(tmp_path)
    assert done.returncode == 2
    first_line = (tmp_path / "output" / "failure").read_text().splitlines()[0]
    assert first_line.startswith(reason)
    assert first_line in done.stderr  # what the SDK streams and CloudWatch keeps


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_hosts_train_one_model_written_by_rank_0(tmp_path):
    """Two `train` processes, each with its own root and resourceconfig.json, as algo-1 and algo-2."""
    splits = write_tiny_splits(tmp_path / "data", train_rows=4, valid_rows=2)
    hosts = ["127.0.0.1", "localhost"]  # two names of this machine: node 0 is the rendezvous
    roots = []
    for host in hosts:
        root = tmp_path / host
        write_config(root, "hyperparameters.json", {
            "step": "train-seg", "model": "tiny_efficientvit_micro", "epochs": "1", "batch_size": "1",
            "device": "cpu", "register_model": "false", "cpu_threads": "1"})
        write_config(root, "resourceconfig.json", {"current_host": host, "hosts": hosts})
        for channel, path in splits.items():
            (root / "input" / "data").mkdir(parents=True, exist_ok=True)
            (root / "input" / "data" / channel).symlink_to(path)
        roots.append(root)
    env = {"OPENEDS_RENDEZVOUS_PORT": str(free_port()), "SM_NUM_GPUS": "0"}
    processes = [subprocess.Popen([sys.executable, "-m", "steps", "train"], cwd=REPO, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True,
                                  env={**os.environ, **env, "SAGEMAKER_BASE_DIR": str(root)}) for root in roots]
    logs = [process.communicate(timeout=600)[0] for process in processes]
    assert [p.returncode for p in processes] == [0, 0], "\n-----\n".join(log[-3000:] for log in logs)
    assert "is node 0, rendezvous at 127.0.0.1" in logs[0] and "is node 1" in logs[1]
    assert "rank 1/2 joined the gloo process group" in logs[1]
    manifest = json.loads((roots[0] / "output" / "manifest.json").read_text())
    assert manifest["summary"]["world_size"] == 2
    assert (roots[0] / "model" / "best_efficientvit_tiny_model.pt").is_file()
    assert not (roots[1] / "model").exists() or not any((roots[1] / "model").iterdir())  # rank 0 alone writes
    scraped = parse_metric_lines(logs[0], METRIC_DEFINITIONS)
    assert scraped["epoch"] == [1.0] and 0 <= scraped["valid_iou"][0] <= 1
    assert "[metrics]" not in logs[1]  # rank 0 logs alone



def test_a_settings_file_the_step_cannot_read_is_one_line_under_train(tmp_path, monkeypatch):
    """SageMaker local mode, run as root, writes hyperparameters.json readable by root only, and the
    image runs the step as its own user: that was a raw PermissionError traceback and no failure
    file. (The tests run as root, who reads any file, so the refusal is raised for that one file.)"""
    write_config(tmp_path, "hyperparameters.json", {"epochs": "1"})
    settings = tmp_path / "input" / "config" / "hyperparameters.json"
    read_bytes = Path.read_bytes

    def refuse_the_settings_file(path: Path) -> bytes:
        if path == settings:
            raise PermissionError(13, "Permission denied", str(path))
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", refuse_the_settings_file)
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tmp_path))
    assert steps_main(["train"]) == 2
    first_line, *rest = (tmp_path / "output" / "failure").read_text().splitlines()
    assert first_line == f"hyperparameters.json: cannot read {settings} (Permission denied)"
    assert not any("Traceback" in line for line in rest)


def test_a_settings_file_with_a_byte_order_mark_is_read(tmp_path):
    """Windows PowerShell 5 writes UTF-8 with a byte-order mark by default."""
    (tmp_path / "input" / "config").mkdir(parents=True)
    (tmp_path / "input" / "config" / "hyperparameters.json").write_bytes(b"\xef\xbb\xbf" + b'{"epochs": "3"}')
    assert load_raw_hyperparameters(Layout.resolve(tmp_path, env={}), {}) == {"epochs": "3"}
