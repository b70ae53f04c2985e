"""The ledger's promise, proved with real processes: whatever dies, every document ends once.

Each test runs Beat (so the reaper runs as it does for users, as a Beat task on the
``monitoring`` queue) and real workers against a Redis of its own. The visibility timeout stays
at its default hour: what comes back within the test's time comes back through the ledger.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from background_tasks.storage import ledger as ledger_store
from tests.support import wait_until
from tests.test_fault_tolerance import PROCESS, assert_exactly_once

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ALL_QUEUES = ["default", "documents", "analysis", "monitoring"]
#: short lease and grace, reaper every 2 s: the same mechanism as the defaults, at test speed
FAST_LEDGER = {
    "MIDAS_LEDGER_LEASE": "3",
    "MIDAS_LEDGER_GRACE": "5",
    "MIDAS_LEDGER_REAP_INTERVAL": "2",
}


def mixed_documents(folder: Path, count: int) -> list[str]:
    """``count`` documents of eleven types, each with content of its own (no two share a hash)."""
    from docx import Document
    from openpyxl import Workbook

    def text_of(i: int) -> str:
        return f"Document {i} carries the token proof{i}x and a few sentences about lighthouses. " * 8

    writers = {
        "txt": lambda p, i: p.write_text(text_of(i)),
        "md": lambda p, i: p.write_text(f"# Heading {i}\n\n{text_of(i)}\n\n- item one\n- item two\n"),
        "log": lambda p, i: p.write_text(f"2026-12-04 10:00:{i % 60:02d} INFO worker {i}: {text_of(i)}\n" * 3),
        "csv": lambda p, i: p.write_text("name,value\n" + "".join(f"row{i}-{r},{r * i}\n" for r in range(20))),
        "json": lambda p, i: p.write_text(json.dumps({"id": i, "note": text_of(i), "tags": ["a", "b", i]})),
        "html": lambda p, i: p.write_text(f"<html><head><title>Page {i}</title></head><p>{text_of(i)}</p></html>"),
        "xml": lambda p, i: p.write_text(f"<?xml version='1.0'?><catalog><item id='{i}'>{text_of(i)}</item></catalog>"),
        "rtf": lambda p, i: p.write_text(r"{\rtf1\ansi\pard " + text_of(i) + r"\par}"),
        "eml": lambda p, i: p.write_text(
            f"From: a{i}@example.org\nTo: b@example.org\nSubject: Mail {i}\nDate: Fri, 04 Dec 2026 10:00:00 +0000\n"
            f"Content-Type: text/plain; charset=utf-8\n\n{text_of(i)}\n"
        ),
    }  # fmt: skip

    def docx(path: Path, i: int) -> None:
        document = Document()
        document.add_heading(f"Report {i}", level=1)
        document.add_paragraph(text_of(i))
        document.save(path)

    def xlsx(path: Path, i: int) -> None:
        book = Workbook()
        sheet = book.active
        sheet.append(["name", "value"])
        for r in range(10):
            sheet.append([f"row{i}-{r}", r * i])
        book.save(path)

    writers |= {"docx": docx, "xlsx": xlsx}
    kinds = list(writers)
    paths = []
    for i in range(count):
        kind = kinds[i % len(kinds)]
        path = folder / f"doc-{i:04d}.{kind}"
        writers[kind](path, i)
        paths.append(str(path))
    return paths


def ledger_is_settled(stack) -> bool:
    counts = ledger_store.counts(stack.settings.database_url_resolved, datetime.now(UTC))
    return counts.queued == 0 and counts.running == 0


def assert_ledger_all_done(stack, task_ids: list[str]) -> None:
    url = stack.settings.database_url_resolved
    wait_until(lambda: ledger_is_settled(stack), 120, interval=0.5, what="every ledger entry to end")
    counts = ledger_store.counts(url, datetime.now(UTC))
    assert counts.failed == 0, "no entry failed"
    entries = [ledger_store.get(url, t) for t in task_ids]
    assert {e["state"] for e in entries} == {"done"}
    assert {e["outcome"] for e in entries} == {"success"}


def wait_all_success(results, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(r.ready() for r in results):
        missing = sum(not r.ready() for r in results)
        assert time.monotonic() < deadline, f"{missing} of {len(results)} documents never finished"
        time.sleep(0.5)
    statuses = {r.get(timeout=10)["status"] for r in results}
    assert statuses == {"success"}


def test_ten_kill_9s_of_the_worker_during_500_documents_lose_and_double_nothing(isolated_stack, docs_dir) -> None:
    stack = isolated_stack(**FAST_LEDGER)
    stack.start_beat()
    paths = mixed_documents(docs_dir, 500)
    worker = stack.start_worker(queues=ALL_QUEUES, concurrency=2)
    results = [stack.send(PROCESS, p) for p in paths]
    kills = 0
    while kills < 10:
        target = 40 * (kills + 1)
        wait_until(lambda n=target: sum(r.ready() for r in results) >= n, 180, interval=0.1, what=f"{target} done")
        os.kill(worker.process.pid, signal.SIGKILL)  # the main process only, as an OOM killer would
        kills += 1
        worker.process.wait(10)
        worker = stack.start_worker(queues=ALL_QUEUES, concurrency=2)
    assert sum(r.ready() for r in results) < len(results), "the kills landed during the run"
    wait_all_success(results, 300)
    assert_exactly_once(stack, paths)
    assert_ledger_all_done(stack, [r.id for r in results])


def test_two_workers_one_killed_for_good_the_other_finishes_everything(isolated_stack, docs_dir) -> None:
    stack = isolated_stack(**FAST_LEDGER)
    stack.start_beat()
    paths = mixed_documents(docs_dir, 200)
    doomed = stack.start_worker(queues=ALL_QUEUES, concurrency=2)
    survivor = stack.start_worker(queues=ALL_QUEUES, concurrency=1)
    results = [stack.send(PROCESS, p) for p in paths]
    wait_until(lambda: sum(r.ready() for r in results) >= 30, 120, interval=0.1, what="some progress")
    doomed.kill()  # main process and pool; it never comes back
    assert sum(r.ready() for r in results) < len(results)
    wait_all_success(results, 300)
    assert survivor.process.poll() is None
    assert_exactly_once(stack, paths)
    assert_ledger_all_done(stack, [r.id for r in results])


def test_redis_restarted_without_its_data_forgets_the_queue_and_the_ledger_sends_it_again(
    isolated_stack, docs_dir
) -> None:
    stack = isolated_stack(**FAST_LEDGER)
    stack.start_beat()
    paths = mixed_documents(docs_dir, 200)
    worker = stack.start_worker(queues=ALL_QUEUES, concurrency=2)
    results = [stack.send(PROCESS, p) for p in paths]
    wait_until(lambda: sum(r.ready() for r in results) >= 20, 120, interval=0.1, what="some progress")
    stack.redis.kill()
    shutil.rmtree(stack.redis.data_dir)  # the append-only file and every queue with it
    stack.redis.start()
    assert stack.redis.client().llen("documents") == 0, "Redis forgot the queue"
    wait_all_success(results, 300)
    assert worker.process.poll() is None, "the worker reconnected by itself"
    assert_exactly_once(stack, paths)
    assert_ledger_all_done(stack, [r.id for r in results])
    entries = [ledger_store.get(stack.settings.database_url_resolved, r.id) for r in results]
    assert sum(e["resends"] for e in entries) > 0, "what Redis forgot came back through the ledger"


def test_a_cold_stop_hands_a_long_task_back_after_the_soft_shutdown_timeout(isolated_stack, docs_dir) -> None:
    stack = isolated_stack(MIDAS_SOFT_SHUTDOWN_TIMEOUT="1")
    big = docs_dir / "long.txt"
    with big.open("w") as out:  # about 40 MB: several seconds of work
        for block in range(1000):
            out.write(" ".join(f"word{(block * 997 + i) % 5000} filler number {i}." for i in range(1000)))
    first = stack.start_worker(queues=["documents"], concurrency=1)
    result = stack.send(PROCESS, str(big))
    url = stack.settings.database_url_resolved
    wait_until(lambda: (ledger_store.get(url, result.id) or {}).get("state") == "running", 60, what="the start")
    first.process.send_signal(signal.SIGQUIT)  # cold stop: soft shutdown, then the task goes back
    wait_until(lambda: first.process.poll() is not None, 30, what="the first worker to stop")
    assert "Soft Shutdown" in first.log_text()
    second = stack.start_worker(queues=["documents"], concurrency=1)
    assert result.get(timeout=180)["status"] == "success"
    assert_exactly_once(stack, [str(big)])
    wait_until(lambda: ledger_store.get(url, result.id)["state"] == "done", 30, what="the entry to close")
    entry = ledger_store.get(url, result.id)
    assert entry["worker"] == second.hostname and entry["attempts"] == 2, "the second worker ran it again"
