"""Sending the watcher's tasks, with a pending list for when the broker is down.

Split out of ``watcher_core`` (which re-exports these names).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from background_tasks import keys
from background_tasks.errors import TransientError

log = logging.getLogger("background_tasks.watcher.core")  # the name its lines had before the split

Clock = Callable[[], float]

FILE_TASK = keys.PROCESS_DOCUMENT_FILE
BATCH_TASK = keys.PROCESS_DOCUMENT_BATCH


@dataclass(frozen=True)
class FileJob:
    """A stable file chosen for processing."""

    path: Path
    st: os.stat_result
    sha256: str | None
    task_id: str
    stable_at: float


@dataclass
class Outgoing:
    """One message to send: a file task or a batch task, with its id fixed before the first attempt."""

    task_name: str
    args: list[Any]
    jobs: list[FileJob]
    task_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    attempts: int = 0

    @classmethod
    def single(cls, job: FileJob) -> Outgoing:
        return cls(FILE_TASK, [str(job.path)], [job], task_id=job.task_id)

    @classmethod
    def batch(cls, jobs: list[FileJob]) -> Outgoing:
        return cls(BATCH_TASK, [[str(j.path) for j in jobs]], list(jobs))


class PendingQueue:
    """Messages in order, sent as soon as the broker takes them.

    ``send`` raises ``TransientError`` while the broker is unreachable; the
    queue then waits with exponential backoff (``backoff_start`` doubling up to
    ``backoff_max``) and keeps every message. Other exceptions are logged with
    their traceback and retried the same way: nothing is dropped.
    """

    def __init__(
        self,
        send: Callable[[Outgoing], None],
        clock: Clock = time.monotonic,
        backoff_start: float = 0.5,
        backoff_max: float = 30.0,
        max_per_flush: int = 500,
    ) -> None:
        self.send = send
        self.clock = clock
        self.backoff_start = backoff_start
        self.backoff_max = backoff_max
        self.max_per_flush = max_per_flush
        self._items: deque[Outgoing] = deque()
        self._failures = 0
        self._retry_at = 0.0
        self._down_since: float | None = None
        self._last_warning = 0.0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def files(self) -> int:
        return sum(len(item.jobs) for item in self._items)

    @property
    def broker_down(self) -> bool:
        return self._down_since is not None

    def add(self, item: Outgoing) -> None:
        self._items.append(item)

    def next_attempt(self) -> float | None:
        return self._retry_at if self._items else None

    def flush(self, force: bool = False) -> list[Outgoing]:
        """Send what is waiting (unless backing off); return what was sent."""
        now = self.clock()
        if not self._items or (now < self._retry_at and not force):
            return []
        sent: list[Outgoing] = []
        while self._items and len(sent) < self.max_per_flush:
            item = self._items[0]
            item.attempts += 1
            try:
                self.send(item)
            except Exception as exc:
                self._failed(item, exc, now)
                break
            self._items.popleft()
            sent.append(item)
        if sent and self._down_since is not None:
            log.warning(
                "broker reachable again after %.1f s; sent %d waiting message(s), %d still waiting",
                now - self._down_since,
                len(sent),
                len(self._items),
            )
            self._down_since = None
        if sent:
            self._failures = 0
            self._retry_at = 0.0
        return sent

    def _failed(self, item: Outgoing, exc: Exception, now: float) -> None:
        self._failures += 1
        delay = min(self.backoff_max, self.backoff_start * 2 ** (self._failures - 1))
        self._retry_at = now + delay
        waiting = self.files
        if not isinstance(exc, TransientError):
            log.error("sending %s failed unexpectedly; kept, retry in %.1f s", item.task_name, delay, exc_info=exc)
        elif self._down_since is None:
            self._down_since = now
            self._last_warning = now
            log.warning("broker unreachable (%s); %d file(s) wait, retry in %.1f s", exc, waiting, delay)
        elif now - self._last_warning >= 60:
            self._last_warning = now
            log.warning(
                "broker still unreachable after %.0f s (%s); %d file(s) wait", now - self._down_since, exc, waiting
            )
        else:
            log.debug("broker still unreachable; retry in %.1f s", delay)
