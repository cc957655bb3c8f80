"""Frames of any camera: the 2019 release's portrait frames and other sizes go onto 640x400 under
`frame_policy` in download-kaggle and preprocess, labels through the same map; strict refuses."""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import datasets
import numpy as np
import pytest

from contracts import Layout
from steps.data import transforms
from steps.data.geometry import label_to_model, map_to_frame, plan_geometry
from steps.data.openeds import Frame, find_openeds, read_frame
from steps.data.synthetic import generate_openeds
from steps.outputs import read_manifest
from steps.runtime import run_step
from steps.train.provenance import training_data


def camera_frame(folder: Path, width: int, height: int, stem: str = "000001") -> Frame:
    """A frame of `width` x `height`: bright, with a dark pupil disc that is exactly the label's."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    label = np.zeros((height, width), np.uint8)
    cv2.circle(label, (width // 2 + 7, height // 2 - 5), max(4, min(width, height) // 10), 3, -1)
    image = np.where(label == 3, 20, 190).astype(np.uint8)
    cv2.imwrite(str(folder / "images" / f"{stem}.png"), image)
    np.save(folder / "labels" / f"{stem}.npy", label)
    return Frame(split="train", stem=stem, image=folder / "images" / f"{stem}.png", label=folder / "labels" / f"{stem}.npy")


@pytest.mark.parametrize("size", [(400, 640), (320, 240), (384, 288), (400, 400), (1280, 800)])
@pytest.mark.parametrize("policy", ["pad", "crop", "resize"])
def test_every_policy_maps_image_and_label_together(tmp_path, size, policy):
    frame = camera_frame(tmp_path, *size)
    image, label = read_frame(frame, policy)
    assert image.shape == label.shape == (400, 640)
    pupil = label == 3
    assert pupil.any()
    assert (image[pupil] < 105).mean() > 0.97           # labelled pixels are the dark ones
    assert (label[image < 60] == 3).mean() > 0.97       # and the dark ones are labelled
    geometry = plan_geometry(*size, policy)
    sx, sy = geometry.scale
    area = (np.load(frame.label) == 3).sum() * sx * sy
    assert pupil.sum() == pytest.approx(area, rel=0.06)


def test_a_mask_on_the_model_input_maps_back_onto_the_original_frame_exactly(tmp_path):
    """What predict does with a mask: the model-space label warped back equals the frame's label
    (an integer up-scale: every frame pixel keeps model pixels of its own, so the round trip is exact;
    a down-scale averages pixels away, which no map can undo)."""
    for size, policy in (((320, 200), "pad"), ((320, 200), "resize"), ((160, 100), "crop")):
        frame = camera_frame(tmp_path / f"{size[0]}-{policy}", *size)
        original = np.load(frame.label)
        geometry = plan_geometry(*size, policy)
        back = map_to_frame(label_to_model(original, geometry), geometry, cv2.INTER_NEAREST)
        np.testing.assert_array_equal(back, original)


def test_strict_refuses_another_size_and_names_the_setting(tmp_path):
    frame = camera_frame(tmp_path, 400, 640)
    with pytest.raises(Exception, match=r"image shape \(640, 400\), expected \(400, 640\).*frame_policy"):
        read_frame(frame, "strict")


def test_a_header_claiming_a_huge_frame_is_refused_before_decoding(tmp_path):
    frame = camera_frame(tmp_path, 64, 48)
    data = bytearray(frame.image.read_bytes())
    data[16:24] = (100_000).to_bytes(4, "big") + (100_000).to_bytes(4, "big")  # IHDR width, height
    frame.image.write_bytes(bytes(data))
    with pytest.raises(Exception, match="at most 4096 pixels a side"):
        read_frame(frame, "pad")


def test_the_2019_portrait_release_goes_through_download_kaggle_and_preprocess(tmp_path):
    download, pre = tmp_path / "download", tmp_path / "pre"
    assert run_step("download-kaggle", Layout.resolve(download), {
        "source": "synthetic", "synthetic_layout": "portrait2019", "synthetic_train_frames": 3,
        "synthetic_validation_frames": 2, "synthetic_test_frames": 0, "splits": ["train", "validation"],
        "frame_policy": "pad"}) == 0
    raw = download / "output" / "data" / "raw"
    manifest = read_manifest(raw)
    assert manifest["frame_policy"] == "pad" and manifest["frame_sizes"] == {"400x640": 5}
    layout = find_openeds(raw)
    published = sorted(layout.splits["train"], key=lambda f: f.stem)
    original = generate_openeds(tmp_path / "portrait", {"train": 3}, portrait=True)
    source = sorted(find_openeds(original).splits["train"], key=lambda f: f.stem)
    for mine, theirs in zip(published, source):
        image, label = read_frame(mine)  # 640x400 now: strict reads it
        np.testing.assert_array_equal(image, read_frame(theirs, "pad")[0])
        np.testing.assert_array_equal(label, read_frame(theirs, "pad")[1])
    assert run_step("preprocess", Layout.resolve(pre, {"raw": raw}), {"workers": 1}) == 0
    train = datasets.load_from_disk(str(pre / "output" / "data" / "train")).with_format("numpy", dtype=None)
    assert len(train) == 3 and train[0]["image"].shape == (400, 640)
    preprocessed = read_manifest(pre / "output" / "data" / "train")
    assert preprocessed["frame_sizes"] == {"640x400": 3}
    assert preprocessed["provenance"]["camera_frames"] == {
        "frame_policy": "pad", "frame_sizes": {"400x640": 5},
        "layout_description": "2019 OpenEDS challenge release (Semantic_Segmentation_Dataset): train 3, validation 2"}
    assert training_data(pre / "output" / "data" / "train")["camera_frames"] == preprocessed["provenance"]["camera_frames"]
    assert training_data(pre / "output" / "data" / "train", max_rows=2)["rows"] == 2  # of the split's 3
    assert training_data(pre / "output" / "data" / "train", max_rows=2)["rows_in_split"] == 3
    assert "rows_in_split" not in training_data(pre / "output" / "data" / "train", max_rows=5)


def test_preprocess_maps_portrait_frames_itself_and_says_so(tmp_path):
    raw = generate_openeds(tmp_path / "raw", {"train": 2, "validation": 1}, portrait=True, closed_fraction=0.0)
    assert run_step("preprocess", Layout.resolve(tmp_path / "crop", {"raw": raw}),
                    {"workers": 1, "frame_policy": "crop"}) == 0
    manifest = read_manifest(tmp_path / "crop" / "output" / "data" / "train")
    assert manifest["frame_policy"] == "crop" and manifest["frame_sizes"] == {"400x640": 2}
    camera = training_data(tmp_path / "crop" / "output" / "data" / "train")["camera_frames"]
    assert camera["frame_policy"] == "crop" and camera["frame_sizes"] == {"400x640": 3}  # train 2 + validation 1
    train = datasets.load_from_disk(str(tmp_path / "crop" / "output" / "data" / "train")).with_format("numpy", dtype=None)
    frame = sorted(find_openeds(raw).splits["train"], key=lambda f: f.stem)[0]
    image, label = read_frame(frame, "crop")
    np.testing.assert_array_equal(train[0]["label"], transforms.binarize(label))
    assert run_step("preprocess", Layout.resolve(tmp_path / "strict", {"raw": raw}),
                    {"workers": 1, "frame_policy": "strict"}) != 0
    assert "frame_policy" in (tmp_path / "strict" / "output" / "failure").read_text()


@pytest.mark.slow
def test_portrait_frames_run_through_the_pipeline_to_validate(tmp_path):
    """download-kaggle -> preprocess -> train-seg -> ... -> validate on the 2019 layout's frames."""
    from pipelines import local
    from tests.pipelines.test_local import run_args

    out = io.StringIO()
    assert local.run_from_args(run_args(tmp_path, "download-kaggle.synthetic_layout=portrait2019"), out=out) == 0, \
        out.getvalue()[-4000:]
    manifest = json.loads((tmp_path / "download-kaggle" / "output" / "data" / "raw" / "_manifest.json").read_text())
    assert manifest["frame_policy"] == "pad" and set(manifest["frame_sizes"]) == {"400x640"}
    report = json.loads((tmp_path / "validate" / "output" / "data" / "report" / "report.json").read_text())
    assert report["passed"] is True
