"""Canary secrets never leave the environment: KAGGLE_KEY, HF_TOKEN, MLFLOW_TRACKING_PASSWORD and
MLFLOW_TRACKING_TOKEN hold unique canary values while real step processes run, and no canary
appears in their stdout/stderr, in any file under their roots (manifests, reports, failure files,
checkpoints, caches), nor in the MLflow server's params, tags, metrics, registered versions or
artifacts. Each run also proves the secret was really in play (the fake Kaggle API authorized it,
the MLflow run exists, the offline push read the token), so an empty capture cannot pass.

Image layers: tests/docker/test_image.py::test_no_secret_reaches_the_image_layers builds the image
with the same variables set (and secret files in the build context) and greps `docker save`.
"""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

import pytest

from steps.data.synthetic import generate_openeds
from tests.kaggle_server import FakeKaggle, serve_kaggle, zip_tree
from tests.mlflow_server import mlflow_server  # noqa: F401 (fixture)
from tests.reliability.conftest import Outcome, StepRun
from tests.steps.train.tiny_data import write_tiny_splits

TAG = uuid.uuid4().hex[:12]
CANARIES = {
    "KAGGLE_KEY": f"kagglecanary{TAG}",
    "HF_TOKEN": f"hf_canary{TAG}",
    "MLFLOW_TRACKING_PASSWORD": f"mlflowpwcanary{TAG}",
    "MLFLOW_TRACKING_TOKEN": f"mlflowtokencanary{TAG}",
}


def canary_env(**extra: str) -> dict[str, str]:
    return {**CANARIES, "MLFLOW_TRACKING_USERNAME": "canary-user", **extra}


def files_holding_canaries(*roots: Path) -> dict[str, list[str]]:
    """{file: [canary names]} for every file under `roots` (bytes, so binaries count too)."""
    found: dict[str, list[str]] = {}
    for root in roots:
        for path in (p for p in Path(root).rglob("*") if p.is_file() and not p.is_symlink()):
            data = path.read_bytes()
            hits = [name for name, value in CANARIES.items() if value.encode() in data]
            if hits:
                found[str(path)] = hits
    return found


def assert_no_canary(outcome: Outcome, *roots: Path) -> None:
    assert outcome.stderr.strip(), "no log captured: this check would prove nothing"
    for name, value in CANARIES.items():
        assert value not in outcome.stdout, f"{name} in stdout"
        assert value not in outcome.stderr, f"{name} in stderr"
    assert files_holding_canaries(*roots) == {}


# ---------------------------------------------------------------- download-kaggle

@pytest.fixture(scope="module")
def kaggle_source(tmp_path_factory) -> bytes:
    return zip_tree(generate_openeds(tmp_path_factory.mktemp("kaggle-src"), {"train": 2, "validation": 1, "test": 1},
                                     seed=4, closed_fraction=0.0))


@pytest.mark.parametrize("key", ["accepted", "refused"])
def test_download_kaggle_never_writes_the_kaggle_key(tmp_path, kaggle_source, key):
    state = FakeKaggle(key=CANARIES["KAGGLE_KEY"] if key == "accepted" else "another-key-0123456789")
    state.add("soumicksarker", "openeds-dataset", 1, kaggle_source)
    root, cache = tmp_path / "root", tmp_path / "cache"
    env = canary_env(KAGGLE_USERNAME=state.username, KAGGLE_API_ENVIRONMENT="TEST", HOME=str(tmp_path / "home"),
                     KAGGLEHUB_CACHE=str(tmp_path / "kagglehub"))
    run = StepRun("download-kaggle", root, flags=["--source", "kaggle", "--cache-dir", str(cache)], env=env)
    with serve_kaggle(state) as url:
        outcome = run.run_process(timeout=300, prelude=(  # the step's process uses the local API (as serve_kaggle does here)
            "from kagglesdk import kaggle_env\n"
            f"kaggle_env._env_to_endpoint[kaggle_env.KaggleEnv.TEST] = {url!r}"))
    if key == "accepted":
        assert outcome.code == 0, outcome.stderr[-3000:]
        assert state.count("DownloadDataset") == 1  # the canary key was sent and accepted
    else:
        assert outcome.code != 0 and "Kaggle refused the credentials" in outcome.first_line
    assert_no_canary(outcome, root, cache, tmp_path / "kagglehub")


def test_a_kaggle_key_from_kaggle_json_is_masked_when_a_server_echoes_it(tmp_path, kaggle_source):
    """The key read from a mounted kaggle.json (no KAGGLE_KEY variable) was printed in clear when the
    server's error repeated it, and an echoed `Authorization: Basic base64(user:key)` even with it."""
    state = FakeKaggle(key=CANARIES["KAGGLE_KEY"], echo_credentials=True)
    state.add("soumicksarker", "openeds-dataset", 1, kaggle_source)
    config = tmp_path / "kaggle-config"
    config.mkdir()
    (config / "kaggle.json").write_text(f'{{"username": "{state.username}", "key": "{CANARIES["KAGGLE_KEY"]}"}}')
    env = {name: value for name, value in canary_env().items() if name != "KAGGLE_KEY"}
    env.update(KAGGLE_CONFIG_DIR=str(config), KAGGLE_API_ENVIRONMENT="TEST", HOME=str(tmp_path / "home"),
               KAGGLEHUB_CACHE=str(tmp_path / "kagglehub"))
    root, cache = tmp_path / "root", tmp_path / "cache"
    run = StepRun("download-kaggle", root, flags=["--source", "kaggle", "--cache-dir", str(cache)], env=env)
    with serve_kaggle(state) as url:
        outcome = run.run_process(timeout=300, prelude=(
            "from kagglesdk import kaggle_env\n"
            f"kaggle_env._env_to_endpoint[kaggle_env.KaggleEnv.TEST] = {url!r}"))
    assert outcome.code != 0 and "internal error for Basic ***" in outcome.first_line, outcome.first_line
    basic = base64.b64encode(f"{state.username}:{CANARIES['KAGGLE_KEY']}".encode()).decode()
    assert basic not in outcome.stderr + outcome.first_line
    assert_no_canary(outcome, root, cache, tmp_path / "kagglehub")


# ---------------------------------------------------------------- push-hf

@pytest.fixture(scope="module")
def splits(tmp_path_factory) -> dict[str, Path]:
    return write_tiny_splits(tmp_path_factory.mktemp("secret-splits"), train_rows=2, valid_rows=2)


@pytest.mark.parametrize("push", [False, True])
def test_push_hf_never_writes_the_hf_token(tmp_path, splits, push):
    root = tmp_path / "root"
    run = StepRun("push-hf", root, channels=dict(splits), flags=["--push"] if push else [],
                  env=canary_env(HF_HUB_OFFLINE="1"))
    outcome = run.run_process(timeout=300)
    if push:  # offline: the token is read (set), then the push is refused before any work
        assert outcome.code != 0 and "offline" in outcome.first_line
    else:
        assert outcome.code == 0, outcome.stderr[-3000:]
        assert (root / "output" / "data" / "upload" / "README.md").is_file()
    assert_no_canary(outcome, root)


# ---------------------------------------------------------------- train-seg with a real MLflow server

def mlflow_text(client, run_id: str, model_name: str, download_to: Path) -> str:
    """Everything the server holds about the run and its registered model, as one text."""
    run = client.get_run(run_id)
    parts = [repr(run.data.params), repr(run.data.tags), repr(run.data.metrics), repr(run.info)]
    for version in client.search_model_versions(f"name='{model_name}'"):
        parts += [repr(version.tags), repr(version.source), repr(version.description)]
    client.download_artifacts(run_id, "", str(download_to))
    return "\n".join(parts)


@pytest.mark.slow
@pytest.mark.parametrize("credentials", ["environment", "in the uri"])
def test_train_seg_never_sends_secrets_to_mlflow_or_writes_them(tmp_path, splits, mlflow_server, credentials):
    import mlflow

    uri = mlflow_server
    if credentials == "in the uri":  # user:password@host, the password known to nobody but the URI
        uri = uri.replace("http://", f"http://canary-user:{CANARIES['MLFLOW_TRACKING_PASSWORD']}@")
    name = f"secrets-{credentials.replace(' ', '-')}-{TAG}"
    env = canary_env(MLFLOW_TRACKING_URI=uri)
    if credentials == "in the uri":
        env.pop("MLFLOW_TRACKING_PASSWORD")
    root = tmp_path / "root"
    run = StepRun("train-seg", root, channels=dict(splits), env=env,
                  flags=["--model", "tiny_efficientvit_micro", "--epochs", "1", "--batch-size", "2", "--device", "cpu",
                         "--mlflow-experiment", name, "--registered-model-name", name])
    outcome = run.run_process(timeout=600)
    assert outcome.code == 0, outcome.stderr[-3000:]
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name(name)
    (tracked,) = client.search_runs([experiment.experiment_id])
    assert tracked.data.params and tracked.info.status == "FINISHED"
    artifacts = tmp_path / "artifacts"
    text = mlflow_text(client, tracked.info.run_id, name, artifacts)
    assert any(artifacts.rglob("*.pt")), "artifacts were not downloaded: the check would prove nothing"
    for key, value in CANARIES.items():
        assert value not in text, f"{key} reached MLflow"
    assert_no_canary(outcome, root, artifacts)


def test_an_unreachable_tracking_uri_with_credentials_is_reported_without_them(tmp_path, splits):
    password = CANARIES["MLFLOW_TRACKING_PASSWORD"]
    env = {**canary_env(MLFLOW_TRACKING_URI=f"http://canary-user:{password}@127.0.0.1:9")}
    env.pop("MLFLOW_TRACKING_PASSWORD")  # redaction cannot know it: the URI must be cleaned itself
    root = tmp_path / "root"
    run = StepRun("train-seg", root, channels=dict(splits), env=env,
                  flags=["--model", "tiny_efficientvit_micro", "--epochs", "1", "--batch-size", "2", "--device", "cpu"])
    outcome = run.run_process(timeout=300)
    assert outcome.code != 0
    assert outcome.first_line.startswith("MLFLOW_TRACKING_URI: the MLflow tracking server http://127.0.0.1:9 is unreachable")
    assert_no_canary(outcome, root)
