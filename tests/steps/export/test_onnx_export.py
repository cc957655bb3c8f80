"""ONNX export of the registry models: runs at batch 1 and 3, matches PyTorch, carries metadata."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from steps.export.onnx_export import (
    EXAMPLE_BATCH,
    INPUT_NAME,
    check_onnx_file,
    check_parity,
    check_size,
    compare_with_pytorch,
    cpu_session,
    export_checked,
    load_source_model,
    onnx_file_name,
    parity_inputs,
    read_metadata,
    strip_wrapper_prefixes,
)
from steps.models.checkpoint_file import read_checkpoint
from steps.outputs import sha256_file
from steps.runtime import StepError
from tests.steps.export.model_folders import write_model_folder


@pytest.fixture(scope="module")
def seg_export(tmp_path_factory):
    """The micro segmentation model exported once with the default (dynamo) exporter (the default
    model and the ellipse model go through the export-onnx step in tests/steps/test_export_onnx.py)."""
    root = tmp_path_factory.mktemp("seg")
    source = load_source_model(write_model_folder(root / "model", "tiny_efficientvit_micro", run_id="run-123"),
                               "segmentation")
    result = export_checked(source, root, exporter="dynamo", opset=18, max_abs_diff=1e-4)
    return source, result, root / result.file


def test_exported_model_runs_at_batch_1_and_3_and_matches_pytorch(seg_export):
    source, result, path = seg_export
    assert path.name == "best_efficientvit_tiny_model.onnx"
    session = cpu_session(path)
    for batch in (1, 3):
        inputs = np.random.default_rng(batch).uniform(-1, 1, (batch, 1, 400, 640)).astype(np.float32)
        (logits,) = session.run(None, {INPUT_NAME: inputs})
        with torch.no_grad():
            expected = source.model(torch.from_numpy(inputs)).numpy()
        assert logits.shape == (batch, 2, 400, 640)
        assert np.abs(logits - expected).max() < 1e-4
    assert set(result.parity) == {"batch_1", "batch_3"} and result.max_abs_diff < 1e-4
    assert check_onnx_file(path).graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_size_limit_applies_to_segmentation_files(seg_export):
    _, result, path = seg_export
    assert result.size_bytes == path.stat().st_size
    check_size(result, 300)
    with pytest.raises(StepError, match=r"^onnx size failed for tiny_efficientvit_micro: .* >= max_seg_size_kb 10"):
        check_size(result, 10)


def test_metadata_says_how_to_feed_the_model_and_where_it_came_from(seg_export):
    source, result, path = seg_export
    meta = read_metadata(path)
    assert meta == result.metadata
    assert meta["input_name"] == INPUT_NAME and meta["input_layout"] == "NCHW"
    assert meta["input_shape"] == "[N, 1, 400, 640]" and meta["input_dtype"] == "float32"
    assert meta["normalization"].startswith("(x / 255 - 0.5) / 0.5")
    assert meta["input_mode"] == "preprocessed" and "CLAHE" in meta["preprocessing"]
    assert json.loads(meta["class_names"]) == ["background", "pupil"]
    assert int(meta["parameters"]) == sum(p.numel() for p in source.model.parameters())
    assert meta["source_run_id"] == "run-123"
    assert meta["checkpoint_sha256"] == sha256_file(source.checkpoint_path)
    assert meta["model_type"] == "TinyEfficientViT-Micro" and meta["exporter"] == "dynamo" and meta["opset"] == "18"
    # dynamo's per-node stack traces are stripped: they were most of the file
    assert not any(node.metadata_props for node in onnx.load(str(path)).graph.node)


def test_parity_check_detects_a_model_that_differs(seg_export):
    source, _, path = seg_export
    changed = load_source_model(source.folder).model
    with torch.no_grad():
        for parameter in changed.parameters():
            parameter.add_(0.05)
    assert max(compare_with_pytorch(path, changed).values()) > 1e-3


def test_parity_inputs_are_eye_frames_as_each_input_mode_takes_them():
    """Generated eye frames (not noise): gamma + CLAHE for preprocessed models, then normalized."""
    from steps.data.frames import normalize_image
    from steps.data.synthetic import render_indexed_frame
    from steps.data.transforms import PreprocessParams, enhance_image

    frames = parity_inputs(3)
    assert frames.shape == (3, 1, 400, 640) and frames.dtype == np.float32
    np.testing.assert_array_equal(frames, parity_inputs(3))  # the same every run
    camera = render_indexed_frame(0, "parity-3", 2, closed_fraction=0.0)[0]
    np.testing.assert_array_equal(frames[2, 0], normalize_image(enhance_image(camera, PreprocessParams())))
    np.testing.assert_array_equal(parity_inputs(1, input_mode="raw")[0, 0],
                                  normalize_image(render_indexed_frame(0, "parity-1", 0, closed_fraction=0.0)[0]))


def test_parity_over_the_limit_fails_naming_model_and_figure(seg_export):
    _, result, _ = seg_export
    assert check_parity("m", result.parity, 1e-4) == result.max_abs_diff
    with pytest.raises(StepError, match=r"^onnx parity failed for tiny_efficientvit_micro: max abs diff "
                                        r"\S+ > max_abs_diff 1e-30 \(batch 1: \S+, batch 3: \S+\)"):
        check_parity("tiny_efficientvit_micro", result.parity, 1e-30)
    with pytest.raises(StepError, match="max abs diff nan"):
        check_parity("m", {"batch_1": float("nan")}, 1e-4)


@pytest.mark.parametrize("wrap", ["compile", "ddp"])
def test_checkpoints_of_compiled_and_ddp_models_export(tmp_path, wrap):
    folder = write_model_folder(tmp_path / "m", "tiny_efficientvit_micro", wrap=wrap)
    raw_keys = list(torch.load(folder / "best_efficientvit_tiny_model.pt")["state_dict"])
    assert all(key.startswith({"compile": "_orig_mod.", "ddp": "module."}[wrap]) for key in raw_keys)
    result = export_checked(load_source_model(folder, "segmentation"), tmp_path, exporter="legacy")
    assert result.file == "best_efficientvit_tiny_model.onnx"
    assert result.max_abs_diff < 1e-4
    check_onnx_file(tmp_path / result.file)


def test_prefixes_are_stripped_only_when_every_key_has_them():
    weights = torch.zeros(1)
    nested = {"module._orig_mod.a.weight": weights, "module._orig_mod.b.bias": weights}
    assert set(strip_wrapper_prefixes(nested)) == {"a.weight", "b.bias"}
    own_submodule = {"module.weight": weights, "head.weight": weights}
    assert strip_wrapper_prefixes(own_submodule) == own_submodule


@pytest.mark.slow
def test_example_batch_of_one_would_make_a_static_graph(tmp_path):
    """Why EXAMPLE_BATCH is 2: the dynamo exporter specializes a size-1 example dimension."""
    assert EXAMPLE_BATCH >= 2
    source = load_source_model(write_model_folder(tmp_path / "m", "tiny_efficientvit_micro"))
    path = tmp_path / "static.onnx"
    batch = torch.export.Dim("batch", min=1, max=64)
    try:
        torch.onnx.export(source.model, (torch.zeros(1, 1, 400, 640),), str(path), dynamo=True,
                          input_names=[INPUT_NAME], external_data=False, dynamic_shapes=({0: batch},))
    except Exception:  # noqa: BLE001 - refusing to export is the other way it breaks
        return
    with pytest.raises(StepError, match="batch axis of 'image' is static"):
        check_onnx_file(path)


def test_file_names_are_distinct_per_model():
    names = {onnx_file_name(n) for n in ("tiny_efficientvit", "tiny_efficientvit_micro", "ellipse_regression")}
    assert names == {"best_efficientvit_model.onnx", "best_efficientvit_tiny_model.onnx", "best_ellipse_model.onnx"}


def test_bad_model_folders_fail_naming_the_file(tmp_path):
    folder = write_model_folder(tmp_path / "m", "tiny_efficientvit_micro")
    expected = r"holds tiny_efficientvit_micro \(task segmentation\), expected a model with task ellipse"
    with pytest.raises(StepError, match=expected):
        load_source_model(folder, "ellipse")
    (folder / "best_efficientvit_tiny_model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(StepError, match=r"best_efficientvit_tiny_model.pt: cannot be read as a PyTorch checkpoint"):
        load_source_model(folder)
    (folder / "best_efficientvit_tiny_model.pt").unlink()
    with pytest.raises(StepError, match=r"best_efficientvit_tiny_model.pt: checkpoint named by model_card.json is missing"):
        load_source_model(folder)
    (folder / "model_card.json").write_text("{oops", encoding="utf-8")
    with pytest.raises(StepError, match=r"model_card.json: not valid JSON"):
        load_source_model(folder)


def test_weights_that_do_not_fit_the_architecture_fail(tmp_path):
    folder = write_model_folder(tmp_path / "m", "tiny_efficientvit_micro")
    path = folder / "best_efficientvit_tiny_model.pt"
    checkpoint = read_checkpoint(path)
    checkpoint["model_name"] = "tiny_efficientvit"
    torch.save(checkpoint, path)
    with pytest.raises(StepError, match="weights do not fit tiny_efficientvit"):
        load_source_model(folder)


def test_metadata_carries_the_training_data_and_its_preprocessing(tmp_path):
    """A model trained on frames preprocessed with other settings says so, and predict reads them."""
    from steps.export.onnx_export import onnx_metadata
    from steps.inference.model_input import ModelInput

    folder = write_model_folder(tmp_path / "seg", "tiny_efficientvit_micro")
    card = json.loads((folder / "model_card.json").read_text())
    card["training_data"] = {"source": "synthetic", "generated": True,
                             "preprocessing": {"gamma": 0.7, "clahe_clip_limit": 2.0, "clahe_tile_grid": 4}}
    (folder / "model_card.json").write_text(json.dumps(card))
    meta = onnx_metadata(load_source_model(folder), "legacy", 18)
    assert json.loads(meta["training_data"])["generated"] is True
    assert json.loads(meta["preprocessing_params"]) == {"gamma": 0.7, "clahe_clip_limit": 2.0, "clahe_tile_grid": 4}
    assert "gamma 0.7" in meta["preprocessing"] and "clipLimit 2.0 tileGridSize 4x4" in meta["preprocessing"]
    spec = ModelInput.from_metadata(meta)
    assert (spec.params.gamma, spec.params.clahe_clip_limit, spec.params.clahe_tile_grid) == (0.7, 2.0, 4)
