"""A real MLflow tracking server for tests (pytest plugin module).

Fixtures:
- `mlflow_server` (session): starts `mlflow server --backend-store-uri sqlite:///<tmp>/mlflow.db
  --artifacts-destination <tmp>/artifacts --host 127.0.0.1 --port <free port> --workers 1`, waits
  for /health (about 7 s), yields its URI ("http://127.0.0.1:<port>"), SIGTERMs it at the end.
- `mlflow_tracking_uri` (function): `mlflow_server` set as MLFLOW_TRACKING_URI for one test (and
  MLFLOW_EXPERIMENT_ID removed), with MLflow's client state reset before and after.
The same server on a PostgreSQL backend store: `mlflow_postgres_server` in tests/postgres_server.py.

Use it from any test module or conftest, either way:
    pytest_plugins = ["tests.mlflow_server"]              # in the root tests/conftest.py
    from tests.mlflow_server import mlflow_server, mlflow_tracking_uri  # noqa: F401 (in a test module)
One server serves the whole session (also when several modules import the fixture); give each
test its own experiment and model names.
Registered in tests/conftest.py by the lead (pytest only honours `pytest_plugins` there).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

STARTUP_TIMEOUT_S = 90  # about 7 s when the machine is idle; much more when it is busy


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def start_server(root: Path, backend_store_uri: str | None = None,
                 env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """Start `mlflow server` under `root` (backend: sqlite there unless given; `env`: extra
    variables of the server, e.g. PGPASSWORD); return (process, uri) once /health answers."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    log = open(root / "server.log", "wb")  # noqa: SIM115 - kept open for the server's lifetime
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server",
         "--backend-store-uri", backend_store_uri or f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")}, **(env or {})})
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not _healthy(uri):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_server(process)
            raise RuntimeError(f"mlflow server did not become healthy at {uri}; log:\n"
                               f"{(root / 'server.log').read_text(errors='replace')[-3000:]}")
        time.sleep(0.25)
    return process, uri


def stop_server(process: subprocess.Popen) -> None:
    """SIGTERM the server (it stops its own workers); its process group is killed if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the group this fixture created (start_new_session)
            process.wait(timeout=10)


_shared: dict[str, str] = {}  # one server per test session, however many modules import the fixture


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> Iterator[str]:
    if "uri" in _shared:  # started by this fixture imported into another module
        yield _shared["uri"]
        return
    root = tmp_path_factory.mktemp("mlflow-server")
    process, uri = start_server(root)
    _shared["uri"] = uri
    try:
        yield uri
    finally:
        _shared.clear()
        stop_server(process)


def _reset_mlflow_client_state() -> None:
    import mlflow

    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


def tracking_at(uri: str, monkeypatch) -> Iterator[str]:
    """MLFLOW_TRACKING_URI=uri for one test, MLflow's client state reset before and after."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    _reset_mlflow_client_state()
    yield uri
    _reset_mlflow_client_state()


@pytest.fixture
def mlflow_tracking_uri(mlflow_server, monkeypatch) -> Iterator[str]:
    yield from tracking_at(mlflow_server, monkeypatch)
