"""Experiment tracking for the training steps: MLflow, and W&B and TensorBoard as optional extras.

    with open_tracker(hp, run_name=..., model_type="TinyEfficientViT", architecture="tiny_efficientvit",
                      output_dir=metrics_dir) as tracker:
        tracker.log_params(hp.model_dump(mode="json"))
        tracker.log_metrics({"train_loss": 0.3, "valid_iou": 0.91}, step=epoch)
        tracker.log_images({"overlay": rgb_uint8}, step=epoch)
        tracker.log_artifact(checkpoint, artifact_path="checkpoints")
        tracker.register_model(model, checkpoint, name=..., tags={...}, input_example=x)

- MLflow is used when MLFLOW_TRACKING_URI is set (MLFLOW_EXPERIMENT_ID wins over
  hp.mlflow_experiment); otherwise a warning, once per process, and local files only.
- W&B when hp.wandb (project/entity from hp, mode from WANDB_MODE); TensorBoard when
  hp.tensorboard (events under output_dir/tensorboard).
- Every param and tag passes through steps.secrets.redact: no secret value ever reaches a tracker.
- Starting fails loudly and fast (an unreachable MLflow server is a StepError within seconds);
  a failure while logging later is a warning, so a tracking hiccup never kills a long training.
- As a context manager the run ends FINISHED, or KILLED (interrupted) / FAILED on an exception.
- `enabled=False` (non-zero ranks) gives a tracker that does nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import numpy as np

from steps.secrets import redact, redact_obj
from steps.tracking.mlflow_backend import load_registered_model, tracking_uri

log = logging.getLogger(__name__)

__all__ = ["Tracker", "TrackingConfig", "TrackingSettings", "load_registered_model", "open_tracker"]

_warned_no_mlflow = False


class Backend(Protocol):
    name: str

    def log_params(self, params: dict[str, Any]) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...
    def log_images(self, images: dict[str, np.ndarray], step: int) -> None: ...
    def finish(self, status: str) -> None: ...


def _clean_tags(tags: dict[str, Any]) -> dict[str, str]:
    return {str(key): redact(str(value)) for key, value in tags.items()}


class Tracker:
    """Fans every call out to the enabled backends; `run_id` is the MLflow run id (or None)."""

    def __init__(self, backends: list[Backend]):
        self.backends = backends
        self._finished = False
        self._warned: set[tuple[str, str]] = set()

    @property
    def run_id(self) -> str | None:
        mlflow = self.backend("mlflow")
        return mlflow.run_id if mlflow is not None else None

    def backend(self, name: str) -> Any | None:
        return next((b for b in self.backends if b.name == name), None)

    def _each(self, method: str, *args: Any, **kwargs: Any) -> None:
        for backend in self.backends:
            try:
                getattr(backend, method)(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - tracking must not end a training run
                if (backend.name, method) not in self._warned:
                    self._warned.add((backend.name, method))
                    log.warning("%s: %s failed (%s: %s); training goes on (further %s failures of %s are "
                                "not reported)", backend.name, method, type(error).__name__,
                                redact(str(error).splitlines()[0] if str(error) else ""), method, backend.name)

    def log_params(self, params: dict[str, Any]) -> None:
        self._each("log_params", redact_obj(params))

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._each("set_tags", _clean_tags(tags))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._each("log_metrics", {k: float(v) for k, v in metrics.items()}, step)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self._each("log_artifact", Path(path), artifact_path)

    def log_images(self, images: dict[str, np.ndarray], step: int) -> None:
        for key, image in images.items():
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"log_images: '{key}' must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
        self._each("log_images", images, step)

    def register_model(self, model: Any, checkpoint_path: Path, name: str, tags: dict[str, Any],
                       input_example: np.ndarray | None) -> dict[str, Any] | None:
        """Register `model` as a new version of `name` in the MLflow Model Registry; None without MLflow
        (or when registration fails: the error is logged and tagged on the run)."""
        mlflow = self.backend("mlflow")
        if mlflow is None:
            log.info("model registry: skipped (MLflow is not configured)")
            return None
        try:
            return mlflow.register_model(model, Path(checkpoint_path), name, _clean_tags(tags), input_example)
        except Exception as error:  # noqa: BLE001 - the trained model is already saved locally
            message = redact(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
            log.error("model registry: registering '%s' failed (%s); the model is in the step's output", name, message)
            self._each("set_tags", {"registration_error": message[:500]})
            return None

    def finish(self, status: str = "FINISHED") -> None:
        if not self._finished:
            self._finished = True
            self._each("finish", status)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if exc_type is None:
            self.finish("FINISHED")
        elif issubclass(exc_type, (KeyboardInterrupt, SystemExit)) or "Interrupted" in exc_type.__name__:
            self.finish("KILLED")
        else:
            self.finish("FAILED")


class TrackingSettings(Protocol):
    """What tracking reads of a step's settings (the training contracts have these fields); read-only,
    so a frozen TrackingConfig is one too."""

    @property
    def mlflow_experiment(self) -> str: ...
    @property
    def wandb(self) -> bool: ...
    @property
    def wandb_project(self) -> str: ...
    @property
    def wandb_entity(self) -> str | None: ...
    @property
    def tensorboard(self) -> bool: ...


@dataclass(frozen=True)
class TrackingConfig:
    """Tracking settings on their own: a caller that tracks differently from its step's settings (tune's
    parent run has no W&B or TensorBoard of its own) says so here instead of editing the settings."""

    mlflow_experiment: str
    wandb: bool = False
    wandb_project: str = "openeds"
    wandb_entity: str | None = None
    tensorboard: bool = False

    @classmethod
    def of(cls, settings: TrackingSettings, **changes: Any) -> TrackingConfig:
        values = {name: getattr(settings, name) for name in cls.__dataclass_fields__}
        return cls(**{**values, **changes})


def open_tracker(hp: TrackingSettings, *, run_name: str, model_type: str, architecture: str, output_dir: Path,
                 enabled: bool = True, resume_run_id: str | None = None) -> Tracker:
    """Start the run in every configured backend (see the module docstring).

    `resume_run_id`: continue that MLflow run (a training resumed from its checkpoint) instead of
    starting a new one.
    """
    if not enabled:
        return Tracker([])
    tags = _clean_tags({"model_type": model_type, "architecture": architecture})
    run_name = redact(run_name)
    backends: list[Backend] = []
    try:
        if tracking_uri() is not None:
            from steps.tracking.mlflow_backend import MlflowBackend
            backends.append(MlflowBackend(experiment=hp.mlflow_experiment, run_name=run_name, tags=tags,
                                          resume_run_id=resume_run_id))
        else:
            _warn_no_mlflow()
        if hp.wandb:
            from steps.tracking.wandb_backend import WandbBackend
            backends.append(WandbBackend(project=hp.wandb_project, entity=hp.wandb_entity, run_name=run_name,
                                         tags=tags, output_dir=Path(output_dir)))
        if hp.tensorboard:
            from steps.tracking.tensorboard_backend import TensorBoardBackend
            backends.append(TensorBoardBackend(output_dir=Path(output_dir), run_name=run_name, tags=tags))
    except BaseException:
        Tracker(backends).finish("FAILED")  # close what did start
        raise
    return Tracker(backends)


def _warn_no_mlflow() -> None:
    global _warned_no_mlflow
    if not _warned_no_mlflow:
        _warned_no_mlflow = True
        log.warning("MLFLOW_TRACKING_URI is not set: not tracking in MLflow (metrics, curves and checkpoints "
                    "stay in the step's output folders). Set it to a server (http://host:5000) or a local "
                    "store (sqlite:///path/mlflow.db) to track runs.")
