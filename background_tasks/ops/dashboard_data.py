"""What the Streamlit dashboard shows, as plain functions returning dataframes and dicts.

The page (``Streamlit_Task_Monitoring.py``) only lays these out, so every
figure it shows can be tested and benchmarked without a browser. Queries are
read-only (apart from creating missing tables once, as every MIDAS process
does) and each one is served by an index of ``task_history``, ``documents``,
``chunks`` or ``health_samples``: filters and ordering use indexed columns,
pages use LIMIT/OFFSET over the ``sent_at`` index, counts are capped.

Live state (workers, queues, health) comes from ``background_tasks.ops.monitoring``;
the actions (upload, retry, health check, report) send the same Celery tasks
the rest of MIDAS uses.
"""

from __future__ import annotations

import html
import logging
import math
import os
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import redis
from sqlalchemy import Select, func, or_, select
from sqlalchemy import exc as sa_exc

from background_tasks.errors import FileTooLarge, MidasError, UnsafeResult
from background_tasks.ops import monitoring
from background_tasks.ops.ledger_health import ledger_figures, ledger_findings
from background_tasks.ops.monitoring import HealthSample
from background_tasks.ops.task_history import STATES, TaskRecord, utc
from background_tasks.settings import Settings
from background_tasks.storage.db import get_engine, read_scope
from background_tasks.storage.schema import create_schema
from background_tasks.storage.store import ChunkRow, DocumentStore

log = logging.getLogger(__name__)

PROCESS_DOCUMENT = "background_tasks.document_tasks.process_document_file"
HEALTH_CHECK = "background_tasks.monitoring_tasks.system_health_check"
TASK_REPORT = "background_tasks.monitoring_tasks.generate_task_report"

#: Seconds to wait for workers to answer the dashboard's live questions.
LIVE_TIMEOUT = 0.5
#: Counts of filtered task history stop here ("100,000+"), so a count never scans without bound.
COUNT_CAP = 100_000
#: Health samples drawn at most (the newest).
HEALTH_POINTS_MAX = 5000
#: Rows fetched at most for the performance figures of one window.
PERFORMANCE_ROWS_MAX = 500_000
LOG_TAIL_BYTES = 64 * 1024

_MARK_START = "\ue010"
_MARK_END = "\ue011"

# --------------------------------------------------------------------------
# Plumbing
# --------------------------------------------------------------------------


def plain_error(exc: BaseException) -> str:
    """One line a person can act on, never a traceback."""
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError) or (
        isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated
    ):
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return f"the database could not be reached ({detail[0] if detail else type(exc).__name__})"
    if isinstance(exc, sa_exc.SQLAlchemyError):
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return f"database error: {detail[0] if detail else type(exc).__name__}"
    if isinstance(exc, redis.RedisError):
        return f"Redis error: {exc}"
    if isinstance(exc, MidasError):
        return exc.message
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _redis_client(settings: Settings) -> redis.Redis:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        settings.broker_url,
        socket_timeout=monitoring.REDIS_TIMEOUT,
        socket_connect_timeout=monitoring.REDIS_TIMEOUT,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


def _dialect(url: str) -> str:
    return get_engine(url).dialect.name


def _utc_series(values: Sequence[Any]) -> pd.Series:
    """Datetimes from the database (aware, or naive UTC from SQLite) as a UTC pandas column."""
    return pd.to_datetime(pd.Series(list(values), dtype="object"), utc=True)


def flower_url(settings: Settings, host: str = "localhost") -> str:
    return f"http://{host}:{settings.flower_port}/flower/"


# --------------------------------------------------------------------------
# Live state: Redis, workers, queues, health
# --------------------------------------------------------------------------


def _disk_paths(settings: Settings) -> dict[str, Path]:
    from background_tasks.processing.intake import default_watch_dirs

    paths = {"data_dir": settings.data_dir}
    for watched in default_watch_dirs(settings):
        paths[f"watch:{watched}"] = watched
    return paths


@dataclass(frozen=True)
class WorkerActivity:
    """Per worker: active, reserved and scheduled tasks (as ``monitoring.check_queues`` lays them out)."""

    workers: dict[str, dict[str, list[dict[str, Any]]]]
    stuck: list[dict[str, Any]]
    error: str | None
    asked: bool  # the broadcast itself worked (no worker answering is not an error of the asking)


def worker_activity(
    settings: Settings, app: Any, timeout: float = LIVE_TIMEOUT, now: float | None = None
) -> WorkerActivity:
    """Each worker's active, reserved and scheduled tasks, laid out as ``monitoring.check_queues`` does."""
    now = time.time() if now is None else now
    try:
        hosts, active, reserved, scheduled = monitoring.ask_workers(app, timeout)
    except Exception as exc:  # broker trouble during a broadcast
        return WorkerActivity({}, [], f"could not ask the workers: {plain_error(exc)}", False)
    if not hosts:
        return WorkerActivity({}, [], "no Celery worker answered a ping", True)
    workers, stuck = monitoring.lay_out_workers(hosts, active, reserved, scheduled, now, settings.stuck_task_seconds)
    return WorkerActivity(workers, stuck, None, True)


_cpu_lock = threading.Lock()
_cpu_state: dict[str, Any] = {"times": psutil.cpu_times(), "at": time.monotonic()}


def _busy_and_total(times: Any) -> tuple[float, float]:
    total = sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)  # guest is in user
    return total - times.idle - getattr(times, "iowait", 0.0), total


def cpu_percent_now(min_window: float = 1.0, sample: float = 0.2) -> float:
    """Host CPU use averaged since the previous reading when that is at least ``min_window`` s old.

    The page is drawn every few seconds, so the time in between is the natural window and steadier
    than a short sample taken while the page itself is being drawn; right after a reading, a
    ``sample``-second one is taken instead. (psutil's own "since the last call" is kept per
    thread, and every Streamlit run is a new thread, so it cannot be used here.)
    """
    with _cpu_lock:
        start, started = _cpu_state["times"], _cpu_state["at"]
    if time.monotonic() - started < min_window:
        start = psutil.cpu_times()
        time.sleep(sample)
    end = psutil.cpu_times()
    with _cpu_lock:
        _cpu_state.update(times=end, at=time.monotonic())
    busy1, total1 = _busy_and_total(start)
    busy2, total2 = _busy_and_total(end)
    if total2 <= total1:
        return 0.0
    return round(min(100.0, max(0.0, 100.0 * (busy2 - busy1) / (total2 - total1))), 1)


def live_snapshot(
    settings: Settings, app: Any, timeout: float = LIVE_TIMEOUT, cpu_interval: float | None = None
) -> dict:
    """Redis, workers (active/reserved/scheduled), queue depths, host figures and the health verdict, now.

    ``cpu_interval`` None: CPU use since the previous snapshot (see ``cpu_percent_now``).
    Never raises because a service is down: Redis unreachable gives ``redis.ok`` False and empty
    worker/queue sections; the verdict and its reasons say what is wrong.
    """
    now = time.time()
    if cpu_interval is None:
        system = {**monitoring.system_figures(None), "cpu_percent": cpu_percent_now()}
    else:
        system = monitoring.system_figures(cpu_interval)
    disks = monitoring.disk_figures(_disk_paths(settings))
    client = _redis_client(settings)
    try:
        redis_info = monitoring.redis_figures(client)
        watcher = monitoring.watcher_figures(client, now) if redis_info.get("ok") else {}
    finally:
        client.close()
    queues: dict[str, dict[str, Any]] = {}
    activity = WorkerActivity({}, [], "skipped: Redis is unreachable", False)
    celery_info: dict[str, Any] | None = None
    if redis_info.get("ok"):
        client = _redis_client(settings)
        try:
            queues = monitoring.queue_depths(client, app, now=now)
        except (redis.RedisError, OSError) as exc:
            redis_info = {**redis_info, "queues_error": plain_error(exc)}
        finally:
            client.close()
        activity = worker_activity(settings, app, timeout=timeout, now=now)
        if activity.asked:
            celery_info = {"ok": True, "responding": len(activity.workers)}
        else:
            celery_info = {"ok": False, "error": activity.error, "responding": 0}
    workers, stuck, workers_error = activity.workers, activity.stuck, activity.error
    status, reasons = monitoring.evaluate(settings, system, disks, redis_info, celery_info, queues, watcher)
    return {
        "checked_at": now,
        "status": status,
        "reasons": list(reasons),
        "system": system,
        "disks": disks,
        "redis": redis_info,
        "queues": queues,
        "workers": workers,
        "workers_error": workers_error,
        "stuck": stuck,
        "watcher": watcher,
        "active": sum(len(w.get("active", [])) for w in workers.values()),
        "reserved": sum(len(w.get("reserved", [])) for w in workers.values()),
        "scheduled": sum(len(w.get("scheduled", [])) for w in workers.values()),
        "waiting": sum(q.get("waiting", 0) for q in queues.values()),
    }


def queue_table(snapshot: dict[str, Any]) -> pd.DataFrame:
    """Queue depths from a snapshot: waiting, unacknowledged, oldest wait."""
    rows = [
        {
            "queue": name,
            "waiting": q.get("waiting", 0),
            "unacknowledged": q.get("unacked", 0),
            "oldest waiting (s)": q.get("oldest_waiting_s"),
        }
        for name, q in (snapshot.get("queues") or {}).items()
    ]
    return pd.DataFrame(rows, columns=["queue", "waiting", "unacknowledged", "oldest waiting (s)"])


def worker_tables(snapshot: dict[str, Any]) -> dict[str, dict[str, pd.DataFrame]]:
    """Per worker, one table each of its active, reserved and scheduled tasks."""
    columns = {
        "active": ["id", "name", "queue", "running_s", "stuck", "args"],
        "reserved": ["id", "name", "args"],
        "scheduled": ["id", "name", "eta", "due_in_s"],
    }
    out: dict[str, dict[str, pd.DataFrame]] = {}
    for host, groups in sorted((snapshot.get("workers") or {}).items()):
        out[host] = {
            kind: pd.DataFrame([{c: _cell(t.get(c)) for c in cols} for t in groups.get(kind) or []], columns=cols)
            for kind, cols in columns.items()
        }
    return out


def _cell(value: Any) -> Any:
    """Lists and dicts (task arguments) as short text, so a table column has one type."""
    if isinstance(value, list | tuple | dict):
        text = repr(value)
        return text if len(text) <= 200 else text[:199] + "…"
    return value


def threshold_table(settings: Settings, snapshot: dict[str, Any]) -> pd.DataFrame:
    """Current host figures next to the thresholds that make health 'warning' and 'critical'."""
    system = snapshot.get("system") or {}
    rows: list[dict[str, Any]] = [
        {
            "measure": "CPU %",
            "current": system.get("cpu_percent"),
            "warning at": settings.cpu_warn_percent,
            "critical at": settings.cpu_crit_percent,
        },
        {
            "measure": "memory %",
            "current": system.get("memory_percent"),
            "warning at": settings.memory_warn_percent,
            "critical at": settings.memory_crit_percent,
        },
    ]
    for label, disk in (snapshot.get("disks") or {}).items():
        rows.append(
            {
                "measure": f"disk % ({label})",
                "current": disk.get("percent"),
                "warning at": settings.disk_warn_percent,
                "critical at": settings.disk_crit_percent,
            }
        )
    for name, queue in (snapshot.get("queues") or {}).items():
        rows.append(
            {
                "measure": f"queue {name} waiting",
                "current": queue.get("waiting"),
                "warning at": settings.queue_warn_length,
                "critical at": None,
            }
        )
    watcher = snapshot.get("watcher") or {}
    if watcher.get("present"):
        rows.append(
            {
                "measure": "watcher heartbeat age (s)",
                "current": watcher.get("age_s"),
                "warning at": settings.watcher_heartbeat_max_age,
                "critical at": None,
            }
        )
    frame = pd.DataFrame(rows, columns=["measure", "current", "warning at", "critical at"])
    frame["level"] = [_level(r["current"], r["warning at"], r["critical at"]) for r in rows]
    return frame


def _level(value: Any, warn: Any, crit: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "unknown"
    if crit is not None and value >= crit:
        return monitoring.CRITICAL
    if warn is not None and value >= warn:
        return monitoring.WARNING
    return monitoring.OK


# --------------------------------------------------------------------------
# Health samples (time series written by the health check)
# --------------------------------------------------------------------------

_HEALTH_COLUMNS = (
    "taken_at",
    "status",
    "cpu_percent",
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
)


def health_series(url: str, hours: float = 24.0, now: float | None = None) -> pd.DataFrame:
    """Health samples of the last ``hours``, oldest first (the newest HEALTH_POINTS_MAX)."""
    create_schema(url)
    now = time.time() if now is None else now
    cols = [getattr(HealthSample, c) for c in _HEALTH_COLUMNS]
    stmt = (
        select(*cols)
        .where(HealthSample.taken_at >= utc(now - hours * 3600))
        .order_by(HealthSample.taken_at.desc())
        .limit(HEALTH_POINTS_MAX)
    )
    with read_scope(url) as session:
        rows = session.execute(stmt).all()
    frame = pd.DataFrame([tuple(r) for r in reversed(rows)], columns=list(_HEALTH_COLUMNS))
    frame["taken_at"] = _utc_series(frame["taken_at"])
    frame["redis_used_mib"] = pd.to_numeric(frame["redis_used_memory"], errors="coerce") / (1024 * 1024)
    return frame


def latest_health(url: str) -> dict[str, Any] | None:
    """The newest stored health sample, or None."""
    create_schema(url)
    cols = [getattr(HealthSample, c) for c in _HEALTH_COLUMNS]
    with read_scope(url) as session:
        row = session.execute(select(*cols).order_by(HealthSample.taken_at.desc()).limit(1)).first()
    if row is None:
        return None
    data = dict(zip(_HEALTH_COLUMNS, row, strict=True))
    data["taken_at"] = _utc_series([data["taken_at"]])[0]
    return data


# --------------------------------------------------------------------------
# Task history
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryFilter:
    """What the task history shows: empty tuples mean 'any'; times are epoch seconds on ``sent_at``."""

    names: tuple[str, ...] = ()
    states: tuple[str, ...] = ()
    queues: tuple[str, ...] = ()
    since: float | None = None
    until: float | None = None
    text: str = ""


HISTORY_COLUMNS = (
    "task_id",
    "name",
    "state",
    "queue",
    "worker",
    "sent_at",
    "started_at",
    "finished_at",
    "wait_s",
    "runtime_s",
    "retries",
    "args_summary",
    "error_type",
)


def _like(term: str) -> str:
    return "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _filtered(stmt: Select, flt: HistoryFilter) -> Select:
    if flt.names:
        stmt = stmt.where(TaskRecord.name.in_(flt.names))
    if flt.states:
        stmt = stmt.where(TaskRecord.state.in_(flt.states))
    if flt.queues:
        stmt = stmt.where(TaskRecord.queue.in_(flt.queues))
    if flt.since is not None:
        stmt = stmt.where(TaskRecord.sent_at >= utc(flt.since))
    if flt.until is not None:
        stmt = stmt.where(TaskRecord.sent_at <= utc(flt.until))
    text = (flt.text or "").strip()[:200]
    if text:
        pattern = _like(text)
        stmt = stmt.where(
            or_(
                TaskRecord.task_id == text,
                *(
                    col.ilike(pattern, escape="\\")
                    for col in (
                        TaskRecord.name,
                        TaskRecord.args_summary,
                        TaskRecord.result_summary,
                        TaskRecord.error_type,
                        TaskRecord.error_message,
                        TaskRecord.worker,
                    )
                ),
            )
        )
    return stmt


def _history_order(url: str) -> list[Any]:
    newest = TaskRecord.sent_at.desc()
    if _dialect(url) == "postgresql":  # PostgreSQL puts NULLs first when descending
        newest = newest.nulls_last()
    return [newest, TaskRecord.task_id.desc()]


def history_page(url: str, flt: HistoryFilter, page: int = 1, page_size: int = 50) -> tuple[pd.DataFrame, int, bool]:
    """One page of task history, newest first: (rows, matching count, count capped at COUNT_CAP)."""
    create_schema(url)
    page_size = max(1, min(int(page_size), 500))
    page = max(1, int(page))
    cols = [getattr(TaskRecord, c) for c in HISTORY_COLUMNS]
    stmt = _filtered(select(*cols), flt).order_by(*_history_order(url))
    stmt = stmt.limit(page_size).offset((page - 1) * page_size)
    capped = _filtered(select(TaskRecord.task_id), flt).limit(COUNT_CAP + 1).subquery()
    with read_scope(url) as session:
        rows = session.execute(stmt).all()
        total = int(session.execute(select(func.count()).select_from(capped)).scalar_one())
    frame = pd.DataFrame([tuple(r) for r in rows], columns=list(HISTORY_COLUMNS))
    for column in ("sent_at", "started_at", "finished_at"):
        frame[column] = _utc_series(frame[column])
    return frame, min(total, COUNT_CAP), total > COUNT_CAP


def task_detail(url: str, task_id: str) -> dict[str, Any] | None:
    """Everything recorded about one task (arguments summary, result, error, traceback, timings)."""
    create_schema(url)
    with read_scope(url) as session:
        row = session.get(TaskRecord, task_id)
        if row is None:
            return None
        data = row.as_dict()
    for column in ("sent_at", "received_at", "started_at", "finished_at"):
        value = data.get(column)
        data[column] = _utc_series([value])[0] if value is not None else None
    return data


def distinct_values(url: str, column: str) -> list[str]:
    """Task names or queues seen (each served by its own index)."""
    if column not in ("name", "queue"):
        raise ValueError(f"not a filterable column: {column!r}")
    create_schema(url)
    col = getattr(TaskRecord, column)
    with read_scope(url) as session:
        return [v for (v,) in session.execute(select(col).distinct().where(col.is_not(None)).order_by(col)) if v]


def state_counts(url: str, since: float, now: float | None = None) -> dict[str, int]:
    """Tasks per final state among those finished since ``since`` (index on ``finished_at``)."""
    create_schema(url)
    now = time.time() if now is None else now
    stmt = (
        select(TaskRecord.state, func.count())
        .where(TaskRecord.finished_at >= utc(since), TaskRecord.finished_at <= utc(now))
        .group_by(TaskRecord.state)
    )
    with read_scope(url) as session:
        return {state: int(n) for state, n in session.execute(stmt)}


def success_rate(counts: dict[str, int]) -> float | None:
    """Successes over successes and failures (retries and revokes are not outcomes); None when none finished."""
    done = counts.get("success", 0) + counts.get("failure", 0)
    return counts.get("success", 0) / done if done else None


def running_in_history(url: str) -> int:
    """Tasks the history says are running right now (state 'started', index on ``state``)."""
    create_schema(url)
    with read_scope(url) as session:
        return int(session.execute(select(func.count()).where(TaskRecord.state == "started")).scalar_one())


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


# --------------------------------------------------------------------------
# Performance
# --------------------------------------------------------------------------


def throughput(url: str, hours: float = 24.0, now: float | None = None) -> tuple[pd.DataFrame, str]:
    """Finished tasks per minute (windows up to 6 h) or per hour, by outcome: (frame, bucket unit)."""
    create_schema(url)
    now = time.time() if now is None else now
    unit = "minute" if hours <= 6 else "hour"
    if _dialect(url) == "postgresql":
        bucket = func.date_trunc(unit, TaskRecord.finished_at)
    else:
        bucket = func.strftime("%Y-%m-%d %H:%M:00" if unit == "minute" else "%Y-%m-%d %H:00:00", TaskRecord.finished_at)
    bucket = bucket.label("bucket")
    stmt = (
        select(bucket, TaskRecord.state, func.count())
        .where(TaskRecord.finished_at >= utc(now - hours * 3600), TaskRecord.finished_at <= utc(now))
        .group_by(bucket, TaskRecord.state)
    )
    with read_scope(url) as session:
        rows = session.execute(stmt).all()
    frame = pd.DataFrame([tuple(r) for r in rows], columns=["bucket", "state", "count"])
    if frame.empty:
        return pd.DataFrame(columns=["succeeded", "failed", "other"]), unit
    frame["bucket"] = _utc_series(frame["bucket"])
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
    stmt = (
        select(TaskRecord.name, TaskRecord.state, TaskRecord.runtime_s, TaskRecord.wait_s)
        .where(TaskRecord.finished_at >= utc(now - hours * 3600), TaskRecord.finished_at <= utc(now))
        .limit(PERFORMANCE_ROWS_MAX)
    )
    with read_scope(url) as session:
        rows = session.execute(stmt).all()
    if not rows:
        return pd.DataFrame(columns=list(PERFORMANCE_COLUMNS))
    frame = pd.DataFrame([tuple(r) for r in rows], columns=["task", "state", "runtime_s", "wait_s"])
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


# --------------------------------------------------------------------------
# Documents
# --------------------------------------------------------------------------

DOCUMENT_COLUMNS = ("id", "name", "type", "size", "chunks", "status", "error", "created", "path")


def human_size(size: int | None) -> str:
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def documents_page(
    url: str, page: int = 1, page_size: int = 50, status: str | None = None, file_type: str | None = None
) -> tuple[pd.DataFrame, int]:
    """One page of documents, newest first, and the number matching."""
    create_schema(url)
    store = DocumentStore(url)
    page_size = max(1, min(int(page_size), 500))
    docs = store.list_documents(
        limit=page_size, offset=(max(1, int(page)) - 1) * page_size, status=status, file_type=file_type
    )
    total = store.count_documents(status=status, file_type=file_type)
    rows = [
        {
            "id": d["id"],
            "name": Path(d["path"]).name if d.get("path") else "",
            "type": d.get("file_type") or "",
            "size": human_size(d.get("size_bytes")),
            "chunks": d.get("chunk_count") or 0,
            "status": d["status"],
            "error": d.get("error") or "",
            "created": d.get("created_at"),
            "path": d.get("path") or "",
        }
        for d in docs
    ]
    frame = pd.DataFrame(rows, columns=list(DOCUMENT_COLUMNS))
    frame["created"] = _utc_series(frame["created"])
    return frame, total


def document_stats(url: str) -> dict[str, Any]:
    """Documents and chunks per status and file type (the store's own figures)."""
    create_schema(url)
    return DocumentStore(url).stats()


def highlight_html(snippet: str, start: str = _MARK_START, end: str = _MARK_END) -> str:
    """A search snippet as safe HTML: the text escaped, the matches in <mark>."""
    escaped = html.escape(snippet, quote=True)
    return escaped.replace(html.escape(start), "<mark>").replace(html.escape(end), "</mark>")


def search_documents(url: str, query: str, limit: int = 20, file_type: str | None = None) -> list[dict[str, Any]]:
    """Full-text search over the chunks; each hit with ``snippet_html`` (escaped, matches in <mark>)."""
    create_schema(url)
    hits = DocumentStore(url).search(query, limit=limit, file_type=file_type, marks=(_MARK_START, _MARK_END))
    return [
        {
            "document_id": h.document_id,
            "name": Path(h.path).name if h.path else "",
            "path": h.path,
            "file_type": h.file_type,
            "page": h.page,
            "chunk_index": h.chunk_index,
            "score": h.score,
            "snippet_html": highlight_html(h.snippet),
        }
        for h in hits
    ]


def document_detail(url: str, document_id: int) -> dict[str, Any] | None:
    create_schema(url)
    return DocumentStore(url).get_document(int(document_id))


def document_chunks(url: str, document_id: int, offset: int = 0, limit: int = 50) -> pd.DataFrame:
    """A page of one document's chunks, in order (unique index on document_id, chunk_index)."""
    create_schema(url)
    stmt = (
        select(ChunkRow.chunk_index, ChunkRow.page, ChunkRow.start_char, ChunkRow.end_char, ChunkRow.text)
        .where(ChunkRow.document_id == int(document_id))
        .order_by(ChunkRow.chunk_index)
        .limit(max(1, min(int(limit), 500)))
        .offset(max(0, int(offset)))
    )
    with read_scope(url) as session:
        rows = session.execute(stmt).all()
    return pd.DataFrame([tuple(r) for r in rows], columns=["chunk", "page", "start", "end", "text"])


def failed_documents(url: str, limit: int = 200) -> pd.DataFrame:
    """Documents whose processing failed (not rejected: a rejection repeats), newest first."""
    frame, _total = documents_page(url, page=1, page_size=limit, status="failed")
    return frame


# --------------------------------------------------------------------------
# Actions
# --------------------------------------------------------------------------

_UNSAFE_NAME = re.compile(r"[^\w.\- ()+,]+", re.UNICODE)


def safe_upload_name(filename: str) -> str:
    """A plain file name from what a browser sent: no folders, no control characters, no leading dots."""
    name = Path(str(filename).replace("\\", "/")).name
    name = _UNSAFE_NAME.sub("_", name).strip(" .")
    stem, suffix = os.path.splitext(name)
    stem, suffix = stem[:150], suffix[:20]
    return (stem or "upload") + suffix


def save_upload(settings: Settings, filename: str, data: bytes) -> Path:
    """Write an uploaded file into the inbox under a fresh name (never overwriting); returns its path."""
    limit = int(settings.max_file_mb * 1024 * 1024)
    if len(data) > limit:
        raise FileTooLarge(
            f"{safe_upload_name(filename)} is {human_size(len(data))}; the limit is {settings.max_file_mb:g} MB "
            "(MIDAS_MAX_FILE_MB)"
        )
    inbox = settings.inbox_dir
    inbox.mkdir(parents=True, exist_ok=True)
    name = safe_upload_name(filename)
    stem, suffix = os.path.splitext(name)
    for attempt in range(1000):
        candidate = inbox / (name if attempt == 0 else f"{stem}-{attempt}{suffix}")
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
        except FileExistsError:
            continue
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return candidate.resolve()
    raise FileExistsError(f"no free name for {name} in {inbox}")


def redis_problem(settings: Settings) -> str | None:
    """None when Redis answers a ping; otherwise why not (checked before sending anything)."""
    client = _redis_client(settings)
    try:
        client.ping()
        return None
    except (redis.RedisError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        client.close()


def send_document(app: Any, path: Path | str) -> str:
    """Queue ``process_document_file`` for ``path``; returns the task id."""
    return app.send_task(PROCESS_DOCUMENT, args=[str(path)]).id


def retry_document(url: str, app: Any, document_id: int) -> tuple[str, str]:
    """Send a failed document's most recent path to be processed again: (task id, path)."""
    doc = DocumentStore(url).get_document(int(document_id))
    if doc is None:
        raise LookupError(f"document {document_id} does not exist")
    if doc["status"] != "failed":
        raise ValueError(f"document {document_id} is {doc['status']}, not failed")
    path = doc.get("path")
    if not path:
        raise LookupError(f"document {document_id} has no recorded path")
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} no longer exists; it cannot be processed again")
    return send_document(app, path), path


@dataclass(frozen=True)
class TaskOutcome:
    """A task sent by an action: its id, and its result if it finished in time."""

    task_id: str
    finished: bool
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def _run_task(app: Any, name: str, timeout: float, kwargs: dict[str, Any] | None = None) -> TaskOutcome:
    from celery.exceptions import TimeoutError as CeleryTimeout

    # expires: a check nobody picked up in time is not run later, when it means nothing
    result = app.send_task(name, kwargs=kwargs or {}, expires=timeout + 30)
    try:
        value = result.get(timeout=timeout, interval=0.2, propagate=False)
    except CeleryTimeout:
        return TaskOutcome(result.id, False, error=f"no worker finished it within {timeout:.0f} s")
    except UnsafeResult as exc:  # e.g. a pickle written into the results table: refused, never loaded
        return TaskOutcome(result.id, True, error=exc.message)
    if result.failed():
        return TaskOutcome(result.id, True, error=plain_error(value) if isinstance(value, BaseException) else "failed")
    return TaskOutcome(result.id, True, value if isinstance(value, dict) else {"value": value})


def run_health_check(app: Any, timeout: float = 20.0) -> TaskOutcome:
    """Run ``system_health_check`` on a worker now (it stores a sample and alerts like the scheduled one)."""
    return _run_task(app, HEALTH_CHECK, timeout)


def generate_report(app: Any, hours: float = 24.0, timeout: float = 30.0) -> TaskOutcome:
    """Run ``generate_task_report`` now; its result names the JSON, Markdown and CSV files."""
    return _run_task(app, TASK_REPORT, timeout, {"hours": float(hours)})


REPORT_MARKDOWN_MAX = 200_000


def report_markdown(result: dict[str, Any]) -> str | None:
    """The Markdown file a report task wrote (named in its result), if it is there to read."""
    name = (result.get("files") or {}).get("markdown")
    if not name:
        return None
    try:
        with open(name, encoding="utf-8", errors="replace") as handle:
            return handle.read(REPORT_MARKDOWN_MAX)
    except OSError:
        return None


# --------------------------------------------------------------------------
# Logs
# --------------------------------------------------------------------------


def log_files(settings: Settings) -> pd.DataFrame:
    """The log files in the log folder, newest first."""
    rows = []
    folder = settings.log_dir
    if folder.is_dir():
        for path in folder.glob("*.log*"):
            try:
                stat = path.stat()
            except OSError:
                continue
            if path.is_file():
                modified = datetime.fromtimestamp(stat.st_mtime, UTC)
                rows.append({"file": path.name, "size": human_size(stat.st_size), "modified": modified})
    frame = pd.DataFrame(rows, columns=["file", "size", "modified"])
    return frame.sort_values("modified", ascending=False).reset_index(drop=True) if rows else frame


def log_tail(settings: Settings, name: str, lines: int = 200) -> str:
    """The last ``lines`` lines of one log file in the log folder (only a plain name is accepted)."""
    if Path(name).name != name or name.startswith("."):
        raise ValueError(f"not a log file name: {name!r}")
    path = settings.log_dir / name
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - LOG_TAIL_BYTES))
        data = handle.read()
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def window_start(choice: str, now: float | None = None) -> float | None:
    """Epoch start of a named window ('last hour', 'last 24 hours', 'last 7 days', 'all')."""
    now = time.time() if now is None else now
    spans = {"last hour": timedelta(hours=1), "last 24 hours": timedelta(days=1), "last 7 days": timedelta(days=7)}
    span = spans.get(choice)
    return None if span is None else now - span.total_seconds()


__all__ = [
    "COUNT_CAP",
    "STATES",
    "HistoryFilter",
    "TaskOutcome",
    "WorkerActivity",
    "distinct_values",
    "document_chunks",
    "document_detail",
    "document_stats",
    "documents_page",
    "failed_documents",
    "flower_url",
    "generate_report",
    "health_series",
    "history_page",
    "latest_health",
    "live_snapshot",
    "log_files",
    "log_tail",
    "overview",
    "performance_by_name",
    "plain_error",
    "queue_table",
    "redis_problem",
    "report_markdown",
    "retry_document",
    "run_health_check",
    "save_upload",
    "search_documents",
    "send_document",
    "success_rate",
    "task_detail",
    "threshold_table",
    "throughput",
    "worker_activity",
    "worker_tables",
]
