"""The MIDAS Celery application.

``celery -A celery_config worker`` / ``beat`` / ``flower`` load ``app`` from
here. Everything comes from ``background_tasks.settings``; ``create_app`` lets
tests (and a second MIDAS on other ports) build an app for other settings.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from background_tasks import keys
from background_tasks.ops.ledger import LedgeredAMQP
from background_tasks.settings import QUEUES, Settings, settings_or_exit
from background_tasks.storage.db import SQLITE_CONNECT_ARGS, configure_sqlite_engine
from background_tasks.storage.result_backend import BACKEND_PATH
from background_tasks.task_base import MidasTask
from background_tasks.worker_signals import wire_signals

log = logging.getLogger("midas.celery")

TASK_MODULES = keys.TASK_MODULES

#: Routing is configuration, not a caller's choice: module -> queue.
TASK_ROUTES = {
    f"{keys.DOCUMENT_TASKS}.*": {"queue": "documents"},
    f"{keys.ANALYSIS_TASKS}.*": {"queue": "analysis"},
    f"{keys.MONITORING_TASKS}.*": {"queue": "monitoring"},
    f"{keys.SYSTEM_TASKS}.*": {"queue": "default"},
    f"{keys.MAIL_TASKS}.*": {"queue": "default"},
    f"{keys.S3_TASKS}.*": {"queue": "default"},
}


def available_task_modules(extra: tuple[str, ...] = ()) -> list[str]:
    """Task modules present in this checkout (later parts of the suite may not be installed), plus plugins."""
    return [name for name in TASK_MODULES if importlib.util.find_spec(name) is not None] + list(extra)


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Periodic work. Each entry expires just before its next run, so a backlog never piles up."""

    def entry(task: str, seconds: int, **kwargs: Any) -> dict[str, Any]:
        return {
            "task": task,
            "schedule": timedelta(seconds=seconds),
            "kwargs": kwargs,
            "options": {"expires": max(1.0, seconds * 0.9)},
        }

    schedule = {
        "system-health-check": entry(keys.SYSTEM_HEALTH_CHECK, settings.health_check_interval),
        "queue-check": entry(keys.CHECK_TASK_QUEUE, settings.queue_check_interval),
        "task-report": entry(keys.GENERATE_TASK_REPORT, settings.task_report_interval, hours=24),
        "task-cleanup": entry(
            keys.CLEANUP_OLD_TASKS,
            settings.task_cleanup_interval,
            days=settings.retention_days,
        ),
        "ledger-reaper": entry(keys.REAP_LEDGER, settings.ledger_reap_interval),
        "processed-file-cleanup": entry(
            keys.CLEANUP_OLD_PROCESSED_FILES,
            settings.file_cleanup_interval,
            days=settings.retention_days,
        ),
    }
    if settings.mail_config:
        schedule["mail-fetch"] = entry(keys.FETCH_MAIL, settings.mail_interval)
    if settings.s3_sources:
        schedule["s3-sources"] = entry(keys.LIST_S3_SOURCES, settings.s3_interval)
    return schedule


def broker_transport_options(visibility_timeout: int) -> dict[str, Any]:
    """Redis transport options: unacknowledged messages of a dead worker come back soon after
    the visibility timeout (kombu sweeps every interval x throttle seconds; by default 100 s)."""
    interval = max(1, min(10, visibility_timeout // 4))
    throttle = max(1, int(min(100, visibility_timeout / 2) // interval))
    return {
        "visibility_timeout": visibility_timeout,
        "unacked_restore_interval": interval,
        "unacked_restore_throttle": throttle,
    }


def _prepare_sqlite(url: str) -> None:
    """WAL survives in the file, so setting it once lets every worker process write concurrently."""
    if not url.startswith("db+sqlite:///"):
        return
    path = Path(url.removeprefix("db+sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Results are JSON and never unpickled (result_backend.py); the file is private all the same.
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)
    with sqlite3.connect(path, timeout=30) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


def _survive_restore_on_a_dead_connection() -> None:
    """Keep a worker alive when Redis drops the connection while it holds unacknowledged messages.

    On connection loss kombu closes the channel, and closing tries to put the worker's
    unacknowledged messages back on the queue through that very connection. When it is already
    gone this raises AttributeError, which Celery treats as unrecoverable: the whole worker exits
    instead of reconnecting (celery/celery#7185, celery/kombu#970). Nothing could be restored over
    a dead connection anyway; the messages stay in Redis's unacknowledged set and are handed out
    again once the visibility timeout has passed, so the error is logged and the worker goes on.
    """
    from kombu.transport import redis as kombu_redis

    original = kombu_redis.QoS.restore_unacked
    if getattr(original, "midas_safe", False):
        return

    def restore_unacked(self: Any, client: Any = None) -> Any:
        try:
            return original(self, client)
        except AttributeError as exc:
            log.warning(
                "could not give back %d unacknowledged message(s) over the lost broker connection (%s); "
                "Redis hands them out again after the visibility timeout",
                len(getattr(self, "_delivered", ()) or ()),
                exc,
            )
            return None

    restore_unacked.midas_safe = True  # type: ignore[attr-defined]
    kombu_redis.QoS.restore_unacked = restore_unacked


_survive_restore_on_a_dead_connection()


def create_app(settings: Settings) -> Celery:
    """A Celery app configured from ``settings``."""
    app = Celery(
        "midas",
        task_cls=MidasTask,
        amqp=LedgeredAMQP,
        include=available_task_modules(settings.extra_task_modules),
    )
    # "db+<SQLAlchemy URL>" means MIDAS's JSON-only database backend, which never unpickles a result
    # and never loses an outcome it could not write (background_tasks/storage/result_backend.py).
    app.loader.override_backends = {**app.loader.override_backends, "db": BACKEND_PATH}
    backend = settings.result_backend_url
    sqlite = backend.startswith("db+sqlite:")
    _prepare_sqlite(backend)
    default_exchange = Exchange("midas", type="direct")
    app.conf.update(
        broker_url=settings.broker_url,
        result_backend=backend,
        # On SQLite the results file gets the store's tuning: WAL, busy timeout, synchronous=NORMAL
        # (a commit no longer waits for fsync) and BEGIN IMMEDIATE so concurrent writers queue.
        database_engine_options={"connect_args": dict(SQLITE_CONNECT_ARGS)} if sqlite else {"pool_pre_ping": True},
        database_engine_callback=configure_sqlite_engine if sqlite else None,
        database_create_tables_at_setup=True,
        # JSON only: a pickled message is refused by the worker.
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        event_serializer="json",
        # Queues and routing.
        task_queues=[Queue(name, default_exchange, routing_key=name) for name in QUEUES],
        task_default_queue="default",
        task_default_exchange="midas",
        task_default_routing_key="default",
        task_routes=TASK_ROUTES,
        # Reliability: ack after the task ran, requeue when its process dies.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_deduplicate_successful_tasks=True,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        # A cold stop (SIGQUIT, Ctrl+C) lets running tasks finish for this long, then hands the
        # rest back to the queue (late ack), so another worker takes them at once.
        worker_soft_shutdown_timeout=float(settings.soft_shutdown_timeout),
        worker_max_tasks_per_child=settings.max_tasks_per_child,
        worker_max_memory_per_child=settings.max_memory_per_child_kib,
        worker_concurrency=settings.concurrency,
        worker_pool=settings.pool,
        task_soft_time_limit=settings.task_soft_time_limit,
        task_time_limit=settings.task_time_limit,
        broker_transport_options=broker_transport_options(settings.visibility_timeout),
        result_backend_transport_options={"visibility_timeout": settings.visibility_timeout},
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        result_expires=timedelta(hours=settings.result_expires_hours),
        result_extended=True,
        task_track_started=True,
        # Events, so Flower shows queued and running tasks.
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_hijack_root_logger=True,
        worker_log_format="%(asctime)s %(levelname)-7s %(processName)s %(name)s [%(task_id)s] %(message)s",
        worker_task_log_format="%(asctime)s %(levelname)-7s %(processName)s %(name)s [%(task_id)s] %(message)s",
        beat_schedule=beat_schedule(settings),
        timezone="UTC",
        enable_utc=True,
        midas_max_redeliveries=settings.max_redeliveries,
        # The intake ledger (background_tasks/ops/ledger.py): publish, lease, reaper.
        midas_ledger=settings.ledger_enabled,
        midas_database_url=settings.database_url_resolved,
        midas_ledger_grace=settings.ledger_grace_seconds,
        midas_ledger_lease=settings.ledger_lease_seconds,
        # The retry policy of MidasTask (background_tasks/task_base.py).
        midas_max_retries=settings.max_retries,
        midas_retry_backoff_max=settings.retry_backoff_max,
    )
    app.midas_settings = settings
    wire_signals(app)
    return app


app = create_app(settings_or_exit())
