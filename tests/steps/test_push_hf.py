"""push-hf: the dry run writes exactly the upload (parquet shards + card); pushing fails fast and
clearly offline, against an unreachable endpoint and against a Hub that refuses the token, and the
token never reaches logs, failure files or manifests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import datasets
import numpy as np
import pytest
import yaml
from huggingface_hub import DatasetCard

from contracts import Layout
from steps.data.precompute import FEATURES
from steps.outputs import read_manifest
from steps.runtime import run_step

REPO = Path(__file__).resolve().parents[2]
CANARY = "hf_canaryTOKEN0123456789abcdef"


@pytest.fixture(scope="module")
def splits(tmp_path_factory) -> Path:
    """download-kaggle (generated frames) then preprocess: train, validation, and a 0-row test split."""
    download = tmp_path_factory.mktemp("download")
    assert run_step("download-kaggle", Layout.resolve(download), {
        "source": "synthetic", "synthetic_train_frames": 4, "synthetic_validation_frames": 2,
        "synthetic_test_frames": 0, "splits": ["train", "validation"], "seed": 5}) == 0
    root = tmp_path_factory.mktemp("pre")
    raw = download / "output" / "data" / "raw"
    assert run_step("preprocess", Layout.resolve(root, {"raw": raw}), {"workers": 1}) == 0
    return root / "output" / "data"


def row_counts(data: Path) -> dict[str, int]:
    counts = {split: len(datasets.load_from_disk(str(data / split))) for split in ("train", "validation")}
    assert all(counts.values()) and len(datasets.load_from_disk(str(data / "test"))) == 0
    return counts


def channels(data: Path) -> dict[str, Path]:
    return {split: data / split for split in ("train", "validation", "test")}


def run_cli(root: Path, data: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "steps", "push-hf", "--root", str(root), *args]
    for name, path in channels(data).items():
        command += ["--channel", f"{name}={path}"]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def written_text(root: Path) -> str:
    """Every file the step wrote under its root (failure, manifests, outputs' small files)."""
    parts = []
    for path in root.rglob("*"):
        if path.is_file() and path.suffix != ".parquet":
            parts.append(path.read_text(errors="replace"))
    return "\n".join(parts)


def test_dry_run_writes_exactly_the_upload(splits, tmp_path):
    layout = Layout.resolve(tmp_path, channels(splits))
    assert run_step("push-hf", layout, {"repo_id": "someone/openeds-test"}) == 0
    upload = tmp_path / "output" / "data" / "upload"
    files = sorted(p.relative_to(upload).as_posix() for p in upload.rglob("*") if p.is_file())
    assert files == ["README.md", "_manifest.json", "data/train-00000-of-00001.parquet",
                     "data/validation-00000-of-00001.parquet"]  # the 0-row test split is left out
    counts = row_counts(splits)
    for split, rows in counts.items():
        back = datasets.load_dataset("parquet", data_files=str(upload / f"data/{split}-*.parquet"), split="train")
        assert len(back) == rows and back.features == FEATURES
        original = datasets.load_from_disk(str(splits / split)).with_format("numpy", dtype=None)
        loaded = back.with_format("numpy", dtype=None)
        assert list(loaded["filename"]) == list(original["filename"])
        np.testing.assert_array_equal(loaded[-1]["dist_map"], original[-1]["dist_map"])
        np.testing.assert_array_equal(loaded[-1]["image"], original[-1]["image"])
    manifest = read_manifest(upload)
    assert manifest["dry_run"] is True and manifest["rows"] == counts
    assert manifest["summary"]["pushed"] is False


def test_card_has_schema_splits_parameters_and_provenance(splits, tmp_path):
    assert run_step("push-hf", Layout.resolve(tmp_path, channels(splits)), {}) == 0
    text = (tmp_path / "output/data/upload/README.md").read_text()
    card = DatasetCard(text)
    header = yaml.safe_load(text.split("---")[1])
    assert header["configs"][0]["data_files"] == [{"split": "train", "path": "data/train-*"},
                                                 {"split": "validation", "path": "data/validation-*"}]
    assert {s["name"]: s["num_examples"] for s in header["dataset_info"]["splits"]} == row_counts(splits)
    assert [f["name"] for f in header["dataset_info"]["features"]] == list(FEATURES)
    assert card.data.pretty_name
    for section in ("## Schema", "## Splits", "## Preprocessing", "## Provenance", "## Loading"):
        assert section in text
    assert "| gamma | 0.8 |" in text and "| clahe_clip_limit | 1.5 |" in text
    assert "`synthetic`" in text and "generated" in text
    assert "Conner/sddec25-01" in text  # the default repo in the loading example
    assert header["license"] == "other" and header["license_name"] == "openeds-dataset-license"
    assert header["license_link"].startswith("https://")
    assert "## License and citation" in text and "arXiv:1905.03702" in text and "@article{garbin2019openeds" in text


def test_push_offline_fails_within_seconds_without_leaking_the_token(splits, tmp_path):
    started = time.monotonic()
    result = run_cli(tmp_path, splits, "--push", env={"HF_TOKEN": CANARY, "HF_HUB_OFFLINE": "1"})
    assert result.returncode != 0
    assert time.monotonic() - started < 30  # python start-up included; the check itself is instant
    first = (tmp_path / "output" / "failure").read_text().splitlines()[0]
    assert "offline" in first and "push=false" in first
    assert not (tmp_path / "output" / "data" / "upload").exists()
    assert CANARY not in result.stdout + result.stderr + written_text(tmp_path)


def test_unreachable_endpoint_fails_fast(splits, tmp_path):
    started = time.monotonic()
    layout = Layout.resolve(tmp_path, channels(splits))
    env = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": CANARY}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        assert run_step("push-hf", layout, {"push": True}) != 0
    assert time.monotonic() - started < 10
    assert "cannot reach http://127.0.0.1:9" in layout.failure_file.read_text().splitlines()[0]


def test_missing_token_is_named(splits, tmp_path):
    layout = Layout.resolve(tmp_path, channels(splits))
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("HF_TOKEN", raising=False)
        patch.setenv("HF_TOKEN_PATH", str(tmp_path / "no-token"))
        patch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        assert run_step("push-hf", layout, {"push": True}) == 2
    assert layout.failure_file.read_text().startswith("HF_TOKEN: not set")


class RefusingHub(BaseHTTPRequestHandler):
    """A local Hub that refuses every token, and remembers what it was sent."""

    seen: list[str] = []

    def _refuse(self) -> None:
        self.seen.append(f"{self.command} {self.path} {self.headers.get('authorization', '')}")
        body = json.dumps({"error": "Invalid credentials in Authorization header"}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_HEAD = _refuse

    def log_message(self, *args) -> None:
        pass


def test_a_refused_token_fails_the_push_clearly(splits, tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), RefusingHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_port}"
        started = time.monotonic()
        result = run_cli(tmp_path, splits, "--push", "--repo-id", "someone/openeds-test",
                         env={"HF_TOKEN": CANARY, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": endpoint})
        elapsed = time.monotonic() - started
    finally:
        server.shutdown()
    assert result.returncode != 0 and elapsed < 60
    first = (tmp_path / "output" / "failure").read_text().splitlines()[0]
    assert first.startswith("HF Hub: pushing to someone/openeds-test failed") and "401" in first
    assert any(CANARY in line for line in RefusingHub.seen)  # the real client sent the token...
    assert CANARY not in result.stdout + result.stderr + written_text(tmp_path)  # ...and nothing wrote it


def test_the_upload_keeps_the_seeds_schema_whatever_preprocess_kept(splits, tmp_path):
    """A kept camera frame stays local (the published columns are the seed's); compact rows, which
    lack the seed's maps, are refused naming the setting to change."""
    with_raw, compact = tmp_path / "with-raw", tmp_path / "compact"
    for folder, layout, keep in ((with_raw, "spec", True), (compact, "compact", False)):
        for split in ("train", "validation"):  # (datasets cannot save a 0-row split it can load back)
            dataset = datasets.load_from_disk(str(splits / split))
            if keep and "raw_image" not in dataset.features:  # (preprocess keeps it by default)
                dataset = dataset.add_column("raw_image", [row for row in dataset["image"]],
                                             feature=datasets.Array2D((400, 640), "uint8"))
            if layout == "compact":
                dataset = dataset.remove_columns(["spatial_weights", "dist_map"])
            dataset.save_to_disk(str(folder / split))
    def two(folder: Path) -> dict[str, Path]:
        return {split: folder / split for split in ("train", "validation")}

    assert run_step("push-hf", Layout.resolve(tmp_path / "a", two(with_raw)), {"push": False}) == 0
    shards = sorted((tmp_path / "a" / "output" / "data" / "upload").rglob("*.parquet"))
    assert shards and set(datasets.Dataset.from_parquet(str(shards[0])).features) == set(FEATURES)
    assert run_step("push-hf", Layout.resolve(tmp_path / "b", two(compact)), {"push": False}) != 0
    failure = (tmp_path / "b" / "output" / "failure").read_text()
    assert failure.startswith("channel 'train': compact rows") and "row_layout=spec" in failure


class DroppingHub(BaseHTTPRequestHandler):
    """A Hub that answers the reachability probe, then drops every other request's connection."""

    def _drop(self) -> None:
        if self.path.startswith("/api/whoami"):
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.close_connection = True  # no response at all: the client sees the server disconnect

    do_GET = do_POST = do_PUT = do_HEAD = _drop

    def log_message(self, *args) -> None:
        pass


def test_a_hub_that_drops_the_connection_fails_the_push_with_its_context(splits, tmp_path):
    """huggingface_hub 2.x raises httpx2 errors, which are not httpx's: the failure used to be a bare
    "RemoteProtocolError: Server disconnected", exit 1, without naming the push."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), DroppingHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = run_cli(tmp_path, splits, "--push", "--repo-id", "someone/openeds-test",
                         env={"HF_TOKEN": CANARY, "HF_HUB_OFFLINE": "0",
                              "HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}"})
    finally:
        server.shutdown()
    assert result.returncode == 2, result.stderr[-2000:]
    first = (tmp_path / "output" / "failure").read_text().splitlines()[0]
    assert first.startswith("HF Hub: pushing to someone/openeds-test failed") and "disconnected" in first


def test_a_hub_that_never_answers_fails_within_seconds(splits, tmp_path):
    """It takes the connection and says nothing: the push used to hang with no timeout at all."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        started = time.monotonic()
        result = run_cli(tmp_path, splits, "--push", "--repo-id", "someone/openeds-test",
                         env={"HF_TOKEN": CANARY, "HF_HUB_OFFLINE": "0",
                              "HF_ENDPOINT": f"http://127.0.0.1:{silent.getsockname()[1]}"})
    assert result.returncode == 2 and time.monotonic() - started < 60
    first = (tmp_path / "output" / "failure").read_text().splitlines()[0]
    assert first.startswith("HF Hub: cannot reach http://127.0.0.1:") and "timed out" in first
