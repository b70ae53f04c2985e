"""The intake ledger with real processes: what the broker loses, the reaper sends again; nothing doubles."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import celery_config
from background_tasks.ops import reaper
from background_tasks.storage import ledger as ledger_store
from background_tasks.storage.ledger import Submission
from tests.support import wait_until
from tests.test_fault_tolerance import PROCESS, assert_exactly_once, make_documents

pytestmark = pytest.mark.integration


def reap(stack, client, **kwargs) -> reaper.ReapReport:
    """One reaper pass over a private stack (its app sends; the task modules name what exists)."""
    return reaper.reap(stack.settings, stack.app, client, known=reaper.known_tasks(celery_config.app), **kwargs)


def entries(stack, task_ids) -> dict[str, dict]:
    return {t: ledger_store.get(stack.settings.database_url_resolved, t) for t in task_ids}


def later(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def test_every_publish_is_in_the_ledger_of_the_app_that_sent_it(isolated_stack, docs_dir: Path) -> None:
    stack = isolated_stack()
    paths = make_documents(docs_dir, 3)
    results = [stack.send(PROCESS, p) for p in paths]
    queued = entries(stack, [r.id for r in results])
    assert {e["state"] for e in queued.values()} == {"queued"}
    assert [queued[r.id]["call_json"]["args"] for r in results] == [[p] for p in paths]
    assert {e["queue"] for e in queued.values()} == {"documents"}
    stack.start_worker(queues=["documents"], concurrency=2)
    assert {r.get(timeout=60)["status"] for r in results} == {"success"}
    wait_until(lambda: {e["state"] for e in entries(stack, [r.id for r in results]).values()} == {"done"}, 10)
    done = entries(stack, [r.id for r in results])
    assert {e["attempts"] for e in done.values()} == {1} and {e["resends"] for e in done.values()} == {0}
    # which document each submission recorded, written in the transaction that recorded it
    assert {e["outcome"] for e in done.values()} == {"success"}
    assert sorted(e["document_id"] for e in done.values()) == sorted(r.get()["document_id"] for r in results)


def test_messages_lost_from_the_queue_are_sent_again_and_processed_exactly_once(isolated_stack, docs_dir: Path) -> None:
    # What a worker killed between BRPOP and recording the message as unacknowledged leaves
    # behind, made deterministic: the messages vanish from Redis before any worker sees them.
    stack = isolated_stack()
    paths = make_documents(docs_dir, 20)
    results = [stack.send(PROCESS, p) for p in paths]
    client = stack.redis.client()
    assert client.llen("documents") == 20
    client.delete("documents")
    stack.start_worker(queues=["documents"], concurrency=2)
    # before the grace period nothing is due; after it, each lost entry is sent again once
    assert reap(stack, client).looked_at == 0
    report = reap(stack, client, now=later(stack.settings.ledger_grace_seconds + 1))
    assert sorted(report.resent) == sorted(r.id for r in results) and not report.failed
    assert {r.get(timeout=90)["status"] for r in results} == {"success"}
    assert_exactly_once(stack, paths)
    wait_until(lambda: {e["state"] for e in entries(stack, [r.id for r in results]).values()} == {"done"}, 10)
    assert {e["resends"] for e in entries(stack, [r.id for r in results]).values()} == {1}
    # nothing is due any more, whenever the reaper looks
    assert reap(stack, client, now=later(10_000)).resent == []


def test_a_queued_task_still_in_its_queue_is_left_alone(isolated_stack, docs_dir: Path) -> None:
    stack = isolated_stack()
    results = [stack.send(PROCESS, p) for p in make_documents(docs_dir, 5)]
    client = stack.redis.client()
    report = reap(stack, client, now=later(stack.settings.ledger_grace_seconds + 1))
    assert report.looked_at == 5 and report.held == 5 and report.resent == []
    assert client.llen("documents") == 5  # nothing sent twice
    assert {e["resends"] for e in entries(stack, [r.id for r in results]).values()} == {0}


def test_tasks_of_a_worker_killed_outright_run_elsewhere_long_before_the_visibility_timeout(
    isolated_stack, docs_dir: Path
) -> None:
    stack = isolated_stack(MIDAS_VISIBILITY_TIMEOUT="3600", MIDAS_LEDGER_LEASE="3", MIDAS_LEDGER_GRACE="5")
    first = stack.start_worker(queues=["documents"], concurrency=2)
    paths = make_documents(docs_dir, 30, words=20000)
    results = [stack.send(PROCESS, p) for p in paths]
    wait_until(lambda: sum(r.ready() for r in results) >= 3, 60, what="some progress")
    first.kill()
    killed_at = time.monotonic()
    assert sum(r.ready() for r in results) < len(paths)
    stack.start_worker(queues=["documents"], concurrency=2)
    client = stack.redis.client()
    resent: set[str] = set()
    while not all(r.ready() for r in results):
        assert time.monotonic() - killed_at < 180, "the killed worker's tasks never came back"
        resent.update(reap(stack, client).resent)
        time.sleep(1)
    assert resent, "the reaper sent the dead worker's tasks again"
    assert {r.get(timeout=10)["status"] for r in results} == {"success"}
    assert_exactly_once(stack, paths)
    # the dead worker's messages were taken out of the unacknowledged set: no second delivery
    assert client.hlen("unacked") == 0


def test_entries_that_cannot_be_sent_again_end_failed_with_the_reason(isolated_stack, docs_dir: Path) -> None:
    stack = isolated_stack()
    url = stack.settings.database_url_resolved
    gone = docs_dir / "gone.txt"
    gone.write_text("here for a moment")
    now = datetime.now(UTC)
    ledger_store.record_sent(
        url,
        [
            Submission("unknown", "background_tasks.document_tasks.no_such_task", [str(gone)], {}, "documents"),
            Submission("unkept", PROCESS, [{1, 2}], {}, "documents"),  # not JSON: the arguments are not kept
            Submission("gone", PROCESS, [str(gone)], {}, "documents"),
        ],
        now,
        grace_s=0,
    )
    gone.unlink()
    client = stack.redis.client()
    report = reap(stack, client, now=later(1))
    assert report.resent == []
    assert "unknown task" in report.failed["unknown"]
    assert "arguments were not kept" in report.failed["unkept"]
    assert report.failed["gone"] == f"file is gone: {gone}"
    assert {e["state"] for e in entries(stack, ["unknown", "unkept", "gone"]).values()} == {"failed"}
    assert reap(stack, client, now=later(10_000)).looked_at == 0  # never loops
    assert client.llen("documents") == 0
