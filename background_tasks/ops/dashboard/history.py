"""What was recorded: task history pages and details, the overview, performance, health samples.

The rows come from ``storage.dashboard_queries`` (each read served by an index,
counts capped); here they become the frames and figures the page lays out.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pandas as pd

from background_tasks.ops import health_verdict
from background_tasks.ops.dashboard.common import utc_series
from background_tasks.ops.ledger_health import ledger_figures, ledger_findings
from background_tasks.ops.task_history import STATES, utc
from background_tasks.settings import Settings
from background_tasks.storage import dashboard_queries as queries
from background_tasks.storage import health_samples
from background_tasks.storage.dashboard_queries import HISTORY_COLUMNS, HistoryFilter
from background_tasks.storage.schema import create_schema
from background_tasks.storage.store import DocumentStore

#: Counts of filtered task history stop here ("100,000+"), so a count never scans without bound.
COUNT_CAP = 100_000
#: Health samples drawn at most (the newest).
HEALTH_POINTS_MAX = 5000
#: Rows fetched at most for the performance figures of one window.
PERFORMANCE_ROWS_MAX = 500_000
#: The columns of a health sample the page charts and shows.
HEALTH_COLUMNS = (
    "taken_at",
    "status",
    "cpu_percent",
    "cpu_mean_percent",
    "memory_percent",
    "swap_percent",
    "data_disk_percent",
    "load_1",
    "redis_ok",
    "redis_latency_ms",
    "redis_used_memory",
    "workers",
    "active_tasks",
    "waiting_tasks",
    "watcher_age_s",
    "reasons",
    "pending",
)


# --------------------------------------------------------------------------
# Health samples (time series written by the health check)
# --------------------------------------------------------------------------


def health_series(url: str, hours: float = 24.0, now: float | None = None) -> pd.DataFrame:
    """Health samples of the last ``hours``, oldest first (the newest HEALTH_POINTS_MAX)."""
    now = time.time() if now is None else now
    rows = health_samples.since(url, utc(now - hours * 3600), HEALTH_COLUMNS, newest=HEALTH_POINTS_MAX)
    frame = pd.DataFrame(rows, columns=list(HEALTH_COLUMNS))
    frame["taken_at"] = utc_series(frame["taken_at"])
    frame["redis_used_mib"] = pd.to_numeric(frame["redis_used_memory"], errors="coerce") / (1024 * 1024)
    return frame


def latest_health(url: str) -> dict[str, Any] | None:
    """The newest stored health sample, or None."""
    data = health_samples.latest(url, HEALTH_COLUMNS)
    if data is None:
        return None
    data["taken_at"] = utc_series([data["taken_at"]])[0]
    return data


def stored_verdict(settings: Settings, now: float | None = None) -> dict[str, Any] | None:
    """The verdict of the newest stored health check (what every page and the live check show), or None."""
    create_schema(settings.database_url_resolved)
    return health_verdict.stored_verdict(settings, now)


def cpu_over_window(settings: Settings, current: float | None, now: float | None = None) -> tuple[float | None, int]:
    """CPU as health judges it: the mean of ``current`` and the stored checks of MIDAS_CPU_WINDOW_SECONDS."""
    judge = health_verdict.judge_for(settings, clock=(lambda: now) if now is not None else time.time)
    return judge.cpu_mean(current, health_verdict.stored_history(settings.database_url_resolved, judge))


# --------------------------------------------------------------------------
# Task history
# --------------------------------------------------------------------------


def history_page(url: str, flt: HistoryFilter, page: int = 1, page_size: int = 50) -> tuple[pd.DataFrame, int, bool]:
    """One page of task history, newest first: (rows, matching count, count capped at COUNT_CAP)."""
    create_schema(url)
    page_size = max(1, min(int(page_size), 500))
    page = max(1, int(page))
    rows, total = queries.history_rows(url, flt, limit=page_size, offset=(page - 1) * page_size, cap=COUNT_CAP)
    frame = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
    for column in ("sent_at", "started_at", "finished_at"):
        frame[column] = utc_series(frame[column])
    return frame, min(total, COUNT_CAP), total > COUNT_CAP


def task_detail(url: str, task_id: str) -> dict[str, Any] | None:
    """Everything recorded about one task (arguments summary, result, error, traceback, timings)."""
    create_schema(url)
    data = queries.task_row(url, task_id)
    if data is None:
        return None
    for column in ("sent_at", "received_at", "started_at", "finished_at"):
        value = data.get(column)
        data[column] = utc_series([value])[0] if value is not None else None
    return data


def distinct_values(url: str, column: str) -> list[str]:
    """Task names or queues seen (each served by its own index); another column is a ``ValueError``."""
    create_schema(url)
    return queries.distinct_task_values(url, column)


def state_counts(url: str, since: float, now: float | None = None) -> dict[str, int]:
    """Tasks per final state among those finished since ``since`` (index on ``finished_at``)."""
    create_schema(url)
    return queries.finished_state_counts(url, since, time.time() if now is None else now)


def success_rate(counts: dict[str, int]) -> float | None:
    """Successes over successes and failures (retries and revokes are not outcomes); None when none finished."""
    done = counts.get("success", 0) + counts.get("failure", 0)
    return counts.get("success", 0) / done if done else None


def running_in_history(url: str) -> int:
    """Tasks the history says are running right now (state 'started', index on ``state``)."""
    create_schema(url)
    return queries.count_in_state(url, "started")


def overview(url: str, now: float | None = None) -> dict[str, Any]:
    """Success rates over the last hour and day, tasks running per the history, and document counts."""
    now = time.time() if now is None else now
    hour = state_counts(url, now - 3600, now)
    day = state_counts(url, now - 86400, now)
    docs = DocumentStore(url).stats()
    return {
        "last_hour": hour,
        "last_day": day,
        "success_rate_1h": success_rate(hour),
        "success_rate_24h": success_rate(day),
        "running": running_in_history(url),
        "documents": docs,
    }


def ledger_summary(settings: Settings) -> dict[str, Any]:
    """The intake ledger's counts and what the health check would say of them."""
    figures = ledger_figures(settings)
    return {**figures, "findings": [f"{level}: {reason}" for level, reason in ledger_findings(settings, figures)]}


def window_start(choice: str, now: float | None = None) -> float | None:
    """Epoch start of a named window ('last hour', 'last 24 hours', 'last 7 days', 'all')."""
    now = time.time() if now is None else now
    spans = {"last hour": timedelta(hours=1), "last 24 hours": timedelta(days=1), "last 7 days": timedelta(days=7)}
    span = spans.get(choice)
    return None if span is None else now - span.total_seconds()


# --------------------------------------------------------------------------
# Performance
# --------------------------------------------------------------------------


def throughput(url: str, hours: float = 24.0, now: float | None = None) -> tuple[pd.DataFrame, str]:
    """Finished tasks per minute (windows up to 6 h) or per hour, by outcome: (frame, bucket unit)."""
    create_schema(url)
    now = time.time() if now is None else now
    unit = "minute" if hours <= 6 else "hour"
    rows = queries.finished_per_bucket(url, now - hours * 3600, now, unit)
    frame = pd.DataFrame(rows, columns=["bucket", "state", "count"])
    if frame.empty:
        return pd.DataFrame(columns=["succeeded", "failed", "other"]), unit
    frame["bucket"] = utc_series(frame["bucket"])
    frame["outcome"] = frame["state"].map({"success": "succeeded", "failure": "failed"}).fillna("other")
    table = frame.pivot_table(index="bucket", columns="outcome", values="count", aggfunc="sum", fill_value=0)
    for column in ("succeeded", "failed", "other"):
        if column not in table.columns:
            table[column] = 0
    return table[["succeeded", "failed", "other"]].astype(int).sort_index(), unit


PERFORMANCE_COLUMNS = (
    "task",
    "finished",
    "succeeded",
    "failed",
    "failure rate",
    "run p50 (s)",
    "run p95 (s)",
    "wait p50 (s)",
    "wait p95 (s)",
)


def performance_by_name(url: str, hours: float = 24.0, now: float | None = None) -> pd.DataFrame:
    """Per task name over the window: finished, failure rate, run time and wait time p50/p95.

    Percentiles interpolate linearly, like ``monitoring.percentile`` and the task report.
    """
    create_schema(url)
    now = time.time() if now is None else now
    rows = queries.finished_timings(url, now - hours * 3600, now, PERFORMANCE_ROWS_MAX)
    if not rows:
        return pd.DataFrame(columns=list(PERFORMANCE_COLUMNS))
    frame = pd.DataFrame(rows, columns=["task", "state", "runtime_s", "wait_s"])
    frame["task"] = frame["task"].fillna("unknown")
    frame["runtime_s"] = pd.to_numeric(frame["runtime_s"], errors="coerce")
    frame["wait_s"] = pd.to_numeric(frame["wait_s"], errors="coerce")
    frame["ok"] = frame["state"] == "success"
    frame["bad"] = frame["state"] == "failure"
    outcome = frame[frame["ok"] | frame["bad"]]
    grouped = frame.groupby("task")
    out = pd.DataFrame(
        {
            "finished": grouped.size(),
            "succeeded": grouped["ok"].sum(),
            "failed": grouped["bad"].sum(),
            "wait p50 (s)": grouped["wait_s"].quantile(0.5),
            "wait p95 (s)": grouped["wait_s"].quantile(0.95),
        }
    )
    runs = outcome.groupby("task")["runtime_s"]
    out["run p50 (s)"] = runs.quantile(0.5)
    out["run p95 (s)"] = runs.quantile(0.95)
    decided = out["succeeded"] + out["failed"]
    out["failure rate"] = (out["failed"] / decided).where(decided > 0)
    out = out.reset_index().sort_values(["finished", "task"], ascending=[False, True])
    return out[list(PERFORMANCE_COLUMNS)].reset_index(drop=True)


__all__ = [
    "COUNT_CAP",
    "HEALTH_COLUMNS",
    "HEALTH_POINTS_MAX",
    "HISTORY_COLUMNS",
    "PERFORMANCE_COLUMNS",
    "PERFORMANCE_ROWS_MAX",
    "STATES",
    "HistoryFilter",
    "cpu_over_window",
    "distinct_values",
    "health_series",
    "history_page",
    "latest_health",
    "ledger_summary",
    "overview",
    "performance_by_name",
    "running_in_history",
    "state_counts",
    "stored_verdict",
    "success_rate",
    "task_detail",
    "throughput",
    "window_start",
]
