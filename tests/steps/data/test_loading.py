"""The training loader: batch layout, stored vs runtime preprocessing, raw mode, determinism."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

from steps.data import camera_augment, transforms
from steps.data.augment import params_for
from steps.data.camera_augment import CameraAugment
from steps.data.hf_cache import MARKER, snapshot_folder
from steps.data.loading import build_loaders, load_split, set_loader_epoch
from steps.runtime import StepError
from steps.train.tasks import SegmentationTask
from tests.steps.data.tiny_dataset import make_rows, make_split, raw_features, write_split

SEG_KEYS = {"image", "label", "spatial_weights", "dist_map", "ellipse", "filename", "index"}


@pytest.fixture(scope="module")
def splits(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("splits")
    return {"train": write_split(root / "train", 11, seed=1, raw_image=True),
            "validation": write_split(root / "validation", 5, seed=2),
            "camera": write_split(root / "camera", 4, seed=3, preprocessed=False)}


def loaders(train, valid, **overrides):
    options = dict(task="segmentation", batch_size=4, num_workers=0, augment=True, input_mode="preprocessed",
                   seed=3, distributed=False, pin_memory=False)
    return build_loaders(train, valid, **{**options, **overrides})


def epoch_batches(loader, epoch: int) -> list[dict]:
    set_loader_epoch(loader, epoch)
    return list(loader)


def assert_same_batches(first: list[dict], second: list[dict]) -> None:
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert a["filename"] == b["filename"]
        for key in a.keys() - {"filename"}:
            assert torch.equal(a[key], b[key]), key


def test_load_split_from_save_to_disk_folder_and_dataset_dict(splits, tmp_path):
    train = load_split(splits["train"], hf_repo=None, split="train", data_dir=str(tmp_path))
    assert len(train) == 11 and "dist_map" in train.column_names
    datasets.DatasetDict({"validation": make_split(2, 9)}).save_to_disk(str(tmp_path / "dict"))
    assert len(load_split(tmp_path / "dict", hf_repo=None, split="validation", data_dir=str(tmp_path))) == 2
    with pytest.raises(StepError, match="^train: .* is not a saved dataset"):
        load_split(tmp_path, hf_repo=None, split="train", data_dir=str(tmp_path))
    with pytest.raises(StepError, match="^validation: no dataset given"):
        load_split(None, hf_repo=None, split="validation", data_dir=str(tmp_path))


def test_batches_hold_the_stored_rows_unchanged_without_augmentation(splits):
    train, valid = datasets.load_from_disk(str(splits["train"])), datasets.load_from_disk(str(splits["validation"]))
    train_loader, valid_loader = loaders(train, valid, augment=False)
    batch = next(iter(valid_loader))
    assert set(batch) == SEG_KEYS
    assert batch["image"].shape == (4, 1, 400, 640) and batch["image"].dtype == torch.uint8
    assert batch["label"].shape == (4, 400, 640) and batch["label"].dtype == torch.uint8
    assert batch["spatial_weights"].dtype == torch.float32 and batch["dist_map"].shape == (4, 2, 400, 640)
    assert batch["ellipse"].shape == (4, 4) and batch["ellipse"].dtype == torch.float32
    stored = valid.with_format("numpy", dtype=None)[:4]
    assert batch["filename"] == list(stored["filename"]) and batch["index"].tolist() == [0, 1, 2, 3]
    np.testing.assert_array_equal(batch["image"][:, 0].numpy(), stored["image"])
    np.testing.assert_array_equal(batch["label"].numpy(), stored["label"])
    assert set(np.unique(batch["label"].numpy())) == {0, 1}
    np.testing.assert_array_equal(batch["spatial_weights"].numpy(), stored["spatial_weights"])
    np.testing.assert_array_equal(batch["dist_map"].numpy(), stored["dist_map"])
    np.testing.assert_array_equal(batch["ellipse"].numpy(),
                                  np.stack([stored[c] for c in ("cx", "cy", "rx", "ry")], axis=1))
    # validation: every row once, stored order, last partial batch kept; training drops it
    assert [len(b["filename"]) for b in valid_loader] == [4, 1]
    assert [len(b["filename"]) for b in epoch_batches(train_loader, 1)] == [4, 4]


def test_training_rows_are_augmented_consistently(splits):
    train = datasets.load_from_disk(str(splits["train"]))
    train_loader, _ = loaders(train, train)
    stored = train.with_format("numpy", dtype=None)
    flipped = 0
    for batch in epoch_batches(train_loader, 2):
        for k, index in enumerate(batch["index"].tolist()):
            row, params = stored[index], params_for(3, 2, index)
            mirror = (lambda a: a[..., ::-1]) if params.flip else (lambda a: a)
            np.testing.assert_array_equal(batch["label"][k].numpy(), mirror(row["label"]))
            np.testing.assert_array_equal(batch["spatial_weights"][k].numpy(), mirror(row["spatial_weights"]))
            np.testing.assert_array_equal(batch["dist_map"][k].numpy(), mirror(row["dist_map"]))
            expected_cx = (639 - 640 * float(row["cx"])) / 640 if params.flip else row["cx"]
            assert batch["ellipse"][k, 0].item() == pytest.approx(expected_cx, abs=1e-6)
            if not params.lines and params.blur_sigma is None:
                np.testing.assert_array_equal(batch["image"][k, 0].numpy(), mirror(row["image"]))
            flipped += params.flip
    assert 0 < flipped < 8


def test_order_and_augmentation_depend_only_on_seed_and_epoch(splits):
    train, valid = datasets.load_from_disk(str(splits["train"])), datasets.load_from_disk(str(splits["validation"]))
    first, _ = loaders(train, valid)
    walked = [epoch_batches(first, epoch) for epoch in range(4)]  # epochs 0..3 in one process
    torch.manual_seed(999)
    np.random.seed(999)
    rng_before = torch.get_rng_state()
    resumed, _ = loaders(train, valid)  # a fresh process that resumes at epoch 3
    assert_same_batches(epoch_batches(resumed, 3), walked[3])
    assert torch.equal(torch.get_rng_state(), rng_before), "the loader must not consume the global torch RNG"
    orders = [[b["index"].tolist() for b in batches] for batches in walked]
    assert len({str(o) for o in orders}) > 1
    other_seed, _ = loaders(train, valid, seed=4)
    assert [b["index"].tolist() for b in epoch_batches(other_seed, 3)] != orders[3]


def test_start_batch_skips_without_loading(splits):
    train = datasets.load_from_disk(str(splits["train"]))
    loader, _ = loaders(train, train, batch_size=2)
    full = epoch_batches(loader, 5)
    set_loader_epoch(loader, 5, start_batch=3)
    assert len(loader) == len(full) - 3
    assert_same_batches(list(loader), full[3:])
    assert_same_batches(epoch_batches(loader, 5), full)  # the next set_loader_epoch starts at 0 again


@pytest.mark.slow
def test_worker_processes_give_the_same_batches(splits):
    train, valid = datasets.load_from_disk(str(splits["train"])), datasets.load_from_disk(str(splits["validation"]))
    single, _ = loaders(train, valid, batch_size=2)
    workers, _ = loaders(train, valid, batch_size=2, num_workers=2)
    for epoch in (0, 1):
        assert_same_batches(epoch_batches(workers, epoch), epoch_batches(single, epoch))


def test_ellipse_task_reads_image_label_and_ellipse_but_no_maps(splits):
    train = datasets.load_from_disk(str(splits["train"]))
    _, valid_loader = loaders(train, train, task="ellipse", max_valid_rows=3)
    batch = next(iter(valid_loader))
    assert set(batch) == {"image", "label", "ellipse", "filename", "index"}  # the label trains the pupil map
    assert batch["image"].shape == (3, 1, 400, 640) and batch["ellipse"].shape == (3, 4)
    assert batch["label"].shape == (3, 400, 640) and batch["label"].dtype == torch.uint8


def test_max_rows_takes_a_fixed_subset(splits):
    train = datasets.load_from_disk(str(splits["train"]))
    first, valid = loaders(train, train, max_train_rows=8, max_valid_rows=2, batch_size=2)
    again, _ = loaders(train, train, max_train_rows=8, max_valid_rows=2, batch_size=2)
    rows = sorted(i for b in epoch_batches(first, 0) for i in b["index"].tolist())
    assert len(rows) == 8 and rows == sorted(i for b in epoch_batches(again, 0) for i in b["index"].tolist())
    assert sum(len(b["filename"]) for b in valid) == 2


def test_unpreprocessed_rows_get_the_spec_preprocessing_at_load_time(splits):
    """Image, label and ellipse in the loader; weights and distance maps from the batch's label on
    the device (SegmentationTask.targets): together, exactly preprocess's row."""
    camera = datasets.load_from_disk(str(splits["camera"]))
    _, valid_loader = loaders(camera, camera, augment=False)
    batch = next(iter(valid_loader))
    assert "spatial_weights" not in batch and "dist_map" not in batch
    targets = SegmentationTask().targets(batch, torch.device("cpu"))
    raw = camera.with_format("numpy", dtype=None)[:4]
    for k in range(4):
        expected = transforms.preprocess_frame(raw["image"][k], raw["label"][k])
        np.testing.assert_array_equal(batch["image"][k, 0].numpy(), expected["image"])
        np.testing.assert_array_equal(batch["label"][k].numpy(), expected["label"])
        np.testing.assert_array_equal(targets["spatial_weights"][k].numpy(), expected["spatial_weights"])
        np.testing.assert_array_equal(targets["dist_map"][k].numpy(), expected["dist_map"])
        np.testing.assert_allclose(batch["ellipse"][k].numpy(),
                                   [expected[c] for c in ("cx", "cy", "rx", "ry")], atol=1e-7)


def test_unpreprocessed_rows_without_pupil_are_skipped_and_logged(caplog):
    rows = make_rows(3, seed=4, preprocessed=False)
    rows["label"][1] = np.zeros_like(rows["label"][1])
    split = datasets.Dataset.from_dict(rows, features=raw_features())
    with caplog.at_level(logging.WARNING):
        _, valid_loader = loaders(split, split, augment=False)
    assert [f for b in valid_loader for f in b["filename"]] == [rows["filename"][0], rows["filename"][2]]
    assert f"skipping {rows['filename'][1]}: no pupil pixels" in caplog.text


def test_raw_mode_trains_on_camera_frames(splits):
    train, camera = datasets.load_from_disk(str(splits["train"])), datasets.load_from_disk(str(splits["camera"]))
    # preprocessed rows with a `raw_image` column: the camera frame, everything else as stored
    _, valid_loader = loaders(train, train, input_mode="raw", augment=False)
    batch, stored = next(iter(valid_loader)), train.with_format("numpy", dtype=None)[:4]
    np.testing.assert_array_equal(batch["image"][:, 0].numpy(), stored["raw_image"])
    np.testing.assert_array_equal(batch["dist_map"].numpy(), stored["dist_map"])
    # preprocessed=False rows: the stored camera frame, no gamma or CLAHE; label etc. derived
    _, camera_loader = loaders(camera, camera, input_mode="raw", augment=False)
    batch, raw = next(iter(camera_loader)), camera.with_format("numpy", dtype=None)[:4]
    np.testing.assert_array_equal(batch["image"][:, 0].numpy(), raw["image"])
    np.testing.assert_array_equal(batch["label"].numpy(), (raw["label"] == 3).astype(np.uint8))


def test_raw_mode_refuses_enhanced_images(splits):
    train, valid = datasets.load_from_disk(str(splits["train"])), datasets.load_from_disk(str(splits["validation"]))
    with pytest.raises(StepError, match="^validation: input_mode=raw needs camera frames"):
        loaders(train, valid, input_mode="raw")


def test_distributed_sampler_shards_and_follows_the_epoch(splits, tmp_path):
    train = datasets.load_from_disk(str(splits["train"]))
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        train_loader, valid_loader = loaders(train, train, distributed=True, batch_size=2)
        epoch3 = [b["index"].tolist() for b in epoch_batches(train_loader, 3)]
        sampler = torch.utils.data.DistributedSampler(range(11), shuffle=True, seed=3)
        sampler.set_epoch(3)
        assert [i for b in epoch3 for i in b] == list(sampler)[:10]
        assert [i for b in valid_loader for i in b["index"].tolist()] == list(range(11))
    finally:
        torch.distributed.destroy_process_group()


def _fill_hf_cache(data_dir: Path, repo_id: str) -> Path:
    """A cache as a previous download left it: push_to_hub's parquet shards and our marker."""
    folder = snapshot_folder(data_dir, repo_id)
    (folder / "data").mkdir(parents=True)
    make_split(3, seed=6).to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    make_split(2, seed=7).to_parquet(str(folder / "data" / "validation-00000-of-00001.parquet"))
    (folder / MARKER).write_text(json.dumps({"repo_id": repo_id, "downloaded_at": "2026-01-01T00:00:00Z"}))
    return folder


def test_hf_repo_loads_from_the_cache_without_downloading(tmp_path, caplog, monkeypatch):
    import huggingface_hub

    def no_network(*args, **kwargs):
        raise AssertionError("a cached dataset must not be downloaded again")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network)
    _fill_hf_cache(tmp_path, "someone/openeds-tiny")
    with caplog.at_level(logging.INFO):
        first = load_split(None, hf_repo="someone/openeds-tiny", split="train", data_dir=str(tmp_path))
        second = load_split(None, hf_repo="someone/openeds-tiny", split="validation", data_dir=str(tmp_path))
    assert (len(first), len(second)) == (3, 2)
    assert caplog.text.count("using the cached HF dataset someone/openeds-tiny") == 2
    assert "is not cached" not in caplog.text
    batch = next(iter(loaders(first, second, augment=False)[1]))
    np.testing.assert_array_equal(batch["dist_map"][0].numpy(), second.with_format("numpy", dtype=None)[0]["dist_map"])


def test_hf_repo_without_cache_fails_fast_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    started = time.monotonic()
    with pytest.raises(StepError, match="^hf_repo: cannot download dataset 'someone/missing'"):
        load_split(None, hf_repo="someone/missing", split="train", data_dir=str(tmp_path))
    assert time.monotonic() - started < 5
    assert not snapshot_folder(tmp_path, "someone/missing").exists()


def test_hf_repo_with_unreachable_hub_fails_fast(tmp_path, monkeypatch):
    import socket

    import huggingface_hub.constants
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(StepError, match="^hf_repo: cannot download dataset 'someone/unreachable'"):
        load_split(None, hf_repo="someone/unreachable", split="train", data_dir=str(tmp_path))
    assert time.monotonic() - started < 10
    assert not any(snapshot_folder(tmp_path, "someone/unreachable").parent.iterdir())


def test_columns_chunked_differently_and_png_images_are_read_right(splits):
    """Rows are found per column (Arrow chunks differ between columns), and a column that is not a
    plain fixed-shape array (here PNG-encoded images, as some Hub datasets store them) is decoded."""
    import pyarrow as pa

    stored = datasets.load_from_disk(str(splits["validation"]))
    table = stored.data.table
    dist = table.column("dist_map").combine_chunks()
    rechunked = table.set_column(table.schema.get_field_index("dist_map"), "dist_map",
                                 pa.chunked_array([dist.slice(0, 2), dist.slice(2)]))
    columns = stored.with_format("numpy", dtype=None)[:]
    png = datasets.Dataset.from_dict(
        {**{k: list(v) for k, v in columns.items() if k != "image"}, "image": list(columns["image"])},
        features=datasets.Features({**stored.features, "image": datasets.Image()}))
    for split in (datasets.Dataset(rechunked), png):
        batch = next(iter(loaders(split, split, augment=False)[1]))
        np.testing.assert_array_equal(batch["image"][:, 0].numpy(), columns["image"][:4])
        np.testing.assert_array_equal(batch["dist_map"].numpy(), columns["dist_map"][:4])
        np.testing.assert_array_equal(batch["label"].numpy(), columns["label"][:4])


def test_missing_columns_are_named():
    images_only = datasets.Dataset.from_dict({"image": [np.zeros((400, 640), np.uint8)]},
                                             features=datasets.Features({"image": datasets.Array2D((400, 640), "uint8")}))
    with pytest.raises(StepError, match="^train: the dataset has no 'label' column"):
        loaders(images_only, images_only)
    labels_only = images_only.rename_column("image", "label")
    with pytest.raises(StepError, match="^train: the dataset has no 'image' column"):
        loaders(labels_only, labels_only)


def test_background_prefetch_gives_the_same_batches_and_stops_cleanly(splits):
    import threading

    train = datasets.load_from_disk(str(splits["train"]))
    plain, _ = loaders(train, train, batch_size=2)
    ahead, _ = loaders(train, train, batch_size=2)
    ahead.background = True  # what CUDA training gets (pin_memory on a GPU)
    assert_same_batches(epoch_batches(ahead, 2), epoch_batches(plain, 2))
    set_loader_epoch(ahead, 3)
    for _ in ahead:
        break  # the consumer leaves early: the producer thread must end
    time.sleep(0.5)
    assert not any(t.name == "batch-prefetch" for t in threading.enumerate())
    ahead.dataset.rows.fields = None  # a failure while loading reaches the consumer
    with pytest.raises(TypeError):
        epoch_batches(ahead, 4)


def test_camera_augmentation_acts_on_the_raw_frame_then_enhances_and_derives_maps_on_the_device(splits):
    """With a raw_image column: the batch image is enhance(augment(raw)); the label moved with it;
    the ellipse is refitted to that label; the maps are left to the device; it repeats per seed."""
    train = datasets.load_from_disk(str(splits["train"]))
    camera = CameraAugment(probability=1.0, lid=0, glints=0, gain=0, offset=0, gamma=0, blur_sigma=0,
                           noise_sd=0, jpeg_quality=0)
    first, _ = loaders(train, train, camera=camera)
    again, _ = loaders(train, train, camera=camera)
    batches = epoch_batches(first, 1)
    assert_same_batches(batches, epoch_batches(again, 1))
    batch = batches[0]
    assert "spatial_weights" not in batch and "dist_map" not in batch
    stored = train.with_format("numpy", dtype=None)
    dataset = first.dataset
    for k, row in enumerate(batch["index"].tolist()):
        position = int(np.flatnonzero(dataset.rows.rows == row)[0])
        raw, mask, enhance = dataset.rows.camera_frame(position)
        np.testing.assert_array_equal(raw, stored[row]["raw_image"])
        assert enhance
        image, moved = camera_augment.apply(raw, mask, camera, camera_augment.camera_rng(3, 1, row))
        params = dataset.augment_params(1, position)
        flip = (lambda a: a[:, ::-1]) if params.flip else (lambda a: a)
        np.testing.assert_array_equal(batch["label"][k].numpy(), flip(moved))
        if not params.lines and params.blur_sigma is None:
            np.testing.assert_array_equal(batch["image"][k, 0].numpy(),
                                          flip(transforms.enhance_image(image, transforms.PreprocessParams())))
        refit = transforms.fit_pupil_ellipse(np.ascontiguousarray(batch["label"][k].numpy())).normalized()
        np.testing.assert_allclose(batch["ellipse"][k].numpy(), refit, atol=2e-3)
    targets = SegmentationTask().targets(batch, torch.device("cpu"))
    np.testing.assert_array_equal(targets["dist_map"][0].numpy(),
                                  transforms.signed_distance_maps(batch["label"][0].numpy()))


def test_photometric_camera_augmentation_keeps_the_stored_maps(splits):
    train = datasets.load_from_disk(str(splits["train"]))
    camera = CameraAugment(probability=1.0, scale=0, rotation_deg=0, shift_px=0, lid=0)
    loader, _ = loaders(train, train, camera=camera)
    assert {"spatial_weights", "dist_map"} <= set(next(iter(loader)))
