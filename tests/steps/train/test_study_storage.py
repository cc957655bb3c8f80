"""Where a study lives: driver, password sources and schema creation, the last two against a real
PostgreSQL (tests/postgres_server.py)."""

from __future__ import annotations

import socket
import threading
import time
import uuid

import optuna
import pytest
import sqlalchemy

from steps.runtime import StepError
from steps.train import study_storage as storage


@pytest.mark.parametrize(("url", "expected"), [
    ("postgresql://optuna@db:5432/studies", "postgresql+psycopg://optuna@db:5432/studies"),
    ("postgres://optuna:pw@db/studies", "postgresql+psycopg://optuna:pw@db/studies"),
    ("postgresql+psycopg2://optuna@db/studies", "postgresql+psycopg2://optuna@db/studies"),  # named: kept
    ("sqlite:////tmp/postgresql://x.db", "sqlite:////tmp/postgresql://x.db"),
])
def test_bare_postgres_urls_get_the_installed_driver(url, expected):
    assert storage.with_driver(url) == expected


def test_password_file_is_read_without_its_trailing_newline(tmp_path):
    secret = tmp_path / "password"
    secret.write_text("s3cret-pw\n")
    assert storage.password_from_file({storage.PASSWORD_FILE_ENV: str(secret)}) == "s3cret-pw"
    assert storage.password_from_file({}) is None
    with pytest.raises(StepError, match=f"^{storage.PASSWORD_FILE_ENV}: cannot read .*missing"):
        storage.password_from_file({storage.PASSWORD_FILE_ENV: str(tmp_path / "missing")})
    secret.write_text("\n")
    with pytest.raises(StepError, match="is empty"):
        storage.password_from_file({storage.PASSWORD_FILE_ENV: str(secret)})


def test_the_file_password_goes_to_the_driver_only_for_a_url_without_one(tmp_path):
    secret = tmp_path / "password"
    secret.write_text("from-file")
    env = {storage.PASSWORD_FILE_ENV: str(secret)}
    timeout = {"connect_timeout": storage.CONNECT_TIMEOUT_S}
    assert storage.engine_kwargs("postgresql+psycopg://u@db/x", env)["connect_args"] == {"password": "from-file",
                                                                                          **timeout}
    assert storage.engine_kwargs("postgresql+psycopg://u:inline@db/x", env)["connect_args"] == timeout
    assert "connect_args" not in storage.engine_kwargs("postgresql+psycopg://u:inline@db/x?connect_timeout=3", env)
    assert storage.engine_kwargs("sqlite:////tmp/x.db", env) == {"connect_args": {"timeout": 60}}


def test_a_database_that_takes_the_connection_and_never_answers_fails_in_seconds():
    """libpq's default is to wait forever: tune used to hang in open_study."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        started = time.monotonic()
        with pytest.raises(sqlalchemy.exc.OperationalError, match="timeout"):
            storage.open_storage(f"postgresql://u@127.0.0.1:{silent.getsockname()[1]}/db", env={})
        assert time.monotonic() - started < 3 * storage.CONNECT_TIMEOUT_S


@pytest.mark.postgres
def test_password_from_pgpassword_or_the_file_reaches_postgres(postgres_server, postgres_database, tmp_path,
                                                               monkeypatch):
    url = postgres_server.url(postgres_database)  # no password in it
    monkeypatch.delenv("PGPASSWORD", raising=False)
    with pytest.raises(sqlalchemy.exc.OperationalError, match="password") as refused:
        storage.open_storage(url, env={})
    assert postgres_server.password not in str(refused.value)

    secret = tmp_path / "password"
    secret.write_text(postgres_server.password + "\n")
    from_file = storage.open_storage(url, env={storage.PASSWORD_FILE_ENV: str(secret)})
    optuna.create_study(storage=from_file, study_name="from-file")
    monkeypatch.setenv("PGPASSWORD", postgres_server.password)  # libpq reads it itself
    from_env = storage.open_storage(url, env={})
    assert optuna.study.get_all_study_names(storage=from_env) == ["from-file"]


@pytest.mark.postgres
def test_workers_opening_an_empty_database_together_all_get_the_storage(postgres_server, monkeypatch):
    """Without the retry, 3 of 4 threads fail every round (duplicate key in pg_type)."""
    monkeypatch.setenv("PGPASSWORD", postgres_server.password)
    for _ in range(3):
        url = postgres_server.url(postgres_server.create_database(f"race_{uuid.uuid4().hex[:8]}"))
        barrier, errors = threading.Barrier(4), []

        def open_together(barrier: threading.Barrier = barrier, url: str = url, errors: list = errors) -> None:
            barrier.wait()
            try:
                storage.open_storage(url, env={})
            except Exception as error:  # noqa: BLE001 - collected and asserted below
                errors.append(repr(error)[:300])

        workers = [threading.Thread(target=open_together) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
        assert errors == []
