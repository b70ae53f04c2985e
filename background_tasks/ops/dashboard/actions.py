"""The Actions section: upload into the inbox, retry a failed document, run a health check or a report now.

Each action sends the same Celery task the rest of MIDAS uses; Redis is asked
first, so a broker that is down is said plainly instead of hanging the page.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from background_tasks import keys
from background_tasks.errors import UnsafeResult
from background_tasks.ops.dashboard.common import plain_error, redis_client
from background_tasks.processing.uploads import safe_upload_name, save_upload
from background_tasks.settings import Settings
from background_tasks.sources.s3.staging import stage
from background_tasks.sources.s3.uri import is_s3_uri
from background_tasks.storage.store import DocumentStore

PROCESS_DOCUMENT = keys.PROCESS_DOCUMENT_FILE
HEALTH_CHECK = keys.SYSTEM_HEALTH_CHECK
TASK_REPORT = keys.GENERATE_TASK_REPORT
__all__ = [
    "TaskOutcome",
    "generate_report",
    "redis_problem",
    "report_markdown",
    "retry_document",
    "run_health_check",
    "safe_upload_name",
    "save_upload",
    "send_document",
    "upload_limit_mb",
]


def upload_limit_mb(settings: Settings) -> int:
    """Streamlit's upload cap in whole megabytes (its option is an integer), never below MIDAS_MAX_FILE_MB."""
    return max(1, math.ceil(settings.max_file_mb))


def redis_problem(settings: Settings) -> str | None:
    """None when Redis answers a ping; otherwise why not (checked before sending anything)."""
    client = redis_client(settings)
    try:
        client.ping()
        return None
    except (redis.RedisError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        client.close()


def send_document(app: Any, path: Path | str, settings: Settings | None = None) -> str:
    """Queue ``process_document_file`` for ``path`` (staged in MIDAS_OBJECT_STORE when set); returns the task id."""
    if settings is not None and settings.object_store and not is_s3_uri(str(path)):
        path = stage(path, settings).target
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
    if not is_s3_uri(path) and not Path(path).is_file():
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


def task_outcome(app: Any, task_id: str) -> TaskOutcome:
    """Where a task sent earlier stands, asked without waiting: ``finished`` with its result or error, or not yet.

    Not finished: ``result["state"]`` is Celery's state in lower case (pending, started, retry).
    """
    from celery import states

    result = app.AsyncResult(task_id)
    try:
        state = result.state
        if state not in states.READY_STATES:
            return TaskOutcome(task_id, False, {"state": str(state).lower()})
        value = result.result
    except UnsafeResult as exc:  # e.g. a pickle written into the results table: refused, never loaded
        return TaskOutcome(task_id, True, error=exc.message)
    if state != states.SUCCESS:
        error = plain_error(value) if isinstance(value, BaseException) else state.lower()
        return TaskOutcome(task_id, True, error=error)
    return TaskOutcome(task_id, True, value if isinstance(value, dict) else {"value": value})


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
