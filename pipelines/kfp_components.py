"""KFP v2 container components generated from the step contracts.

Each component's inputs are the contract's channels (artifacts; optional channels are optional
inputs) plus one `hyperparameters` parameter (a JSON object validated against the contract before
compiling); its outputs are the contract's outputs. The container runs
`python -m pipelines.launch STEP --hyperparameters JSON -- --root /opt/ml --channel NAME=<artifact
path> ... --output NAME=<artifact path> ...`: the launcher writes the JSON to the SageMaker path
`/opt/ml/input/config/hyperparameters.json` and runs `python -m steps` with KFP's artifact paths as
per-channel and per-output overrides, so the step code never knows which scheduler ran it.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from google.protobuf import json_format
from kfp import components, dsl
from kfp.dsl import base_component, placeholders, structures

from contracts import StepContract
from pipelines.kfp_ui import TYPED_PARAMETERS, UI_OUTPUTS

DEFAULT_IMAGE = "openeds-steps:0.1.0"
CONTAINER_ROOT = "/opt/ml"
HYPERPARAMETERS_INPUT = "hyperparameters"
WORKSPACE_MOUNT = "/workspace"
LAUNCHER = ["python", "-m", "pipelines.launch"]

# The KFP type of each kind of artifact a contract declares (Channel.artifact, Output.artifact).
ARTIFACT_TYPES = {"dataset": "system.Dataset@0.0.1", "model": "system.Model@0.0.1",
                  "artifact": "system.Artifact@0.0.1"}

# docker's reference grammar (distribution/reference): [domain[:port]/]path[:tag][@digest]
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:localhost|[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*)(?::[0-9]+)?"
_IMAGE_RE = re.compile(
    rf"^(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}))?$")


class ImageReferenceError(ValueError):
    """An image reference docker and Kubernetes would refuse."""


def check_image_reference(reference: str, require_digest: bool = False) -> str:
    """Validate `[registry/]name[:tag][@sha256:<64 hex>]`; returns it unchanged."""
    match = _IMAGE_RE.match(reference or "")
    if not match or len(reference) > 255:
        raise ImageReferenceError(
            f"image {reference!r}: not a valid image reference "
            "(expected [registry[:port]/]name[:tag][@sha256:<64 hex digits>], lowercase name)")
    digest = match.group("digest")
    if digest and digest.startswith("sha256:") and not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise ImageReferenceError(f"image {reference!r}: a sha256 digest is 64 lowercase hex digits")
    if require_digest and not digest:
        raise ImageReferenceError(f"image {reference!r}: not pinned by digest (add @sha256:...)")
    return reference


def artifact_type(kind: str) -> str:
    return ARTIFACT_TYPES[kind]


def _channel_args(contract: StepContract) -> list[placeholders.CommandLineElement]:
    args: list[placeholders.CommandLineElement] = []
    for channel in contract.channels:
        pair = ["--channel", placeholders.ConcatPlaceholder(
            [f"{channel.name}=", placeholders.InputPathPlaceholder(channel.name)])]
        # An unfed optional channel must not appear on the command line at all.
        args += pair if channel.required else [
            placeholders.IfPresentPlaceholder(input_name=channel.name, then=pair)]
    return args


def _ui_args(contract: StepContract) -> list[placeholders.CommandLineElement]:
    """Typed parameters (merged into the hyperparameters by the launcher, when given) and the UI
    outputs (Metrics, Markdown), with the executor input that says where KFP reads their metadata."""
    args: list[placeholders.CommandLineElement] = []
    for name in TYPED_PARAMETERS.get(contract.name, {}):
        args.append(placeholders.IfPresentPlaceholder(input_name=name, then=[
            "--param", placeholders.ConcatPlaceholder([f"{name}=", placeholders.InputValuePlaceholder(name)])]))
    outputs = UI_OUTPUTS.get(contract.name, {})
    for name in outputs:
        args += ["--ui-output", placeholders.ConcatPlaceholder([f"{name}=", placeholders.OutputPathPlaceholder(name)])]
    if outputs:
        args += ["--executor-input", dsl.PIPELINE_TASK_EXECUTOR_INPUT_PLACEHOLDER]  # {{$}}
    return args


def _container_args(contract: StepContract, workspace: bool) -> list[placeholders.CommandLineElement]:
    args: list[placeholders.CommandLineElement] = [
        contract.name, "--hyperparameters", placeholders.InputValuePlaceholder(HYPERPARAMETERS_INPUT),
        *_ui_args(contract)]
    if workspace:
        # The run's own PVC (pipelines.full creates one per run): outputs stay on the volume.
        args += ["--workspace", WORKSPACE_MOUNT]
    args += ["--", "--root", CONTAINER_ROOT, *_channel_args(contract)]
    for output in contract.outputs:
        args += ["--output", placeholders.ConcatPlaceholder(
            [f"{output.name}=", placeholders.OutputPathPlaceholder(output.name)])]
    return args


def component_spec(contract: StepContract, image: str = DEFAULT_IMAGE,
                   hyperparameters: dict[str, Any] | None = None,
                   workspace: bool = False) -> structures.ComponentSpec:
    """The contract as a KFP container component spec."""
    check_image_reference(image)
    defaults = dict(hyperparameters or {})
    contract.parse_hyperparameters(defaults)
    inputs = {channel.name: structures.InputSpec(type=artifact_type(channel.artifact),
                                                 optional=not channel.required,
                                                 description=channel.doc)
              for channel in contract.channels}
    inputs[HYPERPARAMETERS_INPUT] = structures.InputSpec(
        type="String", default=json.dumps(defaults, sort_keys=True), optional=True,
        description=f"JSON object of {contract.name} hyperparameters (`python -m steps describe "
                    f"{contract.name}`); unset keys take the contract's defaults")
    for name, kind in TYPED_PARAMETERS.get(contract.name, {}).items():
        inputs[name] = structures.InputSpec(type=kind, optional=True, description=(
            f"{contract.hyperparameters.model_fields[name].description}; when set, wins over the "
            f"same key in `{HYPERPARAMETERS_INPUT}`"))
    outputs = {output.name: structures.OutputSpec(type=artifact_type(output.artifact), description=output.doc)
               for output in contract.outputs}
    outputs.update({name: structures.OutputSpec(type=kind, description="shown in the KFP UI")
                    for name, kind in UI_OUTPUTS.get(contract.name, {}).items()})
    container = structures.ContainerSpecImplementation(
        image=image, command=list(LAUNCHER), args=_container_args(contract, workspace))
    return structures.ComponentSpec(
        name=contract.name, description=contract.summary, inputs=inputs, outputs=outputs,
        implementation=structures.Implementation(container=container))


def component_yaml(spec: structures.ComponentSpec) -> str:
    """The component's IR YAML, as `kfp.components.load_component_from_file` reads it."""
    document = json_format.MessageToDict(spec.to_pipeline_spec())
    return yaml.safe_dump(document, sort_keys=True)


def build_component(contract: StepContract, image: str = DEFAULT_IMAGE,
                    hyperparameters: dict[str, Any] | None = None,
                    workspace: bool = False) -> base_component.BaseComponent:
    """A loadable component, produced by rendering the spec to YAML and loading it back."""
    text = component_yaml(component_spec(contract, image, hyperparameters, workspace))
    return components.load_component_from_text(text)
