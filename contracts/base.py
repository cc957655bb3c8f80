"""What a step contract is: input channels, outputs and a hyperparameter model.

A contract is data, not code: the CLI flags, the KFP component, the docs and the SageMaker mode are
all generated from it, so it is the one place where a step's interface is written down.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, ValidationInfo, field_validator

# Keys SageMaker (or its SDK) injects into hyperparameters.json that are not the step's settings.
SAGEMAKER_RESERVED_PREFIXES = ("sagemaker_", "_tuning_objective_metric")
# Selects the step under SageMaker's `train` entry; never a setting of the step itself.
STEP_SELECTOR_KEY = "step"
# Bounds every setting of every step has, whatever its own field says: nothing a consumer
# (torch, numpy, a manifest) accepts is larger, and a bigger value only costs memory and time.
MAX_SETTING_INT = 2**31 - 1
MAX_SETTING_ITEMS = 1_000
MAX_SETTING_CHARS = 4_096
# Seeds go to numpy, which takes 32 bits.
MAX_SEED = 2**32 - 1
# How much of a value any message echoes back (failure file, stderr).
MAX_ECHO_CHARS = 200


def shorten(text: str, limit: int = MAX_ECHO_CHARS) -> str:
    """`text` cut to `limit` characters, saying how long it was: echoes stay readable and small."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


class ContractError(ValueError):
    """A contract was violated; the message's first line names the field or path."""


# What KFP is told an input or output holds: a typed edge (Dataset -> Dataset, Model -> Model) lets it
# check the wiring and show the artifact as what it is; "artifact" is anything else.
ArtifactKind = Literal["dataset", "model", "artifact"]


class Channel(BaseModel):
    """One input folder (`input/data/<name>/`).

    A channel with `settings_file` carries hyperparameters rather than data (e.g. tune's best
    parameters feeding train-seg): when fed, that JSON file's values override hyperparameters.json.
    """

    model_config = ConfigDict(frozen=True)
    name: str
    artifact: ArtifactKind
    doc: str
    required: bool = True
    settings_file: str | None = None


class Output(BaseModel):
    """One output folder, its default path relative to the root."""

    model_config = ConfigDict(frozen=True)
    name: str
    artifact: ArtifactKind
    doc: str
    path: str


class Hyperparameters(BaseModel):
    """Base of every step's settings: unknown keys are refused, floats must be finite."""

    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _bounded_and_strict(cls, value: Any, info: ValidationInfo) -> Any:
        """No bool passes as a number (`true` would run as 1), no integer past what torch and
        numpy take (a 2**64 seed crashes training), no unbounded list or string."""
        if isinstance(value, bool):
            if not _accepts_bool(cls.model_fields[str(info.field_name)].annotation):
                raise ValueError("a boolean is not valid here")
        elif isinstance(value, int) and abs(value) > MAX_SETTING_INT:
            raise ValueError(f"integer out of range (at most {MAX_SETTING_INT:,} in magnitude)")
        elif isinstance(value, (list, tuple, dict)) and len(value) > MAX_SETTING_ITEMS:
            raise ValueError(f"too many items ({len(value):,}; at most {MAX_SETTING_ITEMS:,})")
        elif isinstance(value, str) and len(value) > MAX_SETTING_CHARS:
            raise ValueError(f"too long ({len(value):,} characters; at most {MAX_SETTING_CHARS:,})")
        return value


def _accepts_bool(annotation: Any) -> bool:
    """Whether a field's type admits a bool as such (bool itself, or a union or Literal holding one)."""
    if annotation is bool or annotation is Any:
        return True
    return any(_accepts_bool(arg) or arg is True or arg is False for arg in getattr(annotation, "__args__", ()))


class StepContract(BaseModel):
    """A step's whole interface."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    name: str
    summary: str
    module: str
    channels: tuple[Channel, ...]
    outputs: tuple[Output, ...]
    hyperparameters: type[Hyperparameters]
    uses_gpu: bool = False
    # Training steps run under SageMaker's `docker run IMAGE train`.
    sagemaker_trainable: bool = False

    reserved_cli_flags: ClassVar[frozenset[str]] = frozenset({"root", "channel", "output", "help"})

    def channel(self, name: str) -> Channel:
        for channel in self.channels:
            if channel.name == name:
                return channel
        raise KeyError(name)

    def output(self, name: str) -> Output:
        for output in self.outputs:
            if output.name == name:
                return output
        raise KeyError(name)

    def describe(self) -> dict[str, Any]:
        """The contract as JSON: channels, outputs, hyperparameters as JSON Schema."""
        return {
            "name": self.name,
            "summary": self.summary,
            "uses_gpu": self.uses_gpu,
            "sagemaker_trainable": self.sagemaker_trainable,
            "channels": [c.model_dump() for c in self.channels],
            "outputs": [o.model_dump() for o in self.outputs],
            "hyperparameters": self.hyperparameters.model_json_schema(),
        }

    def parse_hyperparameters(self, raw: dict[str, Any]) -> Hyperparameters:
        """Validate raw settings (SageMaker string values allowed) into the step's model."""
        if not isinstance(raw, dict):
            raise ContractError(f"hyperparameters: expected a JSON object, got {type(raw).__name__}")
        self._check_step_selector(raw.get(STEP_SELECTOR_KEY))
        values = {
            key: decode_value(self.hyperparameters, key, value)
            for key, value in raw.items()
            if not key.startswith(SAGEMAKER_RESERVED_PREFIXES) and key != STEP_SELECTOR_KEY
        }
        try:
            return self.hyperparameters.model_validate(values)
        except ValidationError as error:
            raise ContractError(describe_validation_error(self, error)) from error


    def _check_step_selector(self, selected: Any) -> None:
        """`step` picks the step under SageMaker's `train`; naming another step than the one that
        runs (a hyperparameters.json written for train-ellipse, given to train-seg, or an
        OPENEDS_STEP that disagrees with it) would otherwise train the wrong model without a word."""
        if isinstance(selected, str) and selected.startswith('"'):  # SDK v2 with entry_point: JSON in a string
            with contextlib.suppress(ValueError):
                selected = json.loads(selected)
        if selected is not None and selected != self.name:
            raise ContractError(f"hyperparameter '{STEP_SELECTOR_KEY}': {shorten(repr(selected))} selects another "
                                f"step than the one running ({self.name}); remove it, or make it agree with "
                                f"OPENEDS_STEP and the command")


def decode_value(model: type[BaseModel], key: str, value: Any) -> Any:
    """SageMaker sends every value as a string: `"32"`, `"true"`, `"[8,16,24]"`.

    Decode with `json.loads`, falling back to the raw string; keep the raw string when the field
    wants a string and the decoded value is not one (a name like `"1e-3"` stays as typed).
    """
    if not isinstance(value, str):
        return value
    try:
        decoded = json.loads(value)
    except (ValueError, RecursionError):  # RecursionError: nested past Python's limit
        return value
    field = model.model_fields.get(key)
    if field is None or field.annotation is None or isinstance(decoded, str):
        return decoded
    adapter = TypeAdapter(field.annotation)
    try:
        adapter.validate_python(decoded)
        return decoded
    except ValidationError:
        try:
            adapter.validate_python(value)
            return value
        except ValidationError:
            return decoded


def describe_validation_error(contract: StepContract, error: ValidationError) -> str:
    """One line per problem, each naming the hyperparameter; the first line stands alone."""
    lines = []
    allowed = sorted(contract.hyperparameters.model_fields)
    for problem in error.errors():
        key = ".".join(str(part) for part in problem["loc"]) or "<root>"
        if problem["type"] == "extra_forbidden":
            lines.append(f"hyperparameter '{key}': unknown key for step {contract.name} "
                         f"(allowed: {', '.join(allowed)})")
        else:
            got = problem.get("input")
            shown = shorten(json.dumps(got)) if isinstance(got, (str, int, float, bool)) else type(got).__name__
            lines.append(f"hyperparameter '{key}': {problem['msg']} (got {shown})")
    return "\n".join(lines)
