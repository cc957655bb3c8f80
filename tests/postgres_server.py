"""A real PostgreSQL server for tests (pytest plugin module, registered in tests/conftest.py).

Fixtures:
- `postgres_server` (session): Debian's `postgresql` package binaries ($OPENEDS_POSTGRES_BINDIR,
  else `pg_config --bindir`, else the newest /usr/lib/postgresql/*/bin). `initdb` into a fresh
  temporary folder as an unprivileged user (the server refuses to run as root: under root,
  `runuser -u postgres`, or `nobody`), one role `openeds` with a random password, password
  authentication (scram-sha-256) on TCP, then `pg_ctl start` on 127.0.0.1:<free port> (its socket
  in that folder) and `pg_ctl stop` at the end.
  About 2 s. Without the binaries or the driver the tests skip with the reason; with
  OPENEDS_REQUIRE_POSTGRES=1 (CI) they fail instead.
- `postgres_database` (function): a new, empty database on that server for one test.
- `mlflow_postgres_server` (session): `mlflow server` (tests/mlflow_server.py) on a PostgreSQL
  backend store, `postgresql+psycopg://openeds@127.0.0.1:<port>/mlflow`, the password in the
  server's PGPASSWORD (not on its command line, which `ps` shows); `mlflow_postgres_tracking_uri`
  (function) points one test at it.

Tests using them are marked `postgres`.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.mlflow_server import free_port, tracking_at
from tests.mlflow_server import start_server as start_mlflow
from tests.mlflow_server import stop_server as stop_mlflow

ROLE = "openeds"
START_TIMEOUT_S = 60
UNPRIVILEGED_USERS = ("postgres", "nobody")


def unavailable(reason: str) -> None:
    """Skip, or fail under OPENEDS_REQUIRE_POSTGRES=1 (CI), the same way the docker tests do."""
    if os.environ.get("OPENEDS_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"OPENEDS_REQUIRE_POSTGRES=1 but {reason}")
    pytest.skip(reason)


def find_bindir() -> Path | None:
    """The folder holding initdb and pg_ctl (Debian keeps them off PATH, per major version)."""
    if os.environ.get("OPENEDS_POSTGRES_BINDIR"):  # another install (e.g. Homebrew), or none at all
        given = Path(os.environ["OPENEDS_POSTGRES_BINDIR"])
        return given if (given / "initdb").is_file() and (given / "pg_ctl").is_file() else None
    candidates = []
    if shutil.which("pg_config"):
        found = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=30)
        candidates.append(Path(found.stdout.strip()))
    versions = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(versions, key=lambda p: int(re.sub(r"\D", "", p.parent.name) or 0), reverse=True)
    return next((c for c in candidates if (c / "initdb").is_file() and (c / "pg_ctl").is_file()), None)


def server_user() -> str | None:
    """Who runs the server: this user, or under root an unprivileged system user (None: run as is)."""
    if os.geteuid() != 0:
        return None
    for name in UNPRIVILEGED_USERS:
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError(f"running as root and none of the users {UNPRIVILEGED_USERS} exists")


@dataclass
class PostgresServer:
    bindir: Path
    root: Path  # data folder, socket, log; owned by `user`
    port: int
    password: str
    user: str | None
    host: str = "127.0.0.1"
    role: str = ROLE

    def run(self, tool: str, *args: str) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", self.user, "--"] if self.user else []
        done = subprocess.run([*prefix, str(self.bindir / tool), *args], cwd=self.root, capture_output=True,
                              text=True, timeout=START_TIMEOUT_S * 2)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}):\n{done.stdout}{done.stderr}\n{self.log_tail()}")
        return done

    def log_tail(self) -> str:
        log = self.root / "server.log"
        return log.read_text(errors="replace")[-3000:] if log.is_file() else ""

    def url(self, database: str, scheme: str = "postgresql", with_password: bool = False) -> str:
        """A SQLAlchemy URL for `database`; the password only when asked (most tests pass it aside)."""
        secret = f":{self.password}" if with_password else ""
        return f"{scheme}://{self.role}{secret}@{self.host}:{self.port}/{database}"

    def connect(self, database: str = "postgres"):
        import psycopg

        return psycopg.connect(host=self.host, port=self.port, user=self.role, password=self.password,
                               dbname=database, autocommit=True)

    def create_database(self, name: str) -> str:
        from psycopg import sql

        with self.connect() as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name


def _owned_folder(user: str | None) -> Path:
    """A fresh folder the server's user owns (pytest's tmp folders are root-only, 0700)."""
    root = Path(tempfile.mkdtemp(prefix="openeds-pg-"))
    if user:
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    return root


def start_server(bindir: Path) -> PostgresServer:
    """initdb a new cluster and start it; the caller stops it with `stop_server`."""
    user = server_user()
    server = PostgresServer(bindir=bindir, root=_owned_folder(user), port=free_port(),
                            password=secrets.token_hex(12), user=user)
    password_file = server.root / "password"
    password_file.write_text(server.password + "\n")
    if user:
        entry = pwd.getpwnam(user)
        os.chown(password_file, entry.pw_uid, entry.pw_gid)
    server.run("initdb", "--pgdata", str(server.root / "data"), "--username", ROLE, "--pwfile",
               str(password_file), "--auth-local", "trust", "--auth-host", "scram-sha-256", "--encoding", "UTF8",
               "--no-locale", "--no-sync")
    password_file.unlink()
    # fsync off: a test cluster need not survive a power cut, and syncs are slow on a shared disk.
    options = f"-c listen_addresses={server.host} -p {server.port} -k {server.root} -c fsync=off"
    server.run("pg_ctl", "start", "--pgdata", str(server.root / "data"), "--log", str(server.root / "server.log"),
               "--wait", "--timeout", str(START_TIMEOUT_S), "-o", options)
    return server


def stop_server(server: PostgresServer) -> None:
    try:
        server.run("pg_ctl", "stop", "--pgdata", str(server.root / "data"), "--mode", "fast", "--wait")
    finally:
        shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bindir = find_bindir()
    if bindir is None:
        unavailable("no PostgreSQL server binaries (initdb, pg_ctl) found: apt-get install postgresql "
                    "(or OPENEDS_POSTGRES_BINDIR=<folder holding them>)")
    try:
        import psycopg  # noqa: F401 - the driver the project uses for PostgreSQL
    except ImportError:
        unavailable("the psycopg driver is not installed (make setup installs it)")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        unavailable("running as root without runuser: cannot start PostgreSQL as an unprivileged user")
    server = start_server(bindir)
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture
def postgres_database(postgres_server: PostgresServer) -> str:
    """The name of a new, empty database."""
    return postgres_server.create_database(f"test_{uuid.uuid4().hex[:10]}")


@pytest.fixture(scope="session")
def mlflow_postgres_server(postgres_server: PostgresServer, tmp_path_factory) -> Iterator[str]:
    database = postgres_server.create_database("mlflow")
    backend = postgres_server.url(database, scheme="postgresql+psycopg")  # MLflow's SQLAlchemy needs the driver
    process, uri = start_mlflow(tmp_path_factory.mktemp("mlflow-postgres"), backend,
                                env={"PGPASSWORD": postgres_server.password})
    try:
        yield uri
    finally:
        stop_mlflow(process)


@pytest.fixture
def mlflow_postgres_tracking_uri(mlflow_postgres_server: str, monkeypatch) -> Iterator[str]:
    yield from tracking_at(mlflow_postgres_server, monkeypatch)
