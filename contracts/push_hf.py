"""push-hf: publish the preprocessed splits and a dataset card to a HF dataset repo."""

from typing import Literal

from pydantic import Field

from contracts.base import Channel, Hyperparameters, Output, StepContract


class PushHfHyperparameters(Hyperparameters):
    repo_id: str = Field("Conner/sddec25-01", pattern=r"^[\w.-]+/[\w.-]+$", description="HF dataset repo")
    push: bool = Field(False, description="upload to the Hub (token from HF_TOKEN or the HF_TOKEN_PATH file); "
                                          "false: dry run, the upload folder only")
    private: bool = Field(True, description="create the repo as private")
    revision: str = Field("main", description="branch to push to")
    commit_message: str = Field("Upload preprocessed OpenEDS", description="commit message on the Hub")
    max_shard_size: str = Field("500MB", pattern=r"^[1-9][0-9]*(KB|MB|GB|KiB|MiB|GiB)$",
                                description="largest parquet shard (e.g. 500MB, 1GiB)")
    parquet_compression: Literal["zstd", "snappy"] = Field(
        "zstd", description="parquet codec (zstd: about 0.8 MB per real row, snappy: about 1.3 MB)")


CONTRACT = StepContract(
    name="push-hf",
    summary="Push the preprocessed dataset and its card to the HF Hub (or write the dry run)",
    module="steps.push_hf",
    channels=(
        Channel(name="train", artifact="dataset", doc="preprocessed train split"),
        Channel(name="validation", artifact="dataset", doc="preprocessed validation split"),
        Channel(name="test", artifact="dataset", doc="preprocessed test split", required=False),
    ),
    outputs=(Output(name="upload", artifact="dataset", doc="exactly the folder that is (or would be) uploaded",
                    path="output/data/upload"),),
    hyperparameters=PushHfHyperparameters,
)
