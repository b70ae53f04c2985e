"""What every dashboard section shares: plain errors, a Redis client that never waits, sizes, times, one palette."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import redis

from background_tasks.errors import MidasError
from background_tasks.ops import monitoring
from background_tasks.settings import Settings
from background_tasks.storage.dashboard_queries import database_problem

# One meaning per colour, on every chart and table (issue 18, item 7): green is good, amber needs a look,
# red is bad; grey is neither, blue a measured value (not a verdict).
GREEN = "#2e9e44"
AMBER = "#f0a202"
RED = "#d62728"
GREY = "#9e9e9e"
BLUE = "#1f77b4"
#: the colour of each status word MIDAS shows (health, task outcome, document status)
STATUS_COLOURS: dict[str, str] = {
    "ok": GREEN,
    "success": GREEN,
    "succeeded": GREEN,
    "warning": AMBER,
    "rejected": AMBER,
    "retry": AMBER,
    "critical": RED,
    "failed": RED,
    "failure": RED,
    "other": GREY,
    "unknown": GREY,
}


def status_colour(status: str | None) -> str:
    """The palette's colour for a status word (grey for one it does not know)."""
    return STATUS_COLOURS.get(str(status or "").lower(), GREY)


def plain_error(exc: BaseException) -> str:
    """One line a person can act on, never a traceback."""
    problem = database_problem(exc)
    if problem is not None:
        return problem
    if isinstance(exc, redis.RedisError):
        return f"Redis error: {exc}"
    if isinstance(exc, MidasError):
        return exc.message
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def redis_client(settings: Settings) -> redis.Redis:
    """A client that gives up at once, so a page is never held up by a Redis that is down."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        settings.broker_url,
        socket_timeout=monitoring.REDIS_TIMEOUT,
        socket_connect_timeout=monitoring.REDIS_TIMEOUT,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


def utc_series(values: Sequence[Any]) -> pd.Series:
    """Datetimes from the database (aware, or naive UTC from SQLite) as a UTC pandas column."""
    return pd.to_datetime(pd.Series(list(values), dtype="object"), utc=True)


def human_size(size: int | None) -> str:
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def flower_url(settings: Settings, host: str = "localhost") -> str:
    return f"http://{host}:{settings.flower_port}/flower/"
