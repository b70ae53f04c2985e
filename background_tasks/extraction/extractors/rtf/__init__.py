"""RTF with striprtf's rules (``convert``, a faster tokenizer), decoded without mojibake, embedded objects read.

The conversion follows ``\\ansicpg`` and per-font ``\\fcharset`` code pages
for ``\\'xx`` escapes and turns ``\\uN`` into characters. Around it this
module decodes raw 8-bit bytes with the document's code page, maps font
charsets whose Mac codecs Python lacks to their Windows equivalents, joins
UTF-16 surrogate pairs written as two ``\\u`` escapes, and reads the ``\\info``
group (title, author, dates) for metadata.

Embedded objects (``\\object``): the text of an object's ``\\result`` stands
where the object does; an object without result text has its ``\\objdata``
unwrapped (``ole_objects``: an OLE Package's file, an embedded Word, Excel,
OOXML or PDF document) and read through the registry, under a
``--- Embedded: name ---`` heading after the document's text, within the
limits of ``embedded.EmbeddedFiles``.
"""

from __future__ import annotations

import codecs
import logging
import re
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from background_tasks.errors import CorruptDocument, EmptyDocument, MissingDependency
from background_tasks.extraction.extractors.base import ContainerExtractor, Extraction, Limits
from background_tasks.extraction.extractors.embedded import EmbeddedFiles
from background_tasks.extraction.extractors.metadata import iso_utc, split_authors, split_keywords
from background_tasks.extraction.extractors.ole_objects import objdata_payload

if TYPE_CHECKING:
    from background_tasks.extraction.extractors.rtf.convert import RtfObject

logger = logging.getLogger(__name__)

_ANSICPG = re.compile(rb"\\ansicpg(\d{3,5})")
# Mac font charsets whose codecs Python does not ship -> nearest Windows charset striprtf can decode
_FCHARSET_FALLBACK = {
    "78": "128",  # Mac Japanese -> Shift-JIS
    "79": "136",  # Mac Traditional Chinese -> Big5
    "80": "129",  # Mac Korean -> cp949
    "82": "177",  # Mac Hebrew -> cp1255
    "85": "134",  # Mac Simplified Chinese -> GBK
    "86": "238",  # Mac Romanian -> cp1250
    "87": "204",  # Mac Ukrainian -> cp1251
    "88": "222",  # Mac Thai -> cp874
    "89": "238",  # Mac Central European -> cp1250
}
_FCHARSET = re.compile(r"\\fcharset(\d+)")
_INFO_FIELDS = ("title", "subject", "author", "operator", "keywords", "company")
_DATE_FIELDS = {"creatim": "created", "revtim": "modified"}


class RtfExtractor(ContainerExtractor):
    name = "rtf"
    extensions = frozenset({".rtf"})
    mime_types = frozenset({"application/rtf", "text/rtf"})

    def extract_nested(self, path: Path, limits: Limits, depth: int) -> Extraction:
        source = _read(path)
        warnings: list[str] = []
        text, objects = _convert_with_objects(source, path)
        metadata = _info(source, path)
        if objects:
            text, names = self._embedded(objects, text, limits, depth, path.name, warnings)
            metadata["embedded_objects"] = names
        if not text.strip():
            warnings.append("document contains no text")
        if "\ufffd" in text:
            warnings.append("some characters could not be decoded and were replaced")
        if len(text) > limits.max_text_chars:
            warnings.append(f"text truncated at {limits.max_text_chars} characters")
            text = text[: limits.max_text_chars]
        return Extraction(text=text, metadata=metadata, warnings=tuple(warnings))

    def metadata(self, path: Path, limits: Limits) -> dict[str, Any]:
        """The ``\\info`` group only."""
        return _info(_read(path), path)

    def _embedded(
        self, objects: list[RtfObject], text: str, limits: Limits, depth: int, label: str, warnings: list[str]
    ) -> tuple[str, list[str]]:
        """The text with the objects that showed no result text read from their data; the objects' names."""
        names = []
        with EmbeddedFiles(self.extractor_for, limits, depth, label) as embedded:
            for index, obj in enumerate(objects, start=1):
                name = obj.class_name or f"object {index}"
                if obj.has_result_text or not obj.objdata.strip():
                    names.append(name)
                    continue
                try:
                    payload = objdata_payload(obj.class_name, obj.objdata, limits.max_decompressed_bytes)
                except OverflowError as exc:
                    names.append(name)
                    warnings.append(f"embedded object {name!r} not read: {exc}")
                    continue
                if payload is None:
                    names.append(name)
                    continue
                names.append(payload.name)
                embedded.add_file(payload.name, payload.data, payload.extension, filename=payload.name)
            warnings.extend(embedded.warnings)
            parts = [text, embedded.text()]
        return "\n\n".join(p for p in parts if p.strip()), names


def _read(path: Path) -> str:
    """The RTF source as text: UTF-8 when valid, else the declared ANSI code page."""
    raw = path.read_bytes()
    stripped = raw.lstrip(b"\xef\xbb\xbf \t\r\n\x00")
    if not stripped:
        raise EmptyDocument(f"{path.name}: file has no content")
    if not stripped.startswith(b"{\\rtf"):
        raise CorruptDocument(f"{path.name}: not an RTF document (no {{\\rtf header)")
    try:
        return stripped.decode("utf-8")
    except UnicodeDecodeError:
        pass
    match = _ANSICPG.search(stripped[:8192])
    encoding = f"cp{int(match.group(1))}" if match else "cp1252"
    try:
        codecs.lookup(encoding)
    except LookupError:
        encoding = "cp1252"
    return stripped.decode(encoding, errors="replace")


def _fix_charsets(source: str) -> str:
    def repl(match: re.Match[str]) -> str:
        return "\\fcharset" + _FCHARSET_FALLBACK.get(match.group(1), match.group(1))

    return _FCHARSET.sub(repl, source)


def _join_surrogates(text: str) -> str:
    """``\\u-10179\\u-8704`` arrives as two UTF-16 halves; lone halves become U+FFFD."""
    if not any("\ud800" <= ch <= "\udfff" for ch in text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _rtf_to_text(source: str) -> tuple[str, list[RtfObject]]:
    try:
        from background_tasks.extraction.extractors.rtf.convert import rtf_to_text
    except ImportError as exc:  # pragma: no cover - pinned
        raise MissingDependency("striprtf is not installed (pip install striprtf)") from exc
    return rtf_to_text(source, errors="replace")


def _convert(source: str, path: Path) -> str:
    """The text of an RTF document (an Outlook message's RTF body); embedded objects give their result text."""
    return _convert_with_objects(source, path)[0]


def _convert_with_objects(source: str, path: Path) -> tuple[str, list[RtfObject]]:
    try:
        text, objects = _rtf_to_text(_fix_charsets(source))
    except LookupError as exc:  # a code page Python does not know: retry with Windows-1252
        logger.info("%s: unknown code page (%s); retrying as cp1252", path.name, exc)
        try:
            text, objects = _rtf_to_text(
                _FCHARSET.sub(r"\\fcharset0", re.sub(r"\\ansicpg\d+", r"\\ansicpg1252", source))
            )
        except Exception as inner:
            raise CorruptDocument(f"{path.name}: RTF could not be converted ({inner})") from inner
    except RecursionError as exc:
        raise CorruptDocument(f"{path.name}: RTF nesting too deep") from exc
    except MissingDependency:
        raise
    except Exception as exc:  # damaged input the tokenizer cannot make sense of
        raise CorruptDocument(f"{path.name}: RTF could not be converted ({type(exc).__name__}: {exc})") from exc
    text = _join_surrogates(text).replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    return re.sub(r"\n{4,}", "\n\n\n", text).strip(), objects


def _group(source: str, start: int) -> str:
    """The balanced ``{...}`` group starting at ``start`` (or what is left of it)."""
    depth = 0
    i = start
    while i < len(source):
        ch = source[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return source[start : i + 1]
        i += 1
    return source[start:]


def _info(source: str, path: Path) -> dict[str, Any]:
    """title/authors/subject/keywords and creation/revision time from the ``\\info`` group."""
    at = source.find("{\\info", 0, 2_000_000)
    if at < 0:
        return {}
    info = _group(source, at)[:200_000]
    cpg = _ANSICPG.search(source[:8192].encode("latin-1", "replace"))
    header = "{\\rtf1\\ansi" + (f"\\ansicpg{int(cpg.group(1))}" if cpg else "") + " "
    metadata: dict[str, Any] = {}
    for field in _INFO_FIELDS + tuple(_DATE_FIELDS):
        pos = info.rfind("{\\" + field)  # last one: in an upr group the Unicode (ud) copy follows the ANSI one
        if pos < 0:
            continue
        group = _group(info, pos)
        inner = group[len(field) + 2 : -1]
        if field in _DATE_FIELDS:
            value = _rtf_date(inner)
            if value:
                metadata[_DATE_FIELDS[field]] = value
            continue
        try:
            value = _join_surrogates(_rtf_to_text(_fix_charsets(header + inner + "}"))[0]).strip()
        except Exception as exc:
            logger.info("%s: info field %s unreadable (%s)", path.name, field, exc)
            continue
        if not value:
            continue
        if field == "author":
            metadata["authors"] = split_authors(value)
        elif field == "keywords":
            metadata["keywords"] = split_keywords(value)
        elif field == "operator":
            metadata["last_modified_by"] = value
        else:
            metadata[field] = value
    pages = re.search(r"\\nofpages(\d+)", info)
    if pages and int(pages.group(1)) > 0:
        metadata["page_count"] = int(pages.group(1))
    return metadata


def _rtf_date(group: str) -> str | None:
    parts = dict(re.findall(r"\\(yr|mo|dy|hr|min|sec)(\d+)", group))
    try:
        return iso_utc(
            datetime(
                int(parts["yr"]),
                int(parts.get("mo", 1)),
                int(parts.get("dy", 1)),
                int(parts.get("hr", 0)),
                int(parts.get("min", 0)),
                int(parts.get("sec", 0)),
            )
        )
    except (KeyError, ValueError):
        return None
