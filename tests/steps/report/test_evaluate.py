"""Evaluation over frames: whole-split IoU, pixel PR, fitted ellipses, input modes, real frames."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from steps.data import transforms
from steps.export.onnx_export import load_source_model
from steps.report.evaluate import (
    PixelPR,
    evaluate_segmentation,
    evaluate_split,
    fitted_ellipses,
    frame_batches,
    pupil_ious,
    raw_frames_dataset,
    split_rows,
)
from steps.report.exported import open_exported
from tests.steps.export.model_folders import exported_folder
from tests.steps.train.tiny_data import make_split


@pytest.fixture(scope="module")
def seg_model(tmp_path_factory):
    channels = exported_folder(tmp_path_factory.mktemp("eval"), {"seg_model": "tiny_efficientvit_micro"})
    model = open_exported(channels["onnx"] / "best_efficientvit_tiny_model.onnx")
    model.torch_model = load_source_model(channels["seg_model"]).model
    return model


def test_pixel_pr_of_a_perfect_ranking_has_average_precision_one():
    label = np.array([1, 1, 0, 0, 0, 0, 0, 0])
    pr = PixelPR(bins=10)
    pr.add(np.where(label == 1, 0.95, 0.05), label)
    curve = pr.curve()
    assert curve["average_precision"] == pytest.approx(1.0)
    assert curve["recall"][0] == 1.0 and curve["precision"][0] == pytest.approx(0.25)  # threshold 0: all pupil


def test_pixel_pr_of_an_uninformative_score_is_the_prevalence():
    label = np.array([1, 0, 0, 0] * 5)
    pr = PixelPR(bins=10)
    pr.add(np.full(label.shape, 0.5), label)
    assert pr.curve()["average_precision"] == pytest.approx(0.25)


def test_pupil_iou_per_frame():
    pred = np.zeros((2, 4, 4), np.uint8)
    true = np.zeros((2, 4, 4), np.uint8)
    pred[0, :2], true[0, :1] = 1, 1  # 4 of 8 pixels overlap
    assert pupil_ious(pred, true).tolist() == [0.5, 1.0]  # second frame: no pupil anywhere


def test_fitted_ellipses_find_the_predicted_pupil_and_mark_empty_frames():
    masks = np.zeros((2, 400, 640), np.uint8)
    cv2.ellipse(masks[0], (320, 200), (40, 25), 0, 0, 360, 1, -1)
    fits = fitted_ellipses(masks)
    assert fits[0][:2] * [640, 400] == pytest.approx([320, 200], abs=1)
    # cv2.fitEllipse's axes (the dataset's rx, ry) come in its own order, angle dropped
    assert sorted(fits[0][2:] * 377.36) == pytest.approx([25, 40], abs=1.5)
    assert np.isnan(fits[1]).all()


def test_segmentation_miou_comes_from_the_onnx_outputs_over_the_whole_split(seg_model):
    rows = split_rows(make_split(3, seed=9), "test", "preprocessed", None)
    result = evaluate_segmentation(seg_model, frame_batches(rows, batch_size=2), parity_rows=2, max_overlays=1)
    inter = np.zeros(2)
    union = np.zeros(2)
    for batch in frame_batches(rows, batch_size=3):
        pred = seg_model.run(batch.inputs).argmax(1)
        for cls in (0, 1):
            inter[cls] += ((pred == cls) & (batch.labels == cls)).sum()
            union[cls] += ((pred == cls) | (batch.labels == cls)).sum()
    summary = result.summary()
    assert summary["miou"] == pytest.approx((inter / union).mean())
    assert summary["frames"] == 3 and len(result.overlays) == 1
    assert summary["parity"]["rows"] == 2 and summary["parity"]["max_abs_diff"] < 1e-4


def test_the_overlays_are_the_worst_frames_by_pupil_iou(seg_model):
    rows = split_rows(make_split(5, seed=4), "test", "preprocessed", None)
    result = evaluate_segmentation(seg_model, frame_batches(rows, batch_size=2), parity_rows=0, max_overlays=2)
    worst = sorted(result.rows, key=lambda row: row["pupil_iou"])[:2]
    assert [s.filename for s in result.overlays] == [row["filename"] for row in worst]
    assert [s.pupil_iou for s in result.overlays] == [row["pupil_iou"] for row in worst]


def test_a_raw_frame_model_is_not_fed_gamma_clahe_images(seg_model):
    """A preprocessed split has no camera frames: a raw-mode model is skipped there, with the reason."""
    raw_model = open_exported(seg_model.path)
    raw_model.metadata["input_mode"] = "raw"
    result = evaluate_split("test", make_split(2, seed=3), [raw_model], batch_size=2, max_rows=None,
                            parity_rows=0, overlays=0)
    assert result.segmentation is None
    assert "input_mode=raw needs camera frames" in result.skipped["segmentation"]


def test_real_frames_get_the_preprocessing_of_the_model_input_mode(real_frames_dir):
    frames = raw_frames_dataset(real_frames_dir).dataset
    assert frames is not None and len(frames) == 3
    raw = cv2.imread(str(real_frames_dir / "images" / "000160.png"), cv2.IMREAD_GRAYSCALE)
    label = np.load(real_frames_dir / "labels" / "000160.npy")
    for mode, expected in (("preprocessed", transforms.enhance_image(raw, transforms.PreprocessParams())),
                           ("raw", raw)):
        batch = next(frame_batches(split_rows(frames, "fixtures", mode, None), batch_size=3))
        assert batch.filenames[0] == "000160.png"
        assert np.array_equal(batch.images[0], expected)
        assert np.array_equal(batch.labels[0], (label == 3).astype(np.uint8))
        assert batch.ellipses[0] == pytest.approx(transforms.fit_pupil_ellipse(batch.labels[0]).normalized())


def test_a_folder_without_labelled_frames_gives_no_dataset(tmp_path):
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), np.zeros((400, 640), np.uint8))
    read = raw_frames_dataset(tmp_path)
    assert read.dataset is None and read.skipped == [] and "no OpenEDS layout found" in read.error


def real_frames_of_another_camera(real_frames_dir, folder, size):
    """The real frames and their labels resized to `size` (width, height), as another camera's."""
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    for image_path in sorted((real_frames_dir / "images").glob("*.png")):
        image = cv2.imread(str(image_path), cv2.IMREAD_GRAYSCALE)
        label = np.load(real_frames_dir / "labels" / f"{image_path.stem}.npy")
        cv2.imwrite(str(folder / "images" / image_path.name), cv2.resize(image, size, interpolation=cv2.INTER_AREA))
        np.save(folder / "labels" / f"{image_path.stem}.npy", cv2.resize(label, size, interpolation=cv2.INTER_NEAREST))


def test_real_frames_of_another_size_are_mapped_by_the_policy_or_skipped_by_strict(real_frames_dir, tmp_path):
    real_frames_of_another_camera(real_frames_dir, tmp_path / "qvga", (320, 240))
    read = raw_frames_dataset(tmp_path / "qvga", "resize")
    assert read.dataset is not None and len(read.dataset) == 3 and read.sizes == {"320x240": 3} and not read.skipped
    for row in read.dataset.with_format("numpy"):
        original = np.load(real_frames_dir / "labels" / row["filename"].replace(".png", ".npy")) == 3
        mapped = row["label"] == 3
        assert row["image"].shape == (400, 640)
        assert (original & mapped).sum() / (original | mapped).sum() > 0.9  # back on the 640x400 pupil
    strict = raw_frames_dataset(tmp_path / "qvga", "strict")
    assert strict.dataset is None and len(strict.skipped) == 3
    assert "image shape (240, 320), expected (400, 640)" in strict.skipped[0]
