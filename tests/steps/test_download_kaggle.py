"""download-kaggle end to end through `run_step`: synthetic and local sources, bad frames and bad
archives failing with the file named, the real Kaggle client against a local fake API (second run
downloads nothing), kagglehub from a pre-filled KAGGLEHUB_CACHE and through the fake API, and the
fast, clear failure offline. The Kaggle key never reaches logs, failure files or manifests."""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from contracts import Layout
from steps.data.openeds import find_openeds, read_frame
from steps.data.synthetic import generate_openeds
from steps.outputs import read_manifest
from steps.runtime import run_step
from tests.kaggle_server import FakeKaggle, serve_kaggle, zip_tree

STEP = "download-kaggle"
DATASET = "soumicksarker/openeds-dataset"
FRAMES = {"train": 3, "validation": 2, "test": 1}


@pytest.fixture(scope="module")
def source_root(tmp_path_factory) -> Path:
    """A generated Kaggle copy to serve, zip or copy (read only)."""
    return generate_openeds(tmp_path_factory.mktemp("source"), FRAMES, seed=21, closed_fraction=0.0)


@pytest.fixture
def kaggle_env(monkeypatch, tmp_path) -> FakeKaggle:
    """Test endpoint and fake credentials; HOME moved so no real kaggle.json is read."""
    state = FakeKaggle()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KAGGLE_CONFIG_DIR", raising=False)
    monkeypatch.delenv("KAGGLE_API_TOKEN", raising=False)
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "TEST")
    monkeypatch.setenv("KAGGLE_USERNAME", state.username)
    monkeypatch.setenv("KAGGLE_KEY", state.key)
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    return state


def raw_output(root: Path) -> Path:
    return root / "output" / "data" / "raw"


def failure(root: Path) -> str:
    return (root / "output" / "failure").read_text()


def everything_written(root: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in root.rglob("*")
                     if p.is_file() and p.suffix in ("", ".json", ".txt"))


def assert_published(root: Path, counts: dict[str, int]) -> dict:
    out = raw_output(root)
    manifest = read_manifest(out)
    assert manifest["counts"] == counts and manifest["rows"] == sum(counts.values())
    layout = find_openeds(out)
    assert layout.kind == "kaggle" and layout.counts() == counts
    for frames in layout.splits.values():
        for frame in frames:
            image, label = read_frame(frame)
            assert label is not None and (out / "openEDS/openEDS" / frame.split / "masks" / f"{frame.stem}.png").is_file()
    return manifest


def test_synthetic_default_end_to_end(tmp_path):
    root = tmp_path / "root"
    code = run_step(STEP, Layout.resolve(root), {"synthetic_train_frames": 3, "synthetic_validation_frames": 2,
                                                  "synthetic_test_frames": 1, "seed": 4})
    assert code == 0
    manifest = assert_published(root, {"train": 3, "validation": 2, "test": 1})
    assert manifest["source"] == "synthetic" and manifest["layout"] == "kaggle" and manifest["seed"] == 4
    run = json.loads((root / "output" / "manifest.json").read_text())
    assert run["summary"]["frames"] == {"train": 3, "validation": 2, "test": 1}
    assert not (root / "output" / "failure").exists()
    assert not [p for p in (root / "output" / "data").iterdir() if p.name.startswith(".")]  # no work folders left


def test_a_refused_generated_frame_is_named_without_the_deleted_work_folder(tmp_path):
    root = tmp_path / "root"
    assert run_step(STEP, Layout.resolve(root), {"synthetic_layout": "portrait2019", "frame_policy": "strict",
                                                  "synthetic_train_frames": 2, "synthetic_validation_frames": 1,
                                                  "synthetic_test_frames": 1}) == 2
    first = failure(root).splitlines()[0]
    assert first.startswith("the generated frames: Semantic_Segmentation_Dataset/train/images/000000.png: image shape")
    assert ".download-kaggle-" not in failure(root) and str(root) not in first


def test_local_folder_with_split_subset_and_cap(tmp_path, source_root):
    root = tmp_path / "root"
    layout = Layout.resolve(root, {"source": source_root})
    assert run_step(STEP, layout, {"source": "local", "splits": ["train", "test"], "max_frames_per_split": 2}) == 0
    manifest = assert_published(root, {"train": 2, "test": 1})
    assert manifest["layout_description"] == "Kaggle copy (openEDS/openEDS): train 3, validation 2, test 1"


@pytest.mark.parametrize("packing", ["zip-in-folder", "tar-file"])
def test_local_archives(tmp_path, source_root, packing):
    if packing == "zip-in-folder":
        channel = tmp_path / "channel"
        channel.mkdir()
        (channel / "openeds-dataset.zip").write_bytes(zip_tree(source_root))
    else:
        channel = Path(shutil.make_archive(str(tmp_path / "openeds"), "gztar", source_root))
    root = tmp_path / "root"
    assert run_step(STEP, Layout.resolve(root, {"source": channel}), {"source": "local"}) == 0
    assert_published(root, FRAMES)


def test_local_zip_with_parent_entry_fails_and_writes_nothing_outside(tmp_path, source_root):
    channel = tmp_path / "channel"
    channel.mkdir()
    archive = zip_tree(source_root)
    evil = tmp_path / "evil.zip"
    evil.write_bytes(archive)
    import zipfile

    with zipfile.ZipFile(evil, "a") as handle:
        handle.writestr("../evil", b"escaped")
    shutil.move(evil, channel / "data.zip")
    root = tmp_path / "root"
    assert run_step(STEP, Layout.resolve(root, {"source": channel}), {"source": "local"}) == 2
    assert "member '../evil'" in failure(root).splitlines()[0]
    assert not raw_output(root).exists()
    assert not list(tmp_path.rglob("evil"))


def test_links_in_a_local_folder_are_published_as_the_files_they_lead_to(tmp_path, source_root):
    """A dataset folder of links (DVC, git-annex, a split on another disk): each frame is published as
    the file its link leads to, never as a link (which would dangle or lead outside the artifact)."""
    channel = tmp_path / "channel"
    shutil.copytree(source_root, channel)
    images = channel / "openEDS" / "openEDS" / "train" / "images"
    first, second, third = sorted(images.glob("*.png"))[:3]
    second.unlink()
    second.symlink_to(Path("..", "..", "train", "images", first.name))  # relative, inside the folder
    elsewhere = tmp_path / "annex" / "objects" / "third.png"
    elsewhere.parent.mkdir(parents=True)
    third.rename(elsewhere)
    third.symlink_to(elsewhere)  # absolute, outside the folder
    root = tmp_path / "root"
    assert run_step(STEP, Layout.resolve(root, {"source": channel}), {"source": "local"}) == 0
    published = raw_output(root) / "openEDS" / "openEDS" / "train" / "images"
    for name, content in ((second.name, first.read_bytes()), (third.name, elsewhere.read_bytes())):
        assert not (published / name).is_symlink() and (published / name).read_bytes() == content
    assert not [p for p in raw_output(root).rglob("*") if p.is_symlink()]


def test_local_source_without_channel_fails_clearly(tmp_path):
    root = tmp_path / "root"
    assert run_step(STEP, Layout.resolve(root), {"source": "local"}) == 2
    assert failure(root).startswith("channel 'source': missing or empty folder")


@pytest.mark.parametrize("hyperparameters, key", [
    ({"synthetic_train_frames": "two"}, "synthetic_train_frames"),
    ({"max_frames": 3}, "max_frames"),
    ({"source": "s3"}, "source"),
    ({"synthetic_test_frames": 0}, "synthetic_test_frames"),
    ({"synthetic_min_eye_scale": 0.3}, "synthetic_min_eye_scale"),
    ({"synthetic_min_eye_scale": 1.5}, "synthetic_min_eye_scale"),
    ({"splits": ["train", "train"]}, "splits"),
])
def test_bad_hyperparameters_name_the_key(tmp_path, hyperparameters, key):
    root = tmp_path / "root"
    config = root / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    assert run_step(STEP, Layout.resolve(root), {}) == 2
    assert f"'{key}'" in failure(root).splitlines()[0]
    assert not raw_output(root).exists()


def damage(split_dir: Path, problem: str) -> Path:
    """Break the first train frame one way; returns the file the failure must name."""
    image, label = split_dir / "images" / "000000.png", split_dir / "labels" / "000000.npy"
    if problem == "corrupt png":
        image.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 50)
        return image
    if problem == "image without label":
        label.unlink()
        return image
    values = np.load(label)
    if problem == "truncated npy":
        label.write_bytes(label.read_bytes()[:500])
    elif problem == "wrong shape":
        np.save(label, values[:200])
    elif problem == "wrong dtype":
        np.save(label, values.astype(np.float32))
    elif problem == "bad values":
        values[10, 10] = 9
        np.save(label, values)
    return label


@pytest.mark.parametrize("problem", ["corrupt png", "truncated npy", "wrong shape", "wrong dtype", "bad values",
                                     "image without label"])
def test_bad_frames_fail_the_step_naming_the_file(tmp_path, source_root, problem):
    source = tmp_path / "source"
    shutil.copytree(source_root, source)
    bad = damage(source / "openEDS/openEDS/train", problem)
    root = tmp_path / "root"
    assert run_step(STEP, Layout.resolve(root, {"source": source}), {"source": "local"}) == 2
    first = failure(root).splitlines()[0]
    assert first.startswith(str(bad)), first
    assert not raw_output(root).exists()


def test_kaggle_api_download_then_cache(tmp_path, source_root, kaggle_env, capfd):
    kaggle_env.add("soumicksarker", "openeds-dataset", 2, zip_tree(source_root))
    cache = tmp_path / "cache"
    hp = {"source": "kaggle", "cache_dir": str(cache)}
    with serve_kaggle(kaggle_env):
        assert run_step(STEP, Layout.resolve(tmp_path / "first"), hp) == 0
        assert kaggle_env.count("GetDataset") == 1 and kaggle_env.count("DownloadDataset") == 1
        assert kaggle_env.count("/files/") == 1
        first = assert_published(tmp_path / "first", FRAMES)
        assert first["version"] == 2 and first["cache_used"] is False
        assert (cache / "soumicksarker/openeds-dataset/versions/2/complete.json").is_file()
        assert not list(cache.rglob("*.zip"))  # the archive is dropped once extracted and checked

        assert run_step(STEP, Layout.resolve(tmp_path / "second"), hp) == 0
        assert kaggle_env.count("DownloadDataset") == 1 and kaggle_env.count("/files/") == 1
        assert assert_published(tmp_path / "second", FRAMES)["cache_used"] is True

        pinned = {**hp, "dataset_version": 2}
        requests_before = len(kaggle_env.requests)
        assert run_step(STEP, Layout.resolve(tmp_path / "third"), pinned) == 0
        assert len(kaggle_env.requests) == requests_before  # pinned + complete cache: no request at all
    output = capfd.readouterr()
    for text in (output.out, output.err, everything_written(tmp_path / "first")):
        assert kaggle_env.key not in text


def test_a_download_that_stalls_fails_in_seconds_and_leaves_no_partial_archive(tmp_path, source_root, kaggle_env,
                                                                             monkeypatch):
    """kagglesdk sets no timeout: a server that stopped sending mid-archive used to hang the step."""
    from steps.data import kaggle

    monkeypatch.setattr(kaggle, "REQUEST_TIMEOUT_S", (2.0, 2.0))  # the default waits 120 s of silence
    kaggle_env.add("soumicksarker", "openeds-dataset", 1, zip_tree(source_root))
    kaggle_env.stall_after_bytes = 1000
    cache, root = tmp_path / "cache", tmp_path / "stalled"
    started = time.monotonic()
    with serve_kaggle(kaggle_env):
        assert run_step(STEP, Layout.resolve(root), {"source": "kaggle", "cache_dir": str(cache)}) == 2
    assert time.monotonic() - started < 30
    first = failure(root).splitlines()[0]
    assert "Kaggle API request failed" in first and "timed out" in first, first
    assert not [p for p in cache.rglob("*") if p.is_file()]


def test_an_archive_over_the_extraction_limit_is_not_downloaded(tmp_path, source_root, kaggle_env):
    archive = zip_tree(source_root)
    kaggle_env.add("soumicksarker", "openeds-dataset", 1, archive)
    cache, root = tmp_path / "cache", tmp_path / "too-big"
    limit_gib = 0.5 * len(archive) / 1024**3
    with serve_kaggle(kaggle_env):
        assert run_step(STEP, Layout.resolve(root), {"source": "kaggle", "cache_dir": str(cache),
                                                     "max_extracted_gb": limit_gib}) == 2
    first = failure(root).splitlines()[0]
    assert f"the archive is over the limit of {int(limit_gib * 1024**3):,} bytes ({len(archive):,} announced)" in first
    assert not [p for p in cache.rglob("*") if p.is_file()]


def test_kaggle_json_credentials_and_refused_key(tmp_path, source_root, kaggle_env, monkeypatch):
    kaggle_env.add("soumicksarker", "openeds-dataset", 1, zip_tree(source_root))
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    config = tmp_path / "secrets"
    config.mkdir()
    (config / "kaggle.json").write_text(json.dumps({"username": kaggle_env.username, "key": kaggle_env.key}))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(config))
    hp = {"source": "kaggle", "cache_dir": str(tmp_path / "cache")}
    with serve_kaggle(kaggle_env):
        assert run_step(STEP, Layout.resolve(tmp_path / "ok"), hp) == 0
        wrong = "wrong-key-abcdef123456"
        (config / "kaggle.json").write_text(json.dumps({"username": kaggle_env.username, "key": wrong}))
        monkeypatch.setenv("KAGGLE_KEY_CANARY_TOKEN", wrong)  # redaction knows it as a secret too
        root = tmp_path / "refused"
        assert run_step(STEP, Layout.resolve(root), {**hp, "cache_dir": str(tmp_path / "cache2")}) == 2
    first = failure(root).splitlines()[0]
    assert "Kaggle refused the credentials" in first and "HTTP 401" in first and str(config) in first
    assert wrong not in everything_written(root)


def test_kaggle_without_credentials_or_server_fails_fast(tmp_path, kaggle_env, monkeypatch):
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    root = tmp_path / "nocreds"
    assert run_step(STEP, Layout.resolve(root), {"source": "kaggle", "cache_dir": str(tmp_path / "c")}) == 2
    assert "set KAGGLE_USERNAME and KAGGLE_KEY, or mount kaggle.json" in failure(root).splitlines()[0]

    monkeypatch.setenv("KAGGLE_USERNAME", kaggle_env.username)
    monkeypatch.setenv("KAGGLE_KEY", kaggle_env.key)
    closed = closed_port_endpoint(monkeypatch)
    root = tmp_path / "offline"
    started = time.monotonic()
    assert run_step(STEP, Layout.resolve(root), {"source": "kaggle", "cache_dir": str(tmp_path / "c")}) == 2
    assert time.monotonic() - started < 15
    first = failure(root).splitlines()[0]
    assert f"Kaggle API {closed} is unreachable" in first and "source=local" in first


def closed_port_endpoint(monkeypatch) -> str:
    """Point kagglesdk's TEST endpoint at a local port nothing listens on."""
    from kagglesdk import kaggle_env

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://localhost:{port}"
    monkeypatch.setitem(kaggle_env._env_to_endpoint, kaggle_env.KaggleEnv.TEST, url)
    return url


def test_kagglehub_prefilled_cache_needs_no_network(tmp_path, source_root, kaggle_env, monkeypatch):
    cache = tmp_path / "kagglehub"
    shutil.copytree(source_root, cache / "datasets/soumicksarker/openeds-dataset/versions/3")
    (cache / "datasets/soumicksarker/openeds-dataset/3.complete").write_text("")
    closed_port_endpoint(monkeypatch)  # any request would fail
    root = tmp_path / "root"
    assert run_step(STEP, Layout.resolve(root), {"source": "kagglehub", "dataset_version": 3}) == 0
    manifest = assert_published(root, FRAMES)
    assert manifest["cache_used"] is True and manifest["handle"] == f"{DATASET}/versions/3"

    root = tmp_path / "uncached"
    assert run_step(STEP, Layout.resolve(root), {"source": "kagglehub", "dataset_version": 4}) == 2
    assert "is unreachable" in failure(root).splitlines()[0]


def test_kagglehub_through_the_fake_api_then_from_its_cache(tmp_path, source_root, kaggle_env, capfd):
    kaggle_env.add("soumicksarker", "openeds-dataset", 5, zip_tree(source_root))
    with serve_kaggle(kaggle_env):
        assert run_step(STEP, Layout.resolve(tmp_path / "first"), {"source": "kagglehub"}) == 0
        assert kaggle_env.count("DownloadDataset") == 1
        assert assert_published(tmp_path / "first", FRAMES)["version"] == 5  # "latest" resolved by GetDataset
        assert run_step(STEP, Layout.resolve(tmp_path / "second"),
                        {"source": "kagglehub", "dataset_version": 5}) == 0
        assert kaggle_env.count("DownloadDataset") == 1
    assert (tmp_path / "kagglehub/datasets/soumicksarker/openeds-dataset/5.complete").exists()
    output = capfd.readouterr()
    assert kaggle_env.key not in output.out + output.err
    assert "Authorization" not in output.out
