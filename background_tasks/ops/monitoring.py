"""Health, queue, report and cleanup functions behind the monitoring tasks.

Plain functions, usable from the tasks, the dashboard and a shell. Each takes
the settings (and, where it talks to workers, the Celery app) so a test or a
second MIDAS can point it elsewhere, and returns a frozen dataclass whose
``as_dict()`` is JSON-ready. None of them raise because a service is down:
an unreachable Redis makes health ``critical`` with the reason, and the
sections that need Redis are left empty.

The file watcher publishes its heartbeat in Redis under
``WATCHER_HEARTBEAT_KEY``: a JSON object (as a string, or a hash of fields)
with at least ``time`` (epoch seconds of the beat) and its counters
(``last_event``, ``seen``, ``enqueued``, ``skipped``, ``pending`` ...).
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import logging
import math
import os
import shutil
import socket
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import redis
from sqlalchemy import (
    MetaData,
    Table,
    delete,
    func,
    select,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy import inspect as sa_inspect

from background_tasks.ops.ledger_health import ledger_figures, ledger_findings
from background_tasks.ops.task_history import SENT_HEADER, TaskRecord, epoch, utc
from background_tasks.settings import QUEUES, Settings
from background_tasks.storage import ledger as ledger_store
from background_tasks.storage import write_check as storage_check
from background_tasks.storage.db import get_engine, is_sqlite, read_scope, session_scope, sqlite_path
from background_tasks.storage.models import HealthSample
from background_tasks.storage.schema import create_schema

log = logging.getLogger(__name__)

WATCHER_HEARTBEAT_KEY = "midas:watcher:heartbeat"
#: Seconds to wait for workers to answer a ping / inspect request.
CONTROL_TIMEOUT = 1.0
REDIS_TIMEOUT = 2.0
#: Unacknowledged messages looked at per check (their bodies are read to find the queue).
UNACKED_SCAN_MAX = 20000
#: SQLite files are compacted when at least this much (and this share) of them is free pages.
VACUUM_MIN_FREE_BYTES = 1 << 20
VACUUM_MIN_FREE_SHARE = 0.2

OK, WARNING, CRITICAL = "ok", "warning", "critical"
_RANK = {OK: 0, WARNING: 1, CRITICAL: 2}


def _redis_client(settings: Settings) -> redis.Redis:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        settings.broker_url,
        socket_timeout=REDIS_TIMEOUT,
        socket_connect_timeout=REDIS_TIMEOUT,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


def _default_app() -> Any:
    from celery_config import app

    return app


def _err(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()


# --------------------------------------------------------------------------
# Queues
# --------------------------------------------------------------------------


def _transport_options(app: Any) -> tuple[str, list[int], str]:
    from kombu.transport.redis import PRIORITY_STEPS, Channel

    options = dict(app.conf.broker_transport_options or {}) if app is not None else {}
    return (
        options.get("sep", Channel.sep),
        list(options.get("priority_steps", PRIORITY_STEPS)),
        options.get("unacked_key", Channel.unacked_key),
    )


def priority_queue_names(queue: str, sep: str, steps: Sequence[int]) -> dict[int, str]:
    """Redis list per priority step, as kombu names them (priority 0 is the queue itself)."""
    return {step: (f"{queue}{sep}{step}" if step else queue) for step in steps}


def _message_sent_at(raw: bytes | None) -> float | None:
    if not raw:
        return None
    try:
        headers = json.loads(raw).get("headers") or {}
        value = headers.get(SENT_HEADER)
        return float(value) if value is not None else None
    except (ValueError, TypeError, AttributeError):
        return None


def queue_depths(client: redis.Redis, app: Any, queues: Iterable[str] = QUEUES, now: float | None = None) -> dict:
    """Per queue: waiting messages (all priority sub-queues), by priority, unacknowledged, oldest wait."""
    now = time.time() if now is None else now
    sep, steps, unacked_key = _transport_options(app)
    queues = list(dict.fromkeys(queues))
    result: dict[str, dict[str, Any]] = {}
    pipe = client.pipeline(transaction=False)
    layout = []
    for queue in queues:
        for step, key in priority_queue_names(queue, sep, steps).items():
            pipe.llen(key)
            pipe.lindex(key, -1)  # kombu LPUSHes and BRPOPs: the oldest message is at the right
            layout.append((queue, step))
    replies = pipe.execute()
    for index, (queue, step) in enumerate(layout):
        length, oldest = int(replies[2 * index] or 0), replies[2 * index + 1]
        entry = result.setdefault(
            queue, {"waiting": 0, "by_priority": {}, "unacked": 0, "oldest_waiting_s": None, "unacked_scan": "full"}
        )
        entry["waiting"] += length
        if length:
            entry["by_priority"][str(step)] = length
            sent = _message_sent_at(oldest)
            if sent is not None:
                age = round(max(0.0, now - sent), 3)
                entry["oldest_waiting_s"] = max(entry["oldest_waiting_s"] or 0.0, age)
    by_routing_key = _routing_keys(app)
    scanned = 0
    for _tag, value in client.hscan_iter(unacked_key, count=500):
        scanned += 1
        if scanned > UNACKED_SCAN_MAX:
            for entry in result.values():
                entry["unacked_scan"] = f"first {UNACKED_SCAN_MAX}"
            break
        try:
            _payload, _exchange, routing_key = json.loads(value)
        except (ValueError, TypeError):
            continue
        queue = by_routing_key.get(routing_key, routing_key)
        if queue in result:
            result[queue]["unacked"] += 1
    return result


def _routing_keys(app: Any) -> dict[str, str]:
    mapping = {}
    for queue in (app.conf.task_queues or ()) if app is not None else ():
        mapping[queue.routing_key or queue.name] = queue.name
    return mapping


# --------------------------------------------------------------------------
# Health
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class HealthReport:
    """One health check: measurements per area and the overall verdict with its reasons."""

    checked_at: float
    status: str
    reasons: tuple[str, ...]
    system: dict[str, Any]
    disks: dict[str, dict[str, Any]]
    redis: dict[str, Any]
    celery: dict[str, Any]
    queues: dict[str, dict[str, Any]]
    watcher: dict[str, Any]
    duration_s: float
    stored: bool = False
    storage: dict[str, dict[str, Any]] = field(default_factory=dict)  # the probe's write to store and results
    ledger: dict[str, Any] = field(default_factory=dict)  # the intake ledger's counts (ops.ledger_health)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["reasons"] = list(self.reasons)
        return data


def system_figures(cpu_interval: float = 0.5) -> dict[str, Any]:
    memory = psutil.virtual_memory()
    swap = psutil.swap_memory()
    try:
        load = os.getloadavg()
    except (AttributeError, OSError):  # Windows
        load = (None, None, None)
    return {
        "hostname": socket.gethostname(),
        "cpu_percent": psutil.cpu_percent(interval=cpu_interval),
        "cpu_count": psutil.cpu_count() or 1,
        "load_1": load[0],
        "load_5": load[1],
        "load_15": load[2],
        "memory_percent": memory.percent,
        "memory_available_bytes": memory.available,
        "memory_total_bytes": memory.total,
        "swap_percent": swap.percent,
        "swap_used_bytes": swap.used,
    }


def disk_figures(paths: Mapping[str, Path]) -> dict[str, dict[str, Any]]:
    """Disk use of the file system holding each path (a missing path is reported, not measured)."""
    disks: dict[str, dict[str, Any]] = {}
    for label, path in paths.items():
        entry: dict[str, Any] = {"path": str(path), "exists": path.exists()}
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            usage = shutil.disk_usage(probe)
            entry.update(
                percent=round(100.0 * usage.used / usage.total, 2) if usage.total else None,
                free_bytes=usage.free,
                total_bytes=usage.total,
            )
        except OSError as exc:
            entry["error"] = _err(exc)
        disks[label] = entry
    return disks


def redis_figures(client: redis.Redis) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        client.ping()
        latency = (time.perf_counter() - started) * 1000
        info = client.info()
    except (redis.RedisError, OSError) as exc:
        return {"ok": False, "error": _err(exc)}
    save_config = None
    try:
        save_config = client.config_get("save").get("save")
    except redis.RedisError:  # CONFIG is often disabled on managed Redis
        pass
    aof = bool(info.get("aof_enabled"))
    rdb = bool(save_config) if save_config is not None else None
    return {
        "ok": True,
        "latency_ms": round(latency, 3),
        "version": info.get("redis_version"),
        "used_memory": info.get("used_memory"),
        "used_memory_human": info.get("used_memory_human"),
        "maxmemory": info.get("maxmemory"),
        "connected_clients": info.get("connected_clients"),
        "uptime_s": info.get("uptime_in_seconds"),
        "persistence": {"aof": aof, "rdb": rdb, "on": aof or bool(rdb)},
    }


def ask_workers(app: Any, timeout: float = CONTROL_TIMEOUT) -> tuple[list[str], dict, dict, dict]:
    """Ping the workers, then ask those that answered for their active, reserved and scheduled tasks.

    Each broadcast gets a fresh broker connection: a ping always ends by timing out (it cannot
    know how many workers there are) and leaves a pending read on its connection, which would
    make the next request on it wait long enough to miss every reply.
    """
    with app.connection_for_read() as conn:
        replies = app.control.ping(timeout=timeout, connection=conn) or []
    hosts = sorted({host for reply in replies for host in reply})
    if not hosts:
        return [], {}, {}, {}
    with app.connection_for_read() as conn:
        # addressed to the workers that just answered: returns as soon as all replied
        inspect = app.control.inspect(
            destination=hosts, timeout=max(1.0, timeout * 2), limit=len(hosts), connection=conn
        )
        return hosts, inspect.active() or {}, inspect.reserved() or {}, inspect.scheduled() or {}


def celery_figures(app: Any, timeout: float = CONTROL_TIMEOUT) -> dict[str, Any]:
    """Workers answering a ping, with their pool, concurrency and active tasks."""
    try:
        with app.connection_for_read() as conn:
            replies = app.control.ping(timeout=timeout, connection=conn) or []
        hosts = sorted({host for reply in replies for host in reply})
        workers: dict[str, dict[str, Any]] = {}
        if hosts:
            with app.connection_for_read() as conn:
                inspect = app.control.inspect(
                    destination=hosts, timeout=max(1.0, timeout * 2), limit=len(hosts), connection=conn
                )
                stats = inspect.stats() or {}
                active = inspect.active() or {}
            for host in hosts:
                pool = (stats.get(host) or {}).get("pool") or {}
                workers[host] = {
                    # "celery.concurrency.prefork:TaskPool" -> "prefork"
                    "pool": str(pool.get("implementation", "")).split(":")[0].rsplit(".", 1)[-1] or None,
                    "concurrency": pool.get("max-concurrency"),
                    "active": len(active.get(host) or []),
                    "pid": (stats.get(host) or {}).get("pid"),
                }
        return {
            "ok": True,
            "workers": workers,
            "responding": len(hosts),
            "active_tasks": sum(w["active"] for w in workers.values()),
        }
    except Exception as exc:  # broker trouble during the broadcast
        return {"ok": False, "error": _err(exc), "workers": {}, "responding": 0, "active_tasks": 0}


def watcher_figures(client: redis.Redis, now: float) -> dict[str, Any]:
    """The watcher's last heartbeat and its age."""
    installed = importlib.util.find_spec("background_tasks.file_watcher") is not None
    try:
        kind = client.type(WATCHER_HEARTBEAT_KEY)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        if kind == "hash":
            raw = {k.decode(): v.decode() for k, v in client.hgetall(WATCHER_HEARTBEAT_KEY).items()}
            data = {}
            for key, value in raw.items():
                try:
                    data[key] = json.loads(value)
                except ValueError:
                    data[key] = value
        elif kind == "string":
            data = json.loads(client.get(WATCHER_HEARTBEAT_KEY) or b"{}")
        else:
            return {"installed": installed, "present": False}
    except (redis.RedisError, OSError, ValueError) as exc:
        return {"installed": installed, "present": False, "error": _err(exc)}
    if not isinstance(data, dict):
        return {"installed": installed, "present": False, "error": "heartbeat is not a JSON object"}
    beat = data.get("time")
    try:
        age = round(max(0.0, now - float(beat)), 3)
    except (TypeError, ValueError):
        age = None
    return {"installed": installed, "present": True, "age_s": age, "heartbeat": data}


def _level(value: float | None, warn: float, crit: float) -> str:
    if value is None:
        return OK
    if value >= crit:
        return CRITICAL
    if value >= warn:
        return WARNING
    return OK


def evaluate(
    settings: Settings,
    system: Mapping[str, Any],
    disks: Mapping[str, Mapping[str, Any]],
    redis_info: Mapping[str, Any],
    celery_info: Mapping[str, Any] | None,
    queues: Mapping[str, Mapping[str, Any]],
    watcher: Mapping[str, Any],
    ledger: Mapping[str, Any] | None = None,
) -> tuple[str, tuple[str, ...]]:
    """Overall status and its reasons, from the thresholds in the settings."""
    findings: list[tuple[str, str]] = list(ledger_findings(settings, dict(ledger or {})))

    def add(level: str, reason: str) -> None:
        if level != OK:
            findings.append((level, reason))

    if not redis_info.get("ok"):
        add(CRITICAL, f"Redis unreachable at {settings.redis_host}:{settings.redis_port} ({redis_info.get('error')})")
    elif celery_info is not None:
        if not celery_info.get("ok"):
            add(CRITICAL, f"could not ask the Celery workers ({celery_info.get('error')})")
        elif not celery_info.get("responding"):
            add(CRITICAL, "no Celery worker answered a ping")
    cpu = system.get("cpu_percent")
    add(_level(cpu, settings.cpu_warn_percent, settings.cpu_crit_percent), f"CPU at {cpu}%")
    memory = system.get("memory_percent")
    add(_level(memory, settings.memory_warn_percent, settings.memory_crit_percent), f"memory at {memory}%")
    for label, disk in disks.items():
        if disk.get("error"):
            add(WARNING, f"disk of {label} ({disk.get('path')}) could not be measured: {disk['error']}")
            continue
        percent = disk.get("percent")
        add(
            _level(percent, settings.disk_warn_percent, settings.disk_crit_percent),
            f"disk of {label} ({disk.get('path')}) {percent}% full",
        )
        # only folders the user named: the default ones (Downloads, Desktop) may legitimately be absent
        if label.startswith("watch:") and not disk.get("exists") and Path(disk["path"]) in settings.watch_dirs:
            add(WARNING, f"watched folder {disk.get('path')} does not exist")
    for name, queue in queues.items():
        if queue.get("waiting", 0) >= settings.queue_warn_length:
            add(WARNING, f"queue {name} has {queue['waiting']} waiting tasks")
    if redis_info.get("ok"):
        age = watcher.get("age_s")
        if watcher.get("present") and age is not None and age > settings.watcher_heartbeat_max_age:
            add(WARNING, f"file watcher silent for {age:.0f} s")
        elif watcher.get("present") and age is None:
            add(WARNING, "file watcher heartbeat has no time")
        elif watcher.get("present") and (watcher.get("heartbeat") or {}).get("state") == "stopped":
            add(WARNING, f"file watcher stopped {age:.0f} s ago")
        elif not watcher.get("present") and watcher.get("installed"):
            add(WARNING, "no file watcher heartbeat (is the watcher running?)")
    status = max((level for level, _ in findings), key=_RANK.__getitem__, default=OK)
    ordered = sorted(findings, key=lambda f: -_RANK[f[0]])
    return status, tuple(f"{level}: {reason}" for level, reason in ordered)


def system_health(
    settings: Settings, app: Any = None, store: bool = True, cpu_interval: float = 0.5, now: float | None = None
) -> HealthReport:
    """Measure everything, decide ok / warning / critical, store a sample (``store``)."""
    started = time.perf_counter()
    app = _default_app() if app is None else app
    now = time.time() if now is None else now
    system = system_figures(cpu_interval)
    paths = {"data_dir": settings.data_dir}
    for watched in _watched_folders(settings):
        paths[f"watch:{watched}"] = watched
    disks = disk_figures(paths)
    client = _redis_client(settings)
    try:
        redis_info = redis_figures(client)
        queues: dict[str, dict[str, Any]] = {}
        watcher: dict[str, Any] = {}
        celery_info: dict[str, Any] | None = None
        if redis_info["ok"]:
            try:
                queues = queue_depths(client, app, now=now)
            except (redis.RedisError, OSError) as exc:
                redis_info = {**redis_info, "queues_error": _err(exc)}
            watcher = watcher_figures(client, now)
            celery_info = celery_figures(app)
        else:
            celery_info = {"ok": False, "error": "skipped: Redis is unreachable", "workers": {}, "responding": 0}
    finally:
        client.close()
    # the folders the running watcher reports it watches (it may have been started with others)
    reported = (watcher.get("heartbeat") or {}).get("watch_dirs") or []
    extra = {f"watch:{d}": Path(d) for d in reported if isinstance(d, str) and f"watch:{d}" not in disks}
    disks.update(disk_figures(extra))
    ledger = ledger_figures(settings)
    status, reasons = evaluate(settings, system, disks, redis_info, celery_info, queues, watcher, ledger)
    storage = storage_check.probe_storage(settings, app)  # a real write: a read-only store is critical
    status, reasons = storage_check.with_storage(status, reasons, storage)
    report = HealthReport(
        checked_at=now,
        status=status,
        reasons=reasons,
        system=system,
        disks=disks,
        redis=redis_info,
        celery=celery_info or {},
        queues=queues,
        watcher=watcher,
        duration_s=round(time.perf_counter() - started, 3),
        storage=storage,
        ledger=ledger,
    )
    if store:
        try:
            store_health_sample(settings.database_url_resolved, report)
            report = HealthReport(**{**report.__dict__, "stored": True})
        except Exception as exc:
            log.warning("health sample not stored: %s", _err(exc))
    return report


def _watched_folders(settings: Settings) -> tuple[Path, ...]:
    try:
        from background_tasks.processing.intake import default_watch_dirs
    except ImportError:
        return tuple(settings.watch_dirs)
    return default_watch_dirs(settings)


def store_health_sample(url: str, report: HealthReport) -> None:
    create_schema(url)
    data_disk = report.disks.get("data_dir", {})
    with session_scope(url) as session:
        session.add(
            HealthSample(
                taken_at=utc(report.checked_at),
                status=report.status,
                cpu_percent=report.system.get("cpu_percent"),
                load_1=report.system.get("load_1"),
                memory_percent=report.system.get("memory_percent"),
                swap_percent=report.system.get("swap_percent"),
                data_disk_percent=data_disk.get("percent"),
                redis_ok=bool(report.redis.get("ok")),
                redis_latency_ms=report.redis.get("latency_ms"),
                redis_used_memory=report.redis.get("used_memory"),
                workers=report.celery.get("responding"),
                active_tasks=report.celery.get("active_tasks"),
                waiting_tasks=sum(q.get("waiting", 0) for q in report.queues.values()) if report.queues else None,
                watcher_age_s=report.watcher.get("age_s"),
                reasons=list(report.reasons),
                details=json.loads(json.dumps(report.as_dict(), default=str)),
            )
        )


# --------------------------------------------------------------------------
# Queue check
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueCheck:
    """Waiting and unacknowledged messages per queue; active/reserved/scheduled tasks per worker."""

    checked_at: float
    ok: bool
    error: str | None
    stuck_after_s: float
    queues: dict[str, dict[str, Any]]
    workers: dict[str, dict[str, list[dict[str, Any]]]]
    stuck: tuple[dict[str, Any], ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stuck"] = list(self.stuck)
        return data


def _history_times(url: str, task_ids: Sequence[str]) -> dict[str, dict[str, float | None]]:
    if not task_ids:
        return {}
    try:
        create_schema(url)
        with read_scope(url) as session:
            rows = session.execute(
                select(TaskRecord.task_id, TaskRecord.sent_at, TaskRecord.started_at).where(
                    TaskRecord.task_id.in_(list(task_ids))
                )
            )
            return {r.task_id: {"sent": epoch(r.sent_at), "started": epoch(r.started_at)} for r in rows}
    except Exception as exc:
        log.warning("queue check: task history unavailable: %s", _err(exc))
        return {}


def check_queues(
    settings: Settings,
    app: Any = None,
    stuck_after: float | None = None,
    queues: Iterable[str] = QUEUES,
    now: float | None = None,
    timeout: float = CONTROL_TIMEOUT,
) -> QueueCheck:
    """What is waiting, what each worker is doing, and which tasks run longer than ``stuck_after`` seconds."""
    app = _default_app() if app is None else app
    stuck_after = settings.stuck_task_seconds if stuck_after is None else float(stuck_after)
    now = time.time() if now is None else now
    client = _redis_client(settings)
    try:
        depths = queue_depths(client, app, queues, now=now)
    except (redis.RedisError, OSError) as exc:
        return QueueCheck(now, False, f"Redis unreachable: {_err(exc)}", stuck_after, {}, {})
    finally:
        client.close()
    workers: dict[str, dict[str, list[dict[str, Any]]]] = {}
    error = None
    try:
        hosts, active, reserved, scheduled = ask_workers(app, timeout)
    except Exception as exc:
        return QueueCheck(now, False, f"could not ask the workers: {_err(exc)}", stuck_after, depths, {})
    ids = [t.get("id") for group in (active, reserved) for tasks in group.values() for t in tasks or ()]
    ids += [(s.get("request") or {}).get("id") for tasks in scheduled.values() for s in tasks or ()]
    known = _history_times(settings.database_url_resolved, [i for i in ids if i])
    workers, stuck = lay_out_workers(hosts, active, reserved, scheduled, now, stuck_after, known)
    if not hosts:
        error = "no Celery worker answered a ping"
    return QueueCheck(now, error is None, error, stuck_after, depths, workers, tuple(stuck))


def lay_out_workers(
    hosts: Sequence[str],
    active: dict,
    reserved: dict,
    scheduled: dict,
    now: float,
    stuck_after: float,
    known: dict[str, dict[str, float | None]] | None = None,
) -> tuple[dict[str, dict[str, list[dict[str, Any]]]], list[dict[str, Any]]]:
    """Per worker: its active (with running time, flagged stuck), reserved and scheduled tasks."""
    known = known or {}
    workers: dict[str, dict[str, list[dict[str, Any]]]] = {}
    stuck: list[dict[str, Any]] = []
    for host in hosts:
        entry: dict[str, list[dict[str, Any]]] = {"active": [], "reserved": [], "scheduled": []}
        for task in active.get(host) or ():
            start = task.get("time_start") or (known.get(task.get("id")) or {}).get("started")
            running = round(now - start, 3) if start else None
            item = {
                "id": task.get("id"),
                "name": task.get("name"),
                "queue": (task.get("delivery_info") or {}).get("routing_key"),
                "args": task.get("args"),
                "worker_pid": task.get("worker_pid"),
                "running_s": running,
                "stuck": running is not None and running > stuck_after,
            }
            entry["active"].append(item)
            if item["stuck"]:
                stuck.append({**item, "worker": host})
        for task in reserved.get(host) or ():
            sent = (known.get(task.get("id")) or {}).get("sent")
            entry["reserved"].append(
                {
                    "id": task.get("id"),
                    "name": task.get("name"),
                    "args": task.get("args"),
                    "age_s": round(now - sent, 3) if sent else None,
                }
            )
        for item in scheduled.get(host) or ():
            request = item.get("request") or {}
            sent = (known.get(request.get("id")) or {}).get("sent")
            eta = _iso_epoch(item.get("eta"))
            entry["scheduled"].append(
                {
                    "id": request.get("id"),
                    "name": request.get("name"),
                    "eta": item.get("eta"),
                    "due_in_s": round(eta - now, 3) if eta else None,
                    "age_s": round(now - sent, 3) if sent else None,
                }
            )
        workers[host] = entry
    return workers, stuck


def _iso_epoch(value: Any) -> float | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed.timestamp() if parsed.tzinfo else parsed.replace(tzinfo=UTC).timestamp()


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float | None:
    """Linear-interpolated percentile (p in 0..100) of ``values``; None when empty."""
    data = sorted(v for v in values if v is not None and not math.isnan(v))
    if not data:
        return None
    if len(data) == 1:
        return data[0]
    rank = (len(data) - 1) * p / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return data[low] + (data[high] - data[low]) * (rank - low)


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


@dataclass(frozen=True)
class TaskReport:
    """Per-task-name figures over a window, the most frequent errors, documents per file type."""

    generated_at: float
    since: float
    hours: float
    tasks: dict[str, dict[str, Any]]
    totals: dict[str, Any]
    top_errors: tuple[dict[str, Any], ...]
    documents: dict[str, Any] | None
    files: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["top_errors"] = list(self.top_errors)
        data["generated_at_iso"] = datetime.fromtimestamp(self.generated_at, UTC).isoformat()
        data["since_iso"] = datetime.fromtimestamp(self.since, UTC).isoformat()
        return data


def _figures(rows: Sequence[Any], hours: float) -> dict[str, Any]:
    states = Counter(r.state for r in rows)
    succeeded, failed = states.get("success", 0), states.get("failure", 0)
    finished = [r for r in rows if r.state in ("success", "failure")]
    runtimes = [r.runtime_s for r in finished if r.runtime_s is not None]
    waits = [r.wait_s for r in rows if r.wait_s is not None]
    return {
        "count": len(rows),
        "succeeded": succeeded,
        "failed": failed,
        "retried": sum(1 for r in rows if (r.retries or 0) > 0),
        "retries": sum(r.retries or 0 for r in rows),
        "revoked": states.get("revoked", 0),
        "unfinished": sum(states.get(s, 0) for s in ("pending", "received", "started", "retry")),
        "success_rate": _r(succeeded / (succeeded + failed), 4) if succeeded + failed else None,
        "runtime_p50_s": _r(percentile(runtimes, 50)),
        "runtime_p95_s": _r(percentile(runtimes, 95)),
        "runtime_max_s": _r(max(runtimes) if runtimes else None),
        "wait_p50_s": _r(percentile(waits, 50)),
        "wait_p95_s": _r(percentile(waits, 95)),
        "throughput_per_hour": _r(len(finished) / hours, 3) if hours > 0 else None,
    }


def _document_figures(url: str, since: datetime) -> dict[str, Any] | None:
    """Documents finished in the window, per file type and status, with their chunks."""
    try:
        from background_tasks.storage.store import DocumentRow
    except ImportError:
        return None
    empty: dict[str, Any] = {"documents": 0, "chunks": 0, "by_file_type": {}}
    try:
        if not sa_inspect(get_engine(url)).has_table(DocumentRow.__tablename__):
            return empty  # the store was never used on this database
        with read_scope(url) as session:
            rows = session.execute(
                select(
                    DocumentRow.file_type,
                    DocumentRow.status,
                    func.count(),
                    func.coalesce(func.sum(DocumentRow.chunk_count), 0),
                )
                .where(func.coalesce(DocumentRow.finished_at, DocumentRow.updated_at) >= since)
                .group_by(DocumentRow.file_type, DocumentRow.status)
            ).all()
    except sa_exc.SQLAlchemyError as exc:
        log.warning("report: document figures unavailable: %s", _err(exc))
        return {"error": _err(exc)}
    by_type: dict[str, dict[str, int]] = {}
    for ftype, status, count, chunks in rows:
        entry = by_type.setdefault(ftype or "unknown", {"documents": 0, "chunks": 0})
        entry["documents"] += int(count)
        entry["chunks"] += int(chunks)
        entry[status] = entry.get(status, 0) + int(count)
    return {
        "documents": sum(e["documents"] for e in by_type.values()),
        "chunks": sum(e["chunks"] for e in by_type.values()),
        "by_file_type": dict(sorted(by_type.items())),
    }


def task_report(settings: Settings, hours: float = 24.0, now: float | None = None, write: bool = True) -> TaskReport:
    """Figures of the tasks that were active in the last ``hours``; written as JSON, Markdown and CSV."""
    if not hours > 0 or not math.isfinite(hours):
        raise ValueError(f"hours must be a positive number, got {hours!r}")
    now = time.time() if now is None else now
    since = now - hours * 3600
    url = settings.database_url_resolved
    create_schema(url)
    last_seen = func.coalesce(TaskRecord.finished_at, TaskRecord.started_at, TaskRecord.received_at, TaskRecord.sent_at)
    with session_scope(url) as session:
        rows = session.execute(
            select(
                TaskRecord.name,
                TaskRecord.state,
                TaskRecord.retries,
                TaskRecord.runtime_s,
                TaskRecord.wait_s,
                TaskRecord.error_type,
                TaskRecord.error_message,
            ).where(last_seen >= utc(since), last_seen <= utc(now))
        ).all()
    per_name: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        per_name[row.name or "unknown"].append(row)
    tasks = {name: _figures(group, hours) for name, group in sorted(per_name.items())}
    errors: Counter[tuple[str, str]] = Counter()
    error_tasks: dict[tuple[str, str], set[str]] = defaultdict(set)
    for row in rows:
        if row.state == "failure":
            message = (row.error_message or "").strip().splitlines()
            key = (row.error_type or "unknown", (message[0] if message else "")[:200])
            errors[key] += 1
            error_tasks[key].add(row.name or "unknown")
    top_errors = tuple(
        {"error_type": etype, "message": message, "count": count, "tasks": sorted(error_tasks[(etype, message)])}
        for (etype, message), count in errors.most_common(10)
    )
    report = TaskReport(
        generated_at=now,
        since=since,
        hours=hours,
        tasks=tasks,
        totals=_figures(rows, hours),
        top_errors=top_errors,
        documents=_document_figures(url, utc(since)),
    )
    if write:
        report = TaskReport(**{**report.__dict__, "files": write_report(report, settings.reports_dir)})
    return report


def write_report(report: TaskReport, directory: Path) -> dict[str, str]:
    """Write ``task-report-<UTC time>.{json,md,csv}``; returns the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromtimestamp(report.generated_at, UTC).strftime("%Y%m%dT%H%M%SZ")
    base = directory / f"task-report-{stamp}"
    paths = {"json": base.with_suffix(".json"), "markdown": base.with_suffix(".md"), "csv": base.with_suffix(".csv")}
    data = report.as_dict()
    data.pop("files", None)
    _atomic_write(paths["json"], json.dumps(data, indent=2, default=str))
    _atomic_write(paths["markdown"], render_markdown(report))
    _atomic_write(paths["csv"], render_csv(report))
    return {kind: str(path) for kind, path in paths.items()}


def _atomic_write(path: Path, content: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(content, encoding="utf-8", newline="")
    os.replace(tmp, path)


CSV_COLUMNS = (
    "count",
    "succeeded",
    "failed",
    "retried",
    "revoked",
    "success_rate",
    "runtime_p50_s",
    "runtime_p95_s",
    "runtime_max_s",
    "wait_p50_s",
    "wait_p95_s",
    "throughput_per_hour",
)


def render_csv(report: TaskReport) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("task", *CSV_COLUMNS))
    for name, figures in report.tasks.items():
        writer.writerow((name, *("" if figures[c] is None else figures[c] for c in CSV_COLUMNS)))
    writer.writerow(("TOTAL", *("" if report.totals[c] is None else report.totals[c] for c in CSV_COLUMNS)))
    return out.getvalue()


def _md(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))
    return str(value).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: TaskReport) -> str:
    since = datetime.fromtimestamp(report.since, UTC).strftime("%Y-%m-%d %H:%M UTC")
    until = datetime.fromtimestamp(report.generated_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# MIDAS task report", "", f"{since} – {until} ({_md(report.hours)} h)", "", "## Tasks", ""]
    header = ("task", *CSV_COLUMNS)
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for name, figures in [*report.tasks.items(), ("**total**", report.totals)]:
        lines.append("| " + " | ".join([_md(name), *(_md(figures[c]) for c in CSV_COLUMNS)]) + " |")
    lines += ["", "## Most frequent errors", ""]
    if report.top_errors:
        lines += ["| count | error | message | tasks |", "|---|---|---|---|"]
        for err in report.top_errors:
            names = ", ".join(err["tasks"])
            lines.append(f"| {err['count']} | {_md(err['error_type'])} | {_md(err['message'])} | {_md(names)} |")
    else:
        lines.append("No failures.")
    lines += ["", "## Documents", ""]
    docs = report.documents
    if not docs or "by_file_type" not in docs:
        lines.append("Document store not available." if not docs else f"Unavailable: {docs.get('error')}")
    else:
        lines += ["| file type | documents | chunks | success | failed | rejected |", "|---|---|---|---|---|---|"]
        for ftype, entry in docs["by_file_type"].items():
            lines.append(
                f"| {_md(ftype)} | {entry['documents']} | {entry['chunks']} | {entry.get('success', 0)} "
                f"| {entry.get('failed', 0)} | {entry.get('rejected', 0)} |"
            )
        lines.append(f"| **total** | {docs['documents']} | {docs['chunks']} | | | |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# Cleanup
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class CleanupResult:
    """Rows removed per kind, and which SQLite files were compacted."""

    cutoff: float
    days: float
    removed: dict[str, int]
    compacted: tuple[dict[str, Any], ...]
    errors: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["compacted"] = list(self.compacted)
        data["errors"] = list(self.errors)
        return data


RESULT_TABLES = {"results": "celery_taskmeta", "result_groups": "celery_tasksetmeta"}


def cleanup(
    settings: Settings,
    days: float | None = None,
    now: float | None = None,
    result_tables: Mapping[str, str] | None = None,
    compact: bool = True,
) -> CleanupResult:
    """Delete history, result rows, health samples and orphan analyses older than ``days``; compact SQLite."""
    days = settings.retention_days if days is None else float(days)
    if days < 0 or not math.isfinite(days):
        raise ValueError(f"days must be zero or a positive number, got {days!r}")
    now = time.time() if now is None else now
    cutoff = now - days * 86400
    url = settings.database_url_resolved
    removed: dict[str, int] = {}
    errors: list[str] = []
    create_schema(url)
    last_seen = func.coalesce(TaskRecord.finished_at, TaskRecord.started_at, TaskRecord.received_at, TaskRecord.sent_at)
    try:
        with session_scope(url) as session:
            removed["task_history"] = int(session.execute(delete(TaskRecord).where(last_seen < utc(cutoff))).rowcount)
            removed["health_samples"] = int(
                session.execute(delete(HealthSample).where(HealthSample.taken_at < utc(cutoff))).rowcount
            )
    except sa_exc.SQLAlchemyError as exc:
        errors.append(f"history: {_err(exc)}")
    try:
        removed["ledger"] = ledger_store.purge_finished(url, utc(cutoff))  # done and failed entries
    except sa_exc.SQLAlchemyError as exc:
        errors.append(f"ledger: {_err(exc)}")
    try:
        removed["orphan_analyses"] = _delete_orphan_analyses(url, cutoff)
    except sa_exc.SQLAlchemyError as exc:
        errors.append(f"analyses: {_err(exc)}")
    backend_url = settings.result_backend_url.removeprefix("db+")
    for kind, table_name in (result_tables or RESULT_TABLES).items():
        try:
            removed[kind] = _delete_results(backend_url, table_name, cutoff)
        except sa_exc.SQLAlchemyError as exc:
            errors.append(f"{kind}: {_err(exc)}")
    compacted = []
    if compact:
        for db_url in dict.fromkeys((url, backend_url)):
            outcome = compact_sqlite(db_url)
            if outcome is not None:
                compacted.append(outcome)
    return CleanupResult(cutoff, days, removed, tuple(compacted), tuple(errors))


def _delete_orphan_analyses(url: str, cutoff: float) -> int:
    """Analyses older than the cutoff of content that is not (or no longer) a stored document.

    A file analysed directly (``analyze_data_file`` without processing it) has no document, so
    removing documents never removed its analysis; one whose document exists is kept with it.
    """
    from background_tasks.analysis.analyze import AnalysisRow
    from background_tasks.storage.store import DocumentRow

    if not sa_inspect(get_engine(url)).has_table(AnalysisRow.__tablename__):
        return 0  # nothing was ever analysed here
    known = select(DocumentRow.id).where(DocumentRow.sha256 == AnalysisRow.sha256).exists()
    orphan = AnalysisRow.document_id.is_(None) & (AnalysisRow.updated_at < utc(cutoff)) & ~known
    with session_scope(url) as session:
        return int(session.execute(delete(AnalysisRow).where(orphan)).rowcount)


def _delete_results(url: str, table_name: str, cutoff: float) -> int:
    engine = get_engine(url)
    try:
        table = Table(table_name, MetaData(), autoload_with=engine)
    except sa_exc.NoSuchTableError:
        return 0
    # Celery's column is a zone-less DateTime holding UTC.
    naive_cutoff = datetime.fromtimestamp(cutoff, UTC).replace(tzinfo=None)
    with engine.begin() as conn:
        return int(conn.execute(delete(table).where(table.c.date_done < naive_cutoff)).rowcount)


def compact_sqlite(url: str) -> dict[str, Any] | None:
    """VACUUM a SQLite database when enough of it is free pages; None when not SQLite or not worthwhile."""
    if not is_sqlite(url) or sqlite_path(url) is None:
        return None
    path = sqlite_path(url)
    engine = get_engine(url)
    try:
        with engine.connect() as conn:
            page_size = conn.exec_driver_sql("PRAGMA page_size").scalar_one()
            pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
            free = conn.exec_driver_sql("PRAGMA freelist_count").scalar_one()
        free_bytes = free * page_size
        if free_bytes < VACUUM_MIN_FREE_BYTES or free < VACUUM_MIN_FREE_SHARE * pages:
            return None
        before = _sqlite_size(path)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM")
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return {"path": str(path), "bytes_before": before, "bytes_after": _sqlite_size(path), "free_pages": free}
    except sa_exc.SQLAlchemyError as exc:
        log.warning("could not compact %s: %s", path, _err(exc))
        return {"path": str(path), "error": _err(exc)}


def _sqlite_size(path: Path) -> int:
    total = 0
    for candidate in (path, path.with_name(path.name + "-wal")):
        try:
            total += candidate.stat().st_size
        except OSError:
            pass
    return total


def recent_health(settings: Settings, hours: float = 24.0) -> list[dict[str, Any]]:
    """Health samples of the last ``hours`` (oldest first), for the dashboard."""
    url = settings.database_url_resolved
    create_schema(url)
    since = utc(time.time() - hours * 3600)
    with read_scope(url) as session:
        rows = session.scalars(
            select(HealthSample).where(HealthSample.taken_at >= since).order_by(HealthSample.taken_at)
        ).all()
        return [{c.name: getattr(r, c.name) for c in HealthSample.__table__.columns} for r in rows]


__all__ = [
    "WATCHER_HEARTBEAT_KEY",
    "CleanupResult",
    "HealthReport",
    "HealthSample",
    "QueueCheck",
    "TaskReport",
    "check_queues",
    "cleanup",
    "compact_sqlite",
    "evaluate",
    "percentile",
    "queue_depths",
    "recent_health",
    "system_health",
    "task_report",
]
