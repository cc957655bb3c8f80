"""The deployable registry entry: the ONNX file validate checked, as an MLflow onnx-flavor model.

Training registers a candidate (steps.tracking.mlflow_backend); validate registers the exported
ONNX file it evaluated as a new version of the same registered model, with a signature (dynamic
batch), a one-frame input example, its model card and checkpoint as extra files, and the
validation figures as tags. When that model's gates passed the version becomes "champion", so
`mlflow.pyfunc.load_model("models:/NAME@champion")` works with mlflow and onnxruntime alone.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from steps.tracking.mlflow_backend import CHAMPION_ALIAS, _requirements, default_registered_name, tag_and_alias, version_tags

log = logging.getLogger(__name__)
ARTIFACT_NAME = "onnx_model"


def onnx_signature(path: Path) -> tuple[Any, np.ndarray]:
    """(signature, input example) from one run of the file: batch axis -1, one all-zero frame."""
    import onnxruntime as ort
    from mlflow.models import infer_signature

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    spec = session.get_inputs()[0]
    example = np.zeros([1, *spec.shape[1:]], np.float32)
    (output,) = session.run(None, {spec.name: example})[:1]
    return infer_signature(example, output), example


def registered_name(client: Any, source_run: str | None, model_name: str) -> str:
    """The name training registered the model under (its source run's version), else the default."""
    if source_run:
        versions = client.search_model_versions(f"run_id = '{source_run}'")
        names = sorted({v.name for v in versions})
        if names:
            return names[0]
    return default_registered_name(model_name)


def register_onnx(client: Any, run_id: str, path: Path, *, name: str, extra_files: list[Path],
                  tags: dict[str, str], champion: bool) -> dict[str, Any]:
    """Log `path` with the onnx flavor on run `run_id`, register it under `name`, tag it, and make it
    champion when `champion`; returns the version's facts."""
    import mlflow
    import mlflow.onnx
    import onnx

    signature, example = onnx_signature(path)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.onnx.log_model(onnx.load(str(path)), name=ARTIFACT_NAME, registered_model_name=name,
                                     signature=signature, input_example=example, save_as_external_data=False,
                                     onnx_execution_providers=["CPUExecutionProvider"],
                                     pip_requirements=_requirements(("onnx", "onnxruntime", "numpy")),
                                     extra_files=[str(p) for p in extra_files if p.is_file()],
                                     await_registration_for=120)
    version = str(info.registered_model_version)
    stamped = version_tags(run_id, {"format": "onnx", "onnx_file": path.name, **tags})
    aliases = [CHAMPION_ALIAS] if champion else []
    tag_and_alias(client, name, version, stamped, aliases)
    return {"name": name, "version": version, "aliases": aliases, "model_uri": f"models:/{name}/{version}"}
