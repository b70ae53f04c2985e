"""Queue depths in Redis and what each worker holds, behind the queue check and the dashboard.

Depths are read from kombu's own Redis lists (one per priority step) and its hash of
unacknowledged messages; the workers are asked over Celery's control channel.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

from background_tasks.ops.reach import CONTROL_TIMEOUT, default_app, error_text, redis_client
from background_tasks.ops.task_history import SENT_HEADER, epoch
from background_tasks.settings import QUEUES, Settings
from background_tasks.storage import task_figures

log = logging.getLogger(__name__)

#: Unacknowledged messages looked at per check (their bodies are read to find the queue).
UNACKED_SCAN_MAX = 20000


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
    try:
        times = task_figures.history_times(url, task_ids)
    except Exception as exc:
        log.warning("queue check: task history unavailable: %s", error_text(exc))
        return {}
    return {task_id: {"sent": epoch(t.sent_at), "started": epoch(t.started_at)} for task_id, t in times.items()}


def check_queues(
    settings: Settings,
    app: Any = None,
    stuck_after: float | None = None,
    queues: Iterable[str] = QUEUES,
    now: float | None = None,
    timeout: float = CONTROL_TIMEOUT,
) -> QueueCheck:
    """What is waiting, what each worker is doing, and which tasks run longer than ``stuck_after`` seconds."""
    app = default_app() if app is None else app
    stuck_after = settings.stuck_task_seconds if stuck_after is None else float(stuck_after)
    now = time.time() if now is None else now
    client = redis_client(settings)
    try:
        depths = queue_depths(client, app, queues, now=now)
    except (redis.RedisError, OSError) as exc:
        return QueueCheck(now, False, f"Redis unreachable: {error_text(exc)}", stuck_after, {}, {})
    finally:
        client.close()
    workers: dict[str, dict[str, list[dict[str, Any]]]] = {}
    error = None
    try:
        hosts, active, reserved, scheduled = ask_workers(app, timeout)
    except Exception as exc:
        return QueueCheck(now, False, f"could not ask the workers: {error_text(exc)}", stuck_after, depths, {})
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
