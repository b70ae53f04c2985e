"""Live tasks and system health as they are now: workers, queues, the host, the health verdict.

Everything comes from Redis, a worker broadcast and psutil through
``ops.monitoring``; nothing here reads the database. A service that is down
becomes a flag and a reason in the snapshot, never an exception.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import redis

from background_tasks.ops import monitoring
from background_tasks.ops.dashboard.common import plain_error, redis_client
from background_tasks.settings import Settings

#: Seconds to wait for workers to answer the dashboard's live questions.
LIVE_TIMEOUT = 0.5


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
    client = redis_client(settings)
    try:
        redis_info = monitoring.redis_figures(client)
        watcher = monitoring.watcher_figures(client, now) if redis_info.get("ok") else {}
    finally:
        client.close()
    queues: dict[str, dict[str, Any]] = {}
    activity = WorkerActivity({}, [], "skipped: Redis is unreachable", False)
    celery_info: dict[str, Any] | None = None
    if redis_info.get("ok"):
        client = redis_client(settings)
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
    frame["level now"] = [_level(r["current"], r["warning at"], r["critical at"]) for r in rows]
    return frame


def _level(value: Any, warn: Any, crit: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "unknown"
    if crit is not None and value >= crit:
        return monitoring.CRITICAL
    if warn is not None and value >= warn:
        return monitoring.WARNING
    return monitoring.OK
