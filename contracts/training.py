"""Settings shared by the training steps (train-seg, train-ellipse) and the tune step."""

from typing import Literal

from pydantic import Field

from contracts.base import MAX_SEED, Channel, Hyperparameters, Output
from steps.data.camera_augment import CameraAugment

TRAINING_CHANNELS = (
    Channel(name="train", artifact="dataset", doc="preprocessed train split (preprocess's `train`)"),
    Channel(name="validation", artifact="dataset", doc="preprocessed validation split (preprocess's `validation`)"),
)
TRAINING_OUTPUTS = (
    Output(name="model", artifact="model", doc="best checkpoint, its config and model card", path="model"),
    Output(name="metrics", artifact="artifact", doc="per-epoch metrics (CSV/JSON), curves (PNG), resolved config",
           path="output/data/metrics"),
)


class TrainingHyperparameters(Hyperparameters):
    # data
    hf_repo: str | None = Field(None, description="load splits from this HF dataset repo instead of channels")
    data_dir: str = Field("~/.cache/openeds", description="local cache of the HF dataset (hf_repo)")
    input_mode: Literal["preprocessed", "raw"] = Field(
        "preprocessed", description="'raw': train on camera frames without gamma/CLAHE (inference-aligned)")
    max_train_rows: int | None = Field(None, ge=1, description="use at most this many train rows")
    max_valid_rows: int | None = Field(None, ge=1, description="use at most this many validation rows")
    augment: bool = Field(True, description="random flip, line augment and Gaussian blur on train rows "
                                            "(and the camera augmentation below)")
    # camera augmentation (steps.data.camera_augment): on the camera frame, before gamma + CLAHE;
    # each effect with camera_probability, at a magnitude drawn up to its limit (0: off)
    # Measured (Dec 2026, default pipeline, 150 generated frames, 3 real frames): 0.5 with 20 epochs took the
    # real-frame robustness mean from 0.736 to 0.872 (worst kind 0.279 -> 0.823) at generated mIoU 0.942.
    camera_probability: float = Field(0.5, ge=0, le=1, description="probability of each camera effect per row (0: off)")
    camera_scale: float = Field(0.3, ge=0, le=1, description="zoom in [1/(1+s), 1+s] about the frame centre")
    # Up to 180 for a camera mounted at another roll (upside down, sideways). Measured (Dec 6 2026,
    # default pipeline, seeds 42 / 7 / 1): 180 instead of 10 took the real frames turned 90 degrees
    # from 0.53-0.80 to 0.88-0.93 pupil IoU and upside down from 0.73-0.88 to 0.89-0.94, but upright
    # ones from 0.93 to 0.87-0.93 (README, "Camera augmentation at training time"): 10 stays the default.
    camera_rotation_deg: float = Field(10.0, ge=0, le=180, description="rotation in [-r, r] degrees "
                                                                       "(180: any camera roll)")
    camera_shift_px: float = Field(60.0, ge=0, le=320, description="shift in [-s, s] px (vertical: s * 400/640)")
    camera_lid: float = Field(0.5, ge=0, le=0.9, description="upper lid covering up to this fraction of the pupil")
    camera_glints: int = Field(4, ge=0, le=16, description="up to this many glints on the pupil border")
    camera_gain: float = Field(0.5, ge=0, le=0.9, description="gain in [1-g, 1+g]")
    camera_offset: float = Field(40.0, ge=0, le=128, description="offset in [-o, o] on 0-255")
    camera_gamma: float = Field(0.5, ge=0, le=2, description="gamma exponent in [1/(1+g), 1+g]")
    camera_blur_sigma: float = Field(3.0, ge=0, le=10, description="defocus blur sigma up to this (<= 0.5: off)")
    camera_noise_sd: float = Field(25.0, ge=0, le=64, description="Gaussian sensor noise sd up to this on 0-255")
    camera_jpeg_quality: int = Field(20, ge=0, le=95, description="JPEG round trip at quality [q, 95] (0: off)")
    num_workers: int = Field(0, ge=0, le=64, description="DataLoader worker processes")
    # optimisation
    epochs: int = Field(12, ge=1, le=10_000, description="training epochs")
    batch_size: int = Field(8, ge=1, le=4096, description="batch size per process")
    lr: float = Field(3e-3, gt=0, le=10, description="peak learning rate")
    weight_decay: float = Field(1e-4, ge=0, le=1, description="weight decay")
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = Field("adamw", description="optimizer")
    momentum: float = Field(0.9, ge=0, lt=1, description="momentum (sgd, rmsprop)")
    scheduler: Literal["cosine", "cosine_warmup", "linear_warmup", "step", "plateau", "onecycle", "none"] = Field(
        "cosine_warmup", description="learning-rate schedule")
    warmup_epochs: int = Field(1, ge=0, description="warmup epochs (cosine_warmup, linear_warmup)")
    step_size: int = Field(10, ge=1, description="epochs between decays (step)")
    step_gamma: float = Field(0.5, gt=0, le=1, description="decay factor (step, plateau)")
    plateau_patience: int = Field(2, ge=0, description="epochs without improvement before plateau decays the lr")
    accumulation_steps: int = Field(1, ge=1, le=1024, description="batches per optimizer step")
    clip_grad_norm: float | None = Field(None, gt=0, description="clip the gradient norm (None: off)")
    early_stopping_patience: int | None = Field(None, ge=1, description="stop after this many epochs without improvement")
    ema_decay: float = Field(
        0.995, ge=0, lt=1, description="exponential moving average of the weights after each optimizer step, "
                                       "evaluated, kept as the best model and exported (0: off)")
    # device and speed
    device: Literal["auto", "cuda", "cpu"] = Field("auto", description="compute device")
    amp: Literal["auto", "off", "bf16", "fp16"] = Field(
        "auto", description="mixed precision (auto: bf16/fp16 on CUDA, off on CPU)")
    compile: bool = Field(False, description="torch.compile (mode max-autotune) on CUDA")
    channels_last: bool = Field(True, description="channels_last memory format on CUDA")
    resident_data: bool = Field(
        False, description="decode the train split once into device memory and draw batches there "
                           "(augmentation: flips only, no lines/blur, no camera augmentation); CUDA only")
    # Measured on 2 cores: 2 threads train 1.3x faster than 1 when both cores are free, but 6x
    # slower when other work takes a core (every op waits on the descheduled thread); 1 thread
    # barely notices it. Shared laptops and CI machines want 1.
    cpu_threads: int | None = Field(
        None, ge=1, le=1024, description="torch CPU threads (None: torch's default, one per core); "
                                         "1 is steadier on a machine shared with other work")
    log_every_steps: int = Field(50, ge=0, le=1_000_000, description="inside an epoch, log speed, data wait vs "
                                                                     "compute and ETA every this many batches (0: off)")
    # reproducibility and checkpoints
    seed: int = Field(42, ge=0, le=MAX_SEED, description="one seed for Python, NumPy and torch")
    deterministic: bool = Field(False, description="deterministic algorithms (slower)")
    checkpoint_every: int = Field(10, ge=1, description="save <model>_epoch_{n}.pt every n epochs (and the last)")
    keep_top_k: int = Field(3, ge=1, description="epoch checkpoints kept, best first")
    # tracking and extras
    mlflow_experiment: str = Field("openeds", description="MLflow experiment name (MLFLOW_EXPERIMENT_ID wins)")
    register_model: bool = Field(True, description="register the best model in the MLflow Model Registry")
    registered_model_name: str | None = Field(None, description="registry name (default: per model type)")
    wandb: bool = Field(False, description="log to Weights & Biases (WANDB_MODE=offline works without network)")
    wandb_project: str = Field("openeds", description="W&B project")
    wandb_entity: str | None = Field(None, description="W&B entity")
    tensorboard: bool = Field(False, description="write TensorBoard scalars and images to output/data")
    profile: bool = Field(False, description="torch.profiler over a few steps; table of slowest ops")
    profile_steps: int = Field(6, ge=1, le=1000, description="profiled training steps")

    def camera_augment(self) -> CameraAugment:
        """The camera augmentation these settings ask for (steps.data.camera_augment)."""
        return CameraAugment(**{name: getattr(self, f"camera_{name}") for name in CameraAugment.__dataclass_fields__})
