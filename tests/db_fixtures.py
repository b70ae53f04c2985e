"""Databases for tests: a fresh SQLite file, or a throwaway database on the local PostgreSQL server."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from background_tasks.storage.db import dispose_engine

PG_ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=5"


def pg_admin():
    """An autocommit connection to the local server; skips the test (fails it in CI) when it is missing."""
    import psycopg

    try:
        return psycopg.connect(PG_ADMIN_DSN, autocommit=True)
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL at 127.0.0.1:5432 (user postgres, database test) is unreachable: {exc}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@contextmanager
def throwaway_postgres(prefix: str = "midas_test") -> Iterator[str]:
    """The SQLAlchemy URL of a new, empty database, dropped afterwards."""
    admin = pg_admin()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        yield url
    finally:
        dispose_engine(url)
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request, tmp_path):
    """A fresh SQLite file, or a throwaway database on the local PostgreSQL server (dropped afterwards)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'db' / 'midas.sqlite3'}"
        yield url
        dispose_engine(url)
        return
    with throwaway_postgres() as url:
        yield url
