"""Health, queue, report and cleanup functions behind the monitoring tasks (the face of four modules).

Plain functions, usable from the tasks, the dashboard and a shell. Each takes the settings
(and, where it talks to workers, the Celery app) so a test or a second MIDAS can point it
elsewhere, and returns a frozen dataclass whose ``as_dict()`` is JSON-ready. They live in
``ops.health`` (the health check and its sample), ``ops.queues`` (queue depths and what the
workers hold), ``ops.reports`` (the task report) and ``ops.retention`` (cleanup); their SQL
is in ``storage.health_samples``, ``storage.task_figures`` and ``storage.retention``.
"""

from __future__ import annotations

from background_tasks.ops.health import (
    CRITICAL,
    OK,
    WARNING,
    WATCHER_HEARTBEAT_KEY,
    HealthReport,
    celery_figures,
    disk_figures,
    evaluate,
    findings,
    recent_health,
    redis_figures,
    store_health_sample,
    system_figures,
    system_health,
    watcher_figures,
)
from background_tasks.ops.queues import (
    UNACKED_SCAN_MAX,
    QueueCheck,
    ask_workers,
    check_queues,
    lay_out_workers,
    priority_queue_names,
    queue_depths,
)
from background_tasks.ops.reach import CONTROL_TIMEOUT, REDIS_TIMEOUT
from background_tasks.ops.reports import (
    CSV_COLUMNS,
    TaskReport,
    percentile,
    render_csv,
    render_markdown,
    task_report,
    write_report,
)
from background_tasks.ops.retention import RESULT_TABLES, CleanupResult, cleanup, compact_sqlite
from background_tasks.storage.models import HealthSample
from background_tasks.storage.retention import VACUUM_MIN_FREE_BYTES, VACUUM_MIN_FREE_SHARE

__all__ = [
    "CONTROL_TIMEOUT",
    "CRITICAL",
    "CSV_COLUMNS",
    "OK",
    "REDIS_TIMEOUT",
    "RESULT_TABLES",
    "UNACKED_SCAN_MAX",
    "VACUUM_MIN_FREE_BYTES",
    "VACUUM_MIN_FREE_SHARE",
    "WARNING",
    "WATCHER_HEARTBEAT_KEY",
    "CleanupResult",
    "HealthReport",
    "HealthSample",
    "QueueCheck",
    "TaskReport",
    "ask_workers",
    "celery_figures",
    "check_queues",
    "cleanup",
    "compact_sqlite",
    "disk_figures",
    "evaluate",
    "findings",
    "lay_out_workers",
    "percentile",
    "priority_queue_names",
    "queue_depths",
    "recent_health",
    "redis_figures",
    "render_csv",
    "render_markdown",
    "store_health_sample",
    "system_figures",
    "system_health",
    "task_report",
    "watcher_figures",
    "write_report",
]
