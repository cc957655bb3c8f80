"""The bad-input battery: every case runs a real step on a bad input and checks three things:

1. a non-zero exit;
2. a failure file (`output/failure`) whose first line names the problem (the field, file or gate);
3. no output that looks complete: no `_manifest.json` in any output folder and no run manifest,
   no staging folder left behind, and where an earlier good run had written the outputs
   (`prior=True`), every one of its files is byte for byte unchanged.

Most cases run through `python -m steps`'s own `main` in this process (the same parsing and
runtime, without a second interpreter's start-up); the ones marked `process=True` run as a real
`python -m steps ...` process. Inputs are tiny: 4 generated frames, 2-row preprocessed splits.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from contracts import Layout
from steps.data.precompute import precompute_splits
from steps.data.synthetic import generate_openeds
from steps.data.transforms import PreprocessParams
from steps.models import create_model, portable_state_dict
from steps.models.checkpoint_file import read_checkpoint
from steps.outputs import MANIFEST_NAME
from steps.runtime import run_step
from tests.reliability.conftest import StepRun, assert_failed_cleanly, hash_tree, read_only_folder, snapshot
from tests.steps.export.model_folders import write_model_folder
from tests.steps.train.tiny_data import make_split, write_tiny_splits

FRAMES = {"train": 2, "validation": 1, "test": 1}
MICRO = "tiny_efficientvit_micro"
TRAIN_FLAGS = ["--model", MICRO, "--epochs", "1", "--batch-size", "2", "--device", "cpu", "--no-register-model"]


@dataclass
class Inputs:
    """Good inputs shared by the cases (read only)."""

    source: Path          # generated frames in the Kaggle layout
    prior_root: Path      # a root where download-kaggle (local source) succeeded
    splits: dict[str, Path]
    empty_split: Path     # a 0-row split in preprocess's format


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Inputs:
    base = tmp_path_factory.mktemp("bad-inputs")
    source = generate_openeds(base / "source", FRAMES, seed=3, closed_fraction=0.0)
    prior = base / "prior"
    assert run_step("download-kaggle", Layout.resolve(prior, {"source": source}), {"source": "local"}) == 0
    splits = write_tiny_splits(base / "splits", train_rows=2, valid_rows=2)
    precompute_splits({"train": []}, {"train": base / "empty"}, PreprocessParams(), workers=1)
    return Inputs(source=source, prior_root=prior, splits=splits, empty_split=base / "empty")


@dataclass
class Ctx:
    tmp: Path
    root: Path
    inputs: Inputs


@dataclass
class Expect:
    run: StepRun
    needles: list[str]                               # each must be on the failure file's first line
    guard: Callable[[], Any] | None = None           # a context manager around the run
    check: Callable[[Any], None] | None = None       # extra checks on the Outcome


@dataclass(frozen=True)
class Case:
    build: Callable[[Ctx], Expect]
    process: bool = False
    prior: bool = False  # start from a root holding an earlier good download-kaggle output


CASES: dict[str, Case] = {}


def case(name: str, *, process: bool = False, prior: bool = False) -> Callable:
    def register(build: Callable[[Ctx], Expect]) -> Callable[[Ctx], Expect]:
        assert name not in CASES
        CASES[name] = Case(build, process, prior)
        return build
    return register


# ---------------------------------------------------------------- raw frames (download-kaggle)

def local_run(ctx: Ctx, channel: Path, *flags: str) -> StepRun:
    return StepRun("download-kaggle", ctx.root, channels={"source": channel}, flags=["--source", "local", *flags])


def damaged(ctx: Ctx, damage: Callable[[Path], Path]) -> tuple[Path, Path]:
    """A copy of the source with its first train frame damaged; (copy, the file the error must name)."""
    copy = ctx.tmp / "source"
    shutil.copytree(ctx.inputs.source, copy)
    return copy, damage(copy / "openEDS" / "openEDS" / "train")


def frame_case(name: str, damage: Callable[[Path], Path], problem: str, process: bool = False) -> None:
    def build(ctx: Ctx) -> Expect:
        copy, bad = damaged(ctx, damage)
        return Expect(local_run(ctx, copy), [str(bad), problem])
    case(name, prior=True, process=process)(build)


def _corrupt_png(split: Path) -> Path:
    path = split / "images" / "000000.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    return path


def _rewrite_label(change: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], Path]:
    def damage(split: Path) -> Path:
        path = split / "labels" / "000000.npy"
        np.save(path, change(np.load(path)))
        return path
    return damage


def _truncate_label(split: Path) -> Path:
    path = split / "labels" / "000000.npy"
    path.write_bytes(path.read_bytes()[:300])
    return path


def _drop_label(split: Path) -> Path:
    (split / "labels" / "000000.npy").unlink()
    return split / "images" / "000000.png"


def _value_nine(label: np.ndarray) -> np.ndarray:
    label[5, 5] = 9
    return label


frame_case("corrupt png", _corrupt_png, "not a readable image", process=True)
frame_case("truncated npy", _truncate_label, "unreadable .npy label")
frame_case("label of wrong shape", _rewrite_label(lambda label: label[:200]), "label shape (200, 640)")
frame_case("label of wrong dtype", _rewrite_label(lambda label: label.astype(np.int32)), "label dtype int32")
frame_case("label values outside 0..3", _rewrite_label(_value_nine), "label values [9] outside 0..3")
frame_case("image without its label", _drop_label, "image without its label")


@case("empty split", prior=True)
def _empty_split(ctx: Ctx) -> Expect:
    copy, _ = damaged(ctx, lambda split: split)
    for image in (copy / "openEDS" / "openEDS" / "validation" / "images").iterdir():
        image.unlink()
    return Expect(local_run(ctx, copy), ["split 'validation' has no frames"])


@case("missing channel for source=local", prior=True)
def _local_without_channel(ctx: Ctx) -> Expect:
    return Expect(StepRun("download-kaggle", ctx.root, flags=["--source", "local"]), ["channel 'source'"])


@case("requested split with 0 synthetic frames", prior=True)
def _zero_frames(ctx: Ctx) -> Expect:
    run = StepRun("download-kaggle", ctx.root, flags=["--synthetic-test-frames", "0"])
    return Expect(run, ["hyperparameter 'synthetic_test_frames'", "0 frames"])


# ---------------------------------------------------------------- archives (download-kaggle)

def tar_with(path: Path, source: Path, extra: list[tarfile.TarInfo]) -> Path:
    """The dataset as a tar, plus `extra` members (links, odd names) after it."""
    with tarfile.open(path, "w") as archive:
        archive.add(source, arcname=".")
        for info in extra:
            archive.addfile(info, io.BytesIO(b"escaped") if info.isfile() else None)
    return path


def tar_member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = len(b"escaped") if kind == tarfile.REGTYPE else 0
    return info


def archive_channel(ctx: Ctx, name: str, content: bytes) -> Path:
    channel = ctx.tmp / "channel"
    channel.mkdir()
    (channel / name).write_bytes(content)
    return channel


@case("zip with ../ entries", prior=True)
def _zip_slip(ctx: Ctx) -> Expect:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(ctx.inputs.source.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(ctx.inputs.source).as_posix())
        archive.writestr("../../escaped-by-zip.txt", b"escaped")
    channel = archive_channel(ctx, "data.zip", buffer.getvalue())

    def nothing_escaped(_: Any) -> None:
        assert not list(ctx.tmp.parent.rglob("escaped-by-zip.txt"))
    return Expect(local_run(ctx, channel), ["data.zip", "member '../../escaped-by-zip.txt'", "path traversal"],
                  check=nothing_escaped)


@case("tar with an absolute path", prior=True)
def _tar_absolute(ctx: Ctx) -> Expect:
    target = ctx.tmp / "escaped-by-tar.txt"
    archive = tar_with(ctx.tmp / "data.tar", ctx.inputs.source, [tar_member(str(target))])

    def nothing_escaped(_: Any) -> None:
        assert not target.exists()
    return Expect(local_run(ctx, archive), ["data.tar", f"member '{target}'", "absolute path"],
                  check=nothing_escaped)


@case("tar symlink pointing out of the target", prior=True)
def _tar_symlink(ctx: Ctx) -> Expect:
    link = tar_member("./openEDS/openEDS/train/images/escape.png", tarfile.SYMTYPE, "../../../../../../etc/passwd")
    archive = tar_with(ctx.tmp / "data.tar", ctx.inputs.source, [link])
    return Expect(local_run(ctx, archive), ["data.tar", "symlink to '../../../../../../etc/passwd'",
                                            "points outside the target"])


@case("tar hardlink to a missing member", prior=True)
def _tar_hardlink_missing(ctx: Ctx) -> Expect:
    archive = tar_with(ctx.tmp / "data.tar", ctx.inputs.source, [tar_member("./x.png", tarfile.LNKTYPE, "nothere.png")])
    return Expect(local_run(ctx, archive), ["data.tar", "extraction failed", "linkname 'nothere.png' not found"])


@case("tar symlink loop", prior=True)
def _tar_symlink_loop(ctx: Ctx) -> Expect:
    archive = tar_with(ctx.tmp / "data.tar", ctx.inputs.source,
                       [tar_member("./loop", tarfile.SYMTYPE, "loop")])
    return Expect(local_run(ctx, archive), ["data.tar", "member 'loop'", "link resolves outside the target (or is a loop)"])


@case("file that is not an archive", prior=True)
def _not_an_archive(ctx: Ctx) -> Expect:
    channel = archive_channel(ctx, "openeds.zip", b"PK\x03\x04 this is not really a zip file")
    return Expect(local_run(ctx, channel), ["openeds.zip", "not a zip or tar archive"])


# ---------------------------------------------------------------- outputs that cannot be written

# Without an earlier output: with one, its own folder (writable) takes the staging and the step
# succeeds, as under a read-only root with the output folders mounted one by one (tests/docker).
@case("read-only output folder", process=True)
def _read_only(ctx: Ctx) -> Expect:
    folder = ctx.root / "output" / "data"
    run = local_run(ctx, ctx.inputs.source)
    return Expect(run, [str(folder)], guard=lambda: read_only_folder(folder))


@case("output path under a file")
def _output_under_file(ctx: Ctx) -> Expect:
    blocker = ctx.tmp / "blocker"
    blocker.write_text("a file, not a folder")
    run = local_run(ctx, ctx.inputs.source)
    run.outputs = {"raw": blocker / "raw"}
    return Expect(run, [str(blocker)])


# ---------------------------------------------------------------- hyperparameters

@case("malformed hyperparameters.json", prior=True, process=True)
def _malformed_json(ctx: Ctx) -> Expect:
    run = StepRun("download-kaggle", ctx.root, hyperparameters='{"seed": 3,, }')
    return Expect(run, ["hyperparameters.json: not valid JSON", "line 1 column"])


@case("hyperparameters.json saved as UTF-16", prior=True, process=True)
def _utf16_json(ctx: Ctx) -> Expect:
    run = StepRun("download-kaggle", ctx.root, hyperparameters='{"seed": 3}'.encode("utf-16"))
    return Expect(run, ["hyperparameters.json: not UTF-8 text"])


@case("SM_HPS that is not JSON", prior=True)
def _bad_sm_hps(ctx: Ctx) -> Expect:
    return Expect(StepRun("download-kaggle", ctx.root, env={"SM_HPS": '{"seed": '}), ["SM_HPS: not valid JSON"])


@case("unknown key", prior=True)
def _unknown_key(ctx: Ctx) -> Expect:
    run = StepRun("download-kaggle", ctx.root, hyperparameters={"seed": "1", "bogus_key": "1"})
    return Expect(run, ["hyperparameter 'bogus_key': unknown key for step download-kaggle"])


@case("wrong type given as a string", prior=True)
def _wrong_type(ctx: Ctx) -> Expect:
    run = StepRun("download-kaggle", ctx.root, hyperparameters={"synthetic_train_frames": "two"})
    return Expect(run, ["hyperparameter 'synthetic_train_frames'", '"two"'])


@case("out-of-range learning rate")
def _lr_range(ctx: Ctx) -> Expect:
    run = StepRun("train-seg", ctx.root, hyperparameters={"lr": "-0.5"})
    return Expect(run, ["hyperparameter 'lr'", "greater than 0", "-0.5"])


@case("NaN learning rate on the command line", process=True)
def _lr_nan(ctx: Ctx) -> Expect:
    return Expect(StepRun("train-seg", ctx.root, flags=["--lr", "NaN"]), ["hyperparameter 'lr'", "finite"])


@case("infinite learning rate in hyperparameters.json")
def _lr_inf(ctx: Ctx) -> Expect:
    return Expect(StepRun("train-seg", ctx.root, hyperparameters='{"lr": Infinity}'), ["hyperparameter 'lr'"])


@case("unknown step under the SageMaker train entry", process=True)
def _unknown_train_step(ctx: Ctx) -> Expect:
    run = StepRun("train-seg", ctx.root, entry=["train"], env={"SAGEMAKER_BASE_DIR": str(ctx.root)},
                  hyperparameters={"step": "train-everything", "epochs": "1"})
    return Expect(run, ["hyperparameter 'step'", "'train-everything'"])


@case("bad tune search space")
def _bad_search_space(ctx: Ctx) -> Expect:
    run = StepRun("tune", ctx.root, hyperparameters={"search_space": {"lrr": {"type": "float", "low": 1, "high": 2}}})
    return Expect(run, ["search_space key 'lrr'", "not a train-seg hyperparameter"])


@case("cuda requested without a GPU")
def _cuda(ctx: Ctx) -> Expect:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    run = train_run(ctx, ctx.inputs.splits["train"])
    run.flags += ["--device", "cuda"]
    return Expect(run, ["hyperparameter 'device': cuda requested but no CUDA device is available"])


# ---------------------------------------------------------------- channels and datasets

@case("missing channel")
def _missing_raw(ctx: Ctx) -> Expect:
    return Expect(StepRun("preprocess", ctx.root), ["channel 'raw': missing or empty folder"])


@case("validate_only without its reference channel")
def _validate_without_reference(ctx: Ctx) -> Expect:
    run = StepRun("preprocess", ctx.root, channels={"raw": ctx.inputs.source}, flags=["--validate-only"])
    return Expect(run, ["channel 'reference'"])


@case("raw frames with every split empty")
def _no_frames(ctx: Ctx) -> Expect:
    raw = ctx.tmp / "raw"
    for kind in ("images", "labels"):
        (raw / "openEDS" / "openEDS" / "train" / kind).mkdir(parents=True)
    return Expect(StepRun("preprocess", ctx.root, channels={"raw": raw}), ["channel 'raw': no frames in splits"])


def train_run(ctx: Ctx, train: Path, validation: Path | None = None, flags: tuple[str, ...] = ()) -> StepRun:
    return StepRun("train-seg", ctx.root, channels={"train": train,
                                                    "validation": validation or ctx.inputs.splits["validation"]},
                   flags=[*TRAIN_FLAGS, *flags])


@case("empty train split")
def _empty_train(ctx: Ctx) -> Expect:
    return Expect(train_run(ctx, ctx.inputs.empty_split), ["train: no usable rows"])


@case("0-row split saved by datasets itself")
def _zero_rows_by_datasets(ctx: Ctx) -> Expect:
    folder = ctx.tmp / "zero-rows"
    make_split(0, seed=1).save_to_disk(str(folder))  # no data file at all, unlike preprocess's 0-row splits
    return Expect(train_run(ctx, folder), ["train:", str(folder), "holds no rows"])


@case("train channel that is not a dataset")
def _train_not_a_dataset(ctx: Ctx) -> Expect:
    folder = ctx.tmp / "not-a-dataset"
    folder.mkdir()
    (folder / "rows.csv").write_text("image,label\n")
    return Expect(train_run(ctx, folder), ["train:", str(folder), "is not a saved dataset"])


@case("non-finite loss")
def _nan_loss(ctx: Ctx) -> Expect:
    corrupt = ctx.tmp / "nan-train"
    make_split(2, seed=1, nan_weight_rows=(0, 1)).save_to_disk(str(corrupt))

    def no_nan_weights_saved(_: Any) -> None:
        assert not list((ctx.root / "checkpoints").glob("*.pt")), "a checkpoint was saved from diverged weights"
        assert not (ctx.root / "model").exists()
    # The stored weights reach the loss only while no augmentation moved the label (else they are
    # derived from it afresh): camera augmentation off.
    return Expect(train_run(ctx, corrupt, flags=("--camera-probability", "0")),
                  ["train_loss is not finite at epoch 1 batch 1"], check=no_nan_weights_saved)


@case("resume checkpoint from another model variant")
def _other_variant_resume(ctx: Ctx) -> Expect:
    """A file with the micro model's checkpoint name holding the default model's training state."""
    path = ctx.root / "checkpoints" / "efficientvit_tiny_model_epoch_1.pt"
    path.parent.mkdir(parents=True)
    torch.save({"model_name": "tiny_efficientvit", "model_config": {}, "epoch": 1, "optimizer": {},
                "state_dict": portable_state_dict(create_model("tiny_efficientvit"))}, path)
    before = hash_tree(path)

    def left_in_place(_: Any) -> None:
        assert hash_tree(path) == before
    return Expect(train_run(ctx, ctx.inputs.splits["train"]),
                  [f"checkpoint {path}", "saved by model 'tiny_efficientvit'", f"'{MICRO}'"], check=left_in_place)


@case("checkpoint claiming another variant than its weights")
def _variant_mismatch_export(ctx: Ctx) -> Expect:
    folder = write_model_folder(ctx.tmp / "seg", MICRO)
    payload = read_checkpoint(folder / "best_efficientvit_tiny_model.pt")
    (folder / "best_efficientvit_tiny_model.pt").unlink()
    torch.save({**payload, "model_name": "tiny_efficientvit"}, folder / "best_efficientvit_model.pt")
    (folder / "model_card.json").write_text('{"model_name": "tiny_efficientvit", "checkpoint": "best_efficientvit_model.pt"}')
    run = StepRun("export-onnx", ctx.root, channels={"seg_model": folder}, flags=["--exporter", "legacy"])
    return Expect(run, ["best_efficientvit_model.pt: weights do not fit tiny_efficientvit"])


@case("truncated checkpoint")
def _truncated_checkpoint(ctx: Ctx) -> Expect:
    folder = write_model_folder(ctx.tmp / "seg", MICRO)
    checkpoint = folder / "best_efficientvit_tiny_model.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    run = StepRun("export-onnx", ctx.root, channels={"seg_model": folder})
    return Expect(run, ["best_efficientvit_tiny_model.pt: cannot be read as a PyTorch checkpoint"])


@case("ONNX file that does not load")
def _onnx_garbage(ctx: Ctx) -> Expect:
    onnx_dir = ctx.tmp / "onnx"
    onnx_dir.mkdir()
    (onnx_dir / "best_efficientvit_tiny_model.onnx").write_bytes(b"\x08\x07 definitely not an onnx model")
    channels = {"onnx": onnx_dir, "seg_model": write_model_folder(ctx.tmp / "seg", MICRO),
                "test": ctx.inputs.splits["validation"]}
    return Expect(StepRun("validate", ctx.root, channels=channels),
                  ["onnx file best_efficientvit_tiny_model.onnx: cannot be loaded by onnxruntime"])


@case("push=true offline", process=True)
def _push_offline(ctx: Ctx) -> Expect:
    run = StepRun("push-hf", ctx.root, channels=dict(ctx.inputs.splits), flags=["--push"],
                  env={"HF_TOKEN": "hf_battery0123456789", "HF_HUB_OFFLINE": "1"})
    return Expect(run, ["offline", "push=false"])


@case("push-hf channel that is not a dataset")
def _push_not_a_dataset(ctx: Ctx) -> Expect:
    folder = ctx.tmp / "junk"
    folder.mkdir()
    (folder / "data.bin").write_bytes(b"\0" * 16)
    run = StepRun("push-hf", ctx.root, channels={"train": folder, "validation": ctx.inputs.splits["validation"]})
    return Expect(run, ["channel 'train'", "is not a saved dataset"])


# ---------------------------------------------------------------- the battery

def test_the_battery_has_at_least_twenty_cases():
    assert len(CASES) >= 20
    assert sum(c.process for c in CASES.values()) >= 5  # representative cases as real processes
    assert sum(c.prior for c in CASES.values()) >= 10   # and many over an earlier good output


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_fails_cleanly(name, inputs, tmp_path, monkeypatch):
    spec = CASES[name]
    ctx = Ctx(tmp=tmp_path, root=tmp_path / "root", inputs=inputs)
    if spec.prior:
        shutil.copytree(inputs.prior_root, ctx.root)
    expect = spec.build(ctx)
    run = expect.run
    before = snapshot(run.step, run.layout) if spec.prior else None
    if before is not None:
        assert MANIFEST_NAME in before["raw"], "the earlier good output is missing"
    with (expect.guard() if expect.guard else contextlib.nullcontext()):
        outcome = run.run_process() if spec.process else run.run_in_process(monkeypatch)
    assert_failed_cleanly(run, outcome, expect.needles, before)
    if expect.check is not None:
        expect.check(outcome)
