"""The image under its real client: SageMaker Python SDK v2 (Estimator) and v3 (ModelTrainer) in
local mode, one host and two, on docker-compose, offline.

Needs the engine and image (tests/docker/engine.py), docker-compose, and the two SDK venvs made by
`docker/sagemaker-sdks.sh` (OPENEDS_SAGEMAKER_SDKS, default runs/sagemaker-sdks). Without them these
tests skip with the reason, unless OPENEDS_REQUIRE_DOCKER=1 (CI), where they fail. Each job prints
its time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from steps.train.metric_lines import METRIC_DEFINITIONS, parse_metric_lines
from tests.docker.engine import REPO, image, unavailable  # noqa: F401 (fixture)
from tests.steps.train.tiny_data import write_tiny_splits

pytestmark = [pytest.mark.docker, pytest.mark.sagemaker, pytest.mark.slow]

SDKS = Path(os.environ.get("OPENEDS_SAGEMAKER_SDKS", REPO / "runs" / "sagemaker-sdks"))
DRIVER = Path(__file__).with_name("sdk_job.py")
TINY = {"epochs": 1, "batch_size": 2, "device": "cpu", "register_model": False, "cpu_threads": 1}
SEG = {"step": "train-seg", "model": "tiny_efficientvit_micro", **TINY}
ELLIPSE = {"step": "train-ellipse", **TINY}
MODEL_FILES = {"train-seg": "best_efficientvit_tiny_model.pt", "train-ellipse": "best_ellipse_model.pt"}


@pytest.fixture(scope="session")
def sdk_python() -> dict[str, Path]:
    if shutil.which("docker-compose") is None:
        unavailable("no docker-compose on PATH (apt-get install -y docker-compose)")
    found = {version: SDKS / version / "bin" / "python" for version in ("v2", "v3")}
    missing = [str(path) for path in found.values() if not path.is_file()]
    if missing:
        unavailable(f"SageMaker SDK venvs missing: {', '.join(missing)} (docker/sagemaker-sdks.sh {SDKS})")
    return found


@pytest.fixture(scope="module")
def channels(tmp_path_factory) -> dict[str, Path]:
    return write_tiny_splits(tmp_path_factory.mktemp("sm-data"), train_rows=4, valid_rows=2)


def run_job(sdk_python, version: str, image: str, work: Path, channels, hyperparameters: dict,
            hosts: int = 1, entry_point: bool = False) -> tuple[subprocess.CompletedProcess, str]:
    command = [str(sdk_python[version]), str(DRIVER), "--image", image, "--work", str(work), "--hosts", str(hosts),
               "--hyperparameters", json.dumps(hyperparameters),
               *[arg for name, path in channels.items() for arg in ("--channel", f"{name}={path}")]]
    if entry_point:
        command.append("--entry-point")
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=work.parent)
    log = done.stdout + done.stderr
    print(f"SageMaker SDK {version}, {hosts} host(s), step {hyperparameters.get('step')}: "
          f"{time.monotonic() - started:.1f}s")
    return done, log


def members(archive: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(archive) as tar:
        return {member.name.removeprefix("./"): member for member in tar.getmembers()}


def read_member(archive: Path, name: str) -> str:
    with tarfile.open(archive) as tar:
        member = next(m for m in tar.getmembers() if m.name.removeprefix("./") == name)
        return tar.extractfile(member).read().decode()


def assert_trained(done, log: str, work: Path, step: str) -> None:
    assert done.returncode == 0, log[-5000:]
    model = members(work / "output" / "model.tar.gz")
    assert MODEL_FILES[step] in model and "model_card.json" in model, sorted(model)  # top level, no folder
    output = members(work / "output" / "output.tar.gz")
    for name in [*model, *output]:
        assert ".step.lock" not in name and ".staging-" not in name and ".partial-" not in name, name
    assert "failure" not in output
    scraped = parse_metric_lines(log, METRIC_DEFINITIONS)  # what SageMaker's metric_definitions see
    assert scraped["epoch"] == [1.0] and scraped["train_loss"] and scraped["valid_iou"], log[-3000:]


def test_v2_estimator_trains_seg_with_plain_string_hyperparameters(sdk_python, image, channels, tmp_path):
    done, log = run_job(sdk_python, "v2", image, tmp_path / "job", channels, {**SEG, "augment": True})
    assert_trained(done, log, tmp_path / "job", "train-seg")
    assert '"augment": "True"' in log and '"step": "train-seg"' in log  # str(v), as sent by a plain Estimator


def test_v2_estimator_with_entry_point_trains_ellipse_from_json_encoded_values(sdk_python, image, channels,
                                                                               tmp_path):
    done, log = run_job(sdk_python, "v2", image, tmp_path / "job", channels, ELLIPSE, entry_point=True)
    assert_trained(done, log, tmp_path / "job", "train-ellipse")
    assert '"step": "\\"train-ellipse\\""' in log  # json.dumps of the string, decoded by the image


def test_v3_model_trainer_trains_seg_without_the_train_argument(sdk_python, image, channels, tmp_path):
    done, log = run_job(sdk_python, "v3", image, tmp_path / "job", channels, SEG)
    assert_trained(done, log, tmp_path / "job", "train-seg")
    assert '"register_model": "false"' in log  # json.dumps of non-strings


@pytest.mark.parametrize("version", ["v2", "v3"])
def test_two_hosts_train_one_model(version, sdk_python, image, channels, tmp_path):
    step = {"v2": SEG, "v3": ELLIPSE}[version]
    done, log = run_job(sdk_python, version, image, tmp_path / "job", channels, {**step, "batch_size": 1}, hosts=2)
    assert_trained(done, log, tmp_path / "job", step["step"])
    assert "rendezvous at algo-1" in log and "rank 1/2 joined the gloo process group" in log
    manifest = json.loads(read_member(tmp_path / "job" / "output" / "output.tar.gz", "manifest.json"))
    assert manifest["summary"]["world_size"] == 2


@pytest.mark.parametrize("version", ["v2", "v3"])
def test_a_bad_hyperparameter_shows_its_reason_in_the_log_and_the_failure_file(version, sdk_python, image,
                                                                                 channels, tmp_path):
    done, log = run_job(sdk_python, version, image, tmp_path / "job", channels, {**SEG, "epochs": "two"})
    assert done.returncode != 0
    failure = read_member(tmp_path / "job" / "output" / "output.tar.gz", "failure")
    reason = failure.splitlines()[0]
    assert reason.startswith("hyperparameter 'epochs'")
    assert reason in log  # streamed by the SDK, as CloudWatch would keep it
    assert re.search(r"\[sdk_job\] failed: container \S+algo-1\S* exited, exit code 2\b", log), log[-3000:]
