"""Task history: rows for succeeded, failed, retried and revoked tasks, written by real workers."""

from __future__ import annotations

import logging
import sqlite3
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from background_tasks.ops import history_signals, task_history
from background_tasks.ops.task_history import Recorder, TaskRecord, epoch, recorder, summarize_args, summarize_result
from background_tasks.settings import get_settings
from background_tasks.storage.db import create_all, session_scope, sqlite_path
from tests import db_fixtures
from tests.support import fire_task_signals, wait_until

SLEEP = "background_tasks.system_tasks.sleep"
FAIL = "background_tasks.system_tasks.fail"
PING = "background_tasks.system_tasks.ping"
database_url = db_fixtures.database_url  # the SQLite + PostgreSQL fixture

#: clock slack between test process and worker (same machine) and datetime rounding
SLACK = 0.05


def history_url() -> str:
    return get_settings().database_url_resolved


def fetch_row(task_id: str) -> TaskRecord | None:
    with session_scope(history_url()) as session:
        return session.scalar(select(TaskRecord).where(TaskRecord.task_id == task_id))


def history_row(task_id: str, until=lambda row: True, timeout: float = 30, interval: float = 0.2) -> TaskRecord:
    def fetch():
        recorder.flush(5)
        row = fetch_row(task_id)
        return row if row is not None and until(row) else None

    return wait_until(fetch, timeout, interval=interval, what=f"history row of {task_id}")


def times(row: TaskRecord) -> dict[str, float | None]:
    return {k: epoch(getattr(row, k)) for k in ("sent_at", "received_at", "started_at", "finished_at")}


def test_succeeded_task_has_ordered_times_wait_and_run_time(app, session_worker) -> None:
    before = time.time()
    result = app.send_task(SLEEP, args=[0.4])
    assert result.get(timeout=30)["slept"] >= 0.4
    after = time.time()
    row = history_row(result.id, lambda r: r.state == "success")
    t = times(row)
    assert row.name == SLEEP and row.queue == "default" and row.worker == session_worker.hostname
    assert row.args_summary == "0.4" and row.retries == 0
    assert before - SLACK <= t["sent_at"] <= t["received_at"] <= t["started_at"] <= t["finished_at"] <= after + SLACK
    assert row.wait_s == pytest.approx(t["started_at"] - t["sent_at"], abs=0.01)
    assert 0.4 <= row.runtime_s <= after - before
    assert row.runtime_s == pytest.approx(t["finished_at"] - t["started_at"], abs=0.01)
    assert "slept=" in row.result_summary and row.error_type is None and row.traceback is None


def test_failed_task_records_error_type_message_and_traceback(app, session_worker) -> None:
    message = f"disk on fire {uuid.uuid4().hex[:6]}"
    before = time.time()
    result = app.send_task(FAIL, args=[message])
    with pytest.raises(Exception, match=message):
        result.get(timeout=30)
    row = history_row(result.id, lambda r: r.state == "failure")
    t = times(row)
    assert before - SLACK <= t["sent_at"] <= t["started_at"] <= t["finished_at"] <= time.time() + SLACK
    assert row.error_type == "DiagnosticFailure" and row.error_message == message
    assert "DiagnosticFailure" in row.traceback and "system_tasks.py" in row.traceback
    assert row.runtime_s is not None and row.runtime_s >= 0 and row.retries == 0 and row.result_summary is None


def test_retried_task_goes_through_retry_state_and_counts_retries(app, session_worker) -> None:
    message = f"flaky {uuid.uuid4().hex[:6]}"
    delay = 1.0
    result = app.send_task(FAIL, args=[message], kwargs={"retries": 2, "retry_delay": delay})
    # between attempts the row says "retry", with the reason
    between = history_row(result.id, lambda r: r.state == "retry", timeout=20, interval=0.05)
    assert between.retries >= 1 and between.error_message == message
    with pytest.raises(Exception, match=message):
        result.get(timeout=30)
    row = history_row(result.id, lambda r: r.state == "failure")
    t = times(row)
    assert row.retries == 2
    # sent_at is the first send; the last attempt started after two retry delays
    assert t["started_at"] - t["sent_at"] >= 2 * delay
    # the wait is measured from when the retry was due, not from the first send
    assert 0 <= row.wait_s < delay
    assert row.args_summary == repr(message) + ", retries=2, retry_delay=1.0"


def test_revoked_running_and_scheduled_tasks(app, session_worker) -> None:
    running = app.send_task(SLEEP, args=[30])
    started = history_row(running.id, lambda r: r.state == "started")
    assert started.started_at is not None and started.finished_at is None
    running.revoke(terminate=True)
    row = history_row(running.id, lambda r: r.state == "revoked")
    assert "terminated" in row.error_message
    assert epoch(row.finished_at) >= epoch(row.started_at)
    assert epoch(row.finished_at) - epoch(row.started_at) < 25  # cut short, not slept out

    # revoked before it ever ran: the worker drops it when its countdown is due
    scheduled = app.send_task(SLEEP, args=[5], countdown=1.5)
    scheduled.revoke()
    row = history_row(scheduled.id, lambda r: r.state == "revoked", timeout=20)
    assert row.started_at is None and row.runtime_s is None and row.error_message == "revoked"
    assert epoch(row.finished_at) >= epoch(row.sent_at) + 1.4


def test_busy_database_does_not_hold_up_the_task(app, session_worker) -> None:
    """An exclusive lock on the history database for 3 s: the task still finishes at once; the row follows."""
    url = history_url()
    create_all(url)
    path: Path = sqlite_path(url)
    app.send_task(PING, args=["warm-up"]).get(timeout=30)
    locker = sqlite3.connect(path, timeout=10, isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        started = time.monotonic()
        result = app.send_task(PING, args=["while locked"])
        assert result.get(timeout=30)["message"] == "while locked"
        elapsed = time.monotonic() - started
        assert elapsed < 2.5, f"the task waited for the history database ({elapsed:.2f} s)"
        time.sleep(3 - elapsed)
    finally:
        locker.execute("COMMIT")
        locker.close()
    row = history_row(result.id, lambda r: r.state == "success")
    assert row.runtime_s < 2.5


def test_unwritable_database_is_logged_not_raised(tmp_path, caplog) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    broken = Recorder(f"sqlite:///{blocker / 'history.sqlite3'}")
    broken.record("task-1", 2, state="started", name="x")
    with caplog.at_level(logging.WARNING, logger="background_tasks.ops.task_history"):
        assert broken.flush(10)
    assert broken.failed_batches == 1 and broken.written == 0
    assert any("not recorded" in r.getMessage() for r in caplog.records)
    # and a handler given nonsense does not raise either
    with caplog.at_level(logging.WARNING, logger="background_tasks.ops.task_history"):
        task_history._on_prerun(task_id="x", task=None)
    assert any("prerun hook failed" in r.getMessage() for r in caplog.records)


def test_summaries_never_carry_contents() -> None:
    content = b"%PDF-1.7 secret" * 1000
    summary = summarize_args(["/data/a.pdf", content], {"text": "word " * 1000, "hours": 24})
    assert summary == "'/data/a.pdf', <15000 bytes>, text=<5000 characters>, hours=24"
    assert len(summary) <= task_history.ARGS_SUMMARY_MAX
    result = summarize_result({"status": "success", "chunks": 3, "text": "long " * 500, "pages": [1, 2]})
    assert result == "status='success', chunks=3 (+2 fields)"


def test_signal_hooks_only_queue_and_the_writer_stores_every_row(app, tmp_path) -> None:
    """Publish, prerun and postrun hooks record every task; one flush stores complete rows.

    Their cost per task is measured by `python -m bench bench_history`, not here.
    """
    url = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    local = Recorder(url)
    original = history_signals.recorder  # the recorder the handlers write to
    history_signals.recorder = local
    n = 500
    ids = [f"hooks-{uuid.uuid4().hex}" for _ in range(n)]
    try:
        for task_id in ids:
            headers = fire_task_signals(task_id, PING, args=("x",), retval={"ok": 1})
            assert task_history.SENT_HEADER in headers
        assert local.flush(60)
    finally:
        history_signals.recorder = original
    assert local.written == 3 * n and local.failed_batches == 0
    with session_scope(url) as session:
        rows = session.scalars(select(TaskRecord).where(TaskRecord.task_id.in_(ids))).all()
    assert len(rows) == n and {r.state for r in rows} == {"success"}
    assert all(r.runtime_s is not None and r.runtime_s >= 0 and r.worker == "bench@host" for r in rows)
    assert all(r.sent_at is not None and r.args_summary == "'x'" and r.queue == "default" for r in rows)


def test_events_arriving_out_of_order_end_in_the_right_state(database_url) -> None:
    """Client, worker main process and pool process write independently; any order gives the same row."""
    local = Recorder(database_url)
    t = 1_800_000_000.0
    utc = task_history.utc
    events = [
        # attempt 0 started before the worker's "received" and the client's "pending" got written
        task_history._Event("a", 2, {"state": "started", "started_at": utc(t + 2), "worker": "w@h", "retries": 0}),
        task_history._Event("a", 1, {"state": "received", "received_at": utc(t + 1), "worker": "w@h", "retries": 0}),
        task_history._Event("a", 0, {"state": "pending", "name": "n", "sent_at": utc(t), "args_summary": "1"}),
        # the retry's message was received (attempt 1) before the pool process recorded "retry"
        task_history._Event("a", 3, {"received_at": utc(t + 3.1), "retries": 1}),
        task_history._Event("a", 4, {"state": "retry", "retries": 1, "error_message": "try again"}),
        task_history._Event("a", 12, {"state": "started", "started_at": utc(t + 5), "error_message": None}),
        # a late event of the earlier attempt changes nothing
        task_history._Event("a", 5, {"state": "failure", "finished_at": utc(t + 3)}),
        task_history._Event("a", 15, {"state": "success", "finished_at": utc(t + 6), "runtime_s": 1.0}),
    ]
    local.write(events)
    with session_scope(local.url) as session:
        row = session.scalar(select(TaskRecord).where(TaskRecord.task_id == "a"))
    assert (row.state, row.retries, row.seq, row.name, row.args_summary) == ("success", 1, 15, "n", "1")
    assert epoch(row.sent_at) == t and epoch(row.received_at) == t + 3.1 and epoch(row.started_at) == t + 5
    assert epoch(row.finished_at) == t + 6 and row.error_message is None and row.worker == "w@h"
    # the received event of attempt 0 lost the race to "started" but still filled received_at
    local.write(
        [task_history._Event("b", 2, {"state": "started"}), task_history._Event("b", 1, {"received_at": utc(t)})]
    )
    with session_scope(local.url) as session:
        row = session.scalar(select(TaskRecord).where(TaskRecord.task_id == "b"))
    assert row.state == "started" and epoch(row.received_at) == t


def test_an_event_the_database_refuses_does_not_take_the_batch_with_it(database_url, caplog) -> None:
    local = Recorder(database_url)
    long_name = "n" * 300  # longer than the column: cut to fit, not refused
    batch = [
        task_history._Event("good-1", 2, {"state": "started", "name": long_name}),
        task_history._Event("bad", 2, {"state": None}),  # NOT NULL
        task_history._Event("good-2", 5, {"state": "success"}),
    ]
    with caplog.at_level(logging.WARNING, logger="background_tasks.ops.task_history"):
        local._write_with_retries(batch)
    assert local.written == 2 and local.failed_batches == 1
    assert any("1 events not recorded (IntegrityError" in r.getMessage() for r in caplog.records)
    with session_scope(database_url) as session:
        rows = {r.task_id: r for r in session.scalars(select(TaskRecord))}
    assert set(rows) == {"good-1", "good-2"} and rows["good-1"].name == "n" * 200
