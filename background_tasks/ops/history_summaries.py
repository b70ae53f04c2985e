"""Short summaries of a task's arguments, result and error for its history row: never file contents."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

ARGS_SUMMARY_MAX = 500
RESULT_SUMMARY_MAX = 500
ERROR_MESSAGE_MAX = 2000
TRACEBACK_MAX = 8000
#: epoch seconds a ``*_at`` result field may hold to be shown as a time (2001 to 2286)
_EPOCH_RANGE = (1e9, 1e10)


def _short(value: Any, depth: int = 0) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if isinstance(value, str):  # a path or a short option; a long string may be content: only its length
        return repr(value) if len(value) <= 200 else f"<{len(value)} characters>"
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    if isinstance(value, Mapping):
        if depth >= 1:
            return f"{{{len(value)} keys}}"
        items = [f"{k!s}={_short(v, depth + 1)}" for k, v in list(value.items())[:8]]
        more = ", …" if len(value) > 8 else ""
        return "{" + ", ".join(items) + more + "}"
    if isinstance(value, list | tuple | set | frozenset):
        seq = list(value)
        if depth >= 1:
            return f"[{len(seq)} items]"
        items = [_short(v, depth + 1) for v in seq[:5]]
        more = f", … ({len(seq)} items)" if len(seq) > 5 else ""
        return "[" + ", ".join(items) + more + "]"
    return f"<{type(value).__name__}>"


def truncate(text: str | None, limit: int) -> str | None:
    """``text`` cut to ``limit`` characters, the last one an ellipsis when it was longer."""
    if text is None:
        return None
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summarize_args(args: Iterable[Any] | None, kwargs: Mapping[str, Any] | None) -> str:
    """``'report.pdf', hours=24`` style, at most ARGS_SUMMARY_MAX characters; bytes are only counted."""
    parts = [_short(a) for a in (args or ())]
    parts += [f"{k}={_short(v)}" for k, v in (kwargs or {}).items()]
    return truncate(", ".join(parts), ARGS_SUMMARY_MAX) or ""


def summarize_result(value: Any) -> str | None:
    """Scalars and short strings of a result; long text (extracted content) is left out."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        kept = {
            str(k): v
            for k, v in value.items()
            if v is None or isinstance(v, bool | int | float) or (isinstance(v, str) and len(v) <= 120)
        }
        skipped = len(value) - len(kept)
        text = ", ".join(f"{k}={_scalar(k, v)}" for k, v in kept.items())
        if skipped:
            text += f"{' ' if text else ''}(+{skipped} fields)"
        return truncate(text, RESULT_SUMMARY_MAX)
    return truncate(_short(value), RESULT_SUMMARY_MAX)


def _scalar(key: str, value: Any) -> str:
    """``repr`` of a result field, but a time (``checked_at``: epoch seconds) in ISO 8601 UTC."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if key.endswith("_at") and is_number and _EPOCH_RANGE[0] <= value < _EPOCH_RANGE[1]:
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return repr(value)


def error_fields(exc: BaseException | None, tb_text: str | None) -> dict[str, Any]:
    """The error columns of a row for ``exc``; empty without one."""
    if exc is None:
        return {}
    error_type = getattr(exc, "error_type", None)
    type_name = type(exc).__name__
    return {
        "error_type": truncate(f"{type_name} ({error_type})" if error_type else type_name, 200),
        "error_message": truncate(str(exc) or type_name, ERROR_MESSAGE_MAX),
        # keep the end of a long traceback: that is where the error is
        "traceback": tb_text[-TRACEBACK_MAX:] if tb_text else None,
    }
