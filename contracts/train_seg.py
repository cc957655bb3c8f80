"""train-seg: train a tiny EfficientViT pupil segmentation model."""

from typing import Literal

from pydantic import Field

from contracts.base import Channel, StepContract
from contracts.training import TRAINING_CHANNELS, TRAINING_OUTPUTS, TrainingHyperparameters
from steps.models import model_names

# The choices are the registered segmentation variants (steps.models.registry): one registration
# adds a model to the contract, the CLI, the KFP component and the docs.
SegmentationModel = Literal[model_names("segmentation")]  # type: ignore[valid-type]


class TrainSegHyperparameters(TrainingHyperparameters):
    model: SegmentationModel = Field("tiny_efficientvit", description="architecture variant")  # type: ignore[valid-type]
    # Measured on 150 generated training frames on a 2-core CPU: batch 2 for 10 epochs reached a
    # validation mIoU of 0.916-0.945 (batch 4: 0.86 after 6 epochs, 0.91 after 10). One run at lr
    # 5e-3 (weight decay 1e-4) collapsed to all-background, yet the tune branch later picked lr
    # 9.5e-3 with weight decay 6e-6 and reached 0.966: lr and weight decay go together. On GPUs
    # raise the batch size (e.g. 32) with num_workers. Camera augmentation (on by default) makes the
    # task harder: 20 epochs kept the previous architecture's generated mIoU at 0.94 (10 epochs: 0.918);
    # the patchify-stem model reaches 0.9396 in 20 epochs and 0.9437 in 24 (7.3 s an epoch here).
    epochs: int = Field(24, ge=1, le=10_000, description="training epochs")
    batch_size: int = Field(2, ge=1, le=4096, description="batch size per process")
    surface_loss_max: float = Field(1.0, ge=0, le=10, description="final weight of the surface loss (RITnet schedule)")
    dice_weight: float = Field(1.0, ge=0, le=10, description="weight of the generalized Dice loss")


# The tune step's `study` output: its best parameters override this run's hyperparameters.json
# (the pipeline's optional tune branch feeds it; see steps.runtime.resolve_hyperparameters).
TUNED_CHANNEL = Channel(
    name="tuned", artifact="artifact", required=False, settings_file="best_params.json",
    doc="tune's study output (optional): best_params.json overrides hyperparameters.json")

CONTRACT = StepContract(
    name="train-seg",
    summary="Train TinyEfficientViT (or -Micro) pupil segmentation",
    module="steps.train_seg",
    channels=(*TRAINING_CHANNELS, TUNED_CHANNEL),
    outputs=TRAINING_OUTPUTS,
    hyperparameters=TrainSegHyperparameters,
    uses_gpu=True,
    sagemaker_trainable=True,
)
