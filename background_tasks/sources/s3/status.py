"""The S3 sources' rows of ``python -m background_tasks sources status`` (and the dashboard's panel)."""

from __future__ import annotations

from background_tasks.settings import Settings
from background_tasks.sources.status import SourceStatus
from background_tasks.storage import s3_objects


def statuses(settings: Settings) -> list[SourceStatus]:
    """One row per prefix of MIDAS_S3_SOURCES, from the listing memory (no request to S3)."""
    if not settings.s3_sources:
        return []
    return [
        SourceStatus(
            kind="s3",
            name=f.source,
            last_run_at=f.last_run_at,
            last_run_s=f.last_run_s,
            seen=f.seen,
            submitted=f.submitted,
            failed=f.failed,
            error=f.error,
            last_success_at=f.last_success_at,
        )
        for f in s3_objects.figures(settings.database_url_resolved, settings.s3_sources)
    ]
