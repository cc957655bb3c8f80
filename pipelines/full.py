"""The whole pipeline: a KFP v2 pipeline, and the one command that compiles, submits or runs it.

    python -m pipelines.full compile [--output pipeline.yaml]        same YAML as `kfp dsl compile
                                                                    --py pipelines/full.py`
    python -m pipelines.full submit --host URL [--namespace NS] [--experiment NAME] [--run-name NAME]
    python -m pipelines.full run [--mode process|docker] [--work-dir runs/default] [--set TASK.FIELD=VALUE]

Every form takes `--tune`: the optional branch where an Optuna search (the `tune` step) runs on the
preprocessed splits and its best parameters feed train-seg (its `tuned` channel).

Every form takes `--set TASK.FIELD=VALUE` (a step's hyperparameter), `--profile` (the defaults in
pipelines/defaults.yaml: `kfp` for compile/submit, `local` for run) and `--image`. The tasks and
artifact edges come from `pipelines.dag`, the components from the step contracts.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import re
import socket
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from kfp import compiler, dsl, kubernetes

from pipelines.dag import Dag, DagError, build_dag, load_profile, load_settings, parse_assignments, resolve_hyperparameters
from pipelines.kfp_components import DEFAULT_IMAGE, WORKSPACE_MOUNT, ImageReferenceError, build_component, check_image_reference
from pipelines.kfp_ui import TYPED_PARAMETERS
from steps.runtime import configure_logging
from steps.secrets import redact

PIPELINE_NAME = "openeds-pipeline"
PIPELINE_DESCRIPTION = ("OpenEDS from Kaggle to tiny pupil models: download-kaggle, preprocess, push-hf, "
                        "[tune,] train-seg, train-ellipse, export-onnx, validate")
SHM_VOLUME = "dshm"
NEVER_CACHED = {"push-hf"}  # a cached push would skip the upload


@dataclass(frozen=True)
class Workspace:
    """A PVC created for the run and mounted in every task (see pipelines.launch)."""

    size: str
    storage_class: str | None = None
    access_mode: str = "ReadWriteMany"


@dataclass(frozen=True)
class PipelineOptions:
    profile: str = "kfp"
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    image: str = DEFAULT_IMAGE
    evaluate_split: str = "validation"
    workspace: Workspace | None = None
    caching: bool = True
    tune: bool = False  # the optional Optuna branch feeding train-seg


def hyperparameter_parameter(task: str) -> str:
    """The pipeline parameter holding a task's hyperparameters (JSON text)."""
    return task.replace("-", "_") + "_hyperparameters"


def typed_parameter(task: str, key: str) -> str:
    """The typed pipeline parameter of one hyperparameter, e.g. train_seg_epochs."""
    return f"{task.replace('-', '_')}_{key}"


_ANNOTATIONS = {"Integer": int, "Float": float, "String": str}


def pipeline_parameters(dag: Dag, options: PipelineOptions,
                        hyperparameters: Mapping[str, Mapping[str, Any]]) -> list[inspect.Parameter]:
    """image, accelerators, the typed settings (epochs, batch size, lr, model) and one JSON object
    per task holding the rest of its hyperparameters."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [inspect.Parameter("image", kind, default=options.image, annotation=str),
              inspect.Parameter("accelerator_type", kind, default="nvidia.com/gpu", annotation=str),
              inspect.Parameter("accelerator_limit", kind, default=1, annotation=int)]
    for task in dag.tasks:
        typed = TYPED_PARAMETERS.get(task, {})
        fields = dag.contract(task).hyperparameters.model_fields
        params += [inspect.Parameter(typed_parameter(task, key), kind, annotation=_ANNOTATIONS[type_name],
                                     default=hyperparameters[task].get(key, fields[key].default))
                   for key, type_name in typed.items()]
        rest = {k: v for k, v in hyperparameters[task].items() if k not in typed}
        params.append(inspect.Parameter(hyperparameter_parameter(task), kind, annotation=str,
                                        default=json.dumps(rest, sort_keys=True)))
    return params


def configure_task(task: dsl.PipelineTask, name: str, dag: Dag, params: Mapping[str, Any],
                   settings: Mapping[str, Any], options: PipelineOptions) -> None:
    """Image, resources, GPUs and their nodes, shared memory, secrets, retries, caching."""
    kube = settings.get("kubernetes", {})
    resources = kube.get("resources", {}).get(name, {})
    task.set_container_image(params["image"])
    task.set_cpu_request(str(resources.get("cpu", "1")))
    task.set_memory_request(str(resources.get("memory", "4Gi")))
    task.set_memory_limit(str(resources.get("memory", "4Gi")))
    if dag.contract(name).uses_gpu:
        task.set_accelerator_type(params["accelerator_type"])
        task.set_accelerator_limit(params["accelerator_limit"])
        for key, value in kube.get("gpu_node_selector", {}).items():
            kubernetes.add_node_selector(task, label_key=key, label_value=str(value))
        for toleration in kube.get("gpu_tolerations", []):
            kubernetes.add_toleration(task, **toleration)
    if resources.get("shm"):
        kubernetes.empty_dir_mount(task, volume_name=SHM_VOLUME, mount_path="/dev/shm",
                                   medium="Memory", size_limit=str(resources["shm"]))
    for secret, spec in kube.get("secrets", {}).items():
        if name in spec.get("tasks", []):
            kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env=dict(spec["env"]),
                                         optional=True)
    retries = kube.get("retries", {})
    if retries.get("count"):
        task.set_retry(num_retries=int(retries["count"]), backoff_duration=retries.get("backoff"),
                       backoff_factor=retries.get("factor"))
    task.set_caching_options(enable_caching=options.caching and name not in NEVER_CACHED)
    task.set_display_name(name)


def add_tasks(dag: Dag, components: Mapping[str, Any], params: Mapping[str, Any],
              settings: Mapping[str, Any], options: PipelineOptions) -> None:
    """One task per step, its channels fed by the DAG's edges."""
    pvc = None
    if options.workspace is not None:
        storage = {"storage_class_name": options.workspace.storage_class} if options.workspace.storage_class else {}
        pvc = kubernetes.CreatePVC(pvc_name_suffix="-openeds-workspace", size=options.workspace.size,
                                   access_modes=[options.workspace.access_mode], **storage)
    tasks: dict[str, dsl.PipelineTask] = {}
    for name in dag.order():
        inputs = {channel: tasks[edge.source_task].outputs[edge.source_output]
                  for channel, edge in dag.inputs_of(name).items()}
        typed = {key: params[typed_parameter(name, key)] for key in TYPED_PARAMETERS.get(name, {})}
        task = components[name](**inputs, **typed, hyperparameters=params[hyperparameter_parameter(name)])
        configure_task(task, name, dag, params, settings, options)
        if pvc is not None:
            kubernetes.mount_pvc(task, pvc_name=pvc.outputs["name"], mount_path=WORKSPACE_MOUNT)
        tasks[name] = task
    if pvc is not None:
        kubernetes.DeletePVC(pvc_name=pvc.outputs["name"]).after(*tasks.values())


def build_pipeline(options: PipelineOptions = PipelineOptions()):
    """The KFP pipeline (a GraphComponent) for these options."""
    check_image_reference(options.image)
    dag = build_dag(options.evaluate_split, tune=options.tune)  # type: ignore[arg-type]
    settings = load_settings()
    hyperparameters = resolve_hyperparameters(load_profile(options.profile), options.overrides, tasks=dag.tasks)
    components = {name: build_component(dag.contract(name), options.image, hyperparameters[name],
                                        workspace=options.workspace is not None)
                  for name in dag.tasks}
    parameters = pipeline_parameters(dag, options, hyperparameters)
    names = [p.name for p in parameters]

    def openeds_pipeline(*args: Any) -> None:
        add_tasks(dag, components, dict(zip(names, args)), settings, options)

    openeds_pipeline.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    openeds_pipeline.__doc__ = PIPELINE_DESCRIPTION
    return dsl.pipeline(name=PIPELINE_NAME, description=PIPELINE_DESCRIPTION)(openeds_pipeline)


# What `kfp dsl compile --py pipelines/full.py` finds: the default (kfp profile) pipeline.
openeds_pipeline = build_pipeline()


def compile_pipeline(options: PipelineOptions, output: Path) -> Path:
    pipeline = openeds_pipeline if options == PipelineOptions() else build_pipeline(options)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(pipeline, str(output))
    return output


# -- submit ---------------------------------------------------------------------------------

class EndpointError(RuntimeError):
    """The KFP endpoint cannot be reached or refused the request."""


HEALTH_PATH = "/apis/v2beta1/healthz"


def probe_endpoint(host: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, naming the reason, when no KFP API answers at `host`.

    kfp.Client retries a dead endpoint for minutes; a TCP connect then one GET of the health
    endpoint, each with a short timeout, tell a wrong host, a closed port, a silent server and a
    server that is not KFP apart. Redirects and 401/403 (an auth proxy) count as reachable.
    """
    parsed = urlparse(host if "://" in host else f"http://{host}")
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise EndpointError(f"--host {host!r}: expected http(s)://HOST[:PORT][/path]")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    started = time.monotonic()
    try:
        socket.create_connection((parsed.hostname, port), timeout=timeout_s).close()
    except OSError as error:
        raise EndpointError(f"KFP endpoint {host} is unreachable ({parsed.hostname}:{port}: "
                            f"{error.strerror or error} after {time.monotonic() - started:.1f}s); "
                            "check --host, the port-forward or the VPN") from error
    url = host.rstrip("/") + HEALTH_PATH if "://" in host else f"http://{host.rstrip('/')}{HEALTH_PATH}"
    token = os.environ.get("KFP_TOKEN")
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        urllib.request.urlopen(request, timeout=timeout_s).close()
    except urllib.error.HTTPError as error:
        if error.code == 404:
            raise EndpointError(f"{host} answers but is not a KFP API endpoint (HTTP 404 at {HEALTH_PATH}); "
                                "use the KFP API/UI address, e.g. http://localhost:8080") from error
        if token and error.code in (401, 403):  # else kfp.Client retries for 30 s, logging the replies
            raise EndpointError(f"KFP endpoint {host} refused KFP_TOKEN (HTTP {error.code} at {HEALTH_PATH}); "
                                "check the token and that it is meant for this cluster") from error
    except (OSError, ValueError) as error:
        if isinstance(getattr(error, "reason", None), ssl.SSLError):
            return  # TLS settings are the client's business (KF_PIPELINES_SSL_SA_CERTS)
        raise EndpointError(f"KFP endpoint {host} did not answer {HEALTH_PATH} within {timeout_s:.0f}s "
                            f"({getattr(error, 'reason', error)}); check --host and that the API server "
                            "is up") from error


def submit(package: Path, host: str, namespace: str | None, experiment: str | None,
           run_name: str | None, arguments: Mapping[str, Any]) -> str:
    """Create a run from the compiled package; the token comes from KFP_TOKEN when set."""
    probe_endpoint(host)
    import kfp

    try:
        client = kfp.Client(host=host, namespace=namespace, existing_token=os.environ.get("KFP_TOKEN") or None)
        run = client.create_run_from_pipeline_package(
            str(package), arguments=dict(arguments), run_name=run_name, experiment_name=experiment,
            namespace=namespace)
    except Exception as error:  # noqa: BLE001 - the client's errors carry whole HTTP replies: one line
        first = (str(error).strip().splitlines() or [""])[0]
        raise EndpointError(f"KFP at {host} did not take the run ({type(error).__name__}: {first[:300]})") from error
    return run.run_id


# -- command line ---------------------------------------------------------------------------

def add_pipeline_options(parser: argparse.ArgumentParser, profile: str) -> None:
    parser.add_argument("--profile", default=profile, help=f"defaults profile in pipelines/defaults.yaml "
                                                           f"(default: {profile})")
    parser.add_argument("--set", dest="assignments", action="append", default=[], metavar="TASK.FIELD=VALUE",
                        help="a step hyperparameter, e.g. train-seg.epochs=3 (repeatable)")
    parser.add_argument("--image", default=None, help=f"image reference, may be pinned by digest "
                                                      f"(default: {DEFAULT_IMAGE})")
    parser.add_argument("--evaluate-split", choices=("validation", "test"), default="validation",
                        help="split the validate task evaluates (default: validation; test may be empty)")
    parser.add_argument("--tune", action="store_true",
                        help="add the tune branch: an Optuna search (settings: --set tune.FIELD=VALUE) whose "
                             "best parameters train-seg then uses")


def storage_size(value: str) -> str:
    """A Kubernetes storage quantity (200Gi, 500G), checked here: a bad one compiled, then failed in the cluster."""
    size = re.fullmatch(r"(?P<number>[0-9]+(?:\.[0-9]+)?)(?:Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?", value)
    if size is None or float(size["number"]) <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a storage size such as 200Gi or 500G")
    return value


def add_kfp_options(parser: argparse.ArgumentParser) -> None:
    add_pipeline_options(parser, "kfp")
    parser.add_argument("--pvc-size", default=None, type=storage_size, help="create a workspace PVC of this size (e.g. 200Gi): "
                                                         "outputs and checkpoints stay on it")
    parser.add_argument("--pvc-storage-class", default=None, help="storage class of the workspace PVC")
    parser.add_argument("--pvc-access-mode", default="ReadWriteMany", help="access mode of the workspace PVC")
    parser.add_argument("--no-cache", action="store_true", help="disable KFP caching for every task")
    parser.add_argument("--require-digest", action="store_true",
                        help="refuse an --image that is not pinned by digest (@sha256:...)")


def kfp_options(args: argparse.Namespace) -> PipelineOptions:
    if args.require_digest:
        check_image_reference(args.image or DEFAULT_IMAGE, require_digest=True)
    workspace = Workspace(args.pvc_size, args.pvc_storage_class, args.pvc_access_mode) if args.pvc_size else None
    return PipelineOptions(profile=args.profile, overrides=parse_assignments(args.assignments),
                           image=args.image or DEFAULT_IMAGE, evaluate_split=args.evaluate_split,
                           workspace=workspace, caching=not args.no_cache, tune=args.tune)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines.full", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    comp = commands.add_parser("compile", help="write the KFP pipeline YAML")
    comp.add_argument("--output", type=Path, default=Path("pipeline.yaml"))
    add_kfp_options(comp)
    sub = commands.add_parser("submit", help="compile and start a run on a KFP endpoint")
    sub.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://localhost:8080")
    sub.add_argument("--namespace", default=None, help="Kubeflow namespace (multi-user clusters)")
    sub.add_argument("--experiment", default="openeds", help="experiment name (default: openeds)")
    sub.add_argument("--run-name", default=None, help="run name (default: the pipeline name and a timestamp)")
    add_kfp_options(sub)
    run = commands.add_parser("run", help="run the same DAG locally, as processes or docker runs")
    from pipelines.local import add_run_arguments

    add_run_arguments(run)
    add_pipeline_options(run, "local")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            from pipelines.local import run_from_args

            return run_from_args(args)
        options = kfp_options(args)
        if args.command == "compile":
            print(f"wrote {compile_pipeline(options, args.output)}")
            return 0
        configure_logging(logging.WARNING)  # the kfp client logs whole HTTP replies: masked like the steps' logs
        probe_endpoint(args.host)
        with tempfile.TemporaryDirectory() as folder:
            package = compile_pipeline(options, Path(folder) / "pipeline.yaml")
            run_name = args.run_name or f"{PIPELINE_NAME}-{time.strftime('%Y%m%d-%H%M%S')}"
            run_id = submit(package, args.host, args.namespace, args.experiment, run_name, {})
        print(f"submitted run {run_id} ({run_name}) to {args.host}")
        return 0
    except (DagError, ImageReferenceError, EndpointError) as error:
        print(f"error: {redact(str(error))}", file=sys.stderr)  # e.g. a refused --set URL with its password
        return 2


if __name__ == "__main__":
    sys.exit(main())
