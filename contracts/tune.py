"""tune: an Optuna hyperparameter search over train-seg (an optional branch of the pipeline)."""

from typing import Any, Literal

from pydantic import Field

from contracts.base import Output, StepContract
from contracts.train_seg import TrainSegHyperparameters
from contracts.training import TRAINING_CHANNELS


class TuneHyperparameters(TrainSegHyperparameters):
    """train-seg's settings (the fixed part of every trial) plus the search itself."""

    n_trials: int = Field(8, ge=1, le=10_000, description="trials run by this worker")
    search_space: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {
            "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
            "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
            "batch_size": {"type": "categorical", "choices": [4, 8, 16]},
        },
        description="per hyperparameter: {type: float|int|categorical, low, high, log, step, choices}")
    pruner: Literal["median", "hyperband", "none"] = Field("median", description="stops poor trials early")
    sampler: Literal["tpe", "random"] = Field("tpe", description="Optuna sampler")
    storage: str | None = Field(
        None, description="Optuna RDB storage URL shared by workers (default: sqlite in output/data)")
    study_name: str = Field("openeds-train-seg", description="study name in the storage")
    timeout_s: float | None = Field(None, gt=0, description="stop starting trials after this many seconds")
    epochs: int = Field(4, ge=1, le=10_000, description="epochs per trial")
    register_model: bool = Field(False, description="register trial models in the registry")


CONTRACT = StepContract(
    name="tune",
    summary="Optuna search over train-seg hyperparameters with pruning and shared RDB storage",
    module="steps.tune",
    channels=TRAINING_CHANNELS,
    outputs=(Output(name="study", doc="best_params.json (feeds train-seg), trials.csv, study summary",
                    path="output/data/study"),),
    hyperparameters=TuneHyperparameters,
    uses_gpu=True,
)
