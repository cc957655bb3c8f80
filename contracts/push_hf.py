"""push-hf: publish the preprocessed splits and a dataset card to a HF dataset repo."""

from pydantic import Field

from contracts.base import Channel, Hyperparameters, Output, StepContract


class PushHfHyperparameters(Hyperparameters):
    repo_id: str = Field("Conner/sddec25-01", pattern=r"^[\w.-]+/[\w.-]+$", description="HF dataset repo")
    push: bool = Field(False, description="upload to the Hub (token from HF_TOKEN); false: dry run only")
    private: bool = Field(True, description="create the repo as private")
    revision: str = Field("main", description="branch to push to")
    commit_message: str = Field("Upload preprocessed OpenEDS", description="commit message on the Hub")
    max_shard_size: str = Field("500MB", description="parquet shard size")


CONTRACT = StepContract(
    name="push-hf",
    summary="Push the preprocessed dataset and its card to the HF Hub (or write the dry run)",
    module="steps.push_hf",
    channels=(
        Channel(name="train", doc="preprocessed train split"),
        Channel(name="validation", doc="preprocessed validation split"),
        Channel(name="test", doc="preprocessed test split", required=False),
    ),
    outputs=(Output(name="upload", doc="exactly the folder that is (or would be) uploaded",
                    path="output/data/upload"),),
    hyperparameters=PushHfHyperparameters,
)
