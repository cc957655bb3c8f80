"""push-hf: publish the preprocessed splits and a dataset card to a HF dataset repo."""

from typing import Literal

from pydantic import Field, field_validator

from contracts.base import Channel, Hyperparameters, Output, StepContract


class PushHfHyperparameters(Hyperparameters):
    # The Hub's own rule (huggingface_hub.utils.validate_repo_id), with the owner required: each part
    # starts and ends with a letter, digit or '_', at most 96 characters; no `..`, `--` or `.git` end.
    repo_id: str = Field("Conner/sddec25-01",
                         pattern=r"^[A-Za-z0-9_](?:[\w.-]*[A-Za-z0-9_])?/[A-Za-z0-9_](?:[\w.-]*[A-Za-z0-9_])?$",
                         description="HF dataset repo owner/name")
    push: bool = Field(False, description="upload to the Hub (token from HF_TOKEN or the HF_TOKEN_PATH file); "
                                          "false: dry run, the upload folder only")
    private: bool = Field(True, description="create the repo as private")
    revision: str = Field("main", pattern=r"^[A-Za-z0-9][\w./-]*$", description="branch to push to")
    commit_message: str = Field("Upload preprocessed OpenEDS", description="commit message on the Hub")
    max_shard_size: str = Field("500MB", pattern=r"^[1-9][0-9]*(KB|MB|GB|KiB|MiB|GiB)$",
                                description="largest parquet shard (e.g. 500MB, 1GiB)")
    parquet_compression: Literal["zstd", "snappy"] = Field(
        "zstd", description="parquet codec (zstd: about 0.8 MB per real row, snappy: about 1.3 MB)")

    @field_validator("repo_id")
    @classmethod
    def _hub_repo_id(cls, repo_id: str) -> str:
        # else the Hub's client refuses it only after every shard is written
        if ".." in repo_id or "--" in repo_id or repo_id.endswith(".git"):
            raise ValueError(f"{repo_id!r}: the Hub allows no '..' or '--' in a repo id, nor a '.git' end")
        if max(len(part) for part in repo_id.split("/")) > 96:
            raise ValueError(f"{repo_id!r}: the Hub allows at most 96 characters for the owner and for the name")
        return repo_id


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
