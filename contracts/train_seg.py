"""train-seg: train a tiny EfficientViT pupil segmentation model."""

from typing import Literal

from pydantic import Field

from contracts.base import StepContract
from contracts.training import TRAINING_CHANNELS, TRAINING_OUTPUTS, TrainingHyperparameters


class TrainSegHyperparameters(TrainingHyperparameters):
    model: Literal["tiny_efficientvit", "tiny_efficientvit_micro"] = Field(
        "tiny_efficientvit", description="architecture variant")
    surface_loss_max: float = Field(1.0, ge=0, le=10, description="final weight of the surface loss (RITnet schedule)")
    dice_weight: float = Field(1.0, ge=0, le=10, description="weight of the generalized Dice loss")


CONTRACT = StepContract(
    name="train-seg",
    summary="Train TinyEfficientViT (or -Micro) pupil segmentation",
    module="steps.train_seg",
    channels=TRAINING_CHANNELS,
    outputs=TRAINING_OUTPUTS,
    hyperparameters=TrainSegHyperparameters,
    uses_gpu=True,
    sagemaker_trainable=True,
)
