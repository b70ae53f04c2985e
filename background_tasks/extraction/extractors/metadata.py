"""The metadata keys every extractor shares, and the helpers that keep their values in one shape.

Formats name the same facts differently (``author``, ``creator``, ``dc:creator``,
``Artist``; a PDF's ``Creator`` is a program, not a person) and write dates in
their own ways (W3CDTF, FILETIME, RFC 2822, ``\\creatim``, EXIF). An extractor
maps what its format holds onto ``KEYS`` with these helpers, so a search or a
report reads one key whatever the file was. Keys a single format adds
(``sheets``, ``to``, ``encoding`` ...) keep their own names. The README's
"Metadata" section is the same list.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from typing import Any

#: The shared keys, each with what it holds (also the README's "Metadata" list).
KEYS: Mapping[str, str] = {
    "title": "the document's title (str)",
    "authors": "the people who wrote it, always a list of names, also for one author",
    "subject": "the subject field (str); for e-mail the Subject line",
    "description": "a summary or comment the file carries (str)",
    "keywords": "a list of keywords (a format's one keyword string is split at commas and semicolons)",
    "language": "the language the file declares (e.g. en-US); without one the detected language is stored",
    "application": "the program that produced the file (Office's Application, a PDF's Creator, an HTML generator)",
    "producer": "PDF only: the library that wrote the PDF (its Producer), often not the application",
    "created": "when it was made (an e-mail: sent), ISO 8601 in UTC: 2021-03-04T05:06:07Z, a bare date 2021-03-04",
    "modified": "when it was last saved, in the same form as created",
    "last_modified_by": "who saved it last (str)",
    "revision": "the revision number or editing cycles the file counts (str)",
    "page_count": "the number of pages the file states or has (int)",
}
DATE_KEYS = ("created", "modified")
#: A date that cannot be read as one keeps its text under ``<key>_raw`` (``created_raw``), for a human.
RAW_SUFFIX = "_raw"

_EXIF_DATETIME = re.compile(r"(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})")


def iso_utc(value: Any) -> str | None:
    """A date or time as ISO 8601 in UTC (``2021-03-04T05:06:07Z``; a bare date as ``2021-03-04``).

    Takes datetimes, dates and the strings formats write: ISO 8601/W3CDTF,
    RFC 2822 (mail), EXIF's ``2021:03:04 05:06:07``. A time without a zone
    (RTF, most OpenDocument and EXIF times) is taken as UTC: the file does
    not say which zone it meant. None for anything that is not a date.
    """
    if isinstance(value, str):
        value = _parse(value.strip())
    if isinstance(value, datetime):
        try:
            moment = value.astimezone(UTC) if value.tzinfo else value
        except (OverflowError, ValueError):  # year 1 or 9999 pushed over the edge by the offset
            return None
        return moment.replace(tzinfo=None, microsecond=0).isoformat() + "Z"
    if isinstance(value, date):
        return value.isoformat()
    return None


def _parse(text: str) -> datetime | date | None:
    if not text:
        return None
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        try:
            return date.fromisoformat(text)
        except ValueError:
            return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    exif = _EXIF_DATETIME.fullmatch(text)
    if exif:
        try:
            return datetime(*(int(part) for part in exif.groups()))  # type: ignore[arg-type]
        except ValueError:
            return None
    try:
        return parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None


def put_date(metadata: MutableMapping[str, Any], key: str, value: Any) -> None:
    """``metadata[key]`` as ISO 8601 UTC; a string that is no date goes under ``key + "_raw"``."""
    iso = iso_utc(value)
    if iso:
        metadata[key] = iso
    elif isinstance(value, str) and value.strip():
        metadata[key + RAW_SUFFIX] = value.strip()


def shaped(values: Mapping[str, Any]) -> dict[str, Any]:
    """Values a format gave under the shared keys, each in its shape; empty ones left out.

    ``authors`` and ``keywords`` strings become lists, ``created`` and
    ``modified`` ISO 8601 UTC (see ``put_date``); other values stay as given.
    """
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key in DATE_KEYS:
            put_date(out, key, value)
            continue
        if key == "authors" and isinstance(value, str):
            value = split_authors(value)
        elif key == "keywords" and isinstance(value, str):
            value = split_keywords(value)
        elif isinstance(value, str):
            value = value.strip()
        if value is not None and value != "" and value != []:
            out[key] = value
    return out


def split_authors(value: str | None) -> list[str]:
    """Several authors in one field are separated by semicolons (Office, PDF, RTF, EXIF); commas are in names."""
    if not value:
        return []
    return [name.strip() for name in value.split(";") if name.strip()]


def split_keywords(value: str | None) -> list[str]:
    """One keyword string as a list: split at commas and semicolons, blanks and repeats dropped."""
    if not value:
        return []
    return list(dict.fromkeys(word.strip() for word in re.split(r"[,;]", value) if word.strip()))
