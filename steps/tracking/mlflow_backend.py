"""MLflow: runs with params, tags, per-epoch metrics, artifacts, images, and the Model Registry.

Used when MLFLOW_TRACKING_URI is set (the local runner sets sqlite:///<work>/mlflow.db; MLflow 3
refuses a bare ./mlruns folder). MLFLOW_EXPERIMENT_ID wins over the experiment name. An HTTP
server that does not answer fails the step within seconds (MLflow's own retries would wait
minutes). A run started while another is active (tune's parent run) is nested under it.

Training registers the best model as torch.export's graph (`serialization_format="pt2"`: no
pickle, no project code needed to load it, a dynamic batch axis from the batch-2 example) and
the plain checkpoint (`extra_files/`); `load_registered_model` rebuilds the model from that
weights-only file, so loading from the registry never unpickles. Each version gets tags (date, git
commit when known, run id, metrics) and the alias "candidate". Only validate makes a champion:
`register_onnx` logs the validated ONNX file with MLflow's onnx flavor (signature, input example,
the model card and checkpoint as extra files) as a new version, and moves "champion" to it when
that model's gates passed, so `mlflow.pyfunc.load_model("models:/NAME@champion")` needs only
mlflow and onnxruntime.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from steps.errors import StepError
from steps.secrets import redact

log = logging.getLogger(__name__)
# MLflow draws a download progress bar for every model it logs (it re-reads the input example): a
# few KB each time, so the bars are only console noise. A user's own setting wins.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

CANDIDATE_ALIAS = "candidate"
CHAMPION_ALIAS = "champion"
REACHABILITY_TIMEOUT_S = 5.0
MAX_VALUE_LENGTH = 6000  # MLflow's limit for a param value
BATCH_SIZE = 100         # MLflow's limit for params or tags per log_batch


def tracking_uri() -> str | None:
    return os.environ.get("MLFLOW_TRACKING_URI") or None


def without_credentials(uri: str) -> str:
    """The URI without a user:password@ part."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password or parts.username:
        parts = parts._replace(netloc=(parts.hostname or "") + (f":{parts.port}" if parts.port else ""))
    return urllib.parse.urlunsplit(parts)


def printable_uri(uri: str) -> str:
    """The URI without credentials (user:password@host), safe for messages."""
    return redact(without_credentials(uri))


def check_reachable(uri: str, timeout: float = REACHABILITY_TIMEOUT_S) -> None:
    """Fail in seconds when an HTTP(S) tracking server does not answer at all."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        # urllib cannot take user:password@ in the host (MLflow's requests client can): probe without it
        urllib.request.urlopen(f"{without_credentials(uri).rstrip('/')}/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        return  # it answered (a server without /health, or behind auth): reachable
    except (OSError, ValueError) as error:
        raise StepError(
            f"MLFLOW_TRACKING_URI: the MLflow tracking server {printable_uri(uri)} is unreachable "
            f"({getattr(error, 'reason', error)})\nStart the server, fix the URI, or unset "
            "MLFLOW_TRACKING_URI to train without MLflow (local files only).") from error


def sqlite_file(uri: str) -> Path | None:
    """The database file of a `sqlite:///path` store (None for other stores)."""
    prefix = "sqlite:///"
    return Path(uri[len(prefix):].split("?", 1)[0]) if uri.startswith(prefix) and len(uri) > len(prefix) else None


@contextlib.contextmanager
def store_setup_lock(uri: str) -> Iterator[None]:
    """Opening a new sqlite store, MLflow creates its schema; two processes doing that at once (the
    local runner's train-seg and train-ellipse) both migrate it and fail ("table latest_metrics
    already exists"). An exclusive lock on `<db>.lock` makes them take turns; other stores pass."""
    database = sqlite_file(uri)
    if database is None or not database.parent.is_dir():
        yield
        return
    with open(database.with_name(database.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dicts -> "a.b" keys; every value a string within MLflow's length limit."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            text = str(value)
            flat[name] = text if len(text) <= MAX_VALUE_LENGTH else text[:MAX_VALUE_LENGTH - 3] + "..."
    return flat


def git_commit() -> str | None:
    """The source commit: GIT_COMMIT/OPENEDS_GIT_COMMIT (images have no .git), else `git rev-parse`."""
    for name in ("OPENEDS_GIT_COMMIT", "GIT_COMMIT"):
        if os.environ.get(name):
            return os.environ[name]
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def _signature(model: Any, input_example: np.ndarray | None) -> Any:
    """Input/output tensor specs with a variable batch axis, from one forward pass. Given this way
    (not as `input_example`), MLflow skips serializing and re-running a 2 MB JSON example (20 s)."""
    import torch
    from mlflow.models import infer_signature

    if input_example is None:
        return None
    example = np.asarray(input_example, dtype=np.float32)
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    with torch.no_grad():
        output = model(torch.from_numpy(example).to(device))
    output = output[0] if isinstance(output, (tuple, list)) else output
    return infer_signature(example, output.detach().float().cpu().numpy())


def _requirements(packages: tuple[str, ...] = ("torch", "numpy")) -> list[str]:
    """What loading needs (pinned to what logged it; saves MLflow's slow requirement inference)."""
    from importlib.metadata import version

    return [f"{package}=={version(package).split('+')[0]}" for package in packages]


def default_registered_name(model_name: str) -> str:
    """The registry name of a model architecture when none is configured: openeds-tiny-efficientvit."""
    return f"openeds-{model_name.replace('_', '-')}"


def version_tags(run_id: str, tags: dict[str, str]) -> dict[str, str]:
    """Tags every registered version carries: when, from which run and commit, plus `tags`."""
    stamped = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "run_id": run_id, **tags}
    if (commit := git_commit()) is not None:
        stamped["git_commit"] = commit
    return stamped


def tag_and_alias(client: Any, name: str, version: str, tags: dict[str, str], aliases: list[str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    for alias in aliases:
        client.set_registered_model_alias(name, alias, version)
    log.info("registered model %s version %s (aliases: %s)", name, version, ", ".join(aliases) or "none")


class MlflowBackend:
    """One MLflow run; the Tracker forwards calls here."""

    name = "mlflow"

    def __init__(self, *, experiment: str, run_name: str, tags: dict[str, str], resume_run_id: str | None = None):
        import mlflow

        self.uri = tracking_uri()
        if self.uri is None:
            raise ValueError("MLFLOW_TRACKING_URI is not set")
        check_reachable(self.uri)
        if without_credentials(self.uri) != self.uri:  # MLflow prints run URLs to stdout, password included
            os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
        parent = mlflow.active_run()
        with store_setup_lock(self.uri):
            self.client = mlflow.MlflowClient(tracking_uri=self.uri)
            experiment_id = os.environ.get("MLFLOW_EXPERIMENT_ID") or self._experiment_id(experiment)
            run = mlflow.start_run(run_id=resume_run_id, experiment_id=None if resume_run_id else experiment_id,
                                   run_name=None if resume_run_id else run_name, nested=parent is not None,
                                   tags=tags)
        self.run_id: str = run.info.run_id
        self.experiment_id: str = run.info.experiment_id
        log.info("MLflow run %s in experiment %s at %s%s", self.run_id, self.experiment_id, printable_uri(self.uri),
                 f" (nested under {parent.info.run_id})" if parent is not None else "")

    def _experiment_id(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name)
        except MlflowException:  # another process created it between the two calls (a shared server)
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        items = [(k, v) for k, v in flatten(params).items() if existing.get(k) != v]
        changed = [k for k, _ in items if k in existing]
        if changed:  # a resumed run: MLflow refuses to overwrite a param
            log.warning("MLflow params already logged with other values are kept: %s", ", ".join(changed))
            items = [(k, v) for k, v in items if k not in existing]
        for start in range(0, len(items), BATCH_SIZE):
            self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in items[start:start + BATCH_SIZE]])

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        items = list(tags.items())
        for start in range(0, len(items), BATCH_SIZE):
            self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in items[start:start + BATCH_SIZE]])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if np.isfinite(v)]
        for start in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[start:start + 1000])

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if Path(path).is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_images(self, images: dict[str, np.ndarray], step: int) -> None:
        for key, image in images.items():
            self.client.log_image(self.run_id, image, key=key, step=step)

    def register_model(self, model: Any, checkpoint_path: Path, name: str, tags: dict[str, str],
                       input_example: np.ndarray | None) -> dict[str, Any]:
        """Log `model` (pt2), register it as a new version of `name`, tag it, alias it "candidate"."""
        import mlflow.pytorch

        was_training = model.training
        model.eval()
        try:
            info = mlflow.pytorch.log_model(model, name="registered_model", registered_model_name=name,
                                            signature=_signature(model, input_example), input_example=input_example,
                                            serialization_format="pt2", pip_requirements=_requirements(),
                                            extra_files=[str(checkpoint_path)],
                                            await_registration_for=120)
        finally:
            model.train(was_training)
        version = str(info.registered_model_version)
        stamped = version_tags(self.run_id, {"checkpoint": Path(checkpoint_path).name, **tags})
        tag_and_alias(self.client, name, version, stamped, [CANDIDATE_ALIAS])
        return {"name": name, "version": version, "aliases": [CANDIDATE_ALIAS], "model_uri": f"models:/{name}/{version}",
                "run_id": self.run_id, "tags": stamped}

    def finish(self, status: str) -> None:
        import mlflow

        active = mlflow.active_run()
        if active is not None and active.info.run_id == self.run_id:
            mlflow.end_run(status)
        else:
            self.client.set_terminated(self.run_id, status)


def load_registered_model(name: str, version: str | int | None = None, alias: str | None = None) -> Any:
    """A registered model (torch nn.Module) by version, by alias, or the champion (else the latest)."""
    import mlflow

    if version is not None and alias is not None:
        raise ValueError("give a version or an alias, not both")
    if version is not None:
        uri = f"models:/{name}/{version}"
    elif alias is not None:
        uri = f"models:/{name}@{alias}"
    else:
        client = mlflow.MlflowClient()
        try:
            uri = f"models:/{name}/{client.get_model_version_by_alias(name, CHAMPION_ALIAS).version}"
        except mlflow.exceptions.MlflowException:
            latest = max(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version), default=None)
            if latest is None:
                raise StepError(f"model registry: no registered model named '{name}'") from None
            uri = f"models:/{name}/{latest.version}"
    return load_checkpoint_of(uri)


def load_checkpoint_of(uri: str) -> Any:
    """The model of a registered version, rebuilt from its plain checkpoint (weights-only)."""
    import tempfile

    import mlflow

    from steps.models import load_checkpoint

    log.info("loading %s", uri)
    with tempfile.TemporaryDirectory(prefix="openeds-registry-") as folder:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{uri}/extra_files", dst_path=folder))
        found = sorted(local.glob("*.pt"))
        if len(found) != 1:
            raise StepError(f"model registry: {uri} holds {len(found)} checkpoints in extra_files/ (expected one; "
                            f"versions registered before weights-only loading hold none: register it again)")
        try:
            model, _ = load_checkpoint(found[0])
        except (ValueError, KeyError) as error:  # refused, damaged or mismatched file; unknown model name
            raise StepError(f"model registry: {uri}: {error}") from error
    return model
