"""Monitoring tasks (queue ``monitoring``, scheduled by Beat): thin wrappers over ``background_tasks.ops.monitoring``.

from background_tasks.monitoring_tasks import system_health_check
system_health_check.delay().get(timeout=30)["status"]   # 'ok', 'warning' or 'critical'
"""

from __future__ import annotations

import logging
from typing import Any

from background_tasks import keys
from background_tasks.ops import alerts, monitoring, reaper
from background_tasks.settings import get_settings
from celery_config import app

log = logging.getLogger(__name__)


@app.task(name=keys.SYSTEM_HEALTH_CHECK)
def system_health_check() -> dict[str, Any]:
    """Measure host, Redis, workers, queues and watcher; store the sample and its verdict; alert when critical.

    The verdict weighs the stored checks before (``ops.health_verdict``): one busy moment does not alert.
    """
    report = monitoring.system_health(get_settings(), app)
    data = report.as_dict()
    if report.status != monitoring.OK:
        log.warning("health %s: %s", report.status, "; ".join(report.reasons))
    if report.pending:  # not counted until it holds for MIDAS_HEALTH_HOLD_CHECKS checks in a row
        log.info("health pending: %s", "; ".join(report.pending))
    if report.status == monitoring.CRITICAL:
        data["alert"] = alerts.health_alert(data).as_dict()
    summary = alerts.flush_failure_summary()
    if summary is not None:
        data["failure_summary"] = summary.as_dict()
    return data


@app.task(name=keys.CHECK_TASK_QUEUE)
def check_task_queue(stuck_after: float | None = None) -> dict[str, Any]:
    """Waiting/unacknowledged messages per queue and each worker's tasks; flags tasks running too long."""
    result = monitoring.check_queues(get_settings(), app, stuck_after=stuck_after)
    for task in result.stuck:
        log.warning(
            "stuck task: %s[%s] running %.0f s on %s", task["name"], task["id"], task["running_s"], task["worker"]
        )
    data = result.as_dict()
    # failures held back by the alert quiet period go out once it is over
    summary = alerts.flush_failure_summary()
    if summary is not None:
        data["failure_summary"] = summary.as_dict()
    return data


@app.task(name=keys.GENERATE_TASK_REPORT)
def generate_task_report(hours: float = 24) -> dict[str, Any]:
    """Per-task figures, top errors and documents per file type; written as JSON, Markdown and CSV."""
    report = monitoring.task_report(get_settings(), hours=float(hours))
    log.info("task report over %s h written to %s", hours, report.files.get("markdown"))
    return report.as_dict()


@app.task(name=keys.CLEANUP_OLD_TASKS)
def cleanup_old_tasks(days: float | None = None) -> dict[str, Any]:
    """Delete history, results and health samples older than ``days`` (default: the retention); compact SQLite."""
    result = monitoring.cleanup(get_settings(), days=days)
    log.info("cleanup older than %s days: %s", result.days, result.removed)
    return result.as_dict()


@app.task(name=keys.REAP_LEDGER)
def reap_ledger(limit: int = 500) -> dict[str, Any]:
    """Send again the ledgered tasks that the broker lost or whose worker died (see ``ops.reaper``)."""
    settings = get_settings()
    if not settings.ledger_enabled:
        return {"enabled": False}
    with app.connection_for_write() as conn:
        report = reaper.reap(settings, app, conn.default_channel.client, limit=int(limit))
    if report.resent or report.failed:
        log.warning("ledger reaper: %d sent again, %d failed for good", len(report.resent), len(report.failed))
    return {"enabled": True, **report.as_dict()}
