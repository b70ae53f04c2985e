"""Results are JSON only: a pickle written into the results table is refused and never runs.

Celery's database backend unpickles a stored ``result`` that starts with
``\\x80`` (rows of old Celery versions). Here a payload that would create a
marker file when unpickled is written straight into ``celery_taskmeta`` of a
real backend (SQLite, and PostgreSQL), then read the ways MIDAS reads results.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from background_tasks.errors import UnsafeResult
from background_tasks.ops import dashboard_data
from background_tasks.settings import load_settings
from background_tasks.storage.db import get_engine
from background_tasks.storage.result_backend import JsonDatabaseBackend
from tests.db_fixtures import throwaway_postgres

HEALTH = "background_tasks.monitoring_tasks.system_health_check"


class MarkerPayload:
    """Unpickling this runs a shell command that creates ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def payload_for(marker: Path) -> bytes:
    payload = pickle.dumps(MarkerPayload(marker), protocol=4)
    assert payload[:1] == b"\x80"
    return payload


@contextmanager
def backend_app(tmp_path: Path, database_url: str | None = None) -> Iterator:
    """A MIDAS app whose results live in a fresh SQLite file, or in ``database_url``."""
    import celery_config

    env = {**os.environ, "MIDAS_DATA_DIR": str(tmp_path / "data")}
    if database_url:
        env["MIDAS_DATABASE_URL"] = database_url
    other = celery_config.create_app(load_settings(env, env_file=Path(os.devnull)))
    try:
        yield other
    finally:
        other.close()
        celery_config.app.set_current()


def forge(app, task_id: str, result: bytes, args: bytes | None = None) -> None:
    """Write a row into the results table behind the backend's back, as an attacker with database access could."""
    assert isinstance(app.backend, JsonDatabaseBackend)
    url = app.conf.result_backend.removeprefix("db+")
    table = app.backend.task_cls.__table__  # celery_taskmeta; its id comes from a sequence on PostgreSQL
    with get_engine(url).begin() as conn:
        conn.execute(
            table.insert().values(
                task_id=task_id, status="SUCCESS", result=result, date_done=datetime.now(UTC), args=args
            )
        )


def assert_refused(app, marker: Path, tmp_path: Path) -> None:
    evil = f"evil-{uuid.uuid4()}"
    forge(app, evil, payload_for(marker))
    with pytest.raises(UnsafeResult, match="pickle"):
        app.AsyncResult(evil).get(timeout=5)
    with pytest.raises(UnsafeResult):
        _ = app.AsyncResult(evil).state

    # pickled arguments of an extended result (result_extended=True stores args) are refused too
    args_evil = f"evil-args-{uuid.uuid4()}"
    forge(app, args_evil, b'{"ok": true}', args=payload_for(marker))
    with pytest.raises(UnsafeResult, match="not JSON"):
        app.AsyncResult(args_evil).get(timeout=5)

    # the dashboard's actions read their task's result the same way: a clear error, no crash
    app.send_task = lambda name, **_: app.AsyncResult(evil)
    outcome = dashboard_data.run_health_check(app, timeout=5)
    assert outcome.finished and "pickle" in (outcome.error or "")
    assert not marker.exists(), "the pickle never ran"


def test_the_payload_is_live_and_stock_celery_would_run_it(tmp_path) -> None:
    """The test payload really executes when unpickled (in a child process, never here)."""
    marker = tmp_path / "stock-celery-ran-it"
    code = (
        "import sys; from celery import Celery; "
        "backend = Celery(backend=f'db+sqlite:///{sys.argv[1]}').backend; "
        "backend._decode_stored_result(sys.stdin.buffer.read())"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "stock.sqlite3")], input=payload_for(marker), check=True)
    assert marker.exists(), "Celery's own DatabaseBackend unpickled it"


def test_a_pickled_result_in_sqlite_is_refused_and_never_runs(tmp_path) -> None:
    marker = tmp_path / "sqlite-marker"
    with backend_app(tmp_path) as app:
        assert app.conf.result_backend.startswith("db+sqlite:///")
        assert_refused(app, marker, tmp_path)


@pytest.mark.postgres
def test_a_pickled_result_in_postgresql_is_refused_and_never_runs(tmp_path) -> None:
    marker = tmp_path / "postgres-marker"
    with throwaway_postgres() as url, backend_app(tmp_path, url) as app:
        assert app.conf.result_backend == "db+" + url
        assert_refused(app, marker, tmp_path)


def test_json_results_still_round_trip(tmp_path) -> None:
    with backend_app(tmp_path) as app:
        app.backend.store_result("fine", {"status": "success", "chunks": [1, 2]}, "SUCCESS")
        assert app.AsyncResult("fine").get(timeout=5) == {"status": "success", "chunks": [1, 2]}
        raw = get_engine(app.conf.result_backend.removeprefix("db+")).connect()
        try:
            stored = raw.execute(text("SELECT result FROM celery_taskmeta WHERE task_id = 'fine'")).scalar_one()
        finally:
            raw.close()
        assert bytes(stored).startswith(b"{")
