"""The ledger reaper: send again every ledgered task that nobody holds any more.

Two things lose a task: kombu's Redis transport pops a message and only then records it as
unacknowledged (a worker killed in between loses it), and a Redis restarted without its
append-only file forgets every queue. And a worker killed outright keeps its tasks in the
unacknowledged set until the visibility timeout (an hour by default). The ledger knows every
submission; the reaper compares its open entries with what the broker and the workers hold:

- a ``queued`` entry past its grace period that is in no queue and in no live worker's
  active/reserved/scheduled list is sent again, with the same task id (a message left only in
  the unacknowledged set was prefetched by a worker that no longer answers);
- a ``running`` entry whose lease ran out (its worker stopped renewing it) and that no live
  worker is running is sent again; its message left in the unacknowledged set is removed, so
  the visibility timeout does not deliver it a second time.

Sending again never duplicates anything: processing is idempotent by content hash, and the
same task id keeps one result. Entries that cannot be sent again end ``failed`` with the
reason (unknown task, arguments not kept, file gone, re-sent too often); the reaper never
loops on them.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from background_tasks.keys import PROCESS_DOCUMENT_FILE
from background_tasks.settings import Settings
from background_tasks.statuses import LedgerState
from background_tasks.storage import ledger as ledger_store
from background_tasks.storage.ledger import Due

log = logging.getLogger(__name__)

#: the task id in a kombu message's headers (the body is base64, so it cannot match)
_ID = re.compile(rb'"id": ?"([^"]{1,155})"')
_PAGE = 1000
#: how long a claimed entry is left alone before the reaper looks at it again, in grace periods
HOLD_GRACES = 5


@dataclass(frozen=True)
class Holdings:
    """The task ids the broker and the workers hold right now."""

    queued: frozenset[str]
    #: task id -> delivery tags of its messages in the unacknowledged set
    unacked: dict[str, list[str]]
    in_workers: frozenset[str]
    workers_answered: bool

    def holds(self, task_id: str) -> bool:
        """In a queue or with a live worker. A message only in the unacknowledged set belongs to a
        worker that did not answer: dead, unless none answered at all (then nobody can tell)."""
        if task_id in self.queued or task_id in self.in_workers:
            return True
        return task_id in self.unacked and not self.workers_answered


@dataclass(frozen=True)
class ReapReport:
    """What one run of the reaper did."""

    looked_at: int = 0
    resent: list[str] = field(default_factory=list)
    held: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    unacked_removed: int = 0
    send_errors: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "looked_at": self.looked_at,
            "resent": len(self.resent),
            "resent_ids": self.resent[:50],
            "held": self.held,
            "failed": len(self.failed),
            "failed_reasons": dict(list(self.failed.items())[:50]),
            "unacked_removed": self.unacked_removed,
            "send_errors": self.send_errors,
        }


# -- what the broker holds -----------------------------------------------------------------


def _transport(app: Any) -> tuple[str, list[int], str, str]:
    from kombu.transport.redis import PRIORITY_STEPS, Channel

    options = dict(app.conf.broker_transport_options or {})
    return (
        options.get("sep", Channel.sep),
        list(options.get("priority_steps", PRIORITY_STEPS)),
        options.get("unacked_key", Channel.unacked_key),
        options.get("unacked_index_key", Channel.unacked_index_key),
    )


def _queue_names(app: Any) -> list[str]:
    return [q.name for q in (app.conf.task_queues or ())] or ["default", "documents", "analysis", "monitoring"]


def _ids_in(raw: bytes | str | None) -> str | None:
    if raw is None:
        return None
    data = raw.encode() if isinstance(raw, str) else raw
    match = _ID.search(data)
    return match.group(1).decode(errors="replace") if match else None


def queued_ids(client: Any, app: Any, wanted: set[str]) -> set[str]:
    """Which of ``wanted`` wait in a queue (every priority list), read page by page until all are found."""
    sep, steps, _unacked, _index = _transport(app)
    found: set[str] = set()
    for queue in _queue_names(app):
        for step in steps:
            key = f"{queue}{sep}{step}" if step else queue
            start = 0
            while found != wanted:
                page = client.lrange(key, start, start + _PAGE - 1)
                if not page:
                    break
                for raw in page:
                    task_id = _ids_in(raw)
                    if task_id in wanted:
                        found.add(task_id)
                start += _PAGE
    return found


def unacked_ids(client: Any, app: Any) -> dict[str, list[str]]:
    """Task id -> delivery tags of the messages in the unacknowledged set."""
    _sep, _steps, unacked_key, _index = _transport(app)
    held: dict[str, list[str]] = {}
    for tag, value in client.hscan_iter(unacked_key, count=500):
        task_id = _ids_in(value)
        if task_id:
            held.setdefault(task_id, []).append(tag.decode() if isinstance(tag, bytes) else str(tag))
    return held


_executor: tuple[int, ThreadPoolExecutor] | None = None


def _inspectors() -> ThreadPoolExecutor:
    """Three long-lived threads of this process: each has its own reply queue (kombu names it by
    process and thread), so the same few queues serve every pass instead of new ones each time."""
    global _executor
    if _executor is None or _executor[0] != os.getpid():
        _executor = (os.getpid(), ThreadPoolExecutor(max_workers=3, thread_name_prefix="midas-reaper-inspect"))
    return _executor[1]


def _inspect(app: Any, timeout: float, what: str) -> dict[str, Any]:
    return getattr(app.control.inspect(timeout=timeout), what)() or {}


def worker_ids(app: Any, timeout: float = 1.0) -> tuple[set[str], bool]:
    """Task ids the workers run, hold reserved or scheduled; and whether any worker answered."""
    try:
        # Each inspection waits its whole timeout for replies (the number of workers is unknown), so the
        # three are asked at once: a reaper pass holds its pool process one timeout, not three.
        pool = _inspectors()
        asked = [pool.submit(_inspect, app, timeout, what) for what in ("active", "reserved", "scheduled")]
        replies = [future.result() for future in asked]
    except Exception as exc:
        log.warning("reaper: could not ask the workers what they hold: %s", exc)
        return set(), False
    ids: set[str] = set()
    answered = False
    for reply in replies:
        for tasks in reply.values():
            answered = True
            for task in tasks or ():
                request = task.get("request", task) if isinstance(task, dict) else {}
                if request.get("id"):
                    ids.add(request["id"])
    return ids, answered


def holdings(client: Any, app: Any, wanted_queued: set[str], timeout: float = 1.0) -> Holdings:
    """Workers first, then unacknowledged, then queues: a message moves the other way, so it is seen."""
    in_workers, answered = worker_ids(app, timeout)
    unacked = unacked_ids(client, app)
    queued = queued_ids(client, app, wanted_queued - in_workers) if wanted_queued else set()
    return Holdings(frozenset(queued), unacked, frozenset(in_workers), answered)


def remove_unacked(client: Any, app: Any, tags: Iterable[str]) -> int:
    _sep, _steps, unacked_key, index_key = _transport(app)
    tags = list(tags)
    if not tags:
        return 0
    pipe = client.pipeline()
    pipe.hdel(unacked_key, *tags)
    pipe.zrem(index_key, *tags)
    return int(pipe.execute()[0] or 0)


# -- deciding --------------------------------------------------------------------------------


def known_tasks(app: Any) -> set[str]:
    """The task names ``app`` can run: its own and those of the task modules it includes."""
    app.loader.import_default_modules()
    return set(app.tasks)


def why_not_resend(due: Due, known: Collection[str], settings: Settings) -> str | None:
    """The reason an entry cannot be sent again, or None when it can."""
    if due.name not in known:
        return f"unknown task {due.name!r}"
    call = due.call
    if call is None or not isinstance(call.get("args", []), list) or not isinstance(call.get("kwargs", {}), dict):
        return "its arguments were not kept (too large or not JSON) and it cannot be sent again"
    if due.resends >= settings.max_redeliveries + 2:
        return f"sent again {due.resends} times and never finished"
    if due.name == PROCESS_DOCUMENT_FILE and call.get("args"):
        path = call["args"][0]
        if isinstance(path, str) and os.path.isabs(path) and not os.path.lexists(path):
            roots = [r for r in settings.allowed_roots if path.startswith(str(r))]
            if any(os.path.isdir(r) for r in roots):  # this host sees the folder, so the file is gone
                return f"file is gone: {path}"
    return None


def reap(
    settings: Settings,
    app: Any,
    client: Any,
    now: datetime | None = None,
    limit: int = 500,
    known: Collection[str] | None = None,
) -> ReapReport:
    """One pass over the ledger's due entries (``known``: task names that exist; default ``app``'s)."""
    now = now or datetime.now(UTC)
    url = settings.database_url_resolved
    hold = max(settings.ledger_grace_seconds, settings.ledger_lease_seconds) * HOLD_GRACES
    due = ledger_store.claim_due(url, now, hold, limit)
    if not due:
        return ReapReport()
    known = known_tasks(app) if known is None else known
    wanted = {d.task_id for d in due if d.state is LedgerState.QUEUED}
    held = holdings(client, app, wanted)
    resend: list[Due] = []
    failed: dict[str, str] = {}
    kept = 0
    removed = 0
    for entry in due:
        if entry.state is LedgerState.QUEUED and held.holds(entry.task_id):
            kept += 1
            continue
        if entry.state is LedgerState.RUNNING and entry.task_id in held.in_workers:
            kept += 1  # its worker runs it (the lease renewal failed): leave it
            continue
        reason = why_not_resend(entry, known, settings)
        if reason:
            failed[entry.task_id] = reason
            ledger_store.fail(url, entry.task_id, reason, now)
            log.warning("reaper: %s[%s] failed for good: %s", entry.name, entry.task_id, reason)
            continue
        if entry.task_id in held.unacked:
            removed += remove_unacked(client, app, held.unacked[entry.task_id])
        resend.append(entry)
    ledger_store.mark_resent(url, [e.task_id for e in resend], now, settings.ledger_grace_seconds)
    sent: list[str] = []
    errors = 0
    for entry in resend:
        call = entry.call or {}
        try:
            app.send_task(
                entry.name,
                args=call.get("args", []),
                kwargs=call.get("kwargs", {}),
                task_id=entry.task_id,
                queue=entry.queue,
            )
            sent.append(entry.task_id)
            log.warning(
                "reaper: sent %s[%s] again (%s, %d earlier re-sends)",
                entry.name,
                entry.task_id,
                "lost from the broker" if entry.state is LedgerState.QUEUED else "its worker's lease ran out",
                entry.resends,
            )
        except Exception as exc:  # the broker is down: the entry is queued and looked at again
            errors += 1
            log.warning("reaper: could not send %s[%s] again: %s", entry.name, entry.task_id, exc)
    return ReapReport(
        looked_at=len(due), resent=sent, held=kept, failed=failed, unacked_removed=removed, send_errors=errors
    )
