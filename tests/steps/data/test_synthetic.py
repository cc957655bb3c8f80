"""The OpenEDS-like generator: layout, determinism, per-frame independence, label semantics, and
the properties of real near-eye frames it must share (class order of brightness, pupil sizes,
occlusion by the lids, glints that keep their label, closed eyes without a pupil)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from steps.data import synthetic
from steps.data.synthetic import frame_rng, generate_openeds, render_frame, render_indexed_frame


def digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_stems_and_masks(tiny_openeds):
    base = tiny_openeds / "openEDS" / "openEDS"
    stems = {split: sorted(p.stem for p in (base / split / "images").glob("*.png"))
             for split in ("train", "validation", "test")}
    assert stems == {"train": ["000000", "000001", "000002"], "validation": ["000003", "000004"],
                     "test": ["000005"]}
    for split, names in stems.items():
        for stem in names:
            image = cv2.imread(str(base / split / "images" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
            label = np.load(base / split / "labels" / f"{stem}.npy", allow_pickle=False)
            mask = cv2.imread(str(base / split / "masks" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
            assert image.shape == label.shape == mask.shape == (400, 640)
            assert image.dtype == label.dtype == mask.dtype == np.uint8
            assert set(np.unique(label)) <= {0, 1, 2, 3}
            np.testing.assert_array_equal(mask, (label >= 2).astype(np.uint8))  # the Kaggle copy's masks


def test_same_seed_same_bytes_other_seed_other_frames(tmp_path):
    frames = {"train": 2, "validation": 1}
    first = digests(generate_openeds(tmp_path / "a", frames, seed=3))
    again = digests(generate_openeds(tmp_path / "b", frames, seed=3))
    other = digests(generate_openeds(tmp_path / "c", frames, seed=4))
    assert first == again
    assert first.keys() == other.keys()
    assert all(first[name] != other[name] for name in first if "/images/" in name)


def test_a_frame_does_not_depend_on_how_many_are_generated(tmp_path):
    few = generate_openeds(tmp_path / "few", {"train": 1, "validation": 1}, seed=11)
    more = generate_openeds(tmp_path / "more", {"train": 3, "validation": 1}, seed=11)
    # Stems run across splits (000001 vs 000003), the content is that of (seed, split, index).
    one = few / "openEDS/openEDS/validation/images/000001.png"
    same = more / "openEDS/openEDS/validation/images/000003.png"
    assert one.read_bytes() == same.read_bytes()


def test_unknown_split_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown split"):
        generate_openeds(tmp_path, {"training": 1})


def test_open_eye_classes_look_like_real_infrared_frames():
    """Real frames: pupil ~34 < iris ~55 < sclera ~65-72 in mean intensity, pupil ~2,500 pixels."""
    areas = []
    for index in range(8):
        image, label = render_indexed_frame(0, "train", index, closed_fraction=0.0)
        means = [image[label == c].mean() for c in (1, 2, 3)]
        assert means[2] < means[1] < means[0], f"frame {index}: pupil < iris < sclera, got {means}"
        assert means[2] < 45
        areas.append(int((label == 3).sum()))
    assert 1200 < np.median(areas) < 4500
    assert all(300 < a < 9000 for a in areas)


def test_lids_occlude_iris_and_pupil_in_the_label():
    """The iris is a circle, but its labelled area is cut by the lids in most frames."""
    cut = 0
    for index in range(8):
        _, label = render_indexed_frame(0, "train", index, closed_fraction=0.0)
        iris = (label >= 2).astype(np.uint8)
        contours, _ = cv2.findContours(iris, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        (_, _), radius = cv2.minEnclosingCircle(max(contours, key=cv2.contourArea))
        cut += iris.sum() < 0.9 * np.pi * radius**2
    assert cut >= 4


def test_glints_are_bright_but_keep_their_label():
    """Corneal glints saturate the image; under them the label stays iris or pupil (as in OpenEDS)."""
    with_glints = on_pupil = 0
    for index in range(12):
        image, label = render_indexed_frame(0, "train", index, closed_fraction=0.0)
        with_glints += int((image[label >= 2] > 200).any())
        on_pupil += int(((image > 200) & (label == 3)).any())
    assert with_glints >= 10
    assert on_pupil >= 2


def test_closed_eye_has_no_eye_classes():
    image, label = render_frame(frame_rng(0, "train", 0), closed_eye=True)
    assert label.max() == 0
    assert image.std() > 5  # still skin, lashes and lens rings, not a blank frame


def test_closed_fraction_gives_some_closed_frames():
    closed = sum(render_indexed_frame(2, "train", i, closed_fraction=0.5)[1].max() == 0 for i in range(10))
    assert 1 <= closed <= 9


def test_generation_is_fast_enough_for_hundreds_of_frames():
    """A loose guard against a per-pixel Python loop: about 30 ms a frame here, allowed 2 s."""
    started = time.process_time()
    for index in range(5):
        render_indexed_frame(0, "test", index, 0.05)
    assert (time.process_time() - started) / 5 < 2.0


def test_a_camera_further_away_draws_the_same_eye_smaller_about_the_frame_centre():
    """With min_eye_scale < 1 each frame's eye is drawn at its own scale k in [min, 1]: the same eye as
    at 1 (the same draws), its pupil area k^2 times and its centre k times as far from the frame's
    centre; frames drawn at 1 are the frames without it, byte for byte."""
    drawn = 0
    for index in range(12):
        k = synthetic.eye_scale_of(0, "train", index, 0.5)
        assert 0.5 <= k <= 1 and k == synthetic.eye_scale_of(0, "train", index, 0.5)
        near = synthetic.render_indexed_frame(0, "train", index, 0.0)[1] == 3
        far = synthetic.render_indexed_frame(0, "train", index, 0.0, min_eye_scale=0.5)[1] == 3
        if near.sum() < 400 or near[:, [0, -1]].any():  # a pupil cut by the frame edge: no clean centroid
            continue
        drawn += 1
        assert far.sum() == pytest.approx(k * k * near.sum(), rel=0.05)
        centre = np.array([(synthetic.W - 1) / 2, (synthetic.H - 1) / 2])
        near_c, far_c = (np.argwhere(m)[:, ::-1].mean(0) for m in (near, far))
        assert np.abs(far_c - (centre + k * (near_c - centre))).max() < 1.0
    assert drawn >= 8
    assert synthetic.eye_scale_of(0, "train", 3, 1.0) == 1.0
    at_one = synthetic.render_indexed_frame(0, "train", 3, 0.05, min_eye_scale=1.0)
    assert all(np.array_equal(a, b) for a, b in zip(at_one, synthetic.render_indexed_frame(0, "train", 3, 0.05)))
    with pytest.raises(ValueError, match="min_eye_scale"):
        synthetic.eye_scale_of(0, "train", 3, 0.2)
