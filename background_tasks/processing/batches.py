"""The bookkeeping behind ``process_document_batch``: plain functions over a small, frozen state.

A batch of any size runs as a chain of short runs of one task (each run is a
retry of the previous one, with the same task id). A run sends at most
``QUEUE_CHUNK`` children and counts the children that finished, in order,
then hands a ``BatchState`` to the next run. The state stays small however
big the batch: counts, and the indexes of at most ``RESULTS_CAP`` files whose
results the summary shows. Child task ids derive from the batch id and the
file's index, so a re-run sends the same ids and anyone holding the batch id
can look up every file's result (``keys.batch_child_task_id``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from background_tasks import keys
from background_tasks.keys import batch_child_task_id as child_task_id  # noqa: F401 (the name the README gave)

log = logging.getLogger(__name__)

#: children one run of the batch task sends at most (then it continues in its next run)
QUEUE_CHUNK = 500
#: finished children one run looks at at most
CHECK_LIMIT = 2000
#: per-file results a batch summary carries at most (``results`` and ``failures`` each)
RESULTS_CAP = 100
#: a file with one of these statuses goes into ``failures``
PROBLEM_STATUSES = frozenset({"failed", "rejected"})


@dataclass(frozen=True)
class BatchState:
    """What one run of a batch hands to the next, in its retry message."""

    batch_id: str
    started: float  # time.time() of the first run
    queued: int = 0  # files 0 .. queued-1 have been sent as child tasks
    checked: int = 0  # files 0 .. checked-1 have finished and are counted
    counts: Mapping[str, int] = field(default_factory=dict)  # status -> files
    problems: tuple[int, ...] = ()  # indexes of failed/rejected files, at most RESULTS_CAP
    others: tuple[int, ...] = ()  # indexes of the first other files, at most RESULTS_CAP

    def as_message(self) -> dict[str, Any]:
        """JSON for the retry message."""
        return {
            "batch_id": self.batch_id,
            "started": self.started,
            "queued": self.queued,
            "checked": self.checked,
            "counts": dict(self.counts),
            "problems": list(self.problems),
            "others": list(self.others),
        }

    @classmethod
    def from_message(cls, data: Mapping[str, Any]) -> BatchState:
        return cls(
            batch_id=str(data["batch_id"]),
            started=float(data["started"]),
            queued=int(data.get("queued", 0)),
            checked=int(data.get("checked", 0)),
            counts={str(k): int(v) for k, v in (data.get("counts") or {}).items()},
            problems=tuple(int(i) for i in data.get("problems") or ()),
            others=tuple(int(i) for i in data.get("others") or ()),
        )


def to_queue(state: BatchState, total: int, already_sent: int = 0, chunk: int = QUEUE_CHUNK) -> range:
    """Indexes this run sends: the next ``chunk`` after what this state or the shared mark says was sent."""
    start = max(state.queued, already_sent)
    return range(start, min(total, start + chunk))


def send_next(
    state: BatchState,
    file_paths: list[str],
    client: Any,
    publish: Callable[[str, str], Any],
    lock_timeout: float,
    mark_ttl: int,
    keep_going: Callable[[], bool] = lambda: True,
    chunk: int = QUEUE_CHUNK,
) -> BatchState:
    """Send the batch's next files as child tasks (``publish(path, task_id)``); the state with ``queued`` moved on.

    Only one run of a batch sends at a time (a Redis lock; a duplicate run only checks), and the
    number sent is stored in Redis after each child. A run redelivered after a crash therefore
    continues where the crashed one stopped: at worst the child being sent at the crash is sent
    again, under the same id, and the document store recognises its own task (see README).
    """
    lock = client.lock(keys.batch_sending_lock(state.batch_id), timeout=lock_timeout, blocking=False)
    if not lock.acquire():
        log.info("batch %s: another run is sending its files", state.batch_id)
        return state
    try:
        key = keys.batch_sent_key(state.batch_id)
        indexes = to_queue(state, len(file_paths), int(client.get(key) or 0), chunk)
        sent = indexes.start
        for index in indexes:
            if index > indexes.start and not keep_going():
                break
            publish(file_paths[index], keys.batch_child_task_id(state.batch_id, index))
            sent = index + 1
            client.set(key, sent, ex=mark_ttl)
    finally:
        try:
            lock.release()
        except Exception as exc:  # expired (a run is shorter than the timeout) or Redis gone: it expires anyway
            log.warning("batch %s: could not release the sending lock: %s", state.batch_id, exc)
    if sent > state.queued:
        log.info("batch %s: %d of %d files sent", state.batch_id, sent, len(file_paths))
    return replace(state, queued=sent)


def record(state: BatchState, index: int, status: str) -> BatchState:
    """Count file ``index`` (the next one in order) as finished with ``status``."""
    if index != state.checked:
        raise ValueError(f"file {index} finished out of order (expected {state.checked})")
    counts = {**state.counts, status: state.counts.get(status, 0) + 1}
    problems, others = state.problems, state.others
    if status in PROBLEM_STATUSES:
        if len(problems) < RESULTS_CAP:
            problems = (*problems, index)
    elif len(others) < RESULTS_CAP:
        others = (*others, index)
    return replace(state, checked=index + 1, counts=counts, problems=problems, others=others)


def check_finished(
    state: BatchState,
    status_of: Callable[[int], str | None],
    limit: int = CHECK_LIMIT,
    keep_going: Callable[[], bool] = lambda: True,
) -> BatchState:
    """Count the sent files that finished, in order, up to the first one still running.

    ``status_of(index)`` is the file's final status, or None while its task runs.
    Stops after ``limit`` files or when ``keep_going()`` turns false (the run's time budget).
    """
    for _ in range(limit):
        if state.checked >= state.queued or not keep_going():
            break
        status = status_of(state.checked)
        if status is None:
            break
        state = record(state, state.checked, status)
    return state


def shown_indexes(state: BatchState) -> tuple[list[int], list[int]]:
    """(indexes for ``results``, indexes for ``failures``): problems first, then others, at most RESULTS_CAP."""
    failures = list(state.problems)
    room = RESULTS_CAP - len(failures)
    return sorted(failures + list(state.others[: max(0, room)])), failures


def summary(
    state: BatchState,
    total: int,
    result_of: Callable[[int], dict[str, Any]],
    now: float,
) -> dict[str, Any]:
    """The batch's result: counts for every file, per-file results for at most RESULTS_CAP of them."""
    shown, failing = shown_indexes(state)
    results = {index: result_of(index) for index in shown}
    counts = state.counts
    return {
        "batch_id": state.batch_id,
        "total": total,
        "succeeded": counts.get("success", 0),
        "duplicates": counts.get("duplicate", 0),
        "failed": counts.get("failed", 0),
        "rejected": counts.get("rejected", 0),
        "results": [results[i] for i in shown],
        "results_complete": len(shown) == total,
        "failures": [results[i] for i in failing],
        "duration_s": round(now - state.started, 3),
    }


def per_file_result(path: str, state_name: str, value: Any) -> dict[str, Any]:
    """A child's result; a child that failed outright (no result dict) still gets an entry."""
    if state_name == "SUCCESS" and isinstance(value, dict):
        return value
    error_type = getattr(value, "error_type", None) or type(value).__name__
    return {"status": "failed", "path": path, "error_type": error_type, "error": str(value) or state_name}
