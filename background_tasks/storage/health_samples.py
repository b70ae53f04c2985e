"""The health time series: one row per health check, read back by the dashboard and the tasks.

What a sample holds is decided by the health check (``ops.health``); here it is a row of
``HealthSample`` columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select

from background_tasks.storage.db import read_scope, session_scope
from background_tasks.storage.models import HealthSample
from background_tasks.storage.schema import create_schema

#: every column of a sample, in table order
COLUMNS: tuple[str, ...] = tuple(c.name for c in HealthSample.__table__.columns)


def add(url: str, values: Mapping[str, Any]) -> None:
    """Store one sample (``values`` by column name; the id is given by the database)."""
    create_schema(url)
    with session_scope(url) as session:
        session.add(HealthSample(**values))


def since(
    url: str, taken_after: datetime, columns: Sequence[str] = COLUMNS, newest: int | None = None
) -> list[dict[str, Any]]:
    """Samples taken at or after ``taken_after``, oldest first, as dicts of ``columns``.

    ``newest`` keeps only that many of the most recent ones, so a chart of a long window stays bounded.
    """
    create_schema(url)
    selected = [getattr(HealthSample, c) for c in columns]
    stmt = select(*selected).where(HealthSample.taken_at >= taken_after)
    if newest is None:
        stmt = stmt.order_by(HealthSample.taken_at)
    else:
        stmt = stmt.order_by(HealthSample.taken_at.desc()).limit(newest)
    with read_scope(url) as session:
        rows = session.execute(stmt).all()
    if newest is not None:
        rows.reverse()
    return [dict(zip(columns, row, strict=True)) for row in rows]


def latest(url: str, columns: Sequence[str] = COLUMNS) -> dict[str, Any] | None:
    """The newest sample as a dict of ``columns``, or None when there is none."""
    create_schema(url)
    selected = [getattr(HealthSample, c) for c in columns]
    with read_scope(url) as session:
        row = session.execute(select(*selected).order_by(HealthSample.taken_at.desc()).limit(1)).first()
    return None if row is None else dict(zip(columns, row, strict=True))
