"""Tasks of the ``default`` queue: a round-trip check and two diagnostics (``fail``, ``sleep``) any user can send."""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

from background_tasks import keys
from celery_config import app

log = logging.getLogger(__name__)


@app.task(name=keys.PING)
def ping(message: str = "pong") -> dict[str, Any]:
    """Proves broker, worker and result backend work end to end."""
    log.info("ping: %s", message)
    return {"message": message, "hostname": socket.gethostname(), "pid": os.getpid(), "time": time.time()}


class DiagnosticFailure(Exception):
    """Raised on purpose by ``fail``; never raised by real work."""


@app.task(bind=True, name=keys.FAIL)
def fail(self, message: str = "diagnostic failure", retries: int = 0, retry_delay: float = 1.0) -> None:
    """Fails on purpose, after retrying ``retries`` times, to check failure alerts and task history end to end.

    ``fail.delay("test")`` should produce a failure alert (email/webhook) and a
    ``failure`` row in the task history with this message.
    """
    log.warning("fail: attempt %d of %d: %s", self.request.retries + 1, retries + 1, message)
    if self.request.retries < retries:
        raise self.retry(exc=DiagnosticFailure(message), countdown=max(0.0, retry_delay), max_retries=retries)
    raise DiagnosticFailure(message)


@app.task(name=keys.SLEEP)
def sleep(seconds: float = 1.0) -> dict[str, Any]:
    """Occupies a worker process for ``seconds``, to watch queues, stuck-task detection and revoking work.

    Capped below the soft time limit so it never trips it.
    """
    limit = max(0.0, float(app.conf.task_soft_time_limit or 600) - 1)
    seconds = min(max(0.0, float(seconds)), limit)
    started = time.monotonic()
    time.sleep(seconds)
    return {"slept": round(time.monotonic() - started, 3)}
