"""OLE property sets (SummaryInformation, DocumentSummaryInformation), read with bounds checks.

Legacy Office files (.doc, .xls) keep title, author and dates in these
streams. olefile's own parser (``get_metadata``/``getproperties``) trusts the
vector counts it finds, so one hostile count makes it loop billions of times.
This reader checks every offset and length against the stream, reads only the
first section and only scalar values, and gives up on a property (never the
document) when it does not fit. Stream names and property ids: MS-OLEPS.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from background_tasks.extraction.extractors.metadata import DATE_KEYS, shaped

logger = logging.getLogger(__name__)

SUMMARY_INFORMATION = "\x05SummaryInformation"
DOCUMENT_SUMMARY_INFORMATION = "\x05DocumentSummaryInformation"
#: property-set streams are a few hundred bytes; more than this is not read
MAX_PROPERTY_SET_BYTES = 1024 * 1024

#: PIDSI_* property ids of SummaryInformation -> names
SUMMARY_PROPERTIES: Mapping[int, str] = {
    2: "title",
    3: "subject",
    4: "author",
    5: "keywords",
    6: "comments",
    7: "template",
    8: "last_saved_by",
    9: "revision_number",
    12: "create_time",
    13: "last_saved_time",
    14: "num_pages",
    15: "num_words",
    16: "num_chars",
    18: "creating_application",
    19: "security",
}
#: PIDDSI_* property ids of DocumentSummaryInformation -> names (scalar ones only)
DOCUMENT_SUMMARY_PROPERTIES: Mapping[int, str] = {
    2: "category",
    4: "bytes",
    5: "lines",
    6: "paragraphs",
    7: "slides",
    8: "notes",
    14: "manager",
    15: "company",
}

_PID_CODEPAGE = 1
_VT_I2, _VT_I4, _VT_LPSTR, _VT_LPWSTR, _VT_FILETIME = 2, 3, 30, 31, 64
_KNOWN_CODEPAGES = {65001: "utf-8", 1200: "utf-16-le", 1201: "utf-16-be", 10000: "mac_roman", 20127: "ascii"}


#: SummaryInformation names -> the shared metadata keys (``metadata.KEYS``), in output order
SUMMARY_METADATA_KEYS: Mapping[str, str] = {
    "title": "title",
    "subject": "subject",
    "author": "authors",
    "keywords": "keywords",
    "comments": "description",
    "last_saved_by": "last_modified_by",
    "revision_number": "revision",
    "create_time": "created",
    "last_saved_time": "modified",
    "num_pages": "page_count",
    "creating_application": "application",
}


def summary_metadata(ole: Any, label: str) -> dict[str, Any]:
    """SummaryInformation under the shared metadata keys, for every legacy Office format (.doc, .xls).

    A value of the wrong type (a date that is a string, a title that is a
    number) is left out, and so are zero page counts and 1601-01-01, a
    FILETIME of (nearly) zero meaning "never".
    """
    summary = summary_information(ole, label)
    values: dict[str, Any] = {}
    for name, key in SUMMARY_METADATA_KEYS.items():
        value = summary.get(name)
        if key in DATE_KEYS:
            fits = isinstance(value, datetime) and value.year > 1601
        elif key == "page_count":
            fits = isinstance(value, int) and value > 0
        else:
            fits = isinstance(value, str)
        if fits:
            values[key] = value
    return shaped(values)


def summary_information(ole: Any, label: str) -> dict[str, str | int | datetime]:
    """Named values of the SummaryInformation stream (see ``SUMMARY_PROPERTIES``); {} when absent or unreadable."""
    return read_properties(ole, SUMMARY_INFORMATION, SUMMARY_PROPERTIES, label)


def document_summary_information(ole: Any, label: str) -> dict[str, str | int | datetime]:
    """Named values of the DocumentSummaryInformation stream (see ``DOCUMENT_SUMMARY_PROPERTIES``)."""
    return read_properties(ole, DOCUMENT_SUMMARY_INFORMATION, DOCUMENT_SUMMARY_PROPERTIES, label)


def read_properties(ole: Any, stream: str, names: Mapping[int, str], label: str) -> dict[str, str | int | datetime]:
    """The named properties of one stream of an open ``olefile.OleFileIO``, in ``names`` order.

    8-bit strings are decoded with the set's own code page; NULs and blank
    strings are dropped. Damage never raises: what cannot be read is left out
    and logged under ``label`` (the file name).
    """
    try:
        if not ole.exists(stream):
            return {}
        raw = parse_property_set(ole.openstream(stream).read(MAX_PROPERTY_SET_BYTES))
    except Exception as exc:
        logger.info("%s: %s unreadable (%s)", label, stream.lstrip("\x05"), exc)
        return {}
    codepage = raw.get(_PID_CODEPAGE)
    codec = codec_for(codepage if isinstance(codepage, int) else None)
    values: dict[str, str | int | datetime] = {}
    for pid, name in names.items():
        value = raw.get(pid)
        if isinstance(value, bytes):
            value = value.decode(codec, errors="replace")
        if isinstance(value, str):
            value = value.replace("\x00", "").strip()
            if value:
                values[name] = value
        elif isinstance(value, int | datetime):
            values[name] = value
    return values


def codec_for(codepage: int | None) -> str:
    """The Python codec of a property set's code page (signed or unsigned 16 bits); cp1252 when unknown."""
    if codepage is None:
        return "cp1252"
    codepage &= 0xFFFF
    name = _KNOWN_CODEPAGES.get(codepage, f"cp{codepage}")
    try:
        "".encode(name)
    except LookupError:
        return "cp1252"
    return name


def parse_property_set(stream: bytes) -> dict[int, Any]:
    """Property id -> value (bytes, str, int or datetime) of the first section of a property-set stream.

    Every offset is checked against the section's end; the property count is
    capped by what the section can hold; vectors and other types are skipped.
    """
    if len(stream) < 48 or stream[:2] != b"\xfe\xff":
        return {}
    (section,) = struct.unpack_from("<I", stream, 44)
    if section + 8 > len(stream):
        return {}
    size, count = struct.unpack_from("<II", stream, section)
    end = min(len(stream), section + size)
    count = min(count, (end - section - 8) // 8)
    values: dict[int, Any] = {}
    for i in range(count):
        pid, offset = struct.unpack_from("<II", stream, section + 8 + 8 * i)
        at = section + offset
        if at + 4 > end:
            continue
        vtype = struct.unpack_from("<H", stream, at)[0]
        body = at + 4
        try:
            if vtype == _VT_I2:
                values[pid] = struct.unpack_from("<h", stream, body)[0]
            elif vtype == _VT_I4:
                values[pid] = struct.unpack_from("<i", stream, body)[0]
            elif vtype == _VT_LPSTR:
                (length,) = struct.unpack_from("<I", stream, body)
                values[pid] = stream[body + 4 : min(body + 4 + length, end)].split(b"\x00", 1)[0]
            elif vtype == _VT_LPWSTR:
                (length,) = struct.unpack_from("<I", stream, body)
                data = stream[body + 4 : min(body + 4 + 2 * length, end)]
                values[pid] = data.decode("utf-16-le", errors="replace").split("\x00", 1)[0]
            elif vtype == _VT_FILETIME:
                (ticks,) = struct.unpack_from("<Q", stream, body)
                if ticks:
                    values[pid] = datetime(1601, 1, 1) + timedelta(microseconds=ticks // 10)
        except (struct.error, OverflowError, ValueError):
            continue
    return values
