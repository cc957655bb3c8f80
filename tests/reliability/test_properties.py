"""Property tests (hypothesis) of the parts that take outside input: the hyperparameter parser, the
archive extractor and the per-frame preprocessing.

- parser: SageMaker strings round-trip to the typed values; any raw settings either validate or
  raise ContractError whose first line names a hyperparameter (never another exception); any bytes
  in hyperparameters.json either load as an object or raise ContractError naming the file;
- extractor: any mix of member names (`..`, absolute, backslashes) and links (symlinks, hardlinks,
  any target) in a tar or a zip is either refused with ArchiveError (nothing written) or lands
  entirely inside the target;
- preprocessing of random pupil ellipses: the distance map is negative inside and positive
  outside, exactly -1 and +1 (pixels, over the image diagonal) on the two sides of the boundary,
  never 0, and channel 0 is the negative of channel 1; normalized cx, cy are in [0, 1] for a pupil
  inside the frame and near the drawn centre; the spatial weights are finite, >= 0, positive on
  the boundary and 0 far from it; the fast path equals the scipy reference within 1e-4.
"""

from __future__ import annotations

import io
import json
import math
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts import ContractError, Layout, all_contracts, get_contract
from contracts.base import decode_value
from steps.data import reference, transforms
from steps.data.archive import ArchiveError, extract_archive
from steps.data.frames import IMAGE_DIAGONAL, IMAGE_SHAPE
from steps.runtime import load_raw_hyperparameters

H, W = IMAGE_SHAPE
FIXTURES = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
TRAIN_SEG = get_contract("train-seg")

# ---------------------------------------------------------------- the hyperparameter parser

finite = dict(allow_nan=False, allow_infinity=False)
TRAIN_VALUES = st.fixed_dictionaries({}, optional={
    "epochs": st.integers(1, 10_000),
    "batch_size": st.integers(1, 4096),
    "lr": st.floats(min_value=1e-12, max_value=10, **finite),
    "weight_decay": st.floats(0, 1, **finite),
    "momentum": st.floats(0, 0.999999, **finite),
    "augment": st.booleans(),
    "deterministic": st.booleans(),
    "clip_grad_norm": st.none() | st.floats(min_value=1e-9, max_value=1e6, **finite),
    "max_train_rows": st.none() | st.integers(1, 10**9),
    "optimizer": st.sampled_from(["adam", "adamw", "sgd", "rmsprop"]),
    "model": st.sampled_from(["tiny_efficientvit", "tiny_efficientvit_micro"]),
    "mlflow_experiment": st.text(max_size=20),
})


@settings(max_examples=60, deadline=None)
@given(values=TRAIN_VALUES)
def test_sagemaker_strings_round_trip_to_the_typed_values(values):
    """What SageMaker's SDK sends (every value json-encoded into a string) parses to the values."""
    as_strings = {key: json.dumps(value) for key, value in values.items()}
    parsed = TRAIN_SEG.parse_hyperparameters(as_strings)
    for key, value in values.items():
        assert getattr(parsed, key) == value, key


@settings(max_examples=60, deadline=None)
@given(value=st.integers(1, 10_000), exponent=st.booleans())
def test_plain_strings_of_numbers_and_booleans_decode(value, exponent):
    """`"32"`, `"1e-3"`, `"true"`: what a person types into a console."""
    lr = f"{value}e-4" if exponent else repr(value / 1000)
    parsed = TRAIN_SEG.parse_hyperparameters({"epochs": str(value), "lr": lr, "augment": "false"})
    assert parsed.epochs == value and parsed.lr == float(lr) and parsed.augment is False


@settings(max_examples=80, deadline=None)
@given(text=st.text(max_size=30))
def test_a_string_setting_keeps_any_text(text):
    """A string field keeps the text as typed, unless it is a JSON string literal (SageMaker's SDK
    quotes strings), which is unquoted; json-encoding any text round-trips."""
    contract = get_contract("push-hf")
    assert contract.parse_hyperparameters({"commit_message": json.dumps(text)}).commit_message == text
    try:
        quoted = isinstance(json.loads(text), str)
    except ValueError:
        quoted = False
    if not quoted:
        assert contract.parse_hyperparameters({"commit_message": text}).commit_message == text


JSON_SCALARS = (st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats()
                | st.text(max_size=12)
                | st.sampled_from(["NaN", "-Infinity", "1e999", "[", "{}", "[]", "null", "true", "two", "0x10",
                                   '"quoted"', "[8,16]", '{"type": "float"}', " 3 ", "", "-0"]))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)


def field_names() -> list[str]:
    return sorted({name for c in all_contracts().values() for name in c.hyperparameters.model_fields})


SEARCH_PARAM = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["float", "int", "categorical", "loguniform"]) | JSON_SCALARS,
    "low": JSON_SCALARS, "high": JSON_SCALARS, "log": JSON_SCALARS, "step": JSON_SCALARS,
    "choices": st.lists(JSON_SCALARS, max_size=3) | JSON_SCALARS,
})
RAW_SETTINGS = st.dictionaries(
    st.sampled_from(field_names()) | st.text(max_size=10),
    JSON_VALUES | st.dictionaries(st.sampled_from(sorted(TRAIN_SEG.hyperparameters.model_fields)), SEARCH_PARAM,
                                  max_size=2),
    max_size=6)


@settings(max_examples=300, deadline=None)
@given(step=st.sampled_from(sorted(all_contracts())), raw=RAW_SETTINGS)
def test_any_raw_settings_validate_or_raise_contract_error_naming_a_hyperparameter(step, raw):
    contract = get_contract(step)
    try:
        parsed = contract.parse_hyperparameters(raw)
    except ContractError as error:
        first = str(error).splitlines()[0]
        assert first.startswith("hyperparameter '"), first
        return
    assert isinstance(parsed, contract.hyperparameters)
    for value in parsed.model_dump().values():  # every float that got through is finite
        if isinstance(value, float):
            assert math.isfinite(value)


@settings(max_examples=200, deadline=None)
@given(key=st.sampled_from(field_names()) | st.text(max_size=8), text=st.text(max_size=40))
def test_decoding_any_string_never_raises(key, text):
    for contract in all_contracts().values():
        decode_value(contract.hyperparameters, key, text)


@settings(max_examples=150, deadline=None, suppress_health_check=FIXTURES)
@given(content=st.binary(max_size=60) | st.text(max_size=60).map(str.encode)
       | JSON_VALUES.map(lambda v: json.dumps(v).encode()))
def test_any_hyperparameters_file_loads_as_an_object_or_names_the_file(tmp_path_factory, content):
    root = tmp_path_factory.mktemp("hp")
    layout = Layout(root=root)
    layout.hyperparameters_file.parent.mkdir(parents=True)
    layout.hyperparameters_file.write_bytes(content)
    try:
        raw = load_raw_hyperparameters(layout, {})
    except ContractError as error:
        assert str(error).splitlines()[0].startswith("hyperparameters.json: ")
        return
    assert isinstance(raw, dict)


# ---------------------------------------------------------------- the archive extractor

SEGMENTS = st.sampled_from(["a", "b", "..", ".", "", "c.png", "\\", "x", "/", "..\\..", "C:"])
PATHS = st.lists(SEGMENTS, min_size=1, max_size=4).map("/".join)
TARGETS = PATHS | st.sampled_from(["/etc/passwd", "/", "../../outside", "a", "a/b", "."])
MEMBERS = st.lists(st.tuples(st.sampled_from(["file", "file", "dir", "symlink", "hardlink"]), PATHS, TARGETS),
                   min_size=1, max_size=5)


def write_tar(path: Path, members: list[tuple[str, str, str]]) -> Path:
    kinds = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}
    with tarfile.open(path, "w") as archive:
        for kind, name, target in members:
            info = tarfile.TarInfo(name or "empty")
            info.type = kinds[kind]
            info.linkname = target if kind in ("symlink", "hardlink") else ""
            data = b"data" if kind == "file" else b""
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data else None)
    return path


def write_zip(path: Path, members: list[tuple[str, str, str]]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for kind, name, target in members:
            info = zipfile.ZipInfo((name or "empty") + ("/" if kind == "dir" else ""))
            if kind in ("symlink", "hardlink"):  # zip has no hardlinks: both become symlink entries
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                archive.writestr(info, target)
            else:
                archive.writestr(info, b"" if kind == "dir" else b"data")
    return path


def everything_inside(work: Path, target: Path, archive: Path) -> None:
    """Every entry under `work` is the archive, the target's own folders, or resolves inside it."""
    root = os.path.realpath(target)
    for dirpath, dirnames, filenames in os.walk(work):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if path == str(archive) or path in (str(target.parent), str(target)):
                continue
            assert os.path.commonpath([root, os.path.realpath(path)]) == root, f"{path} lands outside {target}"


@pytest.mark.filterwarnings("ignore:Duplicate name:UserWarning")  # zipfile, on repeated member names
@settings(max_examples=120, deadline=None, suppress_health_check=FIXTURES)
@given(members=MEMBERS, packing=st.sampled_from(["tar", "zip"]))
def test_any_members_are_refused_or_land_inside_the_target(tmp_path_factory, members, packing):
    work = tmp_path_factory.mktemp("archive")
    archive = (write_tar if packing == "tar" else write_zip)(work / f"data.{packing}", members)
    target = work / "box" / "out"
    try:
        extract_archive(archive, target)
    except ArchiveError as error:
        assert str(error).startswith(str(archive))
        assert not target.exists()
        assert not list((work / "box").glob(".out.extracting-*")), "staging folder left behind"
        return
    everything_inside(work, target, archive)


# ---------------------------------------------------------------- preprocessing of random pupils

@st.composite
def pupils(draw, margin: int = 2):
    """A raw 4-class label with one pupil ellipse inside the frame (and maybe a second, smaller blob)."""
    ax, ay = draw(st.integers(1, 70)), draw(st.integers(1, 70))
    reach = max(ax, ay) + margin
    cx, cy = draw(st.integers(reach, W - 1 - reach)), draw(st.integers(reach, H - 1 - reach))
    angle = draw(st.floats(0, 180, **finite))
    label = np.full(IMAGE_SHAPE, 1, np.uint8)
    cv2.ellipse(label, (cx, cy), (int(ax * 1.8) + 2, int(ay * 1.8) + 2), angle, 0, 360, 2, -1)
    cv2.ellipse(label, (cx, cy), (ax, ay), angle, 0, 360, 3, -1)
    blob = draw(st.booleans())
    if blob:
        bx, by = draw(st.integers(0, W - 1)), draw(st.integers(0, H - 1))
        cv2.circle(label, (bx, by), draw(st.integers(0, 3)), 3, -1)
    image = np.random.default_rng(draw(st.integers(0, 2**16))).integers(0, 256, IMAGE_SHAPE, dtype=np.uint8)
    # the drawn centre, when the fit can be held to it: one ellipse a few pixels wide at least
    centre = (cx, cy) if not blob and min(ax, ay) >= 4 else None
    return image, label, centre


def neighbours_differ(mask: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour of the other class (inside the frame)."""
    padded = np.pad(mask, 1, mode="edge")
    centre = padded[1:-1, 1:-1]
    return ((padded[:-2, 1:-1] != centre) | (padded[2:, 1:-1] != centre)
            | (padded[1:-1, :-2] != centre) | (padded[1:-1, 2:] != centre))


@settings(max_examples=30, deadline=None)
@given(case=pupils())
def test_distance_map_signs_boundary_values_and_ellipse_centre(case):
    image, label, centre = case
    row = transforms.preprocess_frame(image, label)
    mask = row["label"].astype(bool)
    assert set(np.unique(row["label"])) <= {0, 1} and mask.any()
    dist = row["dist_map"]
    unit = np.float32(1.0 / IMAGE_DIAGONAL)
    assert dist.dtype == np.float32 and np.isfinite(dist).all()
    assert (dist[1][mask] < 0).all() and (dist[1][~mask] > 0).all()  # negative inside, positive outside
    assert np.array_equal(dist[0], -dist[1])
    boundary = neighbours_differ(mask)
    np.testing.assert_allclose(dist[1][boundary & mask], -unit, rtol=1e-6)   # -1 px on the pupil's edge
    np.testing.assert_allclose(dist[1][boundary & ~mask], unit, rtol=1e-6)   # +1 px next to it
    assert (np.abs(dist[1]) >= unit * (1 - 1e-6)).all()                     # never 0
    assert 0.0 <= row["cx"] <= 1.0 and 0.0 <= row["cy"] <= 1.0
    assert row["rx"] > 0 and row["ry"] > 0 and math.isfinite(row["rx"]) and math.isfinite(row["ry"])
    if centre is not None and row["ellipse_method"] == "fit":
        assert abs(row["cx"] * W - centre[0]) < 1.5 and abs(row["cy"] * H - centre[1]) < 1.5


@settings(max_examples=30, deadline=None)
@given(case=pupils(), sigma=st.floats(0.5, 8, **finite))
def test_spatial_weights_are_finite_non_negative_and_local(case, sigma):
    image, label, _ = case
    mask = (label == 3).astype(np.uint8)
    weights = transforms.spatial_weights(mask, sigma)
    assert weights.dtype == np.float32 and np.isfinite(weights).all() and (weights >= 0).all()
    assert weights[neighbours_differ(mask.astype(bool))].max() > 0
    radius = transforms.gaussian_ksize(sigma) // 2
    rows, cols = transforms.mask_box(mask, margin=1 + radius)
    outside = np.ones(IMAGE_SHAPE, bool)
    outside[rows, cols] = False
    assert not weights[outside].any()


@settings(max_examples=8, deadline=None)
@given(case=pupils(margin=0))
def test_fast_path_equals_the_reference_within_1e_4(case):
    image, label, _ = case
    fast, slow = transforms.preprocess_frame(image, label), reference.preprocess_frame(image, label)
    assert fast["ellipse_method"] == slow["ellipse_method"]
    assert reference.mismatched_columns(slow, fast) == {}, reference.column_differences(slow, fast)

