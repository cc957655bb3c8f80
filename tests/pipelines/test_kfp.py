"""The compiled KFP pipeline agrees with the DAG, the contracts and the step CLI."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kfp import components

from contracts import get_contract
from pipelines import launch
from pipelines.dag import ALL_TASKS, TASKS, build_dag, load_profile
from pipelines.full import EndpointError, hyperparameter_parameter, main, probe_endpoint, storage_size, typed_parameter
from pipelines.kfp_components import ImageReferenceError, check_image_reference
from pipelines.kfp_ui import MARKDOWN, METRICS, METRICS_OUTPUT, TYPED_PARAMETERS, UI_OUTPUTS
from steps.__main__ import build_parser, parse_pairs
from tests.pipelines import kfp_emulation as kfp_emu

REPO = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "ab" * 32
TRAINING = {"train-seg", "train-ellipse"}
TINY = {
    "download_kaggle_hyperparameters": json.dumps({
        "source": "synthetic", "synthetic_train_frames": 6, "synthetic_validation_frames": 3,
        "synthetic_test_frames": 1}),
    "preprocess_hyperparameters": json.dumps({"workers": 1}),
}


def compile_to(path: Path, *extra: str) -> Path:
    assert main(["compile", "--output", str(path), *extra]) == 0
    return path


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> Path:
    return compile_to(tmp_path_factory.mktemp("kfp") / "pipeline.yaml")


@pytest.fixture(scope="module")
def documents(compiled):
    return kfp_emu.load(compiled)


def test_compile_is_identical_to_kfp_dsl_compile(compiled, tmp_path):
    kfp_cli = Path(sys.executable).with_name("kfp")
    out = tmp_path / "by-kfp.yaml"
    subprocess.run([str(kfp_cli), "dsl", "compile", "--py", "pipelines/full.py", "--output", str(out)],
                   cwd=REPO, check=True, capture_output=True, timeout=300)
    assert out.read_bytes() == compiled.read_bytes()


def test_the_yaml_loads_back_with_one_task_per_step(compiled, documents):
    loaded = components.load_component_from_file(str(compiled))
    assert loaded.name == "openeds-pipeline"
    spec, _ = documents
    assert set(spec["root"]["dag"]["tasks"]) == set(TASKS)


def test_compiled_dag_equals_the_local_dag(documents):
    spec, _ = documents
    dag = build_dag()
    for task in TASKS:
        compiled_task = spec["root"]["dag"]["tasks"][task]
        assert set(compiled_task.get("dependentTasks", [])) == set(dag.upstream(task)), task
        wired = {channel: (source["taskOutputArtifact"]["producerTask"],
                           source["taskOutputArtifact"]["outputArtifactKey"])
                 for channel, source in compiled_task.get("inputs", {}).get("artifacts", {}).items()}
        assert wired == {ch: (e.source_task, e.source_output) for ch, e in dag.inputs_of(task).items()}, task
        hp_source = compiled_task["inputs"]["parameters"]["hyperparameters"]["componentInputParameter"]
        assert hp_source == hyperparameter_parameter(task)


def test_every_component_matches_its_contract(documents):
    spec, _ = documents
    for task in TASKS:
        contract = get_contract(task)
        component = spec["components"][spec["root"]["dag"]["tasks"][task]["componentRef"]["name"]]
        inputs = component["inputDefinitions"]
        assert {name: bool(d.get("isOptional")) for name, d in inputs["artifacts"].items()} == \
            {c.name: not c.required for c in contract.channels}, task
        assert set(inputs["parameters"]) == {"hyperparameters", *TYPED_PARAMETERS.get(task, {})}
        contract.parse_hyperparameters(json.loads(inputs["parameters"]["hyperparameters"]["defaultValue"]))
        assert set(component["outputDefinitions"]["artifacts"]) == \
            {o.name for o in contract.outputs} | set(UI_OUTPUTS.get(task, {})), task


def test_pipeline_parameters_hold_valid_hyperparameters_and_the_image(documents):
    spec, _ = documents
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert parameters["image"]["defaultValue"] == "openeds-steps:0.1.0"
    assert parameters["accelerator_type"]["defaultValue"] == "nvidia.com/gpu"
    for task in TASKS:
        values = json.loads(parameters[hyperparameter_parameter(task)]["defaultValue"])
        typed = {key: parameters[typed_parameter(task, key)]["defaultValue"] for key in TYPED_PARAMETERS.get(task, {})}
        profile = load_profile("kfp")[task]
        assert values == {k: v for k, v in profile.items() if k not in typed}
        assert {k: v for k, v in typed.items() if k in profile} == {k: profile[k] for k in typed if k in profile}
        get_contract(task).parse_hyperparameters({**values, **typed})


def test_the_ui_shows_metrics_and_the_report_and_typed_parameters(documents):
    """KFP's UI renders Metrics and Markdown artifacts; generic Artifacts are only links."""
    spec, _ = documents
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    kinds = {"Integer": "NUMBER_INTEGER", "Float": "NUMBER_DOUBLE", "String": "STRING"}
    for task in TASKS:
        component = spec["components"][spec["root"]["dag"]["tasks"][task]["componentRef"]["name"]]
        outputs = component["outputDefinitions"]["artifacts"]
        for name, kind in UI_OUTPUTS.get(task, {}).items():
            assert outputs[name]["artifactType"]["schemaTitle"] == kind.split("@")[0], (task, name)
        wired = spec["root"]["dag"]["tasks"][task]["inputs"]["parameters"]
        for key, kind in TYPED_PARAMETERS.get(task, {}).items():
            assert parameters[typed_parameter(task, key)]["parameterType"] == kinds[kind]
            assert wired[key]["componentInputParameter"] == typed_parameter(task, key)
    assert {name: kind for name, kind in UI_OUTPUTS["validate"].items()} == \
        {METRICS_OUTPUT: METRICS, "report_md": MARKDOWN}
    assert set(TYPED_PARAMETERS["train-seg"]) == {"epochs", "batch_size", "lr", "model"}
    for task in ("train-seg", "train-ellipse"):
        assert UI_OUTPUTS[task] == {METRICS_OUTPUT: METRICS}


def test_gpu_requests_only_on_training_and_resources_everywhere(documents):
    spec, _ = documents
    for task in TASKS:
        container = kfp_emu.executor_of(spec, task)
        resources = container["resources"]
        assert resources["cpuRequest"] > 0 and resources["memoryRequest"] > 0, task
        assert ("accelerator" in resources) == (task in TRAINING), task
        assert "pipelinechannel--image" in container["image"]
    accelerator = kfp_emu.executor_of(spec, "train-seg")["resources"]["accelerator"]
    assert "accelerator_type" in accelerator["resourceType"]
    assert "accelerator_limit" in accelerator["resourceCount"]


def test_kubernetes_settings(documents):
    spec, platform = documents
    executors = platform["deploymentSpec"]["executors"]
    for task in TASKS:
        label = spec["components"][spec["root"]["dag"]["tasks"][task]["componentRef"]["name"]]["executorLabel"]
        config = executors.get(label, {})
        if task in TRAINING:
            assert config["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
            assert config["tolerations"][0]["key"] == "nvidia.com/gpu"
            assert config["emptyDirMounts"][0]["mountPath"] == "/dev/shm"
            assert config["emptyDirMounts"][0]["medium"] == "Memory"
        else:
            assert "nodeSelector" not in config and "tolerations" not in config
        for secret in config.get("secretAsEnv", []):
            assert secret["optional"] is True
    secrets = {s["secretName"]: [k["envVar"] for k in s["keyToEnv"]]
               for s in executors["exec-download-kaggle"]["secretAsEnv"]}
    assert secrets == {"kaggle-credentials": ["KAGGLE_USERNAME", "KAGGLE_KEY"]}


def test_retries_and_caching(documents, tmp_path):
    spec, _ = documents
    tasks = spec["root"]["dag"]["tasks"]
    for task in TASKS:
        assert tasks[task]["retryPolicy"]["maxRetryCount"] == 2
        assert tasks[task]["cachingOptions"].get("enableCache", False) == (task != "push-hf")
    uncached, _ = kfp_emu.load(compile_to(tmp_path / "nocache.yaml", "--no-cache"))
    assert not any(t["cachingOptions"].get("enableCache") for t in uncached["root"]["dag"]["tasks"].values())


@pytest.mark.parametrize("reference", [
    "openeds-steps:0.1.0", "registry.example.com:5000/team/openeds-steps:v1",
    f"ghcr.io/team/openeds-steps@{DIGEST}", f"localhost/openeds-steps:cuda@{DIGEST}"])
def test_valid_image_references(reference):
    assert check_image_reference(reference) == reference


@pytest.mark.parametrize("reference", [
    "", "Openeds:latest", "openeds steps", "openeds:", "openeds@sha256:1234", f"openeds@{DIGEST.upper()}",
    "openeds:tag:extra"])
def test_invalid_image_references(reference):
    with pytest.raises(ImageReferenceError):
        check_image_reference(reference)


def test_digest_pinning_can_be_required():
    with pytest.raises(ImageReferenceError, match="not pinned by digest"):
        check_image_reference("openeds-steps:0.1.0", require_digest=True)


def test_compile_can_require_a_pinned_image(tmp_path, capsys):
    assert main(["compile", "--output", str(tmp_path / "p.yaml"), "--require-digest"]) == 2
    assert "not pinned by digest" in capsys.readouterr().err
    assert main(["compile", "--output", str(tmp_path / "p.yaml"), "--require-digest",
                 "--image", f"registry.example.com/openeds-steps@{DIGEST}"]) == 0


def test_image_and_settings_reach_the_compiled_yaml(tmp_path, capsys):
    image = f"registry.example.com/team/openeds-steps@{DIGEST}"
    spec, _ = kfp_emu.load(compile_to(tmp_path / "p.yaml", "--image", image, "--set", "train-seg.epochs=30"))
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert parameters["image"]["defaultValue"] == image
    assert parameters["train_seg_epochs"]["defaultValue"] == 30  # a typed parameter
    assert main(["compile", "--output", str(tmp_path / "bad.yaml"), "--image", "Bad Image"]) == 2
    assert "not a valid image reference" in capsys.readouterr().err
    assert main(["compile", "--output", str(tmp_path / "bad.yaml"), "--set", "train-seg.epochs=-1"]) == 2
    assert "train-seg" in capsys.readouterr().err and not (tmp_path / "bad.yaml").exists()


def test_container_arguments_are_what_the_step_cli_accepts(documents, tmp_path):
    """Resolve every executor's arguments as KFP would and parse them with the step's own CLI."""
    spec, _ = documents
    for task in TASKS:
        contract = get_contract(task)
        container = kfp_emu.executor_of(spec, task)
        assert container["command"] == ["python", "-m", "pipelines.launch"]
        fed = {ch.name: f"/kfp/in/{ch.name}" for ch in contract.channels if ch.name in build_dag().inputs_of(task)}
        outs = {o.name: f"/kfp/out/{o.name}" for o in contract.outputs}
        ui = {name: f"/kfp/out/{name}" for name in UI_OUTPUTS.get(task, {})}
        args = kfp_emu.resolve_args(container["args"], fed, {**outs, **ui}, {"hyperparameters": "{}"})
        step_args = args[args.index("--") + 1:]
        assert args[0] == task
        command, redirected = launch.build_step_args(step_args, task, workspace=None)
        parsed = vars(build_parser(contract).parse_args(command))
        assert parsed["root"] == "/opt/ml" and not redirected
        assert parse_pairs(parsed["channel"], "channel", [c.name for c in contract.channels]) == fed
        assert parse_pairs(parsed["output"], "output", [o.name for o in contract.outputs]) == outs


@pytest.mark.parametrize("size", ["abc", "0", "200gb", "-5Gi"])
def test_a_pvc_size_kubernetes_would_refuse_is_refused_at_compile_time(tmp_path, size, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["compile", "--output", str(tmp_path / "p.yaml"), f"--pvc-size={size}"])
    assert exited.value.code == 2 and "is not a storage size such as 200Gi" in capsys.readouterr().err
    assert not (tmp_path / "p.yaml").exists()
    assert storage_size("0.5Gi") == "0.5Gi" and storage_size("200Gi") == "200Gi" and storage_size("500G") == "500G"


def test_workspace_variant_mounts_a_pvc_in_every_task(tmp_path):
    spec, platform = kfp_emu.load(compile_to(tmp_path / "pvc.yaml", "--pvc-size", "200Gi",
                                             "--pvc-storage-class", "standard-rwx"))
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == set(TASKS) | {"createpvc", "deletepvc"}
    assert set(tasks["deletepvc"]["dependentTasks"]) >= set(TASKS)
    for task in TASKS:
        label = spec["components"][tasks[task]["componentRef"]["name"]]["executorLabel"]
        mounts = platform["deploymentSpec"]["executors"][label]["pvcMount"]
        assert mounts[0]["mountPath"] == "/workspace"
        assert "--workspace" in kfp_emu.executor_of(spec, task)["args"]
    pvc_inputs = tasks["createpvc"]["inputs"]["parameters"]
    assert pvc_inputs["size"]["runtimeValue"]["constant"] == "200Gi"
    assert pvc_inputs["storage_class_name"]["runtimeValue"]["constant"] == "standard-rwx"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_submit_to_an_unreachable_host_fails_in_seconds():
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "pipelines.full", "submit", "--host",
                             f"http://127.0.0.1:{closed_port()}"], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    elapsed = time.monotonic() - started
    assert result.returncode == 2
    assert "is unreachable" in result.stderr and "check --host" in result.stderr
    assert elapsed < 30, f"took {elapsed:.1f}s"


def test_probe_gives_up_on_a_silent_host_after_its_timeout():
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        started = time.monotonic()
        with pytest.raises(EndpointError, match="did not answer"):
            probe_endpoint(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout_s=1.0)
        assert time.monotonic() - started < 5


@pytest.mark.parametrize("host, message", [
    ("http://kfp.invalid:8888", "unreachable"),
    ("ftp://example.com", "expected http"),
])
def test_probe_names_the_problem(host, message):
    with pytest.raises(EndpointError, match=message):
        probe_endpoint(host, timeout_s=2.0)


def test_probe_refuses_a_server_that_is_not_kfp(tmp_path):
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(EndpointError, match="not a KFP API endpoint"):
            probe_endpoint(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()


@pytest.mark.slow
def test_compiled_yaml_drives_the_real_steps(compiled, tmp_path):
    """download-kaggle then preprocess, run from the compiled YAML's own command lines."""
    spec, _ = kfp_emu.load(compiled)
    for task in ("download-kaggle", "preprocess"):
        result = kfp_emu.run_task(spec, task, tmp_path / "artifacts", {"/opt/ml": tmp_path / task}, TINY)
        assert result.returncode == 0, result.stderr[-3000:]
    written = json.loads((tmp_path / "preprocess" / "input" / "config" / "hyperparameters.json").read_text())
    assert written == {"workers": 1}
    for split in ("train", "validation"):
        manifest = json.loads((tmp_path / "artifacts" / "preprocess" / split / "_manifest.json").read_text())
        assert manifest["step"] == "preprocess"


@pytest.mark.slow
def test_workspace_variant_keeps_data_on_the_volume(tmp_path):
    spec, _ = kfp_emu.load(compile_to(tmp_path / "pvc.yaml", "--pvc-size", "10Gi"))
    workspace = tmp_path / "pvc"
    for task in ("download-kaggle", "preprocess"):
        paths = {"/opt/ml": tmp_path / task, "/workspace": workspace}
        result = kfp_emu.run_task(spec, task, tmp_path / "artifacts", paths, TINY)
        assert result.returncode == 0, result.stderr[-3000:]
    artifact = tmp_path / "artifacts" / "preprocess" / "train"
    assert sorted(p.name for p in artifact.iterdir()) == ["_manifest.json", "_workspace.json"]
    pointed = Path(json.loads((artifact / "_workspace.json").read_text())["path"])
    assert pointed == workspace / "preprocess" / "train" and (pointed / "_manifest.json").is_file()
    raw = tmp_path / "artifacts" / "download-kaggle" / "raw"
    assert not (raw / "openEDS").exists() and (workspace / "download-kaggle" / "raw" / "openEDS").is_dir()


def test_tune_branch_is_compiled_only_when_asked_and_feeds_train_seg(documents, tmp_path):
    spec, _ = documents
    assert "tune" not in spec["root"]["dag"]["tasks"]
    tuned, platform = kfp_emu.load(compile_to(tmp_path / "tune.yaml", "--tune", "--set", "tune.n_trials=40"))
    tasks = tuned["root"]["dag"]["tasks"]
    assert set(tasks) == set(ALL_TASKS)
    assert tasks["train-seg"]["inputs"]["artifacts"]["tuned"] == \
        {"taskOutputArtifact": {"outputArtifactKey": "study", "producerTask": "tune"}}
    assert set(tasks["tune"]["dependentTasks"]) == {"preprocess"}
    assert set(tasks["train-seg"]["dependentTasks"]) == {"preprocess", "tune"}
    parameters = tuned["root"]["inputDefinitions"]["parameters"]
    assert json.loads(parameters["tune_hyperparameters"]["defaultValue"]) == {**load_profile("kfp")["tune"], "n_trials": 40}
    assert "accelerator" in kfp_emu.executor_of(tuned, "tune")["resources"]
    label = tuned["components"][tasks["tune"]["componentRef"]["name"]]["executorLabel"]
    secrets = {s["secretName"]: s for s in platform["deploymentSpec"]["executors"][label]["secretAsEnv"]}
    assert {"optuna-storage", "mlflow-credentials"} <= set(secrets)
    assert {(k["secretKey"], k["envVar"]) for k in secrets["optuna-storage"]["keyToEnv"]} == \
        {("url", "OPTUNA_STORAGE"), ("password", "PGPASSWORD")}


def test_tune_settings_without_the_branch_are_refused(tmp_path, capsys):
    assert main(["compile", "--output", str(tmp_path / "p.yaml"), "--set", "tune.n_trials=4"]) == 2
    assert "add --tune" in capsys.readouterr().err and not (tmp_path / "p.yaml").exists()


def test_a_storage_url_with_a_password_never_reaches_kfp_parameters_nor_the_message(tmp_path, capsys):
    """The password belongs in the optuna-storage Secret; the refusal shows the URL masked."""
    assert main(["compile", "--output", str(tmp_path / "p.yaml"), "--tune",
                 "--set", "tune.storage=postgresql://optuna:hunter2pw@db/studies"]) == 2
    error = capsys.readouterr().err
    assert "holds a password" in error and "optuna:***@db" in error and "hunter2pw" not in error
    assert not (tmp_path / "p.yaml").exists()


@pytest.mark.slow
def test_compiled_tune_branch_feeds_its_best_parameters_to_train_seg(tmp_path):
    spec, _ = kfp_emu.load(compile_to(tmp_path / "tune.yaml", "--tune"))
    arguments = {**TINY,
                 "tune_hyperparameters": json.dumps({
                     "device": "cpu", "n_trials": 2, "epochs": 1, "batch_size": 2, "max_train_rows": 4,
                     "search_space": {"lr": {"type": "float", "low": 0.001, "high": 0.01, "log": True}}}),
                 "train_seg_hyperparameters": json.dumps({"device": "cpu", "max_train_rows": 4}),
                 "train_seg_epochs": 1, "train_seg_batch_size": 2, "train_seg_lr": 0.5}
    for task in ("download-kaggle", "preprocess", "tune", "train-seg"):
        result = kfp_emu.run_task(spec, task, tmp_path / "artifacts", {"/opt/ml": tmp_path / task}, arguments)
        assert result.returncode == 0, result.stderr[-3000:]
    best = json.loads((tmp_path / "artifacts" / "tune" / "study" / "best_params.json").read_text())
    assert set(best) == {"lr"} and 0.001 <= best["lr"] <= 0.01
    manifest = json.loads((tmp_path / "artifacts" / "train-seg" / "model" / "_manifest.json").read_text())
    assert manifest["hyperparameters"]["lr"] == best["lr"]  # the tuned value beat the task's own lr 0.5
    assert manifest["hyperparameters"]["epochs"] == 1  # the typed pipeline parameter
    metrics = json.loads((tmp_path / "artifacts" / "train-seg" / METRICS_OUTPUT).read_text())
    executor_output = json.loads((tmp_path / "artifacts" / "train-seg" / "executor_output.json").read_text())
    shown = executor_output["artifacts"][METRICS_OUTPUT]["artifacts"][0]["metadata"]  # what the UI renders
    assert shown == metrics and 0 <= shown["best_valid_iou"] <= 1 and shown["best_epoch"] == 1

class FakeKfpApi:
    """A local stand-in for the KFP v2beta1 REST API: answers what kfp.Client calls and keeps the
    requests, so a test sees exactly what `submit` sent."""

    def __init__(self, token: str | None = None):
        import http.server
        import threading

        requests = self.requests = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def refused(self) -> bool:
                """With `token`, anything else is a 401 that echoes what was sent (as some proxies do)."""
                sent = self.headers.get("Authorization", "")
                if token is None or sent == f"Bearer {token}":
                    return False
                body = json.dumps({"error": f"invalid credentials: {sent}"}).encode()
                self.send_response(401)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return True

            def reply(self, payload: dict) -> None:
                body = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                requests.append(("GET", self.path, None, {k.lower(): v for k, v in self.headers.items()}))
                if self.refused():
                    return None
                if self.path.startswith("/apis/v2beta1/healthz"):
                    return self.reply({"multi_user": False})
                if self.path.startswith("/apis/v2beta1/experiments"):
                    return self.reply({"experiments": [], "total_size": 0})
                self.send_error(404)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                requests.append(("POST", self.path, body, {k.lower(): v for k, v in self.headers.items()}))
                if self.refused():
                    return None
                if self.path.startswith("/apis/v2beta1/experiments"):
                    return self.reply({**body, "experiment_id": "exp-1"})
                if self.path.startswith("/apis/v2beta1/runs"):
                    return self.reply({**body, "run_id": "run-1", "experiment_id": "exp-1"})
                self.send_error(404)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.host = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()


def test_submit_sends_the_compiled_pipeline_to_the_endpoint(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))  # kfp.Client writes its context file there
    monkeypatch.setenv("KFP_TOKEN", "token-for-test")
    api = FakeKfpApi()
    try:
        code = main(["submit", "--host", api.host, "--experiment", "openeds-ci", "--run-name", "try-1",
                     "--set", "train-seg.epochs=7"])
    finally:
        api.close()
    assert code == 0, capsys.readouterr().err
    assert "submitted run run-1" in capsys.readouterr().out
    posts = {path.split("?")[0]: (body, headers) for method, path, body, headers in api.requests if method == "POST"}
    assert posts["/apis/v2beta1/experiments"][0]["display_name"] == "openeds-ci"
    run, headers = posts["/apis/v2beta1/runs"]
    assert headers.get("authorization") == "Bearer token-for-test"
    assert run["display_name"] == "try-1" and run["experiment_id"] == "exp-1"
    spec = run["pipeline_spec"]["pipeline_spec"]  # with the kubernetes platform spec beside it
    assert "exec-train-seg" in run["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert spec["pipelineInfo"]["name"] == "openeds-pipeline"
    assert set(spec["root"]["dag"]["tasks"]) == set(TASKS)
    assert spec["root"]["inputDefinitions"]["parameters"]["train_seg_epochs"]["defaultValue"] == 7


def test_a_refused_kfp_token_is_one_line_in_seconds_and_never_printed(monkeypatch, tmp_path, capsys):
    """A wrong KFP_TOKEN used to give 30 s of kfp.Client retries, 180 lines of tracebacks with the
    echoed token, and a misleading "Failed getting healthz endpoint"."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KFP_TOKEN", "wrong-token-canary-5d1e")
    api = FakeKfpApi(token="the-right-token")
    started = time.monotonic()
    try:
        code = main(["submit", "--host", api.host])
    finally:
        api.close()
    err = capsys.readouterr().err
    assert code == 2 and time.monotonic() - started < 15
    assert "refused KFP_TOKEN (HTTP 401" in err and "wrong-token-canary-5d1e" not in err
    assert not [r for r in api.requests if r[0] == "POST"]
