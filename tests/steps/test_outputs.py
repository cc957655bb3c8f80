import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from steps.outputs import MANIFEST_NAME, StagedOutput, check_output_targets, move_entry, read_manifest, sha256_file


def test_commit_swaps_in_with_manifest(tmp_path):
    final = tmp_path / "out" / "model"
    staged = StagedOutput("model", final)
    folder = staged.open()
    (folder / "a.bin").write_bytes(b"abc")
    (folder / "sub").mkdir()
    (folder / "sub" / "b.txt").write_text("x")
    assert not final.exists(), "nothing appears at the final path before commit"
    staged.commit({"step": "t", "rows": 3})
    manifest = read_manifest(final)
    assert manifest["rows"] == 3 and manifest["output"] == "model"
    assert [f["path"] for f in manifest["files"]] == ["a.bin", "sub/b.txt"]
    assert manifest["files"][0]["sha256"] == sha256_file(final / "a.bin")
    assert not any(p.name.startswith(".model.") for p in final.parent.iterdir())


def test_discard_keeps_previous_output(tmp_path):
    final = tmp_path / "model"
    first = StagedOutput("model", final)
    (first.open() / "old.txt").write_text("old")
    first.commit({})
    second = StagedOutput("model", final)
    (second.open() / "half.txt").write_text("half")
    second.discard()
    assert (final / "old.txt").read_text() == "old"
    assert not (final / "half.txt").exists()
    assert read_manifest(final) is not None


def test_move_contents_fallback_writes_manifest_last(tmp_path):
    final = tmp_path / "model"
    final.mkdir()
    (final / "stale.txt").write_text("stale")
    staged = StagedOutput("model", final)
    (staged.open() / "new.txt").write_text("new")
    staged._swap = lambda: (_ for _ in ()).throw(OSError("EBUSY"))  # a mount point cannot be renamed
    staged.commit({})
    assert sorted(os.listdir(final)) == [MANIFEST_NAME, "new.txt"]
    assert json.loads((final / MANIFEST_NAME).read_text())["files"][0]["path"] == "new.txt"


def test_leftovers_of_a_killed_run_are_removed(tmp_path):
    final = tmp_path / "model"
    (tmp_path / ".model.staging-99999").mkdir()
    (tmp_path / ".model.staging-99999" / "half.bin").write_bytes(b"x")
    (tmp_path / ".model.old-99999").mkdir()
    staged = StagedOutput("model", final)
    staged.open()
    staged.commit({})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def other_filesystem(tmp_path):
    """A folder on another filesystem than tmp_path (tmpfs /dev/shm), or None."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        return None
    return Path(tempfile.mkdtemp(dir=shm, prefix="openeds-test-"))


def test_move_across_filesystems_copies_then_removes(tmp_path):
    elsewhere = other_filesystem(tmp_path)
    if elsewhere is None:
        pytest.skip("no second filesystem (/dev/shm) here")
    try:
        (tmp_path / "src").mkdir()
        (tmp_path / "src" / "w.pt").write_bytes(b"weights")
        with pytest.raises(OSError) as raised:  # the failure SageMaker's separate /opt/ml/model mount gave
            os.rename(tmp_path / "src", elsewhere / "probe")
        assert raised.value.errno == errno.EXDEV
        move_entry(tmp_path / "src", elsewhere / "dst")
        assert (elsewhere / "dst" / "w.pt").read_bytes() == b"weights"
        assert not (tmp_path / "src").exists()
        assert sorted(os.listdir(elsewhere)) == ["dst"]  # no partial copy left behind
    finally:
        shutil.rmtree(elsewhere, ignore_errors=True)


def test_commit_into_a_folder_on_another_filesystem(tmp_path):
    """SageMaker mounts /opt/ml/model apart from /opt/ml: staging in /opt/ml cannot be renamed in."""
    elsewhere = other_filesystem(tmp_path)
    if elsewhere is None:
        pytest.skip("no second filesystem (/dev/shm) here")
    try:
        final = elsewhere / "model"
        final.mkdir()
        (final / "stale.pt").write_bytes(b"old")
        staged = StagedOutput("model", final)
        staged.staging = tmp_path / ".model.staging-1"  # staging on the root's filesystem
        folder = staged.open()
        (folder / "best.pt").write_bytes(b"new")
        (folder / "sub").mkdir()
        (folder / "sub" / "card.json").write_text("{}")
        staged.commit({"step": "t"})
        assert sorted(os.listdir(final)) == [MANIFEST_NAME, "best.pt", "sub"]
        assert [f["path"] for f in read_manifest(final)["files"]] == ["best.pt", "sub/card.json"]
        assert not staged.staging.exists()
    finally:
        shutil.rmtree(elsewhere, ignore_errors=True)


def test_a_parent_that_cannot_be_written_stages_inside_the_final_folder(tmp_path, monkeypatch):
    """`docker run --read-only` with /opt/ml/model mounted on its own: /opt/ml cannot take the staging
    folder, so it goes inside the model folder and the commit moves its entries up. (The tests run
    as root, who may write anywhere, so the parent's refusal is raised for that one folder;
    tests/docker/test_image.py runs the real read-only container.)"""
    final = tmp_path / "model"
    final.mkdir()
    (final / "stale.txt").write_text("stale")
    beside = tmp_path / f".model.staging-{os.getpid()}"
    mkdir = Path.mkdir

    def read_only_parent(path: Path, *args, **kwargs):
        if path == beside:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return mkdir(path, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only_parent)
    staged = StagedOutput("model", final)
    staging = staged.open()
    assert staging.parent == final
    (staging / "new.txt").write_text("new")
    manifest = staged.commit({})
    assert sorted(os.listdir(final)) == [MANIFEST_NAME, "new.txt"]
    assert [entry["path"] for entry in manifest["files"]] == ["new.txt"]
    # a killed first run's inside staging is not "a user's files", and the next run clears it
    killed = tmp_path / "killed"
    (killed / ".staging-99999").mkdir(parents=True)
    check_output_targets({"model": killed}, {})
    StagedOutput("model", killed).open()
    assert not (killed / ".staging-99999").exists()
