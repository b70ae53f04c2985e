"""``GET /health``: the verdict the health check stored last, for anyone; its reasons for token holders.

The API does not judge health itself: it answers what ``system_health_check`` (Beat,
every ``MIDAS_HEALTH_CHECK_INTERVAL``) stored, the same verdict the dashboard shows, with
its age so a stale one is seen. ``critical`` answers 503, so a plain HTTP check notices, and
so does a store that cannot be read; ``unknown`` (no check stored yet) answers 200.
The reasons can name folders and figures of the machine, so they need a token.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from background_tasks.api.auth import token_was_valid
from background_tasks.api.context import ApiContext, get_context
from background_tasks.api.errors import MidasJSON
from background_tasks.ops import health_verdict
from background_tasks.settings import Settings
from background_tasks.statuses import HealthStatus

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

Context = Annotated[ApiContext, Depends(get_context)]

UNKNOWN = "unknown"
NO_CHECK = ["no health check has been stored"]
UNREADABLE = ["the store cannot be read"]


def stored_verdict(settings: Settings, now: float | None = None) -> dict[str, Any]:
    """``{"status", "checked_at", "age_s", "stale", "reasons"}``: the dashboard's stored verdict as the API shows it.

    Status ``unknown`` when no check was stored yet; ``checked_at`` is ISO 8601 UTC.
    """
    verdict = health_verdict.stored_verdict(settings, now)
    if verdict is None:
        return {"status": UNKNOWN, "checked_at": None, "age_s": None, "stale": True, "reasons": NO_CHECK}
    taken = verdict["taken_at"]
    return {
        "status": str(verdict["status"]),
        "checked_at": None if taken is None else datetime.fromtimestamp(taken, UTC).isoformat(),
        "age_s": verdict["age_s"],
        "stale": verdict["stale"],
        "reasons": verdict["reasons"],
    }


@router.get(
    "/health",
    summary="The stored health verdict (no token needed; reasons only with one)",
    responses={503: {"description": "critical, or the store cannot be read"}},
)
def health(ctx: Context, request: Request) -> MidasJSON:
    """ok, warning, critical or unknown, as the last health check stored it."""
    try:
        verdict = stored_verdict(ctx.settings)
    except Exception as exc:  # the answer must come, whatever the store does
        log.warning("health: the store cannot be read: %s", exc)
        verdict = {"status": UNKNOWN, "checked_at": None, "age_s": None, "stale": True, "reasons": UNREADABLE}
        return MidasJSON(_for(request, verdict), status_code=503)
    code = 503 if verdict["status"] == HealthStatus.CRITICAL else 200
    return MidasJSON(_for(request, verdict), status_code=code)


def _for(request: Request, verdict: dict[str, Any]) -> dict[str, Any]:
    answer = dict(verdict)
    if not token_was_valid(request.state):
        answer.pop("reasons", None)
    return answer
