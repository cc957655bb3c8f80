"""pipelines.launch: KFP's arguments into the step's /opt/ml contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines import launch


def test_split_pairs_takes_both_spellings():
    rest, pairs = launch.split_pairs(["--root", "/r", "--channel", "a=/x", "--channel=b=/y=z", "--flag"],
                                     "--channel")
    assert rest == ["--root", "/r", "--flag"]
    assert pairs == [("a", "/x"), ("b", "/y=z")]


def test_root_of_reads_the_root_flag_or_the_default(monkeypatch):
    assert launch.root_of(["--root", "/a"]) == Path("/a")
    assert launch.root_of(["--root=/b"]) == Path("/b")
    monkeypatch.delenv("SAGEMAKER_BASE_DIR", raising=False)
    assert launch.root_of([]) == Path("/opt/ml")


def test_without_workspace_paths_pass_through_unchanged():
    args, redirected = launch.build_step_args(
        ["--root", "/opt/ml", "--channel", "train=/kfp/in/train", "--output", "model=/kfp/out/model"],
        "train-seg", workspace=None)
    assert args == ["--root", "/opt/ml", "--channel", "train=/kfp/in/train", "--output", "model=/kfp/out/model"]
    assert redirected == {}


def test_with_workspace_outputs_move_to_the_volume_and_pointers_are_followed(tmp_path):
    upstream = tmp_path / "kfp" / "preprocess" / "train"
    launch.write_pointer(upstream, tmp_path / "pvc" / "preprocess" / "train")
    plain = tmp_path / "kfp" / "other"
    plain.mkdir(parents=True)
    args, redirected = launch.build_step_args(
        ["--channel", f"train={upstream}", "--channel", f"validation={plain}", "--output", "model=/kfp/out/model"],
        "train-seg", workspace=tmp_path / "pvc")
    assert f"train={tmp_path / 'pvc' / 'preprocess' / 'train'}" in args
    assert f"validation={plain}" in args
    assert f"model={tmp_path / 'pvc' / 'train-seg' / 'model'}" in args
    assert redirected == {Path("/kfp/out/model"): tmp_path / "pvc" / "train-seg" / "model"}


def test_pointer_carries_the_manifest(tmp_path):
    target = tmp_path / "pvc" / "out"
    target.mkdir(parents=True)
    (target / "_manifest.json").write_text('{"step": "x"}')
    launch.write_pointer(tmp_path / "artifact", target)
    assert json.loads((tmp_path / "artifact" / "_workspace.json").read_text()) == {"path": str(target)}
    assert (tmp_path / "artifact" / "_manifest.json").read_text() == '{"step": "x"}'


def test_main_writes_the_hyperparameters_file_and_runs_the_step(tmp_path):
    """validate-style failure path of a real step: the file reaches the step, which names the bad key."""
    root = tmp_path / "root"
    code = launch.main(["export-onnx", "--hyperparameters", json.dumps({"opset": 99}), "--",
                        "--root", str(root), "--channel", f"seg_model={tmp_path / 'missing'}",
                        "--output", f"onnx={tmp_path / 'out'}"])
    assert code != 0
    assert json.loads((root / "input" / "config" / "hyperparameters.json").read_text()) == {"opset": 99}
    assert (root / "output" / "failure").read_text().splitlines()[0].startswith("hyperparameter 'opset'")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_bad_hyperparameter_json_is_named_by_the_step(tmp_path, text):
    root = tmp_path / "root"
    assert launch.main(["export-onnx", "--hyperparameters", text, "--", "--root", str(root)]) != 0
    assert "hyperparameters.json" in (root / "output" / "failure").read_text().splitlines()[0]
