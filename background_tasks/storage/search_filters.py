"""Which documents a search may answer from: type, date, source and status, as one SQL condition.

Every mode uses the same condition (``SearchFilters.where``): keyword search adds it to its
full-text query, semantic search asks for the ids of the documents it admits
(``document_ids``) and masks the vectors of all others before ranking, so a filter never
thins out a page of results after the fact.

- ``file_type``: ``pdf``, ``.PDF`` ...
- ``since`` / ``until``: the document's date, inclusive: its own (``metadata["created"]``: the
  file's creation date, an e-mail's Date) when it says, else the day MIDAS first stored it (UTC).
- ``source``: ``mail`` (every mail account), ``mail:NAME`` (one account), or a folder or URI prefix
  that one of the paths the document was seen at lies in (``/home/me/invoices``; ``s3://bucket/in``
  is a key prefix, as S3 has it).
- ``status``: a ``statuses.SearchStatus``: ``complete``, ``warnings``, ``ocr_pending``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import text

from background_tasks.errors import InvalidQuery
from background_tasks.statuses import SearchStatus
from background_tasks.storage.db import is_sqlite, read_scope, transient_db_errors
from background_tasks.storage.values import file_type_of

#: longest ``source`` accepted (a path or URI prefix)
MAX_SOURCE_CHARS = 1000


def _date(value: date | str | None, name: str) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value).strip()[:10])
    except ValueError:
        raise InvalidQuery(f"{name} must be a date like 2024-03-31, not {str(value)[:40]!r}") from None


def _like_prefix(prefix: str) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


@dataclass(frozen=True)
class SearchFilters:
    """What a document must be to answer a search; empty fields do not filter."""

    file_type: str | None = None
    since: date | None = None
    until: date | None = None
    source: str | None = None
    status: SearchStatus | None = None

    @classmethod
    def of(
        cls,
        file_type: str | None = None,
        since: date | str | None = None,
        until: date | str | None = None,
        source: str | None = None,
        status: str | None = None,
    ) -> SearchFilters:
        """Checked filters from user input; ``InvalidQuery`` with a message for anything malformed."""
        start, end = _date(since, "since"), _date(until, "until")
        if start and end and start > end:
            raise InvalidQuery(f"since ({start}) is after until ({end}): no date is in between")
        if status:
            try:
                status = SearchStatus(str(status).strip().lower())
            except ValueError:
                known = ", ".join(s.value for s in SearchStatus)
                raise InvalidQuery(f"status must be one of {known}, not {str(status)[:40]!r}") from None
        source = (source or "").strip() or None
        if source and (len(source) > MAX_SOURCE_CHARS or "\x00" in source):
            raise InvalidQuery(f"source must be a folder, a URI prefix or mail[:account] of at most {MAX_SOURCE_CHARS}")
        return cls(file_type_of(file_type), start, end, source, status or None)

    @property
    def active(self) -> bool:
        return any((self.file_type, self.since, self.until, self.source, self.status))

    def where(self, url: str, d: str = "d") -> tuple[str, dict[str, Any]]:
        """``AND ...`` over the documents table aliased ``d``, and its parameters (names start with ``f_``)."""
        sqlite = is_sqlite(url)
        parts: list[str] = []
        params: dict[str, Any] = {}
        if self.file_type:
            parts.append(f"{d}.file_type = :f_type")
            params["f_type"] = self.file_type
        if self.since or self.until:
            if sqlite:
                day = f"substr(coalesce(json_extract({d}.metadata_json, '$.created'), {d}.created_at), 1, 10)"
            else:
                day = (
                    f"left(coalesce({d}.metadata_json->>'created', "
                    f"to_char({d}.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')), 10)"
                )
            if self.since:
                parts.append(f"{day} >= :f_since")
                params["f_since"] = self.since.isoformat()
            if self.until:
                parts.append(f"{day} <= :f_until")
                params["f_until"] = self.until.isoformat()
        if self.source:
            parts.append(self._source(d, sqlite, params))
        if self.status:
            parts.append(self._status(d, sqlite))
        return "".join(f" AND {p}" for p in parts), params

    def _source(self, d: str, sqlite: bool, params: dict[str, Any]) -> str:
        source = str(self.source)
        kind, _, account = source.partition(":")
        if kind.lower() == "mail" and "/" not in source and "\\" not in source:
            origin = (
                (lambda key: f"json_extract({d}.metadata_json, '$.origin.{key}')")
                if sqlite
                else (lambda key: f"({d}.metadata_json->'origin'->>'{key}')")
            )
            params["f_mail"] = "mail"
            if not account:
                return f"{origin('source')} = :f_mail"
            params["f_account"] = account
            return f"{origin('source')} = :f_mail AND {origin('account')} = :f_account"
        if source.lower().startswith("s3://"):  # an S3 prefix is a prefix of keys, not a folder
            params["f_prefix"] = _like_prefix(source)
            return (
                f"EXISTS (SELECT 1 FROM document_paths fp WHERE fp.document_id = {d}.id "
                "AND fp.path LIKE :f_prefix ESCAPE '\\')"
            )
        folder = source.rstrip("/\\") or source
        params["f_path"] = folder
        params["f_under_slash"] = _like_prefix(folder + "/")
        params["f_under_back"] = _like_prefix(folder + "\\")
        return (
            f"EXISTS (SELECT 1 FROM document_paths fp WHERE fp.document_id = {d}.id AND (fp.path = :f_path "
            "OR fp.path LIKE :f_under_slash ESCAPE '\\' OR fp.path LIKE :f_under_back ESCAPE '\\'))"
        )

    def _status(self, d: str, sqlite: bool) -> str:
        if sqlite:
            warned = f"coalesce(json_array_length({d}.warnings_json), 0) > 0"
            ocr = f"coalesce(json_extract({d}.metadata_json, '$.ocr_status'), '') = 'pending'"
        else:
            warned = (
                f"(CASE WHEN json_typeof({d}.warnings_json) = 'array' "
                f"THEN json_array_length({d}.warnings_json) ELSE 0 END) > 0"
            )
            ocr = f"coalesce({d}.metadata_json->>'ocr_status', '') = 'pending'"
        if self.status == SearchStatus.WARNINGS:
            return warned
        if self.status == SearchStatus.OCR_PENDING:
            return ocr
        return f"NOT ({warned}) AND NOT ({ocr})"


def document_ids(url: str, filters: SearchFilters) -> set[int] | None:
    """Ids of the processed documents the filters admit; None when nothing is filtered (all are)."""
    if not filters.active:
        return None
    where, params = filters.where(url)
    with transient_db_errors(), read_scope(url) as s:
        rows = s.execute(text(f"SELECT d.id FROM documents d WHERE d.status = 'success'{where}"), params)
        return {int(r[0]) for r in rows}
