"""One view of every configured source for ``python -m background_tasks sources status`` and the dashboard.

Each kind of source (S3 prefixes, mail accounts) names a function that reports its sources; they
are imported by name only when asked, so a source whose library is not installed fails only
when it is used.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from background_tasks.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceStatus:
    """What one source did lately; ``error`` is the last problem in plain words (no secrets)."""

    kind: str
    name: str
    last_run_at: datetime | None = None
    last_run_s: float | None = None
    seen: int = 0
    submitted: int = 0
    failed: int = 0
    error: str | None = None
    #: the start of the last run that ended without an error (``last_run_at`` counts failed runs too)
    last_success_at: datetime | None = None


#: ``"module:function"`` of each kind of source; the function takes Settings and returns its SourceStatus list
PROVIDERS: tuple[str, ...] = (
    "background_tasks.sources.mail.status:statuses",
    "background_tasks.sources.s3.status:statuses",
)

Provider = Callable[[Settings], list[SourceStatus]]


def _provider(spec: str) -> Provider:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def all_statuses(settings: Settings, providers: tuple[str, ...] = PROVIDERS) -> list[SourceStatus]:
    """Every configured source's status; a kind that cannot report says so as its own row."""
    rows: list[SourceStatus] = []
    for spec in providers:
        try:
            rows.extend(_provider(spec)(settings))
        except Exception as exc:  # one broken kind must not hide the others
            log.warning("sources: %s could not report: %s", spec, exc)
            rows.append(SourceStatus(kind=spec.rpartition(".")[2].partition(":")[0], name="-", error=str(exc)))
    return rows
