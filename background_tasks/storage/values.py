"""Values as the document tables store them, shared by the store's modules.

Every text that reaches a row goes through ``clean_text`` (PostgreSQL refuses
NUL, neither database takes lone surrogates), metadata through ``json_safe``,
paths through ``clean_path``; times are UTC. ``db_call`` is the one place a
retryable database error becomes ``TransientError`` for the store's callers.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from background_tasks.storage.db import transient_db_errors

MAX_ERROR_CHARS = 20_000
MAX_META_STRING = 100_000
_MAX_META_DEPTH = 40

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def utc_now() -> datetime:
    return datetime.now(UTC)


def clean_text(value: str | None, limit: int | None = None) -> str | None:
    """Text a database accepts: no NUL (PostgreSQL refuses it), no lone surrogates."""
    if value is None:
        return None
    value = str(value)
    if "\x00" in value:
        value = value.replace("\x00", "")
    if _LONE_SURROGATE.search(value):
        value = _LONE_SURROGATE.sub("\ufffd", value)
    if limit is not None and len(value) > limit:
        value = value[:limit] + "…"
    return value


def clean_path(path: Any) -> str:
    """A path as stored: undecodable bytes (surrogate escapes) shown as ``\\xNN``."""
    value = str(path)
    if _LONE_SURROGATE.search(value):
        try:
            value = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:
            value = _LONE_SURROGATE.sub("\ufffd", value)
    return value.replace("\x00", "")


def path_hash(path: str) -> str:
    """What paths are looked up and kept unique by (PostgreSQL cannot index long text)."""
    return hashlib.sha256(path.encode("utf-8")).hexdigest()


def file_type_of(value: str | None) -> str | None:
    """A file type as stored: lower case, no leading dot, at most 32 characters."""
    if not value:
        return None
    value = value.strip().lstrip(".").lower()
    return clean_text(value[:32]) or None


def json_safe(value: Any, depth: int = 0) -> Any:
    """Metadata as JSON both databases accept (no NaN, no NUL, no bytes, bounded depth)."""
    if depth > _MAX_META_DEPTH:
        return clean_text(repr(value), 1000)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return clean_text(value, MAX_META_STRING)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if isinstance(value, Mapping):
        return {clean_text(str(k), 1000): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v, depth + 1) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return clean_text(str(value), MAX_META_STRING)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; everything is stored in UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def check_sha(value: str) -> str:
    """A SHA-256 hex digest in lower case, or ``ValueError``."""
    value = (value or "").strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ValueError(f"not a SHA-256 hex digest: {value[:80]!r}")
    return value


def insert_for(dialect: str, table: Any) -> Any:
    """An INSERT of the named dialect, which has ``on_conflict_do_update`` on both databases."""
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def upsert(session: Session, table: Any) -> Any:
    """An INSERT of the session's dialect, which has ``on_conflict_do_update`` on both databases."""
    return insert_for(session.get_bind().dialect.name, table)


P = ParamSpec("P")
R = TypeVar("R")


def db_call(method: Callable[P, R]) -> Callable[P, R]:
    """Retryable database errors leave the store as ``TransientError``."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with transient_db_errors():
            return method(*args, **kwargs)

    return wrapper


class Conflict(Exception):
    """Another process changed the row between our read and our write."""
