"""Finding OpenEDS layouts (Kaggle copy, 2019 challenge, one folder, wrapped by an archive folder),
reading frames with every check, and turning a layout into the published `raw` layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from steps.data.openeds import Frame, FrameError, check_frames, find_openeds, publish_frames, read_frame, select_frames

KAGGLE = ("openEDS", "openEDS")


def copy_split(source: Path, target: Path, *, labels: bool = True, subject: str | None = None) -> None:
    """Copy one generated split's images (and labels) into `target/images`, `target/labels`."""
    for kind in ("images", "labels") if labels else ("images",):
        folder = target / kind / subject if subject else target / kind
        shutil.copytree(source / kind, folder)


@pytest.mark.parametrize("where", ["root", "openEDS", "openEDS/openEDS", "wrapped"])
def test_kaggle_copy_is_found_from_several_roots(tiny_openeds, tmp_path, where):
    if where == "wrapped":  # an archive that adds one folder around the dataset
        root = tmp_path
        shutil.copytree(tiny_openeds / "openEDS", tmp_path / "openeds-dataset" / "openEDS")
    else:
        root = tiny_openeds if where == "root" else tiny_openeds / where
    layout = find_openeds(root)
    assert layout.kind == "kaggle"
    assert layout.base.parts[-2:] == KAGGLE
    assert layout.counts() == {"train": 3, "validation": 2, "test": 1}
    assert layout.describe() == "Kaggle copy (openEDS/openEDS): train 3, validation 2, test 1"
    frame = layout.splits["train"][0]
    assert frame == Frame("train", "000000", frame.image, frame.label)
    assert frame.label.name == "000000.npy"


def test_challenge_2019_layout_with_withheld_test_labels(tiny_openeds, tmp_path):
    source = tiny_openeds.joinpath(*KAGGLE)
    base = tmp_path / "OpenEDS" / "Semantic_Segmentation_Dataset"
    copy_split(source / "train", base / "train")
    copy_split(source / "validation", base / "validation")
    copy_split(source / "test", base / "test", labels=False)
    layout = find_openeds(tmp_path)
    assert layout.kind == "challenge2019"
    assert layout.describe().startswith("2019 OpenEDS challenge release (Semantic_Segmentation_Dataset)")
    assert layout.counts() == {"train": 3, "validation": 2, "test": 1}
    assert [f.split for f in layout.unlabeled()] == ["test"]


def test_challenge_2019_subject_folders(tiny_openeds, tmp_path):
    source = tiny_openeds.joinpath(*KAGGLE)
    base = tmp_path / "Semantic_Segmentation_Dataset"
    copy_split(source / "train", base / "train" / "S_0")
    copy_split(source / "validation", base / "validation", subject="S_1")
    layout = find_openeds(tmp_path)
    assert layout.kind == "challenge2019"
    assert [f.stem for f in layout.splits["train"]] == ["S_0_000000", "S_0_000001", "S_0_000002"]
    assert [f.stem for f in layout.splits["validation"]] == ["S_1_000003", "S_1_000004"]
    assert all(f.label is not None for f in layout.splits["validation"])


def test_real_sample_frames_as_a_single_folder(real_frames_dir):
    layout = find_openeds(real_frames_dir)
    assert layout.kind == "folder"
    assert list(layout.splits) == ["test"]
    assert [f.stem for f in layout.splits["test"]] == ["000160", "000170", "000180"]
    for frame in layout.splits["test"]:
        image, label = read_frame(frame)
        assert image.shape == label.shape == (400, 640)
        assert 2400 <= int((label == 3).sum()) <= 2650
        assert image[label == 3].mean() < image[label == 2].mean()
    assert find_openeds(real_frames_dir, single_split="validation").counts() == {"validation": 3}


def test_nothing_recognised_names_the_root(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.png").write_bytes(b"")
    with pytest.raises(FrameError) as error:
        find_openeds(tmp_path)
    assert str(error.value).startswith(f"{tmp_path}: no OpenEDS layout found")
    assert "photos" in str(error.value)
    with pytest.raises(FrameError, match="not a folder"):
        find_openeds(tmp_path / "missing")


@pytest.fixture
def one_frame(tiny_openeds, tmp_path) -> Frame:
    """A writable copy of one generated frame in the Kaggle layout."""
    split = tmp_path / "openEDS" / "openEDS" / "train"
    copy_split(tiny_openeds.joinpath(*KAGGLE, "train"), split)
    return find_openeds(tmp_path).splits["train"][0]


def corrupt(frame: Frame, problem: str) -> Path:
    """Damage the frame one way; returns the file that is now bad."""
    label = np.load(frame.label)
    if problem == "corrupt png":
        frame.image.write_bytes(frame.image.read_bytes()[:200])
        return frame.image
    if problem == "colour png":
        cv2.imwrite(str(frame.image), np.dstack([label * 80, label * 10, label]).astype(np.uint8))
        return frame.image
    if problem == "small png":
        cv2.imwrite(str(frame.image), np.zeros((200, 320), np.uint8))
        return frame.image
    if problem == "truncated npy":
        frame.label.write_bytes(frame.label.read_bytes()[:1000])
    elif problem == "label shape":
        np.save(frame.label, label[:, :320])
    elif problem == "label dtype":
        np.save(frame.label, label.astype(np.int64))
    elif problem == "label values":
        label[0, 0] = 7
        np.save(frame.label, label)
    elif problem == "pickled npy":
        np.save(frame.label, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return frame.label


@pytest.mark.parametrize("problem, message", [
    ("corrupt png", "not a readable image"), ("colour png", "colour image"),
    ("small png", r"image shape \(200, 320\)"), ("truncated npy", "unreadable .npy"),
    ("label shape", r"label shape \(400, 320\)"), ("label dtype", "label dtype int64"),
    ("label values", r"label values \[7\] outside 0..3"), ("pickled npy", "unreadable .npy"),
])
def test_bad_frames_are_named(one_frame, problem, message):
    bad = corrupt(one_frame, problem)
    with pytest.raises(FrameError, match=message) as error:
        read_frame(one_frame)
    assert str(error.value).startswith(str(bad))


def test_good_frame_reads_and_image_without_label_is_reported(one_frame):
    image, label = read_frame(one_frame)
    assert image.dtype == label.dtype == np.uint8
    one_frame.label.unlink()
    frame = find_openeds(one_frame.image.parents[3]).splits["train"][0]
    assert frame.label is None
    assert read_frame(frame)[1] is None
    with pytest.raises(FrameError, match="image without its label") as error:
        check_frames([frame])
    assert str(error.value).startswith(str(frame.image))


def test_select_frames_checks_splits_and_caps(tiny_openeds, tmp_path):
    layout = find_openeds(tiny_openeds)
    selected = select_frames(layout, ["train", "test"], max_per_split=2)
    assert {s: [f.stem for f in fs] for s, fs in selected.items()} == {"train": ["000000", "000001"],
                                                                         "test": ["000005"]}
    layout.splits["validation"] = []
    with pytest.raises(FrameError, match="split 'validation' has no frames"):
        select_frames(layout, ["validation"])
    del layout.splits["validation"]
    with pytest.raises(FrameError, match="split 'validation' not found"):
        select_frames(layout, ["validation"])


def test_publish_links_frames_and_draws_missing_masks(tiny_openeds, tmp_path):
    base = tmp_path / "src" / "Semantic_Segmentation_Dataset"
    copy_split(tiny_openeds.joinpath(*KAGGLE, "validation"), base / "validation")  # no masks/
    selected = select_frames(find_openeds(tmp_path / "src"), ["validation"])
    out = tmp_path / "out"
    assert publish_frames(selected, out) == {"validation": 2}
    published = out.joinpath(*KAGGLE, "validation")
    image = published / "images" / "000003.png"
    assert image.stat().st_ino == (base / "validation" / "images" / "000003.png").stat().st_ino  # hard link
    label = np.load(published / "labels" / "000003.npy")
    mask = cv2.imread(str(published / "masks" / "000003.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(mask, (label >= 2).astype(np.uint8))
    assert find_openeds(out).counts() == {"validation": 2}
