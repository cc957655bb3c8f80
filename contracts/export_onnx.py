"""export-onnx: export the best segmentation and ellipse models to checked ONNX files."""

from typing import Literal

from pydantic import Field

from contracts.base import Channel, Hyperparameters, Output, StepContract


class ExportOnnxHyperparameters(Hyperparameters):
    opset: int = Field(18, ge=13, le=23, description="ONNX opset")
    exporter: Literal["dynamo", "legacy"] = Field("dynamo", description="torch.onnx exporter")
    max_abs_diff: float = Field(1e-4, gt=0, description="fail when onnxruntime and PyTorch differ by more")
    max_seg_size_kb: float = Field(300.0, gt=0, description="fail when the segmentation ONNX is larger")


CONTRACT = StepContract(
    name="export-onnx",
    summary="Export the trained models to ONNX with metadata, checked against PyTorch",
    module="steps.export_onnx",
    channels=(
        Channel(name="seg_model", artifact="model", doc="train-seg's `model`"),
        Channel(name="ellipse_model", artifact="model", doc="train-ellipse's `model`", required=False),
    ),
    outputs=(Output(name="onnx", artifact="model", doc="best_efficientvit_model.onnx, best_ellipse_model.onnx, export report",
                    path="model"),),
    hyperparameters=ExportOnnxHyperparameters,
)
