"""Files and settings crafted to attack a step: every case must fail cleanly, naming the field or
file, and must not run code, write outside its root, exhaust memory or echo a secret.

Each case checks: a non-zero exit; the failure file's first line names the problem; the sentinel
folder beside the root is untouched (nothing written outside); the marker file that a crafted
pickle would create does not exist; no secret appears in any stream or in any file under the root.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from contracts import Layout
from steps.models import best_checkpoint_name, epoch_checkpoint_name
from steps.runtime import run_step
from tests.reliability.conftest import Outcome, StepRun, hash_tree, read_only_folder
from tests.steps.export.model_folders import exported_folder, write_model_folder
from tests.steps.train.tiny_data import write_tiny_splits

MICRO = "tiny_efficientvit_micro"
TRAIN_FLAGS = ["--model", MICRO, "--epochs", "1", "--batch-size", "2", "--device", "cpu", "--no-register-model"]
PASSWORD = "hunter2-s3cret-pw"


class Exploit:
    """Unpickling this runs `touch MARKER`: the proof that a loader executed a pickle."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def crafted_checkpoint(path: Path, marker: Path, **fields) -> Path:
    """A checkpoint-shaped dict whose unpickling would create `marker`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "openeds-checkpoint/1", "model_name": MICRO, "model_config": {},
                "state_dict": {"weight": torch.zeros(1)}, "optimizer": {}, "epoch": 1,
                "hook": Exploit(marker), **fields}, path)
    return path


@dataclass
class Case:
    run: StepRun
    needles: list[str]
    secrets: list[str] = field(default_factory=list)
    process: bool = False
    guard: Callable | None = None
    stderr_max: int | None = None  # bound on what the step prints
    failure_file: bool = True      # False where the root cannot hold one (stderr still names the cause)


@dataclass
class World:
    tmp: Path
    root: Path
    outside: Path   # a sentinel folder beside the root: nothing may write there
    marker: Path    # created only if a crafted pickle runs
    splits: dict[str, Path]


@pytest.fixture(scope="module")
def splits(tmp_path_factory) -> dict[str, Path]:
    return write_tiny_splits(tmp_path_factory.mktemp("hostile-splits"), train_rows=2, valid_rows=2)


@pytest.fixture
def world(tmp_path, splits) -> World:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("untouched")
    return World(tmp=tmp_path, root=tmp_path / "root", outside=outside, marker=outside / "PWNED",
                 splits=splits)


CASES: dict[str, Callable[[World], Case]] = {}


def case(name: str) -> Callable:
    def register(build: Callable[[World], Case]) -> Callable[[World], Case]:
        CASES[name] = build
        return build
    return register


def train_run(world: World, *flags: str) -> StepRun:
    channels = {"train": world.splits["train"], "validation": world.splits["validation"]}
    return StepRun("train-seg", world.root, channels=channels, flags=[*TRAIN_FLAGS, *flags])


# ---------------------------------------------------------------- 1-2: checkpoints and model cards

@case("crafted checkpoint in checkpoints/ (resume)")
def _resume(world: World) -> Case:
    bad = crafted_checkpoint(world.root / "checkpoints" / epoch_checkpoint_name(MICRO, 1), world.marker)
    return Case(train_run(world), [str(bad), "not a plain checkpoint"], process=True)


@case("crafted checkpoint in export-onnx's model channel")
def _export_channel(world: World) -> Case:
    folder = write_model_folder(world.tmp / "seg_model", MICRO)
    bad = crafted_checkpoint(folder / best_checkpoint_name(MICRO), world.marker)
    return Case(StepRun("export-onnx", world.root, channels={"seg_model": folder}),
                [str(bad), "not a plain checkpoint"], process=True)


@case("crafted checkpoint behind a model card's path")
def _card_path(world: World) -> Case:
    folder = write_model_folder(world.tmp / "seg_model", MICRO)
    bad = crafted_checkpoint(folder / "renamed.pt", world.marker)
    card = json.loads((folder / "model_card.json").read_text())
    (folder / "model_card.json").write_text(json.dumps({**card, "checkpoint": "renamed.pt"}))
    return Case(StepRun("export-onnx", world.root, channels={"seg_model": folder}),
                [str(bad), "not a plain checkpoint"], process=True)


@case("crafted checkpoint in validate's model channel")
def _validate_channel(world: World) -> Case:
    folders = exported_folder(world.tmp / "exported", {"seg_model": MICRO})
    bad = crafted_checkpoint(folders["seg_model"] / best_checkpoint_name(MICRO), world.marker)
    channels = {"onnx": folders["onnx"], "seg_model": folders["seg_model"], "test": world.splits["validation"]}
    return Case(StepRun("validate", world.root, channels=channels), [str(bad), "not a plain checkpoint"])


@case("model card pointing outside its channel")
def _card_escape(world: World) -> Case:
    folder = write_model_folder(world.tmp / "channel" / "seg_model", MICRO)
    crafted_checkpoint(world.outside / "x.pt", world.marker)
    card = json.loads((folder / "model_card.json").read_text())
    (folder / "model_card.json").write_text(json.dumps({**card, "checkpoint": "../../outside/x.pt"}))
    return Case(StepRun("export-onnx", world.root, channels={"seg_model": folder}),
                ["model_card.json field 'checkpoint'", "leads outside"])


# ---------------------------------------------------------------- 3: secrets inside values

@case("password inside tune's storage URL")
def _storage_password(world: World) -> Case:
    channels = {"train": world.splits["train"], "validation": world.splits["validation"]}
    run = StepRun("tune", world.root, channels=channels,
                  flags=["--storage", f"postgresql://user:{PASSWORD}@db.invalid/studies"])
    return Case(run, ["hyperparameter 'storage'", "password"], secrets=[PASSWORD], process=True)


# ---------------------------------------------------------------- 4-5: archives and headers

def zipped(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@case("archive bomb (ratio)")
def _bomb(world: World) -> Case:
    archive = zipped(world.tmp / "source" / "openeds.zip", {"openEDS/zeros.bin": bytes(64 << 20)})
    run = StepRun("download-kaggle", world.root, channels={"source": archive.parent}, flags=["--source", "local"])
    return Case(run, [str(archive), "max_compression_ratio"])


@case("archive over the size limit")
def _too_big(world: World) -> Case:
    archive = zipped(world.tmp / "source" / "openeds.zip", {"openEDS/a.bin": os.urandom(1 << 20)})
    run = StepRun("download-kaggle", world.root, channels={"source": archive.parent},
                  flags=["--source", "local", "--max-extracted-gb", "0.0005"])
    return Case(run, [str(archive), "max_extracted_gb"])


@case("archive with too many members")
def _too_many(world: World) -> Case:
    archive = zipped(world.tmp / "source" / "openeds.zip", {f"openEDS/{i}.txt": b"x" for i in range(20)})
    run = StepRun("download-kaggle", world.root, channels={"source": archive.parent},
                  flags=["--source", "local", "--max-archive-members", "10"])
    return Case(run, [str(archive), "max_archive_members"])


@case(".npy label whose header claims 238 GiB")
def _npy_header(world: World) -> Case:
    from steps.data.synthetic import generate_openeds

    source = generate_openeds(world.tmp / "source", {"train": 1, "validation": 1, "test": 1}, seed=1)
    label = sorted((source / "openEDS" / "openEDS" / "train" / "labels").glob("*.npy"))[0]
    header = {"descr": "|u1", "fortran_order": False, "shape": (400000, 640000)}
    with open(label, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        handle.write(b"\0" * 64)
    run = StepRun("download-kaggle", world.root, channels={"source": source}, flags=["--source", "local"])
    return Case(run, [str(label), "label shape (400000, 640000)"], process=True)


@case("PNG whose header claims 100000 x 100000")
def _png_header(world: World) -> Case:
    from steps.data.synthetic import generate_openeds

    source = generate_openeds(world.tmp / "source", {"train": 1, "validation": 1, "test": 1}, seed=1)
    image = sorted((source / "openEDS" / "openEDS" / "train" / "images").glob("*.png"))[0]
    data = bytearray(image.read_bytes())
    data[16:24] = (100_000).to_bytes(4, "big") * 2
    image.write_bytes(bytes(data))
    run = StepRun("download-kaggle", world.root, channels={"source": source}, flags=["--source", "local"])
    return Case(run, [str(image), "frame 100000x100000: expected at least 32 and at most 4096 pixels a side"])


# ---------------------------------------------------------------- 6-10: settings

def settings_file_as(kind: str) -> Callable[[World], Case]:
    def build(world: World) -> Case:
        path = Layout(root=world.root).hyperparameters_file
        path.parent.mkdir(parents=True)
        if kind == "folder":
            path.mkdir()
        elif kind == "fifo":
            os.mkfifo(path)
        else:
            path.symlink_to(world.tmp / "missing.json")
        return Case(StepRun("download-kaggle", world.root), ["hyperparameters.json", str(path)])
    return build


for _kind in ("folder", "fifo", "dangling link"):
    case(f"hyperparameters.json is a {_kind}")(settings_file_as(_kind))


@case("50 MB string in an integer setting of hyperparameters.json")
def _huge_string(world: World) -> Case:
    run = StepRun("download-kaggle", world.root, hyperparameters={"seed": "9" * 50_000_000})
    return Case(run, ["hyperparameters.json", "50,000,012 bytes"], process=True, stderr_max=4_000)


@case("100 KB string in an integer setting of the environment")
def _long_string(world: World) -> Case:
    run = StepRun("download-kaggle", world.root, env={"OPENEDS_SEED": "x" * 100_000})
    return Case(run, ["hyperparameter 'seed'", "too long"], process=True, stderr_max=4_000)


@case("list setting with 100,000 items")
def _huge_list(world: World) -> Case:
    run = StepRun("download-kaggle", world.root, hyperparameters={"splits": ["train"] * 100_000})
    return Case(run, ["hyperparameter 'splits'", "too many items"], process=True, stderr_max=4_000)


@case("list setting with 2 million items (18 MB file)")
def _huger_list(world: World) -> Case:
    run = StepRun("download-kaggle", world.root, hyperparameters={"splits": ["train"] * 2_000_000})
    return Case(run, ["hyperparameters.json", "18,000,012 bytes"], process=True, stderr_max=4_000)


@case("SM_HPS is a JSON list")
def _sm_hps_list(world: World) -> Case:
    return Case(StepRun("download-kaggle", world.root, env={"SM_HPS": "[1, 2]"}),
                ["SM_HPS: expected a JSON object, got list"])


DEEP_JSON = '{"seed": ' + "[" * 5_000 + "]" * 5_000 + "}"  # 10 KB, past Python's recursion limit


@case("hyperparameters.json nested 5,000 deep")
def _deep_settings_file(world: World) -> Case:
    path = Layout(root=world.root).hyperparameters_file
    path.parent.mkdir(parents=True)
    path.write_text(DEEP_JSON)
    return Case(StepRun("download-kaggle", world.root), [str(path), "not valid JSON (nested too deeply"],
                process=True)


@case("hyperparameters.json giving a key twice")
def _key_twice(world: World) -> Case:
    path = Layout(root=world.root).hyperparameters_file
    path.parent.mkdir(parents=True)
    path.write_text('{"seed": 1, "splits": ["train"], "seed": 2}')
    return Case(StepRun("download-kaggle", world.root), ["hyperparameters.json: key 'seed' is given twice", str(path)])


@case("SM_HPS nested 5,000 deep")
def _deep_sm_hps(world: World) -> Case:
    return Case(StepRun("download-kaggle", world.root, env={"SM_HPS": DEEP_JSON}),
                ["SM_HPS: not valid JSON (nested too deeply"], process=True)


@case("SM_HPS is a JSON string")
def _sm_hps_string(world: World) -> Case:
    return Case(StepRun("download-kaggle", world.root, env={"SM_HPS": '"abc"'}),
                ["SM_HPS: expected a JSON object, got str"])


@case("seed of 2**64")
def _big_seed(world: World) -> Case:
    return Case(train_run(world, "--seed", str(2**64)), ["hyperparameter 'seed'"])


@case("true for an integer setting")
def _bool_int(world: World) -> Case:
    run = StepRun("download-kaggle", world.root, hyperparameters={"synthetic_train_frames": True})
    return Case(run, ["hyperparameter 'synthetic_train_frames'", "boolean"])


# ---------------------------------------------------------------- 11-12: the command line and the root

@case("flag without its value")
def _flag_no_value(world: World) -> Case:
    return Case(StepRun("download-kaggle", world.root, flags=["--seed"]), ["command line", "--seed"],
                process=True)


@case("--channel without =PATH")
def _channel_no_path(world: World) -> Case:
    return Case(StepRun("download-kaggle", world.root, flags=["--channel", "raw"]), ["--channel 'raw'", "NAME=PATH"],
                process=True)


@case("--output under a name the step does not have")
def _unknown_output(world: World) -> Case:
    run = StepRun("download-kaggle", world.root, flags=["--output", f"rwa={world.outside / 'raw'}"])
    return Case(run, ["--output 'rwa=", "no output named 'rwa' (this step's: raw)"])


@case("--channel under a name the step does not have")
def _unknown_channel(world: World) -> Case:
    run = StepRun("download-kaggle", world.root, flags=["--channel", f"sorce={world.tmp}"])
    return Case(run, ["--channel 'sorce=", "no channel named 'sorce' (this step's: source)"])


def output_onto(world: World, output: Path, needle: str, source: Path | None = None) -> Case:
    """download-kaggle with its `raw` output aimed at `output` (and a local `source`, when given)."""
    channels, flags = ({"source": source}, ["--source", "local"]) if source is not None else ({}, [])
    run = StepRun("download-kaggle", world.root, channels=channels, flags=[*flags, "--output", f"raw={output}"])
    return Case(run, ["output 'raw'", needle])


@case("--output onto the input channel's folder")
def _output_onto_input(world: World) -> Case:
    return output_onto(world, world.outside, "overlaps input channel 'source'", source=world.outside)


@case("--output onto a folder holding the input channel")
def _output_around_input(world: World) -> Case:
    (world.outside / "frames").mkdir()
    return output_onto(world, world.outside, "overlaps input channel 'source'", source=world.outside / "frames")


@case("--output onto a folder of someone's files")
def _output_onto_files(world: World) -> Case:
    return output_onto(world, world.outside, "holds files that are not an earlier step output")


@case("--output onto a file")
def _output_onto_a_file(world: World) -> Case:
    return output_onto(world, world.outside / "keep.txt", "keep.txt is a file, expected a folder")


@case("root is a regular file")
def _root_file(world: World) -> Case:
    world.root.write_text("not a folder")
    return Case(StepRun("download-kaggle", world.root), [f"root {world.root}", "not a folder"], process=True,
                failure_file=False)


@case("read-only root")
def _root_read_only(world: World) -> Case:
    return Case(StepRun("download-kaggle", world.root), [f"root {world.root}", "cannot write"], process=True,
                guard=lambda: read_only_folder(world.root), failure_file=False)


# ---------------------------------------------------------------- the checks

def every_text(root: Path) -> str:
    """Everything a run left under `root` (a regular file as root is read as it is)."""
    if root.is_file():
        return root.read_text(errors="replace")
    texts = []
    for path in sorted(root.rglob("*") if root.is_dir() else []):
        if path.is_file() and not path.is_symlink() and path.stat().st_size < 50_000_000:
            texts.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(texts)


def run_case(built: Case, monkeypatch: pytest.MonkeyPatch) -> Outcome:
    return built.run.run_process(timeout=300) if built.process else built.run.run_in_process(monkeypatch)


def test_the_battery_covers_every_numbered_case():
    assert len(CASES) >= 24


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_input_is_refused_cleanly(name, world, monkeypatch):
    built = CASES[name](world)
    before = hash_tree(world.outside)
    if built.guard is not None:
        with built.guard():
            outcome = run_case(built, monkeypatch)
    else:
        outcome = run_case(built, monkeypatch)
    context = f"exit {outcome.code}; failure {str(outcome.failure)[:500]!r}; stderr {outcome.stderr[-1500:]!r}"
    assert outcome.code != 0, context
    if built.failure_file:
        assert outcome.failure is not None, f"no failure file; {context}"
        for needle in built.needles:
            assert needle in outcome.first_line, f"first line {outcome.first_line[:300]!r} does not name {needle!r}"
        assert len(outcome.first_line) <= 1_100, "the failure file's first line is not bounded"
    if built.run.entry is None and built.process:
        reason = [line for line in outcome.stderr.splitlines() if "failed:" in line]
        assert reason and all(needle in reason[-1] for needle in built.needles), \
            f"stderr does not state the reason on one line: {outcome.stderr[-1500:]!r}"
        assert "Traceback" not in outcome.stderr, "a traceback is the message"
    if built.stderr_max is not None:
        assert len(outcome.stderr) <= built.stderr_max, f"stderr echoes {len(outcome.stderr):,} characters"
    assert not world.marker.exists(), "a crafted pickle ran code"
    assert hash_tree(world.outside) == before or name == "model card pointing outside its channel" and \
        set(hash_tree(world.outside)) == {"keep.txt", "x.pt"}, "something was written outside the root"
    for secret in built.secrets:
        assert secret not in outcome.stderr + outcome.stdout, "a secret reached a stream"
        assert secret not in every_text(world.root), "a secret reached a file under the root"


def test_a_crafted_registry_checkpoint_is_refused(tmp_path):
    """Loading from a folder the registry handed over goes through the same weights-only loader."""
    from steps.models import load_checkpoint
    from steps.models.checkpoint_file import CheckpointRefused

    marker = tmp_path / "PWNED"
    path = crafted_checkpoint(tmp_path / "extra_files" / "best.pt", marker)
    with pytest.raises(CheckpointRefused, match="best.pt: refused, not a plain checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()


def test_damaged_or_foreign_checkpoint_files_are_one_unpickling_error_naming_them(tmp_path):
    """Text, random bytes, truncations and flipped bytes of a real checkpoint: torch's readers raise
    KeyError, IndexError, EOFError, OSError...; the loader turns each into one UnpicklingError saying
    what the file is not (or loads a dict, when a flip left the structure whole)."""
    import pickle
    import random

    from steps.models.checkpoint_file import NOT_A_CHECKPOINT, read_checkpoint

    real = tmp_path / "real.pt"
    torch.save({"format": "openeds-checkpoint/1", "state_dict": {"w": torch.arange(300.0)}, "epoch": 1}, real)
    whole, rng = real.read_bytes(), random.Random(0)
    samples = [b"junk\n", b"", bytes(rng.randrange(256) for _ in range(2_000))]
    samples += [whole[:rng.randrange(len(whole))] for _ in range(30)]
    for _ in range(30):
        flipped = bytearray(whole)
        for _ in range(rng.randint(1, 20)):
            flipped[rng.randrange(len(flipped))] = rng.randrange(256)
        samples.append(bytes(flipped))
    refused = 0
    for data in samples:
        (tmp_path / "x.pt").write_bytes(data)
        try:
            assert isinstance(read_checkpoint(tmp_path / "x.pt"), dict)
        except pickle.UnpicklingError as error:
            assert str(error).startswith(NOT_A_CHECKPOINT), str(error)
            refused += 1
    assert refused >= 40
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "missing.pt")


def test_an_old_training_state_with_numpy_rng_still_loads(tmp_path):
    """Earlier versions stored NumPy's RNG state (a numpy array) in the resume state."""
    from steps.models.checkpoint_file import read_checkpoint

    state = {"optimizer": {}, "rng": {"numpy": np.random.get_state()}, "state_dict": {}}
    torch.save(state, tmp_path / "old.pt")
    loaded = read_checkpoint(tmp_path / "old.pt")
    assert np.array_equal(loaded["rng"]["numpy"][1], state["rng"]["numpy"][1])


def test_a_trusted_old_file_converts_to_one_that_loads_weights_only(tmp_path):
    from steps.models.checkpoint_file import convert_trusted_checkpoint, read_checkpoint

    torch.save({"state_dict": {"w": torch.ones(2)}, "metrics": {"iou": np.float32(0.5)}}, tmp_path / "old.pt")
    convert_trusted_checkpoint(tmp_path / "old.pt", tmp_path / "new.pt")
    loaded = read_checkpoint(tmp_path / "new.pt")
    assert loaded["metrics"]["iou"] == 0.5 and torch.equal(loaded["state_dict"]["w"], torch.ones(2))


def test_converting_a_crafted_file_by_hand_runs_nothing(tmp_path):
    """Even the by-hand conversion of a 'trusted' old file never unpickles in full."""
    from steps.models.checkpoint_file import CheckpointRefused, convert_trusted_checkpoint

    marker = tmp_path / "PWNED"
    path = crafted_checkpoint(tmp_path / "old.pt", marker)
    with pytest.raises(CheckpointRefused, match="old.pt: refused"):
        convert_trusted_checkpoint(path, tmp_path / "new.pt")
    assert not marker.exists() and not (tmp_path / "new.pt").exists()


def test_a_real_training_state_loads_weights_only_and_resumes(tmp_path, splits):
    """What the engine writes needs nothing beyond the allow-list: a second run resumes from it."""
    channels = {"train": splits["train"], "validation": splits["validation"]}
    flags = {"model": MICRO, "epochs": 1, "batch_size": 2, "device": "cpu", "register_model": False}
    root = tmp_path / "root"
    assert run_step("train-seg", Layout.resolve(root, channels), flags) == 0
    assert run_step("train-seg", Layout.resolve(root, channels), {**flags, "epochs": 2}) == 0
    manifest = json.loads((root / "output" / "manifest.json").read_text())
    assert manifest["summary"]["resumed_from"]


def test_masking_covers_urls_and_dsn_pairs():
    from steps.secrets import redact

    text = redact(f"postgresql+psycopg://u:{PASSWORD}@db/x and host=db password={PASSWORD} user=u "
                  f"https://h/?token={PASSWORD}&a=1", env={})
    assert PASSWORD not in text and "postgresql+psycopg://u:***@db/x" in text and "password=***" in text
