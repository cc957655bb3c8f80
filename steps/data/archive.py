"""Safe extraction of dataset archives (.zip, .tar, .tar.gz/.tgz, .tar.bz2, .tar.xz).

Every member is checked before anything is written: absolute paths, `..` components, links whose
target leaves the extraction folder (or goes through another link), device files and FIFOs are
refused, naming the member. The archive is then extracted into a temp folder beside the target and
renamed into place, so the target either holds the whole archive or does not exist. tarfile's
"data" filter runs as a second line of defence.

Size limits (`ArchiveLimits`) are checked on the members' declared sizes before anything is
written: the total uncompressed size, the member count, and the ratio of the total to the archive's
own size (a zip bomb's giveaway). zipfile never writes more than a member's declared size, and a
tar member's size is exact, so declared sizes bound what extraction writes.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from steps.paths import link_leading_out

log = logging.getLogger(__name__)
_DRIVE = re.compile(r"^[A-Za-z]:")


class ArchiveError(ValueError):
    """An archive that cannot be extracted safely; the message names the archive and the member."""


@dataclass(frozen=True)
class Member:
    """What matters about one archive entry for safety."""

    name: str
    kind: str  # "file", "dir", "symlink", "hardlink", "special"
    link: str = ""
    size: int = 0  # uncompressed bytes


@dataclass(frozen=True)
class ArchiveLimits:
    """What one extraction may write. The defaults fit the 13 GB Kaggle copy (PNG frames that do
    not compress and .npy labels that do: about 15 GB extracted, ratio ~1.2, ~80,000 members)."""

    max_bytes: int = 50 * 1024**3
    max_members: int = 500_000
    max_ratio: float = 100.0


def check_limits(archive: Path, members: list[Member], limits: ArchiveLimits) -> None:
    """Refuse an archive whose members would exceed `limits`, before extracting any of them."""
    if len(members) > limits.max_members:
        raise ArchiveError(f"{archive}: {len(members):,} members, more than the limit of "
                           f"{limits.max_members:,} (hyperparameter max_archive_members)")
    total = sum(m.size for m in members)
    if total > limits.max_bytes:
        raise ArchiveError(f"{archive}: would extract {total / 1024**3:.2f} GiB, more than the limit of "
                           f"{limits.max_bytes / 1024**3:.2f} GiB (hyperparameter max_extracted_gb)")
    ratio = total / max(archive.stat().st_size, 1)
    if ratio > limits.max_ratio:
        raise ArchiveError(f"{archive}: expands {ratio:.0f}x ({archive.stat().st_size:,} bytes to {total:,}), more "
                           f"than the limit of {limits.max_ratio:g}x (hyperparameter max_compression_ratio): "
                           f"refused as a likely archive bomb")


def archive_kind(archive: Path) -> str:
    """'zip' or 'tar' by content (the suffix can lie); ArchiveError for anything else."""
    if not archive.is_file():
        raise ArchiveError(f"{archive}: archive file not found")
    if zipfile.is_zipfile(archive):
        return "zip"
    if tarfile.is_tarfile(archive):
        return "tar"
    raise ArchiveError(f"{archive}: not a zip or tar archive (or it is corrupt)")


def zip_members(archive: zipfile.ZipFile) -> list[Member]:
    members = []
    for info in archive.infolist():
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            members.append(Member(info.filename, "symlink", archive.read(info).decode("utf-8", "replace")))
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            members.append(Member(info.filename, "special"))
        else:
            members.append(Member(info.filename, "dir" if info.is_dir() else "file", size=info.file_size))
    return members


def tar_members(archive: tarfile.TarFile, path: Path | None = None, limits: ArchiveLimits | None = None) -> list[Member]:
    """The members, read one at a time. With `limits`, the listing stops as soon as they are passed
    (every limit only grows with more members): a compressed tar can hold millions of entries or
    gigabytes of zeros, and reading it all would cost what the limits protect."""
    members: list[Member] = []
    for info in archive:
        if info.issym():
            members.append(Member(info.name, "symlink", info.linkname))
        elif info.islnk():
            members.append(Member(info.name, "hardlink", info.linkname))
        elif info.isdir() or info.isfile():
            members.append(Member(info.name, "dir" if info.isdir() else "file", size=info.size))
        else:
            members.append(Member(info.name, "special"))
        # Checked before the next header is read, which for a big member means decompressing it.
        if limits is not None and path is not None and (len(members) % 1024 == 0 or info.size >= 1 << 20):
            check_limits(path, members, limits)
    return members


def _relative_parts(path: str) -> list[str] | None:
    """Components of a path inside the target, or None if it is absolute or climbs out with `..`."""
    if not path or "\x00" in path or path.startswith(("/", "\\")) or _DRIVE.match(path):
        return None
    parts = [p for p in re.split(r"[/\\]", path) if p not in ("", ".")]
    return None if ".." in parts else parts


def _walk_link(member: Member, links: set[str]) -> str | None:
    """Follow a link's target one component at a time, without normalizing first.

    Returns None when it is fine, else why it is refused: it is absolute, climbs above the target
    root, or passes through another link of the archive (`b -> a/..` with `a -> .` would climb
    out, though `a/..` looks harmless once normalized).
    """
    link = member.link.replace("\\", "/")
    if link.startswith("/") or _DRIVE.match(link):
        return "points outside the target"
    # A symlink resolves from its own folder; a tar hardlink names another member from the root.
    here = (_relative_parts(member.name) or [])[:-1] if member.kind == "symlink" else []
    for part in link.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not here:
                return "points outside the target"
            here.pop()
            continue
        here.append(part)
        if "/".join(here) in links:
            return f"goes through another link '{'/'.join(here)}' (refused: it could leave the target)"
    return None


def check_members(archive: Path, members: list[Member]) -> None:
    """Refuse the whole archive at the first unsafe member, naming it."""
    links = {"/".join(_relative_parts(m.name) or []) for m in members if m.kind == "symlink"}
    for member in members:
        where = f"{archive}: member '{member.name}'"
        parts = _relative_parts(member.name)
        if parts is None:
            raise ArchiveError(f"{where}: absolute path or '..' component refused (path traversal)")
        if member.kind == "special":
            raise ArchiveError(f"{where}: device file, FIFO or socket refused")
        if member.kind in ("symlink", "hardlink") and (why := _walk_link(member, links - {"/".join(parts)})):
            raise ArchiveError(f"{where}: {member.kind} to '{member.link}' {why}")


def extract_archive(archive: Path, target: Path, limits: ArchiveLimits = ArchiveLimits()) -> list[Path]:
    """Check every member and the limits, extract into a temp folder beside `target`, rename it
    into place. `target` must not exist or be an empty folder. Returns the extracted files (sorted).
    """
    archive, target = Path(archive), Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ArchiveError(f"{target}: extraction target already exists and is not empty")
    kind = archive_kind(archive)
    staging = target.parent / f".{target.name}.extracting-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as handle:
                members = zip_members(handle)
                check_members(archive, members)
                check_limits(archive, members, limits)
                staging.mkdir()
                handle.extractall(staging)
        else:
            with tarfile.open(archive) as handle:
                members = tar_members(handle, archive, limits)
                check_members(archive, members)
                check_limits(archive, members, limits)
                staging.mkdir()
                handle.extractall(staging, filter="data")
        check_tree(staging, archive)
        if target.exists():
            target.rmdir()
        os.replace(staging, target)
    # KeyError: a tar hardlink to a member that is not there; RuntimeError: a symlink loop (resolve).
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, KeyError, RuntimeError) as error:
        raise ArchiveError(f"{archive}: extraction failed: {error}") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    files = sorted(p for p in target.rglob("*") if p.is_file())
    log.info("extracted %d files from %s into %s", len(files), archive.name, target)
    return files


def check_tree(folder: Path, archive: Path | None = None) -> None:
    """Every link under `folder` resolves inside it (after our extraction, or kagglehub's)."""
    leading_out = link_leading_out(folder)
    if leading_out is not None:
        where = f"{archive}: member" if archive else f"{folder}: file"
        raise ArchiveError(f"{where} '{leading_out}': link resolves outside the target (or is a loop)")
