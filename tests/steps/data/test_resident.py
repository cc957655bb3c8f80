"""Device-resident training data (steps.data.resident), on a CPU torch.device: the loader's rows in
the loader's order, flipped exactly as the loader flips them; what training refuses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from steps.data.augment import params_for
from steps.data.camera_augment import CameraAugment
from steps.data.loading import build_loaders, set_loader_epoch
from steps.data.resident import ROW_BYTES, ArrayRows, ResidentLoader, ResidentSplit, memory_bytes, resident_loader
from steps.data.sampling import EpochBatchSampler
from steps.errors import StepError
from tests.steps.data.tiny_dataset import make_split

SEED, BATCH = 3, 4
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def spec_split():
    return make_split(11, seed=1)  # spec rows: maps stored (the resident split does not copy them)


@pytest.fixture(scope="module")
def compact_split(spec_split):
    return spec_split.remove_columns(["spatial_weights", "dist_map"])


def cpu_loader(train, **overrides):
    options = dict(task="segmentation", batch_size=BATCH, num_workers=0, augment=True, input_mode="preprocessed",
                   seed=SEED, distributed=False, pin_memory=False)
    return build_loaders(train, train, **{**options, **overrides})[0]


def resident(train, **overrides) -> ResidentLoader:
    options = dict(task="segmentation", batch_size=BATCH, augment=True, input_mode="preprocessed", seed=SEED,
                   distributed=False)
    return resident_loader(train, CPU, **{**options, **overrides})


def epoch(loader, number: int) -> list[dict]:
    set_loader_epoch(loader, number)
    return list(loader)


@pytest.mark.parametrize("layout", ["spec", "compact"])
def test_an_epoch_is_the_loaders_rows_in_the_loaders_order_flipped_alike(layout, spec_split, compact_split):
    train = spec_split if layout == "spec" else compact_split
    ours, theirs = resident(train), cpu_loader(train)
    assert len(ours) == len(theirs) == 2  # 11 rows, batch 4: the last partial batch dropped
    flipped = compared_images = 0
    for number in (1, 2):
        sampler = EpochBatchSampler(11, BATCH, shuffle=True, seed=SEED, drop_last=True, distributed=False)
        sampler.set_epoch(number)
        expected_order = [[position for _, position in keys] for keys in sampler]
        resident_batches, loader_batches = epoch(ours, number), epoch(theirs, number)
        assert [b["index"].tolist() for b in resident_batches] == expected_order
        for mine, loaded in zip(resident_batches, loader_batches):
            assert set(mine) == {"image", "label", "ellipse", "index", "filename"}  # no maps: derived per batch
            assert mine["image"].dtype == torch.uint8 and mine["image"].shape == (BATCH, 1, 400, 640)
            assert mine["label"].dtype == torch.uint8 and mine["index"].dtype == torch.int64
            assert mine["filename"] == loaded["filename"] and torch.equal(mine["index"], loaded["index"])
            assert torch.equal(mine["label"], loaded["label"])
            assert torch.equal(mine["ellipse"], loaded["ellipse"])  # cx mirrored bit for bit
            for k, row in enumerate(mine["index"].tolist()):
                params = params_for(SEED, number, row)
                flipped += params.flip
                if not params.lines and params.blur_sigma is None:  # photometric ones stay on the CPU
                    assert torch.equal(mine["image"][k], loaded["image"][k])
                    compared_images += 1
    assert 0 < flipped < 16 and compared_images >= 8


def test_resumed_mid_epoch_and_raw_rows(compact_split):
    loader = resident(compact_split)
    full = epoch(loader, 5)
    set_loader_epoch(loader, 5, start_batch=1)
    assert len(loader) == 1 and torch.equal(next(iter(loader))["image"], full[1]["image"])
    raw = make_split(6, seed=4, preprocessed=False)  # camera frames, 4-class labels: derived at load time
    ours, theirs = resident(raw, batch_size=2), cpu_loader(raw, batch_size=2)
    for mine, loaded in zip(epoch(ours, 1), epoch(theirs, 1)):
        assert torch.equal(mine["label"], loaded["label"]) and torch.equal(mine["ellipse"], loaded["ellipse"])


def test_ellipse_task_holds_the_label_and_memory_is_as_counted(compact_split):
    loader = resident(compact_split, task="ellipse")
    batch = next(iter(loader))
    assert set(batch) == {"image", "label", "ellipse", "index", "filename"}  # the label trains the pupil map
    assert loader.dataset.label is not None
    split = resident(compact_split).dataset
    allocated = sum(t.numel() * t.element_size() for t in (split.image, split.label, split.ellipse, split.mirrored_cx))
    assert split.nbytes == allocated == memory_bytes(11) == 11 * 512_020
    assert memory_bytes(27_000) == 13_824_540_000 and ROW_BYTES["ellipse"] == ROW_BYTES["segmentation"] == 512_020
    with pytest.raises(ValueError, match="task must be one of"):
        memory_bytes(1, "depth")


def test_array_rows_need_no_dataset_and_augment_off_never_flips():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (5, 400, 640), dtype=np.uint8)
    label = (rng.random((5, 400, 640)) < 0.1).astype(np.uint8)
    ellipse = rng.random((5, 4), dtype=np.float32)
    split = ResidentSplit(ArrayRows(image, label, ellipse), CPU, seed=1, augment=False)
    batch = split.batch(0, [4, 0, 2])
    assert torch.equal(batch["image"][:, 0], torch.from_numpy(image[[4, 0, 2]]))
    assert torch.equal(batch["ellipse"], torch.from_numpy(ellipse[[4, 0, 2]]))
    flipping = ResidentSplit(ArrayRows(image, label, ellipse), CPU, seed=1, augment=True)
    flips = flipping.flips(7, range(5))
    batch = flipping.batch(7, list(range(5)))
    for k in range(5):
        expected = image[k][:, ::-1] if flips[k] else image[k]
        assert torch.equal(batch["image"][k, 0], torch.from_numpy(expected.copy()))
    with pytest.raises(ValueError, match="ArrayRows: expected"):
        ArrayRows(image[:, :10], label, ellipse)


def test_camera_augmentation_and_cpu_training_are_refused(compact_split):
    with pytest.raises(StepError, match="^resident_data: camera augmentation"):
        resident(compact_split, camera=CameraAugment(probability=0.5))
    from contracts import get_contract
    from steps.train.distributed import DistInfo
    from steps.train.fit import build_run

    hp = get_contract("train-seg").hyperparameters(model="tiny_efficientvit_micro", batch_size=2, device="cpu",
                                                   resident_data=True)
    with pytest.raises(StepError, match="^hyperparameter 'resident_data': .*needs a CUDA device"):
        build_run(hp, compact_split, compact_split, CPU, DistInfo())


def test_the_engine_trains_on_resident_batches(compact_split):
    from steps.models import create_model
    from steps.train.device import Precision
    from steps.train.engine import StepConfig, train_one_epoch
    from steps.train.losses import SegmentationLoss
    from steps.train.optim import LRSchedule
    from steps.train.tasks import SegmentationTask

    torch.manual_seed(0)
    loader = resident(compact_split.select(range(4)), batch_size=2)
    set_loader_epoch(loader, 1)
    model = create_model("tiny_efficientvit_micro")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    schedule = LRSchedule(None, False, "none")
    progress = train_one_epoch(model, SegmentationTask(), SegmentationLoss(), loader, optimizer, schedule,
                               StepConfig(device=CPU, precision=Precision(None, False)), epoch=1)
    assert progress.batches_done == 2 and progress.images == 4
    assert np.isfinite(progress.losses.compute()["loss"])
