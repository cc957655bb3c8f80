"""A real ONNX segmentation model whose answer is known: every dark pixel is pupil.

logits = [0, GAIN * (THRESHOLD - x)] on the normalized input x, so a pixel darker than grey
DARK_LEVEL is pupil. Built with onnx.helper and carrying the metadata export-onnx writes, it lets
predict's tests check ellipses against the ellipses they drew, through the real onnxruntime path.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DARK_LEVEL = 60   # grey levels below this are pupil
GAIN = 40.0


def dark_pupil_onnx(path: Path, task: str = "segmentation", input_mode: str = "raw",
                    upper_half_only: bool = False) -> Path:
    """`upper_half_only`: no pupil in the lower half of the model input, a model that, like a
    trained one, knows which way is up."""
    threshold = (DARK_LEVEL / 255.0 - 0.5) / 0.5
    nodes = [
        helper.make_node("Sub", ["threshold", "image"], ["margin"]),
        helper.make_node("Mul", ["margin", "gain"], ["dark" if upper_half_only else "pupil"]),
        helper.make_node("Mul", ["image", "zero"], ["background"]),
        helper.make_node("Concat", ["background", "pupil"], ["logits"], axis=1),
    ]
    constants = [helper.make_tensor(name, TensorProto.FLOAT, [], [value])
                 for name, value in (("threshold", threshold), ("gain", GAIN), ("zero", 0.0))]
    if upper_half_only:
        lower = np.zeros((1, 1, 400, 640), np.float32)
        lower[..., 200:, :] = -1e4
        nodes.insert(2, helper.make_node("Add", ["dark", "lower_half"], ["pupil"]))
        constants.append(numpy_helper.from_array(lower, "lower_half"))
    graph = helper.make_graph(
        nodes, "dark_pupil", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 400, 640])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2, 400, 640])], initializer=constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.helper.set_model_props(model, {
        "task": task, "input_name": "image", "input_mode": input_mode, "input_mean": "0.5", "input_std": "0.5",
        "preprocessing_params": json.dumps({} if input_mode == "raw" else {"gamma": 0.8, "clahe_clip_limit": 1.5,
                                                                            "clahe_tile_grid": 8})})
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def eye_frame(width: int, height: int, ellipse: tuple[float, float, float, float, float],
              seed: int = 0) -> np.ndarray:
    """A bright noisy frame with one dark filled ellipse (cx, cy, rx, ry, angle in degrees)."""
    import cv2

    rng = np.random.default_rng(seed)
    image = rng.normal(170, 8, (height, width)).clip(100, 255).astype(np.uint8)
    cx, cy, rx, ry, angle = ellipse
    unit = 16
    cv2.ellipse(image, (round(cx * unit), round(cy * unit)), (round(rx * unit), round(ry * unit)), angle, 0, 360,
                20, thickness=-1, lineType=cv2.LINE_8, shift=4)
    return image
