"""Where a document came from, when a source knows more than its path: kept as ``metadata["origin"]``.

A source (a mail account, an S3 prefix) hands ``process_document_file`` an ``origin`` mapping;
it arrives as JSON from any publisher, so it is checked here: known keys, short text values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from background_tasks.errors import InvalidArgument

#: what an origin may say (mail: account, folder, from, subject, date, message_id, attachment; S3: uri)
ORIGIN_KEYS = frozenset(
    {"source", "account", "folder", "from", "subject", "date", "message_id", "attachment", "rule", "uri"}
)
MAX_VALUE_CHARS = 2000


def origin_metadata(origin: object) -> dict[str, Any]:
    """``{"origin": {...}}`` to merge into a document's metadata, or ``{}``; ``InvalidArgument`` when malformed."""
    if origin is None:
        return {}
    if not isinstance(origin, Mapping):
        raise InvalidArgument(f"origin must be a mapping of text, not {type(origin).__name__}")
    unknown = sorted(str(k) for k in origin if k not in ORIGIN_KEYS)
    if unknown:
        raise InvalidArgument(f"origin has unknown key(s) {unknown[:5]}; known: {', '.join(sorted(ORIGIN_KEYS))}")
    clean: dict[str, str] = {}
    for key, value in origin.items():
        if value is None:
            continue
        if not isinstance(value, str) or "\x00" in value:
            raise InvalidArgument(f"origin[{key!r}] must be text without NUL bytes")
        clean[key] = value[:MAX_VALUE_CHARS]
    return {"origin": clean} if clean else {}


def describe_origin(origin: Mapping[str, str] | None) -> str:
    """One line saying where a document came from, for search results ("" when no source said), such as
    ``mail: account shop, folder INBOX, from Billing <b@shop.example>, subject Invoice 7, date 2026-03-04T08:30Z``."""
    if not origin:
        return ""
    keys = ("account", "folder", "from", "subject", "date", "uri")
    said = [f"{key} {origin[key]}" for key in keys if origin.get(key)]
    source = origin.get("source", "")
    return f"{source}: {', '.join(said)}" if source and said else source or ", ".join(said)
