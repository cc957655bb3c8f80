"""Download OpenEDS from Kaggle: the official API client (kagglesdk) or kagglehub, cached.

- `download_with_kaggle_api`: the `kagglesdk` client that the `kaggle` package is built on, calling
  the `datasets.DatasetApiService` endpoints `GetDataset` (current version) and `DownloadDataset`
  (a redirect to the zip). We call kagglesdk directly because `KaggleApi` picks its endpoint from
  its own flags and ignores `KAGGLE_API_ENVIRONMENT=TEST` (localhost:7777), which kagglesdk honours;
  the requests are the same. The zip is streamed into our cache, checked, extracted with the safe
  extractor, checked as an OpenEDS layout, and only then marked complete.
- `download_with_kagglehub`: `kagglehub.dataset_download(handle)`, which keeps its own cache under
  `KAGGLEHUB_CACHE`; with a versioned handle (`owner/slug/versions/N`) a complete cache needs no
  network at all.

Credentials come from `KAGGLE_USERNAME`/`KAGGLE_KEY` (or `KAGGLE_API_TOKEN`) or a mounted
`kaggle.json` (`KAGGLE_CONFIG_DIR`, `~/.kaggle`, `~/.config/kaggle`); the key is never logged.
Before any request the endpoint is probed with a short connect timeout, so an offline run fails
in seconds with a clear message instead of hanging.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from steps.data.archive import ArchiveLimits, check_tree, extract_archive
from steps.data.openeds import find_openeds
from steps.outputs import loads_json, sha256_file, write_json_atomic
from steps.secrets import register_secret

log = logging.getLogger(__name__)
DEFAULT_DATASET = "soumicksarker/openeds-dataset"
MARKER = "complete.json"
CONNECT_TIMEOUT_S = 3.0
OFFLINE_HINT = ("offline? use source=local with a folder, zip or tar of the dataset, or source=kagglehub "
                "with a pre-filled KAGGLEHUB_CACHE and dataset_version set")


class KaggleDownloadError(RuntimeError):
    """A download problem meant for people; never contains a credential."""


@dataclass(frozen=True)
class KaggleCredentials:
    username: str | None
    key: str | None = field(repr=False)
    token: str | None = field(repr=False, default=None)
    source: str = "environment"


def credential_files(env: Mapping[str, str]) -> list[Path]:
    """Where a mounted kaggle.json may be, in the order the Kaggle tools look."""
    files = []
    if env.get("KAGGLE_CONFIG_DIR"):
        files.append(Path(env["KAGGLE_CONFIG_DIR"]) / "kaggle.json")
    home = Path(env.get("HOME") or Path.home())
    files += [home / ".kaggle" / "kaggle.json",
              Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "kaggle" / "kaggle.json"]
    return files


def find_credentials(env: Mapping[str, str] | None = None) -> KaggleCredentials | None:
    """Credentials from the environment or the first kaggle.json found; None when there are none."""
    env = os.environ if env is None else env
    if env.get("KAGGLE_API_TOKEN"):
        return KaggleCredentials(env.get("KAGGLE_USERNAME"), None, env["KAGGLE_API_TOKEN"], "KAGGLE_API_TOKEN")
    if env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY"):
        return KaggleCredentials(env["KAGGLE_USERNAME"], env["KAGGLE_KEY"], None, "KAGGLE_USERNAME/KAGGLE_KEY")
    for path in credential_files(env):
        if path.is_file():
            try:
                data = loads_json(path.read_text(encoding="utf-8"))
                register_secret(str(data["key"]))  # masked like KAGGLE_KEY in anything written
                return KaggleCredentials(str(data["username"]), str(data["key"]), None, str(path))
            except (OSError, ValueError, KeyError, TypeError):
                # Never echo the file: it holds the key.
                raise KaggleDownloadError(f"{path}: not a valid kaggle.json (expected "
                                          f'{{"username": ..., "key": ...}})') from None
    return None


def api_endpoint() -> str:
    """The API base the Kaggle clients use (KAGGLE_API_ENVIRONMENT=TEST: http://localhost:7777)."""
    from kagglesdk.kaggle_env import get_endpoint, get_env

    try:
        return get_endpoint(get_env())
    except Exception as error:  # kagglesdk raises a bare Exception for an unknown value
        raise KaggleDownloadError(f"KAGGLE_API_ENVIRONMENT: {error}") from None


def check_reachable(endpoint: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail in seconds, not minutes, when the Kaggle API cannot be reached."""
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError as error:
        raise KaggleDownloadError(f"Kaggle API {endpoint} is unreachable ({error}); {OFFLINE_HINT}") from None


def split_handle(dataset: str) -> tuple[str, str]:
    parts = dataset.strip("/").split("/")
    if len(parts) != 2 or not all(parts):
        raise KaggleDownloadError(f"dataset '{dataset}': expected a Kaggle handle owner/slug")
    return parts[0], parts[1]


@dataclass
class DatasetCache:
    """`<cache>/<owner>/<slug>/versions/<N>/files/` plus a marker written after a verified extract."""

    root: Path
    owner: str
    slug: str

    def version_dir(self, version: int) -> Path:
        return self.root / self.owner / self.slug / "versions" / str(version)

    def complete(self, version: int) -> Path | None:
        folder = self.version_dir(version)
        return folder / "files" if (folder / MARKER).is_file() and (folder / "files").is_dir() else None

    def complete_versions(self) -> list[int]:
        versions = self.root / self.owner / self.slug / "versions"
        found = [int(p.name) for p in versions.glob("*") if p.name.isdigit()] if versions.is_dir() else []
        return sorted(v for v in found if self.complete(v))


@dataclass
class DownloadResult:
    path: Path
    version: int | None
    cache_used: bool
    facts: dict = field(default_factory=dict)


# (connect, read) seconds for every Kaggle request: kagglesdk sets none, so a server that takes the
# connection and stops answering (or stalls mid-download) would hang the step. The read timeout is
# the longest silence between two reads, not the whole download.
REQUEST_TIMEOUT_S = (10.0, 120.0)


def _kaggle_client(credentials: KaggleCredentials):
    import requests
    from kagglesdk.kaggle_client import KaggleClient

    class TimeoutAdapter(requests.adapters.HTTPAdapter):
        def send(self, request, timeout=None, **kwargs):
            return super().send(request, timeout=timeout or REQUEST_TIMEOUT_S, **kwargs)

    # verbose stays False: verbose clients print request headers, Authorization included.
    client = KaggleClient(verbose=False, username=credentials.username, password=credentials.key,
                          api_token=credentials.token, user_agent="openeds-steps")
    http = client.http_client()
    http._init_session()  # the one session every call of this client sends on (kagglesdk 0.1)
    for prefix in ("http://", "https://"):
        http._session.mount(prefix, TimeoutAdapter())
    return client


def _http_error(error: Exception, what: str, credentials: KaggleCredentials) -> KaggleDownloadError:
    status = getattr(getattr(error, "response", None), "status_code", None)
    if status in (401, 403):
        return KaggleDownloadError(f"{what}: Kaggle refused the credentials from {credentials.source} "
                                   f"(HTTP {status})")
    if status == 404:
        return KaggleDownloadError(f"{what}: not found on Kaggle (HTTP 404)")
    return KaggleDownloadError(f"{what}: Kaggle API request failed ({type(error).__name__}: {error})")


def current_version(client, owner: str, slug: str) -> int:
    from kagglesdk.datasets.types.dataset_api_service import ApiGetDatasetRequest

    request = ApiGetDatasetRequest()
    request.owner_slug, request.dataset_slug = owner, slug
    dataset = client.datasets.dataset_api_client.get_dataset(request)
    if not dataset.current_version_number:
        raise KaggleDownloadError(f"dataset '{owner}/{slug}': Kaggle reported no current version")
    return int(dataset.current_version_number)


def stream_archive(client, owner: str, slug: str, version: int, target: Path, max_bytes: int) -> Path:
    """DownloadDataset (a redirect to the zip), streamed to `target` via a .part file; an archive
    over `max_bytes` is refused (by its Content-Length first, else as it arrives) and removed."""
    from kagglesdk.datasets.types.dataset_api_service import ApiDownloadDatasetRequest

    request = ApiDownloadDatasetRequest()
    request.owner_slug, request.dataset_slug, request.dataset_version_number = owner, slug, version
    response = client.datasets.dataset_api_client.download_dataset(request)
    expected = int(response.headers.get("Content-Length") or 0)
    partial = target.with_name(target.name + ".part")
    written, next_report, started = 0, 0.1, time.time()
    try:
        with response, open(partial, "wb") as handle:
            for chunk in response.iter_content(chunk_size=1 << 20) if expected <= max_bytes else ():
                written += len(chunk)
                if written > max_bytes:
                    break
                handle.write(chunk)
                if expected and written >= next_report * expected:
                    log.info("downloading %s/%s v%d: %d%% of %.1f MB", owner, slug, version,
                             100 * written // expected, expected / 1e6)
                    next_report += 0.1
        if max(written, expected) > max_bytes:
            raise KaggleDownloadError(
                f"{owner}/{slug} v{version}: the archive is over the limit of {max_bytes:,} bytes ("
                f"{f'{expected:,} announced' if expected > max_bytes else f'{written:,} received so far'}); "
                f"raise max_extracted_gb if it is right")
        if expected and written != expected:
            raise KaggleDownloadError(f"{target}: download truncated ({written} of {expected} bytes)")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)  # a failed download leaves nothing in the cache
    log.info("downloaded %s (%.1f MB) in %.1fs", target.name, written / 1e6, time.time() - started)
    return target


def _install_version(client, cache: DatasetCache, version: int, limits: ArchiveLimits) -> Path:
    """Download, extract safely, check the layout, then write the completion marker."""
    folder = cache.version_dir(version)
    folder.mkdir(parents=True, exist_ok=True)
    # An archive larger than what it may extract to is over the limit whatever it holds.
    archive = stream_archive(client, cache.owner, cache.slug, version, folder / f"{cache.slug}.zip", limits.max_bytes)
    files = folder / "files"
    if files.exists():  # an earlier run died after extracting: start the extraction over
        shutil.rmtree(files)
    extracted = extract_archive(archive, files, limits)
    layout = find_openeds(files)
    write_json_atomic(folder / MARKER, {"dataset": f"{cache.owner}/{cache.slug}", "version": version,
                                        "archive_sha256": sha256_file(archive), "files": len(extracted),
                                        "layout": layout.describe(), "time": time.time()})
    archive.unlink()
    return files


def download_with_kaggle_api(dataset: str, version: int | None, cache_dir: Path,
                             env: Mapping[str, str] | None = None,
                             limits: ArchiveLimits = ArchiveLimits()) -> DownloadResult:
    """The dataset's files folder in our cache, downloading only what is not complete there."""
    owner, slug = split_handle(dataset)
    cache = DatasetCache(Path(cache_dir).expanduser(), owner, slug)
    if version is not None and (files := cache.complete(version)):
        log.info("Kaggle cache used: %s v%d complete at %s; nothing downloaded", dataset, version, files)
        return DownloadResult(files, version, True)
    credentials = find_credentials(env)
    if credentials is None:
        raise KaggleDownloadError(
            "Kaggle credentials: none found; set KAGGLE_USERNAME and KAGGLE_KEY, or mount kaggle.json at "
            + " or ".join(str(p) for p in credential_files(os.environ if env is None else env)))
    endpoint = api_endpoint()
    try:
        check_reachable(endpoint)
    except KaggleDownloadError:
        if version is None and (cached := cache.complete_versions()) and (files := cache.complete(cached[-1])):
            log.warning("Kaggle API %s unreachable: using the newest complete cached version %d", endpoint, cached[-1])
            return DownloadResult(files, cached[-1], True)
        raise
    import requests

    log.info("Kaggle API %s, dataset %s, credentials from %s", endpoint, dataset, credentials.source)
    with _kaggle_client(credentials) as client:
        try:
            version = version or current_version(client, owner, slug)
            if files := cache.complete(version):
                log.info("Kaggle cache used: %s v%d complete at %s; nothing downloaded", dataset, version, files)
                return DownloadResult(files, version, True)
            return DownloadResult(_install_version(client, cache, version, limits), version, False)
        except requests.RequestException as error:
            raise _http_error(error, f"dataset '{dataset}' version {version or 'latest'}", credentials) from None


@contextlib.contextmanager
def _stdout_to_debug_log() -> Iterator[None]:
    """kagglehub turns its client verbose under KAGGLE_API_ENVIRONMENT=TEST and prints request
    headers (Authorization included) to stdout: keep them out of the step's output."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield
    lines = [line for line in buffer.getvalue().splitlines() if "authorization" not in line.lower()]
    if lines:
        log.debug("kagglehub output: %d lines (headers dropped)", len(lines))


def kagglehub_handle(dataset: str, version: int | None) -> str:
    owner, slug = split_handle(dataset)
    return f"{owner}/{slug}/versions/{version}" if version else f"{owner}/{slug}"


def kagglehub_cached(handle: str) -> str | None:
    """kagglehub's own answer to "is this versioned handle complete in KAGGLEHUB_CACHE?"."""
    from kagglehub.cache import Cache
    from kagglehub.handle import parse_dataset_handle

    parsed = parse_dataset_handle(handle)
    return Cache().load_from_cache(parsed) if parsed.is_versioned() else None


def download_with_kagglehub(dataset: str, version: int | None) -> DownloadResult:
    """`kagglehub.dataset_download`, which reuses a complete KAGGLEHUB_CACHE entry."""
    import kagglehub
    from kagglehub.config import get_cache_folder

    handle = kagglehub_handle(dataset, version)
    cached = kagglehub_cached(handle)
    if cached is None:
        check_reachable(api_endpoint())
    try:
        with _stdout_to_debug_log():
            path = Path(kagglehub.dataset_download(handle))
    except Exception as error:  # kagglehub raises several unrelated types (requests, its own, ValueError)
        raise KaggleDownloadError(f"kagglehub {handle}: {type(error).__name__}: {error}") from None
    if cached:
        log.info("kagglehub cache used: %s at %s (KAGGLEHUB_CACHE=%s); nothing downloaded", handle, path,
                 get_cache_folder())
    check_tree(path)
    # kagglehub resolves "latest" itself; its cache path ends in versions/<N>.
    resolved = int(path.name) if path.parent.name == "versions" and path.name.isdigit() else version
    return DownloadResult(path, resolved, cached is not None, {"handle": handle})
