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
from background_tasks.statuses import HealthStatus
from background_tasks.storage import health_samples

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

Context = Annotated[ApiContext, Depends(get_context)]

UNKNOWN = "unknown"


def stored_verdict(url: str, now: datetime | None = None) -> dict[str, Any]:
    """``{"status", "checked_at", "age_s", "reasons"}`` of the newest stored check (status ``unknown`` without one)."""
    sample = health_samples.latest(url, ("taken_at", "status", "reasons"))
    if sample is None:
        return {"status": UNKNOWN, "checked_at": None, "age_s": None, "reasons": ["no health check has been stored"]}
    taken = sample["taken_at"]
    taken = taken if taken.tzinfo else taken.replace(tzinfo=UTC)
    age = max(0.0, ((now or datetime.now(UTC)) - taken).total_seconds())
    return {
        "status": str(sample["status"]),
        "checked_at": taken,
        "age_s": round(age, 1),
        "reasons": list(sample["reasons"] or []),
    }


@router.get(
    "/health",
    summary="The stored health verdict (no token needed; reasons only with one)",
    responses={503: {"description": "critical, or the store cannot be read"}},
)
def health(ctx: Context, request: Request) -> MidasJSON:
    """ok, warning, critical or unknown, as the last health check stored it."""
    try:
        verdict = stored_verdict(ctx.url)
    except Exception as exc:  # the answer must come, whatever the store does
        log.warning("health: the store cannot be read: %s", exc)
        verdict = {"status": UNKNOWN, "checked_at": None, "age_s": None, "reasons": ["the store cannot be read"]}
        return MidasJSON(_for(request, verdict), status_code=503)
    code = 503 if verdict["status"] == HealthStatus.CRITICAL else 200
    return MidasJSON(_for(request, verdict), status_code=code)


def _for(request: Request, verdict: dict[str, Any]) -> dict[str, Any]:
    answer = dict(verdict)
    if isinstance(answer.get("checked_at"), datetime):
        answer["checked_at"] = answer["checked_at"].isoformat()
    if not token_was_valid(request.state):
        answer.pop("reasons", None)
    return answer
