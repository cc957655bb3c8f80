"""The preprocess step end to end on tiny generated frames: outputs, skipped and bad frames,
the scipy backend, --validate, and a rerun after a killed run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pytest

from contracts import Layout
from steps.data import reference
from steps.data.precompute import FEATURES, features_for
from steps.data.synthetic import generate_openeds
from steps.outputs import read_manifest
from steps.runtime import run_step

REPO = Path(__file__).resolve().parents[2]
SPLITS = ("train", "validation", "test")
EMPTY_PUPIL = "train"   # split of the frame whose pupil is removed
CORRUPT = "validation"  # split of the frame whose PNG is overwritten with garbage


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    """6 train + 3 validation generated frames, no test split; one frame without pupil, one corrupt."""
    root = generate_openeds(tmp_path_factory.mktemp("raw"), {"train": 6, "validation": 3}, seed=3,
                            closed_fraction=0.0)
    base = root / "openEDS" / "openEDS"
    label_path = sorted((base / EMPTY_PUPIL / "labels").glob("*.npy"))[1]
    label = np.load(label_path)
    label[label == 3] = 2
    np.save(label_path, label)
    image_path = sorted((base / CORRUPT / "images").glob("*.png"))[0]
    image_path.write_bytes(b"not a png at all")
    return root


@pytest.fixture(scope="module")
def names(raw) -> dict[str, str]:
    base = raw / "openEDS" / "openEDS"
    return {"empty": sorted((base / EMPTY_PUPIL / "images").glob("*.png"))[1].name,
            "corrupt": sorted((base / CORRUPT / "images").glob("*.png"))[0].name}


def run_cli(root: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "steps", "preprocess", "--root", str(root), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def load(path: Path) -> datasets.Dataset:
    return datasets.load_from_disk(str(path)).with_format("numpy", dtype=None)


@pytest.fixture(scope="module")
def done(raw, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One real CLI run with two spawned workers."""
    root = tmp_path_factory.mktemp("root")
    result = run_cli(root, "--channel", f"raw={raw}", "--workers", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    return root, result


def test_writes_every_split_with_the_schema(done, names):
    root, _ = done
    data = root / "output" / "data"
    train, validation, test = (load(data / split) for split in SPLITS)
    assert (len(train), len(validation), len(test)) == (5, 2, 0)  # 1 empty pupil, 1 corrupt, no test
    for dataset in (train, validation, test):
        assert dataset.features == features_for("spec", keep_raw_image=True)  # the default: the seed's + raw_image
    assert names["empty"] not in list(train["filename"])
    assert names["corrupt"] not in list(validation["filename"])
    assert list(train["filename"]) == sorted(train["filename"])  # frame order, whatever finished first
    row = train[0]
    assert row["image"].dtype == np.uint8 and row["image"].shape == (400, 640)
    assert row["dist_map"].dtype == np.float32 and row["dist_map"].shape == (2, 400, 640)
    assert set(np.unique(row["label"])) == {0, 1} and bool(row["preprocessed"])


def test_rows_equal_the_reference_computation(done, raw):
    root, _ = done
    train = load(root / "output" / "data" / "train")
    name = str(train[2]["filename"])
    base = raw / "openEDS" / "openEDS" / "train"
    import cv2

    image = cv2.imread(str(base / "images" / name), cv2.IMREAD_GRAYSCALE)
    label = np.load(base / "labels" / f"{Path(name).stem}.npy")
    expected = reference.preprocess_frame(image, label)
    assert reference.mismatched_columns(expected, train[2]) == {}


def test_manifests_and_logs_name_skipped_and_bad_frames(done, names):
    root, result = done
    data = root / "output" / "data"
    train, validation = read_manifest(data / "train"), read_manifest(data / "validation")
    assert train["rows"] == 5 and train["counts"]["skipped_empty_pupil"] == 1
    assert train["skipped_files"] == [names["empty"]]
    assert validation["counts"]["bad"] == 1
    assert validation["bad_files"][0]["filename"] == names["corrupt"]
    assert names["corrupt"] in validation["bad_files"][0]["reason"]
    assert read_manifest(data / "test")["rows"] == 0
    assert train["preprocessing"] == {"gamma": 0.8, "clahe_clip_limit": 1.5, "clahe_tile_grid": 8,
                                      "weight_sigma": 5.0}
    assert train["provenance"]["layout"] and train["provenance"]["versions"]["opencv"]
    assert train["provenance"]["camera_frames"] is None  # 640x400 frames: nothing was mapped
    assert names["empty"] in result.stderr and names["corrupt"] in result.stderr
    report = json.loads((data / "preprocess-report" / "preprocess_report.json").read_text())
    assert report["rows"] == {"train": 5, "validation": 2, "test": 0}
    assert report["splits"]["train"]["skipped_files"] == [names["empty"]]
    assert report["workers"] == 2


def test_scipy_backend_writes_the_same_rows(done, raw, tmp_path):
    root, _ = done
    assert run_step("preprocess", Layout.resolve(tmp_path, {"raw": raw}),
                    {"backend": "scipy", "workers": 1}) == 0
    for split in ("train", "validation"):
        fast, slow = load(root / "output" / "data" / split), load(tmp_path / "output" / "data" / split)
        assert list(fast["filename"]) == list(slow["filename"])
        for index in range(len(fast)):
            assert reference.mismatched_columns(slow[index], fast[index]) == {}


def test_compact_rows_with_the_camera_frame_hold_the_spec_rows_minus_the_maps(done, raw, tmp_path):
    """row_layout=compact + keep_raw_image: image, label, ellipse as the spec rows, the camera
    frame beside them, no maps; the manifest names the layout and the bytes per row."""
    root, _ = done
    assert run_step("preprocess", Layout.resolve(tmp_path, {"raw": raw}),
                    {"row_layout": "compact", "keep_raw_image": True, "workers": 1}) == 0
    spec, compact = load(root / "output" / "data" / "train"), load(tmp_path / "output" / "data" / "train")
    assert set(compact.features) == set(FEATURES) - {"spatial_weights", "dist_map"} | {"raw_image"}
    base = raw / "openEDS" / "openEDS" / "train"
    import cv2

    for index in range(len(spec)):
        for column in ("image", "label", "cx", "cy", "rx", "ry", "filename"):
            np.testing.assert_array_equal(compact[index][column], spec[index][column])
        camera = cv2.imread(str(base / "images" / str(compact[index]["filename"])), cv2.IMREAD_GRAYSCALE)
        np.testing.assert_array_equal(compact[index]["raw_image"], camera)
    manifest = read_manifest(tmp_path / "output" / "data" / "train")
    assert manifest["row_layout"] == "compact" and manifest["bytes_per_row"] == 3 * 400 * 640 + 17
    assert read_manifest(root / "output" / "data" / "train")["bytes_per_row"] == 15 * 400 * 640 + 17


def test_validate_passes_on_its_own_output_and_leaves_the_splits(done, raw, tmp_path):
    root, _ = done
    data = root / "output" / "data"
    before = {split: read_manifest(data / split)["created_unix"] for split in SPLITS}
    layout = Layout.resolve(tmp_path, {"raw": raw, "reference": data}, {split: data / split for split in SPLITS})
    assert run_step("preprocess", layout, {"validate_only": True, "validate_samples": 3, "workers": 1}) == 0
    report = json.loads((tmp_path / "output/data/preprocess-report/validate_report.json").read_text())
    assert report["ok"] and report["mismatches"] == 0
    assert report["validated"] == {"test": 0, "train": 3, "validation": 2}
    assert {split: read_manifest(data / split)["created_unix"] for split in SPLITS} == before


def test_validate_names_the_first_mismatch(done, raw, tmp_path):
    root, _ = done
    tampered = load(root / "output" / "data" / "train").with_format(None)
    tampered = tampered.map(lambda row, i: {"cx": row["cx"] + (0.01 if i == 0 else 0.0)}, with_indices=True,
                            features=tampered.features, keep_in_memory=True)
    tampered.save_to_disk(str(tmp_path / "reference" / "train"))
    first = tampered[0]["filename"]
    layout = Layout.resolve(tmp_path / "root", {"raw": raw, "reference": tmp_path / "reference"})
    assert run_step("preprocess", layout, {"validate_only": True, "validate_samples": 2}) != 0
    reason = layout.failure_file.read_text().splitlines()[0]
    assert first in reason and "'cx'" in reason
    report = json.loads((tmp_path / "root/output/data/preprocess-report/validate_report.json").read_text())
    assert not report["ok"] and report["splits"][0]["mismatches"][0]["filename"] == first
    assert not (tmp_path / "root" / "output" / "data" / "train").exists()


def test_validate_without_reference_is_refused(raw, tmp_path):
    layout = Layout.resolve(tmp_path, {"raw": raw})
    assert run_step("preprocess", layout, {"validate_only": True}) == 2
    assert layout.failure_file.read_text().startswith("channel 'reference'")


def test_missing_raw_channel_is_named(tmp_path):
    layout = Layout.resolve(tmp_path)
    assert run_step("preprocess", layout, {}) == 2
    assert "'raw'" in layout.failure_file.read_text().splitlines()[0]


def test_a_split_of_only_bad_frames_fails_the_step(raw, tmp_path):
    broken = tmp_path / "raw"
    shutil.copytree(raw, broken)
    for image in (broken / "openEDS" / "openEDS" / "validation" / "images").glob("*.png"):
        image.write_bytes(b"")
    layout = Layout.resolve(tmp_path / "root", {"raw": broken})
    assert run_step("preprocess", layout, {"workers": 1}) != 0
    assert layout.failure_file.read_text().startswith("split validation: all 3 frames")
    assert not (tmp_path / "root" / "output" / "data" / "train").exists()


def _data_hashes(root: Path) -> dict[str, list]:
    return {split: [(f["path"], f["sha256"]) for f in read_manifest(root / "output" / "data" / split)["files"]]
            for split in SPLITS}


@pytest.mark.slow
def test_a_killed_run_reruns_to_the_same_outputs(done, raw, tmp_path):
    root = tmp_path / "root"
    command = [sys.executable, "-m", "steps", "preprocess", "--root", str(root), "--channel", f"raw={raw}",
               "--workers", "1"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.time() + 120
    while not list((root / "output" / "data").glob(".train.staging-*/.shards/*.arrow")):
        assert process.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (root / "output" / "data" / "train" / "state.json").exists()
    rerun = run_cli(root, "--channel", f"raw={raw}", "--workers", "2")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert _data_hashes(root) == _data_hashes(done[0])  # byte-identical to the clean run
