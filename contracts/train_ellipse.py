"""train-ellipse: train EllipseRegressionNet to predict normalized (cx, cy, rx, ry)."""

from typing import Literal

from pydantic import Field

from contracts.base import StepContract
from contracts.training import TRAINING_CHANNELS, TRAINING_OUTPUTS, TrainingHyperparameters


class TrainEllipseHyperparameters(TrainingHyperparameters):
    model: Literal["ellipse_regression"] = Field("ellipse_regression", description="architecture")
    lr: float = Field(2e-3, gt=0, le=10, description="peak learning rate")


CONTRACT = StepContract(
    name="train-ellipse",
    summary="Train EllipseRegressionNet (cx, cy, rx, ry)",
    module="steps.train_ellipse",
    channels=TRAINING_CHANNELS,
    outputs=TRAINING_OUTPUTS,
    hyperparameters=TrainEllipseHyperparameters,
    uses_gpu=True,
    sagemaker_trainable=True,
)
