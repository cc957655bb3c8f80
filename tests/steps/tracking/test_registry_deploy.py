"""The registered champion deploys: loaded through MLflow in a venv that has mlflow and onnxruntime
but not this project (nor torch), it predicts what the validated ONNX file predicts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest

from contracts import Layout
from steps.export.onnx_export import cpu_session
from steps.runtime import run_step
from tests.mlflow_server import mlflow_server, mlflow_tracking_uri  # noqa: F401 - fixtures
from tests.steps.export.model_folders import exported_folder
from tests.steps.train.tiny_data import make_split

# pyfunc imports pandas; mlflow-skinny leaves it out.
PINNED = [f"{name}=={version(name)}" for name in ("mlflow-skinny", "onnxruntime", "onnx", "pandas")]
# Reused across runs (creating it downloads about 60 MB once): keyed by Python and the pins.
CACHE = Path(os.environ.get("OPENEDS_TEST_CACHE", Path.home() / ".cache" / "openeds-tests"))

LOAD_AND_PREDICT = """
import importlib.util, json, sys
import numpy as np, mlflow
assert importlib.util.find_spec("steps") is None and importlib.util.find_spec("torch") is None
model = mlflow.pyfunc.load_model(sys.argv[1])
outputs = model.predict(np.load(sys.argv[2]))
np.save(sys.argv[3], outputs["logits"])
print(json.dumps({"flavors": sorted(model.metadata.flavors), "shape": list(outputs["logits"].shape)}))
"""


@pytest.fixture(scope="session")
def deploy_venv() -> Path:
    """A plain venv with only mlflow-skinny, onnxruntime, onnx and pandas (pinned to this environment's)."""
    tag = f"py{sys.version_info.major}{sys.version_info.minor}-" + "-".join(p.replace("==", "") for p in PINNED)
    venv = CACHE / f"registry-venv-{tag}"
    python = venv / "bin" / "python"
    if not (venv / ".ready").is_file():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, capture_output=True)
        result = subprocess.run([str(python), "-m", "pip", "install", "-q", *PINNED], capture_output=True,
                                text=True, timeout=900)
        assert result.returncode == 0, f"pip install {' '.join(PINNED)} failed:\n{result.stderr[-2000:]}"
        (venv / ".ready").touch()
    return python


@pytest.mark.slow
def test_the_champion_loads_and_predicts_without_this_project(mlflow_tracking_uri, deploy_venv, tmp_path):
    import mlflow

    name = f"openeds-deploy-{uuid.uuid4().hex[:6]}"
    client = mlflow.MlflowClient(mlflow_tracking_uri)
    experiment = client.create_experiment(f"deploy-{uuid.uuid4().hex[:6]}")
    run_id = client.create_run(experiment).info.run_id
    client.create_registered_model(name)
    client.create_model_version(name, source=f"runs:/{run_id}/model", run_id=run_id)  # training's candidate
    channels = exported_folder(tmp_path / "in", {"seg_model": "tiny_efficientvit_micro"}, run_ids={"seg_model": run_id})
    make_split(2, seed=3).save_to_disk(str(tmp_path / "in" / "test"))
    layout = Layout.resolve(tmp_path / "validate", channels={**channels, "test": tmp_path / "in" / "test"})
    settings = {"min_miou": 0.0, "max_latency_ms": 60_000, "latency_runs": 3, "latency_warmup": 0, "overlays": 0,
                "fixtures_dir": str(tmp_path / "no-fixtures")}
    assert run_step("validate", layout, settings) == 0, layout.failure_file.read_text()
    assert client.get_model_version_by_alias(name, "champion").version == "2"

    frames = np.random.default_rng(0).uniform(-1, 1, (3, 1, 400, 640)).astype(np.float32)
    np.save(tmp_path / "frames.npy", frames)
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", str(tmp_path)),
           "MLFLOW_TRACKING_URI": mlflow_tracking_uri}
    result = subprocess.run([str(deploy_venv), "-I", "-c", LOAD_AND_PREDICT, f"models:/{name}@champion",
                             str(tmp_path / "frames.npy"), str(tmp_path / "logits.npy")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    facts = json.loads(result.stdout.strip().splitlines()[-1])
    assert "onnx" in facts["flavors"] and facts["shape"] == [3, 2, 400, 640]
    session = cpu_session(channels["onnx"] / "best_efficientvit_tiny_model.onnx")
    expected = session.run(None, {"image": frames})[0]
    assert np.allclose(np.load(tmp_path / "logits.npy"), expected, atol=1e-5)
