"""tune: an Optuna hyperparameter search over train-seg (an optional branch of the pipeline).

The search space lives in the settings and is checked before any trial runs: every key must be a
train-seg hyperparameter, its distribution must suit that field's type, and every value the search
can produce (both ends of a range, every choice) must pass the field's own validation.
"""

import re
import typing
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from contracts.base import MAX_SEED, Output, StepContract
from contracts.train_seg import TrainSegHyperparameters
from contracts.training import TRAINING_CHANNELS

Scalar = str | int | float | bool | None


class SearchParam(BaseModel):
    """One hyperparameter's distribution: a float or int range (optionally log or stepped) or choices."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(None, gt=0)
    choices: list[Scalar] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "SearchParam":
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical needs a non-empty 'choices' list")
            if any(v is not None for v in (self.low, self.high, self.step)) or self.log:
                raise ValueError("categorical takes only 'choices' (no low/high/log/step)")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"{self.type} needs 'low' and 'high'")
        if self.choices is not None:
            raise ValueError(f"{self.type} takes no 'choices' (use type categorical)")
        if self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")
        if self.log and (self.low <= 0 or self.step is not None):
            raise ValueError("log scale needs low > 0 and no step")
        if self.type == "int" and not all(float(v).is_integer() for v in (self.low, self.high, self.step or 1)):
            raise ValueError("int needs whole-number low, high and step")
        return self

    def values_to_check(self) -> list[Any]:
        """Every value that must pass the field's validation: the ends of a range, or each choice."""
        if self.type == "categorical":
            return list(self.choices or [])
        low, high = self.bounds
        return [int(low), int(high)] if self.type == "int" else [low, high]

    @property
    def bounds(self) -> tuple[float, float]:
        """(low, high) of a range (the validator makes sure both are set)."""
        if self.low is None or self.high is None:
            raise ValueError(f"{self.type} needs 'low' and 'high'")
        return self.low, self.high

    def contains(self, value: Any) -> bool:
        if self.type == "categorical":
            return value in (self.choices or [])
        low, high = self.bounds
        return isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high


def _field_types(name: str) -> set[Any]:
    annotation = TrainSegHyperparameters.model_fields[name].annotation
    args = typing.get_args(annotation)
    if args and typing.get_origin(annotation) is not Literal:
        return set(args)
    return {annotation} if annotation is not None else set()


# train-seg settings that tune fixes for the whole study: searched, they would silently override it.
FIXED_PER_STUDY = {"epochs": "each trial trains tune's own `epochs` (the pruner's budget and what the log says); "
                             "set that instead of searching it"}


def check_search_param(name: str, param: SearchParam) -> None:
    """Raise ValueError naming `name` when the distribution cannot feed that train-seg field."""
    if name not in TrainSegHyperparameters.model_fields:
        raise ValueError(f"search_space key '{name}': not a train-seg hyperparameter "
                         f"(allowed: {', '.join(sorted(TrainSegHyperparameters.model_fields))})")
    if name in FIXED_PER_STUDY:
        raise ValueError(f"search_space key '{name}': {FIXED_PER_STUDY[name]}")
    types = _field_types(name)
    if param.type == "float" and float not in types:
        raise ValueError(f"search_space key '{name}': type float does not suit this setting "
                         f"({'use int' if int in types else 'use categorical'})")
    if param.type == "int" and not types & {int, float}:
        raise ValueError(f"search_space key '{name}': type int does not suit this setting (use categorical)")
    for value in param.values_to_check():
        check_field_value(name, value, what="search_space")


def check_field_value(name: str, value: Any, what: str) -> None:
    try:
        TrainSegHyperparameters.__pydantic_validator__.validate_assignment(
            TrainSegHyperparameters.model_construct(), name, value)
    except ValidationError as error:
        raise ValueError(f"{what} key '{name}': value {value!r} is not a valid {name} "
                         f"({error.errors()[0]['msg']})") from None


# Plain JSON (validated into SearchParam): the CLI and docs print it as it is.
DEFAULT_SEARCH_SPACE: dict[str, Any] = {
    "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
    "batch_size": {"type": "categorical", "choices": [4, 8, 16]}}


class TuneHyperparameters(TrainSegHyperparameters):
    """train-seg's settings (the fixed part of every trial) plus the search itself."""

    n_trials: int = Field(8, ge=1, le=10_000, description="trials run by this worker (each worker adds its own)")
    search_space: dict[str, SearchParam] = Field(
        DEFAULT_SEARCH_SPACE,
        description="train-seg hyperparameter -> {type: float|int|categorical, low, high, log, step, choices}")
    enqueue_trials: list[dict[str, Scalar]] = Field(
        [],
        description="parameter sets tried first, in order (e.g. the current settings as a baseline); "
                    "skipped when the study already holds them")
    pruner: Literal["median", "hyperband", "none"] = Field("median", description="stops poor trials early")
    pruner_startup_trials: int = Field(
        2, ge=0, description="median: completed trials needed before any pruning")
    pruner_warmup_epochs: int = Field(1, ge=0, description="median: epochs a trial runs before it can be pruned")
    sampler: Literal["tpe", "random"] = Field("tpe", description="Optuna sampler")
    sampler_seed: int | None = Field(
        None, ge=0, le=MAX_SEED, description="sampler seed (None: random; give each worker sharing a study its own)")
    storage: str | None = Field(
        None, description="Optuna RDB storage URL shared by workers, e.g. postgresql://user@host/db "
                          "(default: $OPTUNA_STORAGE, else sqlite:///<checkpoints>/optuna.db, which outlives "
                          "the run); a URL with a password belongs in OPTUNA_STORAGE (a secret), not here")
    study_name: str = Field("openeds-train-seg", min_length=1, description="study name in the storage")
    timeout_s: float | None = Field(None, gt=0, description="stop starting trials after this many seconds")
    epochs: int = Field(4, ge=1, le=10_000, description="epochs per trial")
    register_model: bool = Field(False, description="register trial models in the registry")
    heartbeat_s: int = Field(60, ge=1, le=3600, description="a running trial's heartbeat to the storage, seconds")
    heartbeat_grace_s: int = Field(
        180, ge=2, le=86_400,
        description="a trial whose heartbeat is older than this is failed and retried by the next worker "
                    "(its worker died); keep it well above heartbeat_s")

    def trial_settings(self, params: Mapping[str, Any]) -> TrainSegHyperparameters:
        """train-seg settings of one trial: the study's fixed settings with the sampled values."""
        fixed = self.model_dump(include=set(TrainSegHyperparameters.model_fields))
        return TrainSegHyperparameters.model_validate({**fixed, **params})

    @field_validator("storage")
    @classmethod
    def _no_password_in_settings(cls, url: str | None) -> str | None:
        # user:password@ (the password may hold '/'), or a password in the query string
        if url is not None and (re.search(r"://[^/@\s]*:[^\s@?#]*@", url)
                                or re.search(r"[?&](?:password|passwd|pwd)=", url, re.IGNORECASE)):
            raise ValueError("storage URL holds a password: settings reach manifests and tracking; "
                             "put the URL in the OPTUNA_STORAGE environment variable (a secret) instead")
        if url is not None and "://" not in url:
            raise ValueError(f"storage {url!r} is not a database URL (e.g. sqlite:///path/optuna.db)")
        return url

    @field_validator("heartbeat_grace_s")
    @classmethod
    def _grace_above_heartbeat(cls, grace: int, info: ValidationInfo) -> int:
        beat = info.data.get("heartbeat_s")
        if beat is not None and grace <= beat:  # else every live trial would look dead between two beats
            raise ValueError(f"heartbeat_grace_s {grace} must be above heartbeat_s {beat}")
        return grace

    @field_validator("search_space")
    @classmethod
    def _space_fits_train_seg(cls, space: dict[str, SearchParam]) -> dict[str, SearchParam]:
        if not space:
            raise ValueError("search_space is empty: name at least one train-seg hyperparameter")
        for name, param in space.items():
            check_search_param(name, param)
        return space

    @field_validator("enqueue_trials")
    @classmethod
    def _enqueued_trials_fit_space(cls, trials: list[dict[str, Any]], info: ValidationInfo) -> list[dict[str, Any]]:
        space = info.data.get("search_space")
        if space is None:  # the space itself was refused: that error is the one to read
            return trials
        for index, params in enumerate(trials):
            for name, value in params.items():
                if name not in space:
                    raise ValueError(f"enqueue_trials[{index}] key '{name}': not in search_space")
                if not space[name].contains(value):
                    raise ValueError(f"enqueue_trials[{index}] key '{name}': value {value!r} is outside "
                                     f"its search_space distribution")
                check_field_value(name, value, what=f"enqueue_trials[{index}]")
        return trials

CONTRACT = StepContract(
    name="tune",
    summary="Optuna search over train-seg hyperparameters with pruning and shared RDB storage",
    module="steps.tune",
    channels=TRAINING_CHANNELS,
    outputs=(Output(name="study", artifact="artifact", doc="best_params.json (feeds train-seg), trials.csv, study.json",
                    path="output/data/study"),),
    hyperparameters=TuneHyperparameters,
    uses_gpu=True,
)
