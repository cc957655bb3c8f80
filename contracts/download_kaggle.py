"""download-kaggle: fetch OpenEDS (Kaggle, a kagglehub cache, a local folder/zip/tar, or generated
OpenEDS-like frames), extract safely, check it, and publish the raw frames."""

from typing import Literal

from pydantic import Field, field_validator

from contracts.base import MAX_SEED, Channel, Hyperparameters, Output, StepContract
from steps.data.openeds import FramePolicy


class DownloadKaggleHyperparameters(Hyperparameters):
    source: Literal["synthetic", "local", "kaggle", "kagglehub"] = Field(
        "synthetic", description="where the frames come from; 'local' reads the `source` channel")
    # Each part starts with a letter or digit: `..` would lead the download cache out of its folder.
    dataset: str = Field("soumicksarker/openeds-dataset", pattern=r"^[A-Za-z0-9][\w-]*/[A-Za-z0-9][\w.-]*$",
                         description="Kaggle dataset handle owner/slug")
    dataset_version: int | None = Field(None, ge=1, description="Kaggle dataset version (None: latest)")
    cache_dir: str = Field("~/.cache/openeds/kaggle", description="download cache of source=kaggle (kagglehub uses "
                                                                  "KAGGLEHUB_CACHE); a complete cache is reused")
    splits: list[Literal["train", "validation", "test"]] = Field(
        ["train", "validation", "test"], min_length=1, description="splits to publish")
    max_frames_per_split: int | None = Field(None, ge=1, description="keep at most this many frames per split")
    synthetic_train_frames: int = Field(160, ge=1, le=100_000, description="generated frames in train")
    synthetic_validation_frames: int = Field(40, ge=1, le=100_000, description="generated frames in validation")
    synthetic_test_frames: int = Field(16, ge=0, le=100_000, description="generated frames in test")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of the frame generator")
    synthetic_min_eye_scale: float = Field(
        1.0, ge=0.4, le=1.0, description="generated frames: each eye drawn smaller by a factor log-uniform in "
                                         "[this, 1], with more face around it (a camera further away); 1: all at "
                                         "OpenEDS's scale")
    synthetic_layout: Literal["kaggle", "portrait2019"] = Field(
        "kaggle", description="generated frames as the Kaggle copy (640x400), or as the 2019 challenge release "
                              "(Semantic_Segmentation_Dataset/, frames 400 wide x 640 tall)")
    frame_policy: FramePolicy = Field(
        "pad", description="frames not 640x400: 'strict' refuses them; 'pad' fits them inside 640x400 (aspect kept, "
                           "median-grey border), 'crop' covers it (centre kept), 'resize' stretches; labels follow")
    # Archive limits, checked before extracting (the Kaggle copy: 13 GB, ~15 GiB extracted, ratio ~1.2).
    max_extracted_gb: float = Field(50.0, gt=0, le=10_000, description="largest total an archive may extract to (GiB)")
    max_archive_members: int = Field(500_000, ge=1, le=100_000_000, description="most entries an archive may hold")
    max_compression_ratio: float = Field(
        100.0, ge=1, le=100_000, description="largest ratio of extracted bytes to archive bytes (archive bombs exceed it)")


    @field_validator("splits")
    @classmethod
    def _each_split_once(cls, splits: list[str]) -> list[str]:
        twice = sorted({split for split in splits if splits.count(split) > 1})
        if twice:
            raise ValueError(f"each split once: {', '.join(twice)} is named twice")
        return splits

CONTRACT = StepContract(
    name="download-kaggle",
    summary="Fetch OpenEDS and publish verified raw frames in the Kaggle layout",
    module="steps.download_kaggle",
    channels=(Channel(name="source", artifact="dataset", doc="a folder, .zip or .tar(.gz) holding OpenEDS (source=local)",
                      required=False),),
    outputs=(Output(name="raw", artifact="dataset", doc="openEDS/openEDS/{split}/{images,labels,masks}",
                    path="output/data/raw"),),
    hyperparameters=DownloadKaggleHyperparameters,
)
