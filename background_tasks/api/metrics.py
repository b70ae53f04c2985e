"""``GET /metrics``: MIDAS's figures in Prometheus's text format, read fresh at each scrape.

The figures are the ones the dashboard and the health check use, from the same functions:
queue depths from Redis (``ops.queues``), tasks and their run times from the task history
(``storage.task_figures``), documents per status and type from the store, the intake
ledger's states (``ops.ledger_health``) and the stored health verdict. A part that cannot
be read (Redis down, say) is left out and counted in ``midas_scrape_error{part}``, so the
rest still arrives. Counts from the history cover what it keeps (``MIDAS_RETENTION_DAYS``)
and fall when it is cleaned up: they are gauges, not counters.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends
from prometheus_client import generate_latest
from prometheus_client.core import CollectorRegistry, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from starlette.responses import Response

from background_tasks.api.context import ApiContext, get_context
from background_tasks.api.health import UNKNOWN, stored_verdict
from background_tasks.ops.ledger_health import ledger_figures
from background_tasks.ops.queues import queue_depths
from background_tasks.ops.reach import redis_client
from background_tasks.settings import QUEUES
from background_tasks.statuses import HealthStatus, LedgerState
from background_tasks.storage import task_figures

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

Context = Annotated[ApiContext, Depends(get_context)]

#: the classic text format (0.0.4), which every Prometheus reads
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
#: the window of the recent run-time quantiles
RECENT = timedelta(hours=1)
HEALTH_LEVELS = {HealthStatus.OK.value: 0, HealthStatus.WARNING.value: 1, HealthStatus.CRITICAL.value: 2}


def _gauge(name: str, text: str, labels: list[str] | None = None, value: float | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, value=value, labels=labels)


def queue_metrics(ctx: ApiContext) -> Iterator[Metric]:
    client = redis_client(ctx.settings)
    try:
        depths = queue_depths(client, ctx.app, QUEUES)
    finally:
        client.close()
    waiting = _gauge("midas_queue_waiting", "Messages waiting in each queue.", ["queue"])
    unacked = _gauge("midas_queue_unacked", "Messages a worker took and has not acknowledged.", ["queue"])
    oldest = _gauge("midas_queue_oldest_waiting_seconds", "Age of the oldest waiting message.", ["queue"])
    for queue, entry in sorted(depths.items()):
        waiting.add_metric([queue], entry["waiting"])
        unacked.add_metric([queue], entry["unacked"])
        oldest.add_metric([queue], entry["oldest_waiting_s"] or 0.0)
    yield from (waiting, unacked, oldest)


def task_metrics(ctx: ApiContext) -> Iterator[Metric]:
    tasks = _gauge("midas_tasks", "Tasks in the kept task history, per name and state.", ["task", "state"])
    runtime = SummaryMetricFamily(
        "midas_task_runtime_seconds", "Run time of the tasks in the kept history that report one.", labels=["task"]
    )
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for total in task_figures.task_totals(ctx.url):
        name = total.name or "unknown"
        tasks.add_metric([name, total.state], total.tasks)
        sums[name][0] += total.runtime_count
        sums[name][1] += total.runtime_sum_s
    for name, (count, seconds) in sorted(sums.items()):
        if count:
            runtime.add_metric([name], count_value=int(count), sum_value=seconds)
    yield from (tasks, runtime)
    now = datetime.now(UTC)
    by_name: dict[str, list[float]] = defaultdict(list)
    for row in task_figures.report_rows(ctx.url, now - RECENT, now):
        if row.runtime_s is not None:
            by_name[row.name or "unknown"].append(float(row.runtime_s))
    recent = _gauge(
        "midas_task_runtime_recent_seconds", "Run-time quantiles of the tasks of the last hour.", ["task", "quantile"]
    )
    for name, values in sorted(by_name.items()):
        cuts = statistics.quantiles(values, n=20, method="inclusive") if len(values) > 1 else values * 19
        recent.add_metric([name, "0.5"], statistics.median(values))
        recent.add_metric([name, "0.95"], cuts[18])
    yield recent


def document_metrics(ctx: ApiContext) -> Iterator[Metric]:
    stats = ctx.store.stats()
    by_status = _gauge("midas_documents", "Documents in the store, per status.", ["status"])
    for status, count in sorted(stats["by_status"].items()):
        by_status.add_metric([status], count)
    by_type = _gauge("midas_documents_by_type", "Documents in the store, per file type.", ["file_type"])
    for file_type, entry in sorted(stats["by_file_type"].items()):
        by_type.add_metric([file_type], entry["documents"])
    yield from (by_status, by_type, _gauge("midas_chunks", "Chunks in the store.", value=stats["chunks"]))


def ledger_metrics(ctx: ApiContext) -> Iterator[Metric]:
    figures = ledger_figures(ctx.settings)
    if not figures.get("enabled"):
        return
    if not figures.get("ok"):
        raise RuntimeError(figures.get("error", "the ledger cannot be read"))
    entries = _gauge("midas_ledger_entries", "Intake ledger entries, per state.", ["state"])
    for state in LedgerState:
        entries.add_metric([state.value], figures[state.value])
    yield entries
    oldest = figures["oldest_queued_s"]
    yield _gauge("midas_ledger_oldest_queued_seconds", "Age of the oldest queued ledger entry.", value=oldest or 0.0)
    yield _gauge("midas_ledger_resent_last_hour", "Entries the reaper sent again in the last hour.",
                 value=figures["resent_last_hour"])  # fmt: skip
    yield _gauge("midas_ledger_overdue", "Open entries the reaper is overdue for.", value=figures["overdue"])


def health_metrics(ctx: ApiContext) -> Iterator[Metric]:
    verdict = stored_verdict(ctx.settings)
    status = _gauge("midas_health_status", "The stored health verdict (1 for the current one).", ["status"])
    for name in (*HEALTH_LEVELS, UNKNOWN):
        status.add_metric([name], 1.0 if verdict["status"] == name else 0.0)
    yield status
    if verdict["status"] in HEALTH_LEVELS:
        yield _gauge("midas_health_level", "The stored verdict: 0 ok, 1 warning, 2 critical.",
                     value=HEALTH_LEVELS[verdict["status"]])  # fmt: skip
        yield _gauge("midas_health_check_age_seconds", "Age of the stored verdict.", value=verdict["age_s"])


PARTS: dict[str, Callable[[ApiContext], Iterator[Metric]]] = {
    "queues": queue_metrics,
    "tasks": task_metrics,
    "documents": document_metrics,
    "ledger": ledger_metrics,
    "health": health_metrics,
}


class MidasCollector:
    """Every part's figures, read at collection time; a part that fails is reported, not fatal."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Metric]:
        errors = _gauge("midas_scrape_error", "1 when a part of the figures could not be read.", ["part"])
        took = _gauge("midas_scrape_part_seconds", "Time taken to read each part.", ["part"])
        for part, read in PARTS.items():
            started = time.perf_counter()
            try:
                metrics = list(read(self.ctx))
            except Exception as exc:  # one part down (Redis, a table) must not cost the others
                log.warning("metrics: %s could not be read: %s: %s", part, type(exc).__name__, exc)
                metrics, failed = [], 1.0
            else:
                failed = 0.0
            errors.add_metric([part], failed)
            took.add_metric([part], round(time.perf_counter() - started, 6))
            yield from metrics
        yield errors
        yield took


def exposition(ctx: ApiContext) -> bytes:
    """The text a Prometheus scrape gets."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MidasCollector(ctx))  # type: ignore[arg-type]
    return generate_latest(registry)


@router.get(
    "/metrics",
    summary="Prometheus text: queues, tasks and run times, documents, ledger, health",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}}},
)
def metrics(ctx: Context) -> Response:
    """Scrape with a bearer token (Prometheus: ``authorization: {credentials: <token>}``)."""
    return Response(exposition(ctx), media_type=CONTENT_TYPE)
