"""Where an Optuna study lives: the storage URL, its database driver and password, heartbeats.

- URL: the tune `storage` setting (never with a password: settings reach manifests and tracking),
  else $OPTUNA_STORAGE (a secret; may hold the password), else sqlite beside the checkpoints.
- Driver: `postgresql://` (and `postgres://`) URLs get psycopg 3 (`postgresql+psycopg://`), the
  driver the project installs; SQLAlchemy's default for that scheme, psycopg2, is not installed.
- Password, for a URL without one: the file named by $OPTUNA_STORAGE_PASSWORD_FILE (a mounted
  Secret), handed to the driver and never put in the URL; else libpq's own $PGPASSWORD (or
  ~/.pgpass).
- Schema: workers starting together on an empty database race to create Optuna's tables (on
  PostgreSQL: duplicate key in pg_type, optuna#1092); the losers retry and find them made.
- Heartbeats: a worker killed mid-trial (SIGKILL, a lost pod) stops beating; once its beat is
  older than the grace period the next worker to start a trial marks it FAIL and retries it.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from sqlalchemy import exc as sql_errors
from sqlalchemy.engine import make_url

from steps.errors import StepError

STORAGE_ENV = "OPTUNA_STORAGE"
PASSWORD_FILE_ENV = "OPTUNA_STORAGE_PASSWORD_FILE"
STORAGE_FILE = "optuna.db"
HEARTBEAT_S, HEARTBEAT_GRACE_S = 60, 180
MAX_RETRIES = 2  # a trial whose worker died is retried at most this often
SCHEMA_ATTEMPTS = 5
log = logging.getLogger(__name__)
_BARE_POSTGRES = re.compile(r"^postgres(ql)?://")


def default_storage(checkpoints: Path) -> str:
    """sqlite beside the checkpoints: that folder outlives the run (outputs are staged and swapped)."""
    return f"sqlite:///{(Path(checkpoints) / STORAGE_FILE).absolute()}"


def resolve_storage_url(hp: Any, checkpoints: Path, env: Mapping[str, str] | None = None) -> str:
    """The `storage` setting, else $OPTUNA_STORAGE (may hold a password: a secret), else local sqlite."""
    env = os.environ if env is None else env
    return hp.storage or env.get(STORAGE_ENV) or default_storage(checkpoints)


def shown_url(url: str) -> str:
    """The URL with any password masked: what logs, outputs and tracking may show."""
    return make_url(url).render_as_string(hide_password=True)


def with_driver(url: str) -> str:
    """`postgresql://...` -> `postgresql+psycopg://...`; any URL naming its driver is kept as it is."""
    return _BARE_POSTGRES.sub("postgresql+psycopg://", url, count=1)


def password_from_file(env: Mapping[str, str] | None = None) -> str | None:
    """The database password in $OPTUNA_STORAGE_PASSWORD_FILE's file (None when unset)."""
    env = os.environ if env is None else env
    path = env.get(PASSWORD_FILE_ENV)
    if not path:
        return None
    try:
        password = Path(path).read_text(encoding="utf-8").strip("\r\n")  # Secret files often end in \n
    except OSError as error:
        raise StepError(f"{PASSWORD_FILE_ENV}: cannot read {path} ({error.strerror or error})") from None
    if not password:
        raise StepError(f"{PASSWORD_FILE_ENV}: {path} is empty")
    return password


CONNECT_TIMEOUT_S = 10


def engine_kwargs(url: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """SQLAlchemy engine options for the storage URL."""
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}  # workers on one file wait on its lock
    # pre-ping: trials last hours; a pooled connection the server or a proxy dropped meanwhile is
    # replaced instead of failing the trial's next write.
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    parsed = make_url(url)
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in ("psycopg", "psycopg2") \
            and "connect_timeout" not in parsed.query:
        # libpq (psycopg's) waits forever on a server that takes the connection and never answers
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
    password = password_from_file(env) if parsed.password is None else None
    if password is not None:
        connect_args["password"] = password
    if connect_args:
        kwargs["connect_args"] = connect_args
    return kwargs


def open_storage(url: str, heartbeat_s: int = HEARTBEAT_S, grace_s: int = HEARTBEAT_GRACE_S,
                 env: Mapping[str, str] | None = None) -> optuna.storages.RDBStorage:
    """RDB storage with heartbeats; a trial retried after its worker died resumes from the failed
    trial's checkpoints (see search.checkpoint_key) when the workers share the checkpoint folder."""
    url = with_driver(url)
    for attempt in range(1, SCHEMA_ATTEMPTS):
        try:
            return _rdb_storage(url, heartbeat_s, grace_s, env)
        except (sql_errors.IntegrityError, sql_errors.ProgrammingError) as error:
            # Another worker is creating the schema right now; its transaction commits it whole.
            log.info("storage %s: schema being created by another worker (%s); retrying", shown_url(url),
                     type(error.orig or error).__name__)
            time.sleep(random.uniform(0.1, 0.5) * attempt)
    return _rdb_storage(url, heartbeat_s, grace_s, env)


def _rdb_storage(url: str, heartbeat_s: int, grace_s: int,
                 env: Mapping[str, str] | None) -> optuna.storages.RDBStorage:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: stable in practice
        retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES, inherit_intermediate_values=True)
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url, env), heartbeat_interval=heartbeat_s,
                                          grace_period=grace_s, heartbeat_stale_trial_callback=retry)
