"""Tasks that misbehave on purpose, loaded into test workers through MIDAS_EXTRA_TASK_MODULES."""

from __future__ import annotations

import os
import signal
import time

import redis

from celery_config import app


def _count(key: str) -> int:
    client = redis.Redis.from_url(app.conf.broker_url)
    return int(client.incr(key))


@app.task(name="tests.fault_tasks.crash_self")
def crash_self(counter_key: str) -> None:
    """Counts its own runs in Redis, then kills its own process: the worst task there is."""
    _count(counter_key)
    os.kill(os.getpid(), signal.SIGKILL)


@app.task(name="tests.fault_tasks.slow_count")
def slow_count(counter_key: str, seconds: float) -> int:
    """Takes a while, then counts a completed run (to prove warm shutdown lets it finish)."""
    time.sleep(seconds)
    return _count(counter_key)
