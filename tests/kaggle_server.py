"""A small local stand-in for the Kaggle API, so tests exercise the real client code.

It answers what kagglesdk sends (`POST /api/v1/datasets.DatasetApiService/<Rpc>`, JSON bodies):
`GetDataset` (metadata with the current version) and `DownloadDataset` (a 302 redirect to the zip,
as Kaggle redirects to storage), then serves the zip on `GET /files/...`. It checks credentials
(HTTP Basic username/key or a Bearer token) and records every request so tests can count them.

Under `KAGGLE_API_ENVIRONMENT=TEST` kagglesdk (and kagglehub) call http://localhost:7777; when
that port is taken, `serve_kaggle` binds a free one and points kagglesdk's TEST endpoint at it.
"""

from __future__ import annotations

import base64
import email.utils
import io
import json
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

SERVICE_PREFIX = "/api/v1/datasets.DatasetApiService/"
DEFAULT_PORT = 7777


def zip_tree(folder: Path) -> bytes:
    """A zip of everything under `folder`, paths relative to it (as Kaggle zips a dataset)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
            archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


@dataclass
class FakeDataset:
    owner: str
    slug: str
    versions: dict[int, bytes]  # version -> zip bytes

    @property
    def current(self) -> int:
        return max(self.versions)


@dataclass
class FakeKaggle:
    datasets: dict[str, FakeDataset] = field(default_factory=dict)
    username: str = "tester"
    key: str = "fake-kaggle-key-0123456789"
    echo_credentials: bool = False  # answer every RPC with a 500 that repeats what the client sent
    stall_after_bytes: int | None = None  # send this much of an archive, then go silent for a minute
    requests: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, owner: str, slug: str, version: int, archive: bytes) -> None:
        entry = self.datasets.setdefault(f"{owner}/{slug}", FakeDataset(owner, slug, {}))
        entry.versions[version] = archive

    def count(self, rpc_or_path: str) -> int:
        with self.lock:
            return sum(1 for _, path in self.requests if path.endswith(rpc_or_path) or path.startswith(rpc_or_path))

    def authorized(self, header: str | None) -> bool:
        if not header:
            return False
        scheme, _, value = header.partition(" ")
        if scheme == "Basic":
            return base64.b64decode(value).decode() == f"{self.username}:{self.key}"
        return scheme == "Bearer" and value == self.key


class KaggleHandler(BaseHTTPRequestHandler):
    """kagglesdk's RPC endpoints (POST) and the archive downloads they redirect to (GET)."""

    state: FakeKaggle  # set per server by _handler

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _json(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _record(self) -> None:
        with self.state.lock:
            self.state.requests.append((self.command, self.path))

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self._record()
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if not self.path.startswith(SERVICE_PREFIX):
            return self._json(404, {"code": 404, "message": f"no route {self.path}"})
        header = self.headers.get("Authorization") or ""
        if self.state.echo_credentials:  # a careless server (or proxy) that echoes the request
            decoded = base64.b64decode(header.partition(" ")[2] or "").decode(errors="replace")
            return self._json(500, {"code": 500, "message": f"internal error for {header} ({decoded})"})
        if not self.state.authorized(header):
            return self._json(401, {"code": 401, "message": "Unauthenticated"})
        dataset = self.state.datasets.get(f"{body.get('ownerSlug')}/{body.get('datasetSlug')}")
        if dataset is None:
            return self._json(404, {"code": 404, "message": "Dataset not found"})
        return self._rpc(self.path[len(SERVICE_PREFIX):], dataset, body)

    def _rpc(self, rpc: str, dataset: Any, body: dict) -> None:
        if rpc == "GetDataset":
            return self._json(200, {"id": 1, "ref": f"{dataset.owner}/{dataset.slug}",
                                    "title": "OpenEDS (test)", "currentVersionNumber": dataset.current})
        if rpc != "DownloadDataset":
            return self._json(404, {"code": 404, "message": f"unknown rpc {rpc}"})
        version = int(body.get("datasetVersionNumber") or dataset.current)
        if version not in dataset.versions:
            return self._json(404, {"code": 404, "message": f"version {version} not found"})
        self.send_response(302)
        self.send_header("Location", f"/files/{dataset.owner}/{dataset.slug}/{version}/archive.zip")
        self.send_header("Content-Length", "0")
        self.end_headers()
        return None

    def do_GET(self) -> None:  # noqa: N802
        self._record()
        parts = self.path.strip("/").split("/")
        if len(parts) != 5 or parts[0] != "files":
            return self._json(404, {"code": 404, "message": "not found"})
        dataset = self.state.datasets.get(f"{parts[1]}/{parts[2]}")
        archive = dataset.versions.get(int(parts[3])) if dataset else None
        if archive is None:
            return self._json(404, {"code": 404, "message": "not found"})
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(archive)))
        self.send_header("Last-Modified", email.utils.formatdate(usegmt=True))
        self.end_headers()
        if self.state.stall_after_bytes is not None:
            self.wfile.write(archive[:self.state.stall_after_bytes])
            self.wfile.flush()
            time.sleep(60)
            return None
        self.wfile.write(archive)
        return None


def _handler(state: FakeKaggle) -> type[BaseHTTPRequestHandler]:
    return type("Handler", (KaggleHandler,), {"state": state})


@contextmanager
def serve_kaggle(state: FakeKaggle, port: int = DEFAULT_PORT) -> Iterator[str]:
    """Run the fake API in a thread; yields its base URL. Sets kagglesdk's TEST endpoint to it."""
    from kagglesdk import kaggle_env

    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), _handler(state))
    except OSError:  # 7777 taken (another test run): any free port
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    url = f"http://localhost:{server.server_address[1]}"
    previous = kaggle_env._env_to_endpoint[kaggle_env.KaggleEnv.TEST]
    kaggle_env._env_to_endpoint[kaggle_env.KaggleEnv.TEST] = url
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()
        kaggle_env._env_to_endpoint[kaggle_env.KaggleEnv.TEST] = previous
