"""Safe extraction: every unsafe member is refused by name before anything is written, and a good
archive lands whole, atomically, in its target."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steps.data.archive import ArchiveError, extract_archive


def make_zip(path: Path, members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name), data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return path


def tar_entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, len(data), link
    return info, io.BytesIO(data) if data else None


def make_tar(path: Path, entries: list[tuple], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as archive:
        for info, data in entries:
            archive.addfile(info, data)
    return path


def nothing_written(tmp_path: Path, target: Path) -> None:
    """No target, no staging folder, no stray file anywhere beside the archive."""
    assert not target.exists()
    names = {p.name for p in tmp_path.rglob("*")}
    assert not any(name.startswith((".out.extracting", "evil")) for name in names), names
    assert not (tmp_path.parent / "evil").exists()


def test_zip_with_parent_entry_is_refused_and_nothing_written(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {"ok/file.txt": b"fine", "../evil": b"boom"})
    with pytest.raises(ArchiveError) as error:
        extract_archive(archive, tmp_path / "out")
    assert "member '../evil'" in str(error.value) and str(error.value).startswith(str(archive))
    nothing_written(tmp_path, tmp_path / "out")


@pytest.mark.parametrize("name", ["/etc/evil", "a/../../evil", "C:\\evil", "..\\evil", "a/./../../evil"])
def test_zip_with_unsafe_paths_is_refused(tmp_path, name):
    archive = make_zip(tmp_path / "a.zip", {"fine.txt": b"1", name: b"2"})
    with pytest.raises(ArchiveError, match="absolute path or '..'"):
        extract_archive(archive, tmp_path / "out")
    nothing_written(tmp_path, tmp_path / "out")


def test_zip_symlink_out_of_target_is_refused(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {"x.txt": b"1"}, symlinks={"link": "../../etc/passwd"})
    with pytest.raises(ArchiveError, match="symlink to '../../etc/passwd' points outside"):
        extract_archive(archive, tmp_path / "out")
    nothing_written(tmp_path, tmp_path / "out")


def test_tar_with_absolute_path_is_refused_before_any_write(tmp_path):
    # The good member comes first: a streaming extractor would already have written it.
    archive = make_tar(tmp_path / "a.tar", [tar_entry("good.txt", data=b"x"), tar_entry("/tmp/evil", data=b"y")])
    with pytest.raises(ArchiveError, match="member '/tmp/evil': absolute path"):
        extract_archive(archive, tmp_path / "out")
    nothing_written(tmp_path, tmp_path / "out")


@pytest.mark.parametrize("entry, message", [
    (("up", tarfile.SYMTYPE, b"", "../evil"), "symlink to '../evil' points outside"),
    (("deep/up", tarfile.SYMTYPE, b"", "../../evil"), "points outside"),
    (("abs", tarfile.SYMTYPE, b"", "/etc/passwd"), "points outside"),
    (("hard", tarfile.LNKTYPE, b"", "../outside"), "hardlink to '../outside' points outside"),
    (("dev", tarfile.CHRTYPE, b"", ""), "device file"),
    (("fifo", tarfile.FIFOTYPE, b"", ""), "FIFO"),
])
def test_tar_links_and_special_files_are_refused(tmp_path, entry, message):
    name, kind, data, link = entry
    archive = make_tar(tmp_path / "a.tar.gz", [tar_entry("ok.txt", data=b"1"), tar_entry(name, kind, data, link)],
                       mode="w:gz")
    with pytest.raises(ArchiveError, match=message) as error:
        extract_archive(archive, tmp_path / "out")
    assert f"member '{name}'" in str(error.value)
    nothing_written(tmp_path, tmp_path / "out")


def test_link_chain_that_climbs_through_another_link_is_refused(tmp_path):
    """`b -> a/..` looks inside lexically, but `a -> sub/..` makes it the target's parent."""
    archive = make_tar(tmp_path / "a.tar", [tar_entry("a", tarfile.SYMTYPE, link="."),
                                            tar_entry("b", tarfile.SYMTYPE, link="a/..")])
    with pytest.raises(ArchiveError, match="goes through another link 'a'"):
        extract_archive(archive, tmp_path / "out")


def test_good_archives_extract_whole(tmp_path):
    members = {"openEDS/openEDS/train/images/000000.png": b"png", "openEDS/readme.txt": b"hi"}
    for archive in (make_zip(tmp_path / "d.zip", members),
                    make_tar(tmp_path / "d.tgz", [tar_entry(n, data=d) for n, d in members.items()]
                             + [tar_entry("openEDS/link", tarfile.SYMTYPE, link="readme.txt")], mode="w:gz")):
        target = tmp_path / f"out-{archive.suffix}"
        files = extract_archive(archive, target)
        assert {p.relative_to(target).as_posix() for p in files} >= set(members)
        assert (target / "openEDS/readme.txt").read_bytes() == b"hi"
        assert not [p for p in tmp_path.iterdir() if ".extracting" in p.name]
    assert os.readlink(tmp_path / "out-.tgz" / "openEDS" / "link") == "readme.txt"


def test_existing_target_and_non_archives_are_refused(tmp_path):
    archive = make_zip(tmp_path / "d.zip", {"a.txt": b"1"})
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(ArchiveError, match="already exists and is not empty"):
        extract_archive(archive, tmp_path / "busy")
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"
    (tmp_path / "empty").mkdir()
    assert extract_archive(archive, tmp_path / "empty") == [tmp_path / "empty" / "a.txt"]
    (tmp_path / "junk.zip").write_bytes(b"this is not a zip at all")
    with pytest.raises(ArchiveError, match="not a zip or tar archive"):
        extract_archive(tmp_path / "junk.zip", tmp_path / "out")
    with pytest.raises(ArchiveError, match="archive file not found"):
        extract_archive(tmp_path / "missing.tar", tmp_path / "out")


SEGMENTS = st.sampled_from(["a", "b", "..", ".", "", "/", "c.txt", "\\", "x"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(st.lists(SEGMENTS, min_size=1, max_size=5).map("/".join), min_size=1, max_size=4))
def test_any_member_names_either_refused_or_land_inside(tmp_path_factory, names):
    """Property: whatever the member names, nothing is ever written outside the target."""
    work = tmp_path_factory.mktemp("prop")
    entries = [tar_entry(name or "empty", data=b"z") for name in names]
    archive = make_tar(work / "p.tar", entries)
    target = work / "box" / "out"
    try:
        files = extract_archive(archive, target)
    except ArchiveError:
        assert not target.exists()
        files = []
    root = target.resolve()
    assert all(p.resolve().is_relative_to(root) for p in files)
    outside = [p for p in work.rglob("*") if p.is_file() and p.name != "p.tar" and not p.resolve().is_relative_to(root)]
    assert outside == []
