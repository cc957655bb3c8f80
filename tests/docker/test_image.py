"""The project image: one step by `docker run`, SageMaker's `train`, signals, the pipeline in docker
mode, and no secrets in its layers.

Needs a Docker engine and the image (`docker/build.sh --offline --tag $OPENEDS_IMAGE`; default tag
openeds-steps:test). Without them these tests skip with the reason, unless OPENEDS_REQUIRE_DOCKER=1
(CI), where they fail. OPENEDS_DOCKER_BUILD=1 builds a missing image once for the session.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import uuid
from pathlib import Path

import pytest

from tests.docker.engine import IMAGE, docker, image, unavailable  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[2]
IMAGE_UID = 1000
SECRET_NAMES = ("KAGGLE_KEY", "KAGGLE_USERNAME", "HF_TOKEN", "MLFLOW_TRACKING_PASSWORD", "WANDB_API_KEY")

pytestmark = pytest.mark.docker


def writable_root(path: Path) -> Path:
    """A root the image's non-root user can write to, as a bind-mounted /opt/ml."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)
    return path


def write_hyperparameters(root: Path, values: dict) -> None:
    config = root / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "hyperparameters.json").write_text(json.dumps(values))


def run_step_here(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "steps", *args], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    """A preprocessed dataset (train, validation) made by the real steps, as processes."""
    base = tmp_path_factory.mktemp("dataset")
    run_step_here("download-kaggle", "--root", str(base / "download"), "--source", "synthetic",
                  "--synthetic-train-frames", "6", "--synthetic-validation-frames", "3",
                  "--synthetic-test-frames", "1")
    run_step_here("preprocess", "--root", str(base / "preprocess"), "--workers", "1",
                  "--channel", f"raw={base / 'download' / 'output' / 'data' / 'raw'}")
    return base / "preprocess" / "output" / "data"


def test_the_image_layout_runs_as_its_non_root_user_and_no_command_prints_help(image):
    """USER is root (SageMaker's folders are root's); the entrypoint drops to the layout's owner."""
    result = docker("run", "--rm", image, "sh", "-c", "id -u; stat -c %u /opt/ml /opt/ml/model /opt/ml/output",
                    check=True)
    assert result.stdout.split() == [str(IMAGE_UID)] * 4
    config = json.loads(docker("image", "inspect", image, check=True).stdout)[0]["Config"]
    assert config["WorkingDir"] == "/opt/ml" and config["User"] in ("", "root", "0") and not config["Cmd"]
    assert not [e for e in config["Env"] if e.split("=")[0] in SECRET_NAMES]
    labels = config["Labels"]  # which commit an image came from
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?|unknown", labels["org.opencontainers.image.revision"]), labels
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert labels["org.opencontainers.image.version"] == project["version"]
    bare = docker("run", "--rm", image)  # no SageMaker layout: the help, not a training run
    assert bare.returncode == 0 and "python -m steps train" in bare.stdout


def test_a_root_run_against_a_users_tree_writes_as_that_user(image, tmp_path):
    """No --user: the entrypoint runs as the owner of the bind-mounted output folder."""
    root = writable_root(tmp_path / "root")
    write_hyperparameters(root, {"source": "synthetic", "synthetic_train_frames": 2,
                                 "synthetic_validation_frames": 1, "synthetic_test_frames": 1})
    (root / "output").mkdir()
    os.chown(root / "output", 4321, 4321)
    result = docker("run", "--rm", "-v", f"{root}:/opt/ml", image, "download-kaggle")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (root / "output" / "manifest.json").stat().st_uid == 4321


def test_image_lists_every_step_and_answers_describe(image):
    listed = docker("run", "--rm", image, "list", check=True).stdout
    for step in ("download-kaggle", "preprocess", "push-hf", "train-seg", "train-ellipse", "export-onnx",
                 "validate"):
        assert step in listed
    described = json.loads(docker("run", "--rm", image, "describe", "train-seg", check=True).stdout)
    assert described["sagemaker_trainable"] is True


@pytest.mark.postgres
def test_the_image_has_the_postgres_driver_and_opens_a_shared_study(image, postgres_server, postgres_database):
    """The image's tune storage code against the test server (host network); the password travels
    as PGPASSWORD from this environment (`-e NAME`), never on the docker command line."""
    import optuna

    from steps.train.study_storage import with_driver

    url = postgres_server.url(postgres_database)  # postgresql://, no password
    code = ("import optuna; from steps.train.study_storage import open_storage; "
            f"optuna.create_study(storage=open_storage({url!r}), study_name='from-image')")
    result = docker("run", "--rm", "--network", "host", "-e", "PGPASSWORD", "--entrypoint", "/opt/venv/bin/python",
                    image, "-c", code, env={**os.environ, "PGPASSWORD": postgres_server.password})
    assert result.returncode == 0, result.stderr[-2000:]
    storage = optuna.storages.RDBStorage(with_driver(postgres_server.url(postgres_database, with_password=True)))
    assert optuna.study.get_all_study_names(storage=storage) == ["from-image"]


def test_one_step_runs_with_docker_run_against_a_bind_mounted_opt_ml(image, tmp_path):
    root = writable_root(tmp_path / "root")
    write_hyperparameters(root, {"source": "synthetic", "synthetic_train_frames": 4,
                                 "synthetic_validation_frames": 2, "synthetic_test_frames": 1})
    result = docker("run", "--rm", "-v", f"{root}:/opt/ml", image, "download-kaggle")
    assert result.returncode == 0, result.stderr[-3000:]
    raw = root / "output" / "data" / "raw"
    manifest = json.loads((raw / "_manifest.json").read_text())
    assert manifest["step"] == "download-kaggle"
    images = list((raw / "openEDS" / "openEDS" / "train" / "images").glob("*.png"))
    assert len(images) == 4
    assert (root / "output" / "manifest.json").stat().st_uid == root.stat().st_uid  # the tree owner's


def test_host_user_mapping_keeps_files_owned_by_the_caller(image, tmp_path):
    root = writable_root(tmp_path / "root")
    write_hyperparameters(root, {"source": "synthetic", "synthetic_train_frames": 2,
                                 "synthetic_validation_frames": 1, "synthetic_test_frames": 1})
    uid, gid = (os.getuid(), os.getgid()) if os.getuid() != 0 else (4321, 4321)
    result = docker("run", "--rm", "--user", f"{uid}:{gid}", "-e", "HOME=/tmp", "-v", f"{root}:/opt/ml",
                    image, "download-kaggle")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (root / "output" / "manifest.json").stat().st_uid == uid


def sagemaker_root(base: Path, dataset: Path, hyperparameters: dict) -> Path:
    """SageMaker's layout: string hyperparameters, channels under input/data, config files."""
    root = writable_root(base / "ml")
    write_hyperparameters(root, {key: value if isinstance(value, str) else json.dumps(value)
                                 for key, value in hyperparameters.items()})
    for channel in ("train", "validation"):
        shutil.copytree(dataset / channel, root / "input" / "data" / channel)
    config = root / "input" / "config"
    (config / "resourceconfig.json").write_text(json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]}))
    (config / "inputdataconfig.json").write_text(json.dumps(
        {"train": {"TrainingInputMode": "File"}, "validation": {"TrainingInputMode": "File"}}))
    for folder in ("model", "output", "checkpoints"):
        writable_root(root / folder)
    return root


def test_train_seg_runs_the_sagemaker_way(image, tiny_dataset, tmp_path):
    root = sagemaker_root(tmp_path, tiny_dataset, {"step": "train-seg", "epochs": "1", "batch_size": "2",
                                                   "device": "cpu", "augment": "false", "register_model": "false"})
    assert all(isinstance(v, str) for v in json.loads((root / "input/config/hyperparameters.json").read_text()).values())
    result = docker("run", "--rm", "-v", f"{root}:/opt/ml", image, "train")
    assert result.returncode == 0, result.stderr[-4000:]
    assert (root / "model" / "best_efficientvit_model.pt").is_file()
    card = json.loads((root / "model" / "model_card.json").read_text())
    assert card["model_type"] == "TinyEfficientViT"
    assert not (root / "output" / "failure").exists()


def test_a_bad_sagemaker_hyperparameter_fails_with_a_failure_file(image, tiny_dataset, tmp_path):
    root = sagemaker_root(tmp_path, tiny_dataset, {"step": "train-seg", "epochs": "two", "device": "cpu"})
    result = docker("run", "--rm", "-v", f"{root}:/opt/ml", image, "train")
    assert result.returncode != 0
    failure = (root / "output" / "failure").read_text()
    assert "epochs" in failure.splitlines()[0]
    assert not any((root / "model").iterdir())


def test_docker_stop_reaches_the_step_at_once(image):
    name = f"openeds-sigterm-{uuid.uuid4().hex[:8]}"
    docker("run", "-d", "--name", name, image, "python", "-c", "import time; time.sleep(300)", check=True)
    try:
        time.sleep(1)
        started = time.monotonic()
        docker("stop", "-t", "30", name, check=True)
        assert time.monotonic() - started < 10  # forwarded SIGTERM, not the 30 s SIGKILL fallback
        assert docker("inspect", "-f", "{{.State.ExitCode}}", name, check=True).stdout.strip() == "143"
    finally:
        docker("rm", "-f", name)


@pytest.mark.slow
def test_the_pipeline_runs_in_docker_mode(image, tmp_path):
    from pipelines import local
    from pipelines.full import build_parser

    args = build_parser().parse_args(["run", "--profile", "smoke", "--work-dir", str(tmp_path / "run"),
                                      "--mode", "docker", "--image", image])
    out = io.StringIO()
    code = local.run_from_args(args, out=out)
    assert code == 0, out.getvalue()[-6000:]
    assert "mode docker" in out.getvalue()
    assert "validation report:" in out.getvalue()
    for task in ("download-kaggle", "preprocess", "push-hf", "train-seg", "train-ellipse", "export-onnx",
                 "validate"):
        assert json.loads((tmp_path / "run" / task / "output" / "manifest.json").read_text())["step"] == task


def context_copy(destination: Path) -> Path:
    """The build context as a fresh clone would have it (tracked files) plus the wheelhouse."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        source = REPO / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    for name in ("contracts", "steps", "pipelines"):  # code of this checkout, tracked or not yet
        shutil.copytree(REPO / name, destination / name, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    if (REPO / "wheelhouse").is_dir():
        shutil.copytree(REPO / "wheelhouse", destination / "wheelhouse", copy_function=os.link)
    return destination


@pytest.mark.slow
def test_no_secret_reaches_the_image_layers(image, tmp_path):
    """Secrets in the build environment and secret files in the context never reach a layer."""
    canary = f"canary-{uuid.uuid4().hex}"
    context = context_copy(tmp_path / "context")
    (context / ".env").write_text(f"HF_TOKEN={canary}\n")
    (context / "kaggle.json").write_text(json.dumps({"username": "u", "key": canary}))
    (context / "steps" / ".env").write_text(f"KAGGLE_KEY={canary}\n")
    tag = f"openeds-steps:secret-check-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, **{name: canary for name in SECRET_NAMES}, "OPENEDS_IMAGE": tag}
    # --offline: the host fetches the lock's files (when the context has no wheelhouse yet) and the
    # build runs without network; a build container may have none (PyPI reachable from the host only).
    build = subprocess.run([str(context / "docker" / "build.sh"), "--offline", "--tag", tag], cwd=context, env=env,
                           capture_output=True, text=True, timeout=3000)
    try:
        assert build.returncode == 0, build.stderr[-3000:]
        history = docker("history", "--no-trunc", tag, check=True).stdout
        assert canary not in history
        assert canary not in docker("image", "inspect", tag, check=True).stdout
        saved = subprocess.run(f"docker save {tag} | grep -a -c -F {canary}", shell=True, capture_output=True,
                               text=True, timeout=900)
        assert saved.stdout.strip() == "0", "the canary secret is inside an image layer"
    finally:
        docker("rmi", "-f", tag)


def test_hardened_containers_and_other_users_run(image, tmp_path):
    """`--cap-drop ALL` (Kubernetes' `drop: [ALL]`) used to crash the entrypoint on setgroups; a
    macOS user's `--user 501:20` got the image user's HOME and failed writing caches there."""
    dropped = docker("run", "--rm", "--cap-drop", "ALL", image, "list")
    assert dropped.returncode == 0 and "train-seg" in dropped.stdout, dropped.stderr[-2000:]
    assert "cannot switch to uid 1000" in dropped.stderr and "Traceback" not in dropped.stderr
    home = docker("run", "--rm", "--user", "501:20", image, "python", "-c", "import os; print(os.environ['HOME'])")
    assert home.stdout.strip() == "/tmp", home.stderr[-2000:]


def test_a_root_named_by_the_command_decides_who_runs(image, tmp_path):
    """`-v TREE:/work IMAGE STEP --root /work/run`: the files are the tree owner's, as for /opt/ml
    (the entrypoint used to look at /opt/ml only, switch to uid 1000 and fail to write the tree)."""
    tree = tmp_path / "tree"
    tree.mkdir()
    os.chown(tree, 4321, 4321)
    result = docker("run", "--rm", "-v", f"{tree}:/work", image, "download-kaggle", "--root", "/work/run",
                    "--source", "synthetic", "--synthetic-train-frames", "2", "--synthetic-validation-frames", "1",
                    "--synthetic-test-frames", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tree / "run" / "output" / "manifest.json").stat().st_uid == 4321


def test_a_read_only_container_with_its_folders_mounted_one_by_one_trains(image, tiny_dataset, tmp_path):
    """`--read-only` with output, model and checkpoints mounted on their own (SageMaker's layout):
    the step lock and the model's staging folder used to go into /opt/ml itself (EROFS, a traceback)."""
    root = tmp_path / "sm"
    mounts = []
    for folder in ("output", "model", "checkpoints"):
        mounts += ["-v", f"{writable_root(root / folder)}:/opt/ml/{folder}"]
    for split in ("train", "validation"):
        mounts += ["-v", f"{tiny_dataset / split}:/opt/ml/input/data/{split}:ro"]
    result = docker("run", "--rm", "--read-only", "--tmpfs", "/tmp", *mounts, image, "train-seg",
                    "--epochs", "1", "--batch-size", "2", "--device", "cpu", "--no-register-model")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (root / "model" / "_manifest.json").is_file() and not (root / "output" / "failure").exists()
    assert not [p.name for p in (root / "model").iterdir() if "staging" in p.name]
