"""The intake ledger's storage, on SQLite and PostgreSQL: what a submission goes through, and races."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from background_tasks.statuses import LedgerState
from background_tasks.storage import ledger
from background_tasks.storage.ledger import Submission
from tests import db_fixtures

database_url = db_fixtures.database_url  # the SQLite + PostgreSQL fixture

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
PROCESS = "background_tasks.document_tasks.process_document_file"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def sub(task_id: str, path: str = "/docs/a.txt") -> Submission:
    return Submission(task_id=task_id, name=PROCESS, args=[path], kwargs={}, queue="documents")


def due_ids(url: str, now: datetime, hold_s: float = 60) -> list[str]:
    return sorted(d.task_id for d in ledger.claim_due(url, now, hold_s))


def test_a_submission_goes_queued_running_done(database_url: str) -> None:
    ledger.record_sent(database_url, [sub("t1")], at(0), grace_s=30)
    entry = ledger.get(database_url, "t1")
    assert entry["state"] == "queued" and entry["call_json"] == {"args": ["/docs/a.txt"], "kwargs": {}}
    assert entry["queue"] == "documents" and entry["check_after"] == at(30)

    assert ledger.start(database_url, sub("t1"), "w1@host", lease_s=60, now=at(5)) == 1
    entry = ledger.get(database_url, "t1")
    assert entry["state"] == "running" and entry["worker"] == "w1@host" and entry["lease_until"] == at(65)

    assert ledger.finish(database_url, "t1", LedgerState.DONE, at(10)) is True
    entry = ledger.get(database_url, "t1")
    assert entry["state"] == "done" and entry["finished_at"] == at(10) and entry["lease_until"] is None
    assert ledger.finish(database_url, "t1", LedgerState.FAILED, at(11)) is False  # closed stays closed


def test_the_reaper_sees_queued_entries_after_their_grace_and_running_ones_after_their_lease(
    database_url: str,
) -> None:
    ledger.record_sent(database_url, [sub("queued"), sub("running"), sub("done")], at(0), grace_s=30)
    ledger.start(database_url, sub("running"), "w1", lease_s=60, now=at(1))
    ledger.start(database_url, sub("done"), "w1", lease_s=60, now=at(1))
    ledger.finish(database_url, "done", LedgerState.DONE, at(2))

    assert due_ids(database_url, at(29)) == []
    assert due_ids(database_url, at(30)) == ["queued"]
    assert due_ids(database_url, at(31)) == []  # held for 60 s by the claim
    assert due_ids(database_url, at(61)) == ["running"]  # lease 1 + 60 passed
    assert due_ids(database_url, at(95)) == ["queued"]  # 30 + 60 hold
    [due] = [d for d in ledger.claim_due(database_url, at(1000), 60) if d.task_id == "running"]
    assert due.state is LedgerState.RUNNING and due.worker == "w1" and due.attempts == 1
    assert due.call == {"args": ["/docs/a.txt"], "kwargs": {}} and due.name == PROCESS


def test_a_renewed_lease_keeps_a_long_task_from_the_reaper(database_url: str) -> None:
    ledger.record_sent(database_url, [sub("long"), sub("other")], at(0), grace_s=30)
    ledger.start(database_url, sub("long"), "w1", lease_s=60, now=at(0))
    ledger.start(database_url, sub("other"), "w2", lease_s=60, now=at(0))
    seen_due: set[str] = set()
    for second in range(20, 300, 20):
        assert ledger.renew(database_url, "w1", lease_s=60, now=at(second)) == 1
        seen_due.update(due_ids(database_url, at(second + 1), hold_s=1000))
    assert seen_due == {"other"}  # w2 renewed nothing: its lease ran out at 60
    assert ledger.get(database_url, "long")["lease_until"] == at(340)
    assert ledger.renew(database_url, "w1", lease_s=60, now=at(400), task_ids=[]) == 0


def test_a_resend_counts_and_reopens_and_a_retry_message_requeues(database_url: str) -> None:
    ledger.record_sent(database_url, [sub("t")], at(0), grace_s=30)
    ledger.start(database_url, sub("t"), "w1", lease_s=60, now=at(1))
    assert ledger.mark_resent(database_url, ["t"], at(100), grace_s=30) == 1
    entry = ledger.get(database_url, "t")
    assert (entry["state"], entry["resends"], entry["worker"], entry["last_resent_at"]) == ("queued", 1, None, at(100))
    # the worker that gets it next counts a second attempt
    assert ledger.start(database_url, sub("t"), "w2", lease_s=60, now=at(110)) == 2
    # a Celery retry publishes the same id again: queued until a worker starts it
    ledger.record_sent(database_url, [sub("t")], at(120), grace_s=30)
    entry = ledger.get(database_url, "t")
    assert entry["state"] == "queued" and entry["lease_until"] is None and entry["attempts"] == 2


def test_a_finished_entry_is_never_reopened_by_a_late_duplicate(database_url: str) -> None:
    ledger.record_sent(database_url, [sub("t")], at(0), grace_s=30)
    ledger.start(database_url, sub("t"), "w1", lease_s=60, now=at(1))
    ledger.finish(database_url, "t", LedgerState.DONE, at(2))
    ledger.record_sent(database_url, [sub("t")], at(3), grace_s=30)
    ledger.start(database_url, sub("t"), "w2", lease_s=60, now=at(4))
    assert ledger.mark_resent(database_url, ["t"], at(5), grace_s=30) == 0
    entry = ledger.get(database_url, "t")
    assert (entry["state"], entry["attempts"], entry["worker"]) == ("done", 1, "w1")
    assert due_ids(database_url, at(10_000)) == []


def test_a_task_started_without_a_publish_record_is_entered_by_its_worker(database_url: str) -> None:
    assert ledger.start(database_url, sub("foreign", "/docs/b.txt"), "w1", lease_s=60, now=at(0)) == 1
    entry = ledger.get(database_url, "foreign")
    assert entry["state"] == "running" and entry["call_json"]["args"] == ["/docs/b.txt"]


def test_arguments_too_large_or_not_json_are_not_kept_and_the_entry_says_so(database_url: str) -> None:
    huge = Submission("huge", PROCESS, args=[["x" * 1000] * 5000], kwargs={}, queue="documents")
    odd = Submission("odd", PROCESS, args=[{1, 2}], kwargs={}, queue="documents")
    ledger.record_sent(database_url, [huge, odd], at(0), grace_s=0)
    due = {d.task_id: d for d in ledger.claim_due(database_url, at(1), 60)}
    assert due["huge"].call is None and due["odd"].call is None


def test_counts_and_retention(database_url: str) -> None:
    ledger.record_sent(database_url, [sub(f"t{i}") for i in range(6)], at(0), grace_s=30)
    ledger.record_sent(database_url, [sub("late")], at(50), grace_s=30)
    ledger.start(database_url, sub("t0"), "w", 60, at(1))
    ledger.start(database_url, sub("t1"), "w", 60, at(1))
    ledger.finish(database_url, "t1", LedgerState.DONE, at(2))
    ledger.start(database_url, sub("t2"), "w", 60, at(1))
    ledger.fail(database_url, "t2", "file is gone: /docs/a.txt", at(3))
    ledger.mark_resent(database_url, ["t3"], at(40), grace_s=30)
    counts = ledger.counts(database_url, at(100))
    assert (counts.queued, counts.running, counts.done, counts.failed) == (4, 1, 1, 1)
    assert counts.resent_last_hour == 1
    assert counts.oldest_queued_s == 100.0  # t4 and t5, sent at 0
    assert ledger.get(database_url, "t2")["error"] == "file is gone: /docs/a.txt"
    assert ledger.purge_finished(database_url, at(2.5)) == 1  # t1 finished at 2, t2 at 3
    assert ledger.get(database_url, "t1") is None and ledger.get(database_url, "t2") is not None


def test_two_reapers_never_take_the_same_entry(database_url: str) -> None:
    ledger.record_sent(database_url, [sub(f"t{i:03d}") for i in range(300)], at(0), grace_s=0)
    taken: list[list[str]] = [[], []]
    barrier = threading.Barrier(2)

    def reap(slot: int) -> None:
        barrier.wait()
        while True:
            batch = ledger.claim_due(database_url, at(10), hold_s=600, limit=7)
            if not batch:
                return
            taken[slot].extend(d.task_id for d in batch)

    threads = [threading.Thread(target=reap, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not set(taken[0]) & set(taken[1])
    assert sorted(taken[0] + taken[1]) == [f"t{i:03d}" for i in range(300)]


def test_finishing_as_anything_but_done_or_failed_is_a_bug() -> None:
    with pytest.raises(ValueError):
        ledger.finish_in(None, "t", LedgerState.RUNNING, T0)  # type: ignore[arg-type]


def test_a_ledger_made_by_an_older_midas_gets_the_new_columns(tmp_path) -> None:
    """Columns are added to existing tables (``create_all`` alone never alters a table)."""
    import sqlite3

    from background_tasks.storage.schema import create_schema

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE ledger (task_id VARCHAR(155) PRIMARY KEY, name VARCHAR(200), state VARCHAR(16))")
    create_schema(f"sqlite:///{path}")
    with sqlite3.connect(path) as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(ledger)")}
    assert {"document_id", "outcome", "lease_until", "worker", "error"} <= columns  # every nullable one


def test_the_health_check_warns_of_old_queued_entries_and_of_a_reaper_that_does_not_run(settings_for) -> None:
    from background_tasks.ops import monitoring
    from background_tasks.ops.ledger_health import ledger_figures, ledger_findings

    settings = settings_for(MIDAS_LEDGER_WARN_AGE="600", MIDAS_LEDGER_REAP_INTERVAL="10")
    url = settings.database_url_resolved
    now = datetime.now(UTC)
    ledger.record_sent(url, [sub("fresh")], now - timedelta(seconds=5), grace_s=60)
    assert ledger_findings(settings, ledger_figures(settings, now)) == []  # young, not yet due

    ledger.record_sent(url, [sub("old")], now - timedelta(seconds=900), grace_s=60)
    figures = ledger_figures(settings, now)
    assert (figures["queued"], figures["overdue"]) == (2, 1)  # "old" was due 840 s ago: nobody reaps
    reasons = [reason for _, reason in ledger_findings(settings, figures)]
    assert any("the oldest for 90" in r for r in reasons)  # ~900 s
    assert any("1 ledger entries are overdue for the reaper" in r for r in reasons)
    status, found = monitoring.evaluate(settings, {}, {}, {"ok": True}, None, {}, {}, figures)
    assert status == "warning" and any("overdue for the reaper" in r for r in found)

    assert ledger_figures(settings_for(MIDAS_LEDGER="false")) == {"enabled": False}
    assert ledger_findings(settings, {"enabled": False}) == []


def test_retention_removes_old_finished_entries_with_the_task_history(settings_for) -> None:
    from background_tasks.ops import monitoring

    settings = settings_for()
    url = settings.database_url_resolved
    now = datetime.now(UTC)
    ledger.record_sent(url, [sub("old-done"), sub("old-open"), sub("new-done")], now - timedelta(days=40), grace_s=60)
    ledger.finish(url, "old-done", LedgerState.DONE, now - timedelta(days=35))
    ledger.finish(url, "new-done", LedgerState.DONE, now - timedelta(days=1))
    result = monitoring.cleanup(settings, days=30, now=now.timestamp(), compact=False)
    assert result.removed["ledger"] == 1 and not result.errors
    assert ledger.get(url, "old-done") is None
    assert ledger.get(url, "old-open")["state"] == "queued"  # open entries are never purged
    assert ledger.get(url, "new-done")["state"] == "done"


def test_a_worker_writes_its_starts_and_finishes_in_batches_and_keeps_them_while_the_database_fails(
    tmp_path, caplog
) -> None:
    from background_tasks.ops.ledger import Leases

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger.record_sent(url, [sub("a"), sub("b"), sub("retried")], at(0), grace_s=30)
    leases = Leases()
    leases.begin(url, ledger.Started(sub("a"), "w1", 60, at(1)))
    leases.begin(url, ledger.Started(sub("b"), "w1", 60, at(1)))
    leases.begin(url, ledger.Started(sub("retried"), "w1", 60, at(1)))
    leases.remove("retried")  # a retry re-opened it as queued: its start must not be written after that
    leases.end(url, ledger.Finished("b", LedgerState.DONE, at(2)))
    assert ledger.get(url, "a")["state"] == "queued"  # nothing written yet: one batch, later
    leases.flush()
    assert [ledger.get(url, t)["state"] for t in ("a", "b", "retried")] == ["running", "done", "queued"]
    assert leases.held() == ["a"]

    blocked = tmp_path / "blocked.db"
    blocked.mkdir()  # a folder where the database should be: every write fails
    broken = f"sqlite:///{blocked}"
    leases.begin(broken, ledger.Started(sub("c"), "w1", 60, at(3)))
    leases.end(broken, ledger.Finished("d", LedgerState.DONE, at(3)))
    leases.flush()  # fails and keeps both events
    assert "could not write 1 starts, 1 finishes" in caplog.text
    blocked.rmdir()
    leases.flush()
    assert ledger.get(broken, "c")["state"] == "running"
    assert ledger.get(broken, "d") is None  # a finish of an entry never recorded changes nothing
