"""preprocess: the spec's deterministic per-frame preprocessing into HF datasets, one per split."""

from typing import Literal

from pydantic import Field

from contracts.base import Channel, Hyperparameters, Output, StepContract
from steps.data.openeds import FramePolicy


class PreprocessHyperparameters(Hyperparameters):
    workers: int = Field(0, ge=0, le=256, description="worker processes (0: one per core)")
    gamma: float = Field(0.8, gt=0, le=5, description="gamma of the 256-entry LUT")
    clahe_clip_limit: float = Field(1.5, gt=0, le=40, description="CLAHE clip limit")
    clahe_tile_grid: int = Field(8, ge=1, le=64, description="CLAHE tiles per side")
    weight_sigma: float = Field(5.0, gt=0, le=50, description="Gaussian sigma of the spatial weights")
    backend: Literal["opencv", "scipy"] = Field(
        "opencv", description="distance/morphology backend; both agree within 1e-4")
    row_layout: Literal["spec", "compact"] = Field(
        "spec", description="'spec': the seed's row (3.58 MB, what push-hf publishes); 'compact': image, label "
                            "and ellipse only (0.51 MB), the trainer derives weights and distance maps per batch")
    keep_raw_image: bool = Field(
        True, description="also store the camera frame (raw_image, +0.26 MB a row): camera augmentation then "
                           "acts on it before gamma + CLAHE, and input_mode=raw can train")
    frame_policy: FramePolicy = Field(
        "pad", description="raw frames not 640x400: 'strict' refuses them; 'pad', 'crop' or 'resize' maps them and "
                           "their labels onto 640x400 (steps.data.geometry)")
    max_frames_per_split: int | None = Field(None, ge=1, description="keep at most this many frames per split")
    validate_only: bool = Field(
        False, description="--validate mode: recompute rows of the `reference` dataset from `raw` and "
                           "compare every column; writes only `report` (the splits are left as they are)")
    validate_samples: int = Field(16, ge=1, description="rows per split compared in validate mode")


CONTRACT = StepContract(
    name="preprocess",
    summary="Binarize, gamma, CLAHE, ellipse, spatial weights and distance maps into HF datasets",
    module="steps.preprocess",
    channels=(
        Channel(name="raw", artifact="dataset", doc="raw OpenEDS frames in the Kaggle layout (download-kaggle's `raw`)"),
        Channel(name="reference", artifact="dataset", required=False,
                doc="validate_only=true: a saved preprocessed split, or a folder of them, to check"),
    ),
    outputs=(
        Output(name="train", artifact="dataset", doc="train split, datasets.save_to_disk", path="output/data/train"),
        Output(name="validation", artifact="dataset", doc="validation split, datasets.save_to_disk",
               path="output/data/validation"),
        Output(name="test", artifact="dataset", doc="test split (may have 0 rows), datasets.save_to_disk",
               path="output/data/test"),
        Output(name="report", artifact="artifact", doc="preprocess_report.json (per-split counts, skipped and bad frames), or "
                                  "validate_report.json in validate mode", path="output/data/preprocess-report"),
    ),
    hyperparameters=PreprocessHyperparameters,
)
