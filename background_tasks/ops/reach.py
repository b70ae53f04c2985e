"""How the ops functions reach Redis and the Celery app, and how they word an error.

Short timeouts and no retries: a health check must answer "Redis is down" within seconds,
not wait for it to come back.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from background_tasks.settings import Settings

#: Seconds to wait for workers to answer a ping / inspect request.
CONTROL_TIMEOUT = 1.0
REDIS_TIMEOUT = 2.0


def redis_client(settings: Settings) -> redis.Redis:
    """A client of the broker's Redis that gives up after ``REDIS_TIMEOUT`` without retrying."""
    return redis.Redis.from_url(
        settings.broker_url,
        socket_timeout=REDIS_TIMEOUT,
        socket_connect_timeout=REDIS_TIMEOUT,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


def default_app() -> Any:
    """The project's Celery app, imported late: ``celery_config`` imports the task modules."""
    from celery_config import app

    return app


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()
