"""``GET /jobs/{id}``: where a submitted task stands, and its result once it has one.

Three records know a task: the intake ledger (queued, running, done, failed; which
document it recorded), the task history (sent, started) and the result backend (the
result dict, kept ``MIDAS_RESULT_EXPIRES_HOURS``). ``state`` is the result's when there
is one (``done``/``failed``), else the ledger's, else what the history says; a task none
of them knows is a 404.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from celery import states
from fastapi import APIRouter, Depends, Path

from background_tasks.api.context import ApiContext, get_context
from background_tasks.api.errors import ApiError
from background_tasks.errors import UnsafeResult
from background_tasks.storage import ledger as ledger_store
from background_tasks.storage import task_figures

router = APIRouter(tags=["jobs"])

Context = Annotated[ApiContext, Depends(get_context)]
JobId = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:@-]+$", description="the task id")]

_FAILED_STATES = frozenset({states.FAILURE, states.REVOKED})


def _plain(value: Any) -> Any:
    """A result as JSON can carry it: a failure as its type and message."""
    if isinstance(value, BaseException):
        return {"error_type": type(value).__name__, "error": str(value)}
    return value


def _result(ctx: ApiContext, job_id: str) -> tuple[str, Any, datetime | None]:
    """(Celery state, result or None, when it finished) from the result backend."""
    async_result = ctx.app.AsyncResult(job_id)
    try:
        state = async_result.state
        if state not in states.READY_STATES:
            return state, None, None
        return state, _plain(async_result.result), async_result.date_done
    except UnsafeResult as exc:  # a pickle in the results table: refused, never loaded
        return states.FAILURE, {"error_type": exc.error_type, "error": exc.message}, None


def job_state(celery_state: str, entry: dict[str, Any] | None, started: bool) -> str:
    """queued, running, done or failed, from the most certain record there is."""
    if celery_state == states.SUCCESS:
        return "done"
    if celery_state in _FAILED_STATES:
        return "failed"
    if entry is not None:
        return str(entry["state"])
    if celery_state in (states.STARTED, states.RETRY) or started:
        return "running"
    return "queued"


@router.get(
    "/jobs/{job_id}",
    summary="A submitted task: its state, and its result once done",
    responses={404: {"description": "`not_found`: no record of this task"}},
)
def get_job(ctx: Context, job_id: JobId) -> dict[str, Any]:
    """``state`` is queued, running, done or failed; ``result`` is the task's result dict once it is done."""
    entry = ledger_store.get(ctx.url, job_id)
    times = task_figures.history_times(ctx.url, [job_id]).get(job_id)
    celery_state, result, done_at = _result(ctx, job_id)
    if entry is None and times is None and celery_state == states.PENDING:
        raise ApiError(404, "not_found", f"no task {job_id} is known (results are kept for a limited time)")
    entry = entry or {}
    started_at = entry.get("started_at") or (times.started_at if times else None)
    return {
        "id": job_id,
        "state": job_state(celery_state, entry or None, started_at is not None),
        "task": entry.get("name"),
        "submitted_at": entry.get("sent_at") or (times.sent_at if times else None),
        "started_at": started_at,
        "finished_at": entry.get("finished_at") or done_at,
        "attempts": entry.get("attempts"),
        "resends": entry.get("resends"),
        "document_id": entry.get("document_id"),
        "outcome": entry.get("outcome"),
        "error": entry.get("error"),
        "celery_state": celery_state,
        "result": result,
    }
