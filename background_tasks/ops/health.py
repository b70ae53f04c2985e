"""The health check: system, disks, Redis, workers, queues, watcher, ledger and storage, and a verdict.

Each check finds what is wrong (``findings``); the verdict stored with its sample weighs the
checks before it (``ops.health_verdict``: CPU over a window, swinging measures held for
several checks), so one busy moment neither flips the dashboard nor sends an alert.

None of it raises because a service is down: an unreachable Redis makes health ``critical``
with the reason, and the sections that need Redis are left empty.

The file watcher publishes its heartbeat in Redis under ``WATCHER_HEARTBEAT_KEY``: a JSON
object (as a string, or a hash of fields) with at least ``time`` (epoch seconds of the beat)
and its counters (``last_event``, ``seen``, ``enqueued``, ``skipped``, ``pending`` ...).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis

from background_tasks.keys import WATCHER_HEARTBEAT_KEY
from background_tasks.ops.health_verdict import (
    CRITICAL,
    OK,
    WARNING,
    Finding,
    HealthJudge,
    PastCheck,
    at_once,
    judge_for,
    stored_history,
)
from background_tasks.ops.ledger_health import ledger_figures, ledger_findings
from background_tasks.ops.queues import queue_depths
from background_tasks.ops.reach import CONTROL_TIMEOUT, default_app, error_text, redis_client
from background_tasks.ops.task_history import utc
from background_tasks.processing.intake import default_watch_dirs
from background_tasks.settings import Settings
from background_tasks.storage import health_samples
from background_tasks.storage import write_check as storage_check

log = logging.getLogger(__name__)


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
    pending: tuple[str, ...] = ()  # findings not yet held long enough to count (ops.health_verdict)
    levels: dict[str, str] = field(default_factory=dict)  # this check's own level per finding key

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["reasons"] = list(self.reasons)
        data["pending"] = list(self.pending)
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
            entry["error"] = error_text(exc)
        disks[label] = entry
    return disks


def redis_figures(client: redis.Redis) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        client.ping()
        latency = (time.perf_counter() - started) * 1000
        info = client.info()
    except (redis.RedisError, OSError) as exc:
        return {"ok": False, "error": error_text(exc)}
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
        return {"ok": False, "error": error_text(exc), "workers": {}, "responding": 0, "active_tasks": 0}


def watcher_figures(client: redis.Redis, now: float) -> dict[str, Any]:
    """The watcher's last heartbeat and its age."""
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
            return {"present": False}
    except (redis.RedisError, OSError, ValueError) as exc:
        return {"present": False, "error": error_text(exc)}
    if not isinstance(data, dict):
        return {"present": False, "error": "heartbeat is not a JSON object"}
    beat = data.get("time")
    try:
        age = round(max(0.0, now - float(beat)), 3)
    except (TypeError, ValueError):
        age = None
    return {"present": True, "age_s": age, "heartbeat": data}


def _level(value: float | None, warn: float, crit: float) -> str:
    if value is None:
        return OK
    if value >= crit:
        return CRITICAL
    if value >= warn:
        return WARNING
    return OK


def _cpu_reason(system: Mapping[str, Any]) -> tuple[float | None, str]:
    """The CPU figure health judges (the mean over the window when there is one) and how to say it."""
    mean, checks = system.get("cpu_mean_percent"), system.get("cpu_mean_checks") or 0
    if mean is not None and checks > 1:
        return mean, f"CPU at {mean}% on average over the last {checks} checks"
    cpu = system.get("cpu_percent") if mean is None else mean
    return cpu, f"CPU at {cpu}%"


def findings(
    settings: Settings,
    system: Mapping[str, Any],
    disks: Mapping[str, Mapping[str, Any]],
    redis_info: Mapping[str, Any],
    celery_info: Mapping[str, Any] | None,
    queues: Mapping[str, Mapping[str, Any]],
    watcher: Mapping[str, Any],
    ledger: Mapping[str, Any] | None = None,
    source_errors: tuple[str, ...] = (),
) -> list[Finding]:
    """Everything not ok, each with the key of its measure; CPU, memory and queues are ``sustained``."""
    found = [Finding("ledger", level, reason) for level, reason in ledger_findings(settings, dict(ledger or {}))]
    found.extend(Finding("sources", WARNING, error) for error in source_errors)  # a mail account or bucket failed

    def add(key: str, level: str, reason: str, sustained: bool = False) -> None:
        if level != OK:
            found.append(Finding(key, level, reason, sustained))

    if not redis_info.get("ok"):
        add(
            "redis",
            CRITICAL,
            f"Redis unreachable at {settings.redis_host}:{settings.redis_port} ({redis_info.get('error')})",
        )
    elif celery_info is not None:
        if not celery_info.get("ok"):
            add("workers", CRITICAL, f"could not ask the Celery workers ({celery_info.get('error')})")
        elif not celery_info.get("responding"):
            add("workers", CRITICAL, "no Celery worker answered a ping")
    cpu, cpu_reason = _cpu_reason(system)
    add("cpu", _level(cpu, settings.cpu_warn_percent, settings.cpu_crit_percent), cpu_reason, sustained=True)
    memory = system.get("memory_percent")
    add(
        "memory",
        _level(memory, settings.memory_warn_percent, settings.memory_crit_percent),
        f"memory at {memory}%",
        sustained=True,
    )
    for label, disk in disks.items():
        if disk.get("error"):
            add(
                f"disk:{label}", WARNING, f"disk of {label} ({disk.get('path')}) could not be measured: {disk['error']}"
            )
            continue
        percent = disk.get("percent")
        add(
            f"disk:{label}",
            _level(percent, settings.disk_warn_percent, settings.disk_crit_percent),
            f"disk of {label} ({disk.get('path')}) {percent}% full",
        )
        # only folders the user named: the default ones (Downloads, Desktop) may legitimately be absent
        if label.startswith("watch:") and not disk.get("exists") and Path(disk["path"]) in settings.watch_dirs:
            add(f"folder:{label}", WARNING, f"watched folder {disk.get('path')} does not exist")
    for name, queue in queues.items():
        if queue.get("waiting", 0) >= settings.queue_warn_length:
            add(f"queue:{name}", WARNING, f"queue {name} has {queue['waiting']} waiting tasks", sustained=True)
    if redis_info.get("ok"):
        age = watcher.get("age_s")
        if watcher.get("present") and age is not None and age > settings.watcher_heartbeat_max_age:
            add("watcher", WARNING, f"file watcher silent for {age:.0f} s")
        elif watcher.get("present") and age is None:
            add("watcher", WARNING, "file watcher heartbeat has no time")
        elif watcher.get("present") and (watcher.get("heartbeat") or {}).get("state") == "stopped":
            add("watcher", WARNING, f"file watcher stopped {age:.0f} s ago")
        elif watcher.get("present") is False:
            add("watcher", WARNING, "no file watcher heartbeat (is the watcher running?)")
    return found


def evaluate(settings: Settings, *figures: Any, **more: Any) -> tuple[str, tuple[str, ...]]:
    """Status and reasons (worst first) of ``findings(settings, *figures, **more)``, this moment alone.

    The stored verdict also weighs the checks before (``ops.health_verdict``).
    """
    verdict = at_once(findings(settings, *figures, **more))
    return verdict.status, verdict.reasons


def system_health(
    settings: Settings,
    app: Any = None,
    store: bool = True,
    cpu_interval: float = 0.5,
    now: float | None = None,
    judge_over_history: bool | None = None,
) -> HealthReport:
    """Measure everything, decide ok / warning / critical, store a sample (``store``).

    ``judge_over_history`` (default: ``store``): weigh the stored checks before this one, as
    ``ops.health_verdict`` says (CPU over a window, swinging measures held for several checks);
    otherwise this check is judged alone, as a one-off measurement.
    """
    started = time.perf_counter()
    app = default_app() if app is None else app
    now = time.time() if now is None else now
    system = system_figures(cpu_interval)
    judge = judge_for(settings, clock=lambda: now)
    history = _history(settings, judge) if (store if judge_over_history is None else judge_over_history) else None
    mean, checks = judge.cpu_mean(system.get("cpu_percent"), history or [])
    system.update(cpu_mean_percent=mean, cpu_mean_checks=checks)
    paths = {"data_dir": settings.data_dir}
    for watched in default_watch_dirs(settings):
        paths[f"watch:{watched}"] = watched
    disks = disk_figures(paths)
    client = redis_client(settings)
    try:
        redis_info = redis_figures(client)
        queues: dict[str, dict[str, Any]] = {}
        watcher: dict[str, Any] = {}
        celery_info: dict[str, Any] | None = None
        if redis_info["ok"]:
            try:
                queues = queue_depths(client, app, now=now)
            except (redis.RedisError, OSError) as exc:
                redis_info = {**redis_info, "queues_error": error_text(exc)}
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
    found = findings(settings, system, disks, redis_info, celery_info, queues, watcher, ledger, source_errors(settings))
    storage = storage_check.probe_storage(settings, app)  # a real write: a read-only store is critical
    found[:0] = [
        Finding(f"storage:{name}", CRITICAL, reason) for name, reason in storage_check.storage_failures(storage)
    ]
    verdict = at_once(found) if history is None else judge.judge(found, history)
    report = HealthReport(
        checked_at=now,
        status=verdict.status,
        reasons=verdict.reasons,
        pending=verdict.pending,
        levels=verdict.levels,
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
            log.warning("health sample not stored: %s", error_text(exc))
    return report


def _history(settings: Settings, judge: HealthJudge) -> list[PastCheck] | None:
    """The stored checks the judge weighs; None (judge this one alone) when the database cannot say."""
    try:
        return stored_history(settings.database_url_resolved, judge)
    except Exception as exc:  # the check must report, whatever the database does
        log.warning("health history unavailable, this check is judged alone: %s", error_text(exc))
        return None


def source_errors(settings: Settings) -> tuple[str, ...]:
    """Each source (mail account, S3 prefix) whose last run failed, as one warning; retried at its next run."""
    from background_tasks.sources.status import all_statuses

    try:
        return tuple(f"{row.kind} source {row.name}: {row.error}" for row in all_statuses(settings) if row.error)
    except Exception as exc:  # the health check must report, whatever a source does
        return (f"sources could not report: {error_text(exc)}",)


def store_health_sample(url: str, report: HealthReport) -> None:
    """Keep ``report`` as one sample of the time series the dashboard draws."""
    data_disk = report.disks.get("data_dir", {})
    health_samples.add(
        url,
        {
            "taken_at": utc(report.checked_at),
            "status": report.status,
            "cpu_percent": report.system.get("cpu_percent"),
            "cpu_mean_percent": report.system.get("cpu_mean_percent"),
            "load_1": report.system.get("load_1"),
            "memory_percent": report.system.get("memory_percent"),
            "swap_percent": report.system.get("swap_percent"),
            "data_disk_percent": data_disk.get("percent"),
            "redis_ok": bool(report.redis.get("ok")),
            "redis_latency_ms": report.redis.get("latency_ms"),
            "redis_used_memory": report.redis.get("used_memory"),
            "workers": report.celery.get("responding"),
            "active_tasks": report.celery.get("active_tasks"),
            "waiting_tasks": sum(q.get("waiting", 0) for q in report.queues.values()) if report.queues else None,
            "watcher_age_s": report.watcher.get("age_s"),
            "reasons": list(report.reasons),
            "pending": list(report.pending),
            "levels": dict(report.levels),
            "details": json.loads(json.dumps(report.as_dict(), default=str)),
        },
    )


def recent_health(settings: Settings, hours: float = 24.0) -> list[dict[str, Any]]:
    """Health samples of the last ``hours`` (oldest first), for the dashboard."""
    return health_samples.since(settings.database_url_resolved, utc(time.time() - hours * 3600))
