"""The batch bookkeeping as plain functions: chunked sending, counting in order, bounded summaries.

``send_next`` runs against the session's private Redis; the real-worker batch tests are in
test_document_tasks.py.
"""

from __future__ import annotations

import uuid

import pytest

from background_tasks.processing import batches
from background_tasks.processing.batches import RESULTS_CAP, BatchState


def new_state() -> BatchState:
    return BatchState(batch_id=uuid.uuid4().hex, started=1000.0)


class Crash(Exception):
    """The worker process dies while sending."""


def sender(redis_server, sent: list[tuple[str, str]], crash_at: int | None = None):
    client = redis_server.client()

    def publish(path: str, task_id: str) -> None:
        if crash_at is not None and len(sent) == crash_at:
            raise Crash
        sent.append((path, task_id))

    def run(state: BatchState, paths: list[str], chunk: int) -> BatchState:
        return batches.send_next(state, paths, client, publish, lock_timeout=30, mark_ttl=600, chunk=chunk)

    return run


def test_child_ids_follow_from_the_batch_id_and_the_index() -> None:
    assert batches.child_task_id("b1", 7) == batches.child_task_id("b1", 7)
    assert len({batches.child_task_id("b1", i) for i in range(1000)}) == 1000
    assert batches.child_task_id("b1", 0) != batches.child_task_id("b2", 0)


def test_each_run_sends_at_most_one_chunk_and_the_next_run_goes_on(redis_server) -> None:
    paths = [f"/docs/{i}.txt" for i in range(25)]
    sent: list[tuple[str, str]] = []
    run = sender(redis_server, sent)
    state = new_state()
    runs = 0
    while state.queued < len(paths):
        state = run(state, paths, chunk=10)
        runs += 1
    assert runs == 3
    assert [p for p, _ in sent] == paths, "every file once, in order"
    assert [t for _, t in sent] == [batches.child_task_id(state.batch_id, i) for i in range(25)]
    assert run(state, paths, chunk=10) == state, "nothing left to send"


def test_a_run_redelivered_after_a_crash_sends_nothing_twice(redis_server) -> None:
    paths = [f"/docs/{i}.txt" for i in range(30)]
    sent: list[tuple[str, str]] = []
    state = new_state()
    with pytest.raises(Crash):
        sender(redis_server, sent, crash_at=7)(state, paths, chunk=20)
    # The broker hands the same message (the same state) out again: it goes on after the 7 sent.
    state = sender(redis_server, sent)(state, paths, chunk=20)
    assert state.queued == 27
    state = sender(redis_server, sent)(state, paths, chunk=20)
    assert [p for p, _ in sent] == paths


def test_while_one_run_sends_a_duplicate_run_only_checks(redis_server) -> None:
    paths = [f"/docs/{i}.txt" for i in range(5)]
    state = new_state()
    lock = redis_server.client().lock(f"midas:batch:{state.batch_id}:sending", timeout=30)
    assert lock.acquire(blocking=False)
    sent: list[tuple[str, str]] = []
    assert sender(redis_server, sent)(state, paths, chunk=10) == state and sent == []
    lock.release()
    assert sender(redis_server, sent)(state, paths, chunk=10).queued == 5


def test_sending_stops_when_the_run_is_out_of_time(redis_server) -> None:
    paths = [f"/docs/{i}.txt" for i in range(50)]
    sent: list[str] = []
    budget = iter([True, True, False])
    state = batches.send_next(
        new_state(),
        paths,
        redis_server.client(),
        lambda path, task_id: sent.append(path),
        lock_timeout=30,
        mark_ttl=600,
        keep_going=lambda: next(budget),
    )
    assert state.queued == 3 and sent == paths[:3], "the first file always, then while time is left"


def test_finished_files_are_counted_in_order_up_to_the_first_still_running() -> None:
    state = BatchState(batch_id="b", started=0.0, queued=6)
    finished = {0: "success", 1: "rejected", 2: "duplicate", 4: "success"}  # 3 still runs
    state = batches.check_finished(state, finished.get)
    assert state.checked == 3
    assert state.counts == {"success": 1, "rejected": 1, "duplicate": 1}
    finished[3] = "failed"
    finished[5] = "success"
    state = batches.check_finished(state, finished.get, limit=2)
    assert state.checked == 5, "at most `limit` files per run"
    state = batches.check_finished(state, finished.get)
    assert state.checked == 6 and state.problems == (1, 3) and state.others == (0, 2, 4, 5)


def test_files_not_sent_yet_are_not_looked_at() -> None:
    state = BatchState(batch_id="b", started=0.0, queued=2)
    looked: list[int] = []
    batches.check_finished(state, lambda i: looked.append(i) or "success")
    assert looked == [0, 1]


def test_the_summary_counts_every_file_but_carries_at_most_the_cap_of_results() -> None:
    total = 1000
    status = {i: ("rejected" if i % 5 == 0 else "success") for i in range(total)}  # 200 rejected
    state = batches.check_finished(BatchState(batch_id="b", started=10.0, queued=total), status.get, limit=total)
    assert len(state.problems) == RESULTS_CAP and len(state.others) == RESULTS_CAP, "the state stays small"
    summary = batches.summary(state, total, lambda i: {"status": status[i], "path": f"/d/{i}"}, now=12.5)
    assert (summary["total"], summary["succeeded"], summary["rejected"], summary["failed"]) == (1000, 800, 200, 0)
    assert len(summary["failures"]) == RESULTS_CAP
    assert [r["path"] for r in summary["failures"]] == [f"/d/{i}" for i in range(0, 500, 5)], "the first ones"
    assert summary["results"] == summary["failures"], "problems take the place of successes"
    assert summary["results_complete"] is False
    assert summary["duration_s"] == 2.5 and summary["batch_id"] == "b"


def test_a_small_batch_still_gets_every_result_in_order() -> None:
    status = {0: "success", 1: "failed", 2: "duplicate"}
    state = batches.check_finished(BatchState(batch_id="b", started=0.0, queued=3), status.get)
    summary = batches.summary(state, 3, lambda i: {"status": status[i], "i": i}, now=1.0)
    assert [r["i"] for r in summary["results"]] == [0, 1, 2]
    assert [r["i"] for r in summary["failures"]] == [1]
    assert summary["results_complete"] is True
    assert (summary["succeeded"], summary["failed"], summary["duplicates"], summary["rejected"]) == (1, 1, 1, 0)


def test_the_state_survives_its_trip_through_a_json_message() -> None:
    import json

    state = batches.record(BatchState(batch_id="b", started=5.5, queued=3), 0, "failed")
    assert BatchState.from_message(json.loads(json.dumps(state.as_message()))) == state


def test_a_child_that_failed_outright_still_has_an_entry() -> None:
    entry = batches.per_file_result("/d/x.pdf", "FAILURE", TimeoutError("hard time limit"))
    assert entry == {"status": "failed", "path": "/d/x.pdf", "error_type": "TimeoutError", "error": "hard time limit"}
    assert batches.per_file_result("/d/y", "SUCCESS", {"status": "success"}) == {"status": "success"}
