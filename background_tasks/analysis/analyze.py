"""Analyses stored with documents: data profiles of tables and text analytics of any document.

``analyze_data_path`` profiles a CSV/XLSX/XLS/JSON-records file (see
``data_profile``) in an isolated child process, as extraction does;
``analyze_text`` computes language, word and sentence counts, reading time,
the keywords that distinguish a document from the rest of the store
(TF-IDF, document frequencies looked up in the full-text index), and entities
found by regular expressions (emails, URLs, dates, amounts; no model).

Results live in the ``analyses`` table, one row per content (sha256) and kind
("data", "text"), linked to the document when it is known, so an analysis of
a file made before the file was processed is found afterwards too.
``get_analysis(document_id)`` is what the dashboard shows.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from typing import Any

from background_tasks.errors import PermanentError, UnsupportedFileType
from background_tasks.processing.textstats import STOPWORDS, detect_language, word_count
from background_tasks.storage import analyses, reading
from background_tasks.storage.models import AnalysisRow
from background_tasks.storage.search import document_frequencies

log = logging.getLogger(__name__)

KINDS = ("data", "text")
#: words per minute of silent reading (adult average for non-fiction)
READING_WPM = 230
#: the text analysis looks at most at this many characters of a document
MAX_ANALYSIS_CHARS = 20_000_000
KEYWORDS = 15
_KEYWORD_CANDIDATES = 60
MAX_ENTITIES = 100


# --------------------------------------------------------------------------
# Storage
# --------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """Plain JSON for both databases and Celery: no NaN, no NUL, dates as ISO text."""
    if value is None or isinstance(value, bool | int | str):
        return value.replace("\x00", "") if isinstance(value, str) else value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return jsonable(value.item())
    return str(value)


def save_analysis(url: str, sha256: str, kind: str, result: Mapping[str, Any], document_id: int | None) -> None:
    """Insert or replace the analysis of one content and kind."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    status = str(result.get("status", "success"))[:16]
    analyses.save(url, sha256, kind, status, jsonable(dict(result)), document_id)


def get_analysis(document_id: int, url: str | None = None) -> dict[str, Any] | None:
    """The stored analyses of a document for the dashboard, or None when it has none.

    ``{"document_id", "data": <table profiles or None>, "text": <text analytics or None>, "updated_at"}``;
    each analysis is the dict its task returned (``status`` "success", or "failed" with ``error``).
    """
    if url is None:
        from background_tasks.settings import get_settings

        url = get_settings().database_url_resolved
    return analyses.for_document(url, document_id, KINDS)


# --------------------------------------------------------------------------
# Data files
# --------------------------------------------------------------------------


def analyze_data_path(raw_path: str, settings: Any, store: Any, document_id: int | None = None) -> dict[str, Any]:
    """Profile a data file's tables and store the profile with its document. Raises only TransientError.

    The file is vetted and copied like a document (allowed roots, size
    limit, complete file); the profile runs in an isolated child with the
    per-file time limit. Failures are returned (and stored) as
    ``status: failed`` with ``error_type`` and ``error``.
    """
    from background_tasks.analysis.profiles import DATA_EXTENSIONS, profile_file
    from background_tasks.extraction.extractors.base import Limits
    from background_tasks.extraction.isolation import run_isolated
    from background_tasks.processing.intake import take_in
    from background_tasks.processing.pipeline import status_for

    started = time.monotonic()
    result: dict[str, Any] = {"kind": "data", "path": str(raw_path), "document_id": document_id}
    sha256 = None
    try:
        with take_in(raw_path, settings) as copy:
            original = copy.original
            result["path"] = copy.where
            sha256 = copy.sha256
            kind = copy.identify()
            result["file_type"] = kind.file_type
            if kind.extension not in DATA_EXTENSIONS:
                raise UnsupportedFileType(
                    f"{original.name}: data analysis handles CSV, XLSX, XLS and JSON records, not {kind.extension}"
                )
            profile = run_isolated(
                profile_file,
                (str(copy.copy), kind.extension, Limits.from_settings(settings)),
                timeout=settings.extract_timeout,
                label=original.name,
            )
        result.update({"status": "success", "sha256": sha256, **profile})
    except PermanentError as exc:
        result.update({"status": status_for(exc), "error_type": exc.error_type, "error": exc.message})
    result["duration_s"] = round(time.monotonic() - started, 4)
    result["analyzed_at"] = datetime.now(UTC).isoformat()
    if sha256:
        if result["document_id"] is None:
            result["document_id"] = reading.document_id_by_sha(store.url, sha256)
        save_analysis(store.url, sha256, "data", result, result["document_id"])
    return jsonable(result)


# --------------------------------------------------------------------------
# Text analytics
# --------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"(?P<mark>[.!?…。！？]+)[\"')\]»”’]*(?=\s|$)|\n\s*\n")
_WORD_BEFORE = re.compile(r"(\S+)$")
_TOKEN = re.compile(r"[^\W\d_]{3,}", re.UNICODE)


def _words(text_value: str) -> list[str]:
    return text_value.split()


#: abbreviations whose full stop does not end a sentence (lower case, without the final dot)
ABBREVIATIONS = frozenset(
    _words("e.g i.e etc vs cf mr mrs ms dr prof st no fig approx ca bzw usw z.b d.h u.a nr vgl ggf inkl evtl sog")
)

_MONTHS = {
    **{m: i for i, m in enumerate(_words("january february march april may june july august september october "
                                         "november december"), 1)},
    **{m: i for i, m in enumerate(_words("januar februar märz april mai juni juli august september oktober "
                                         "november dezember"), 1)},
    **{m: i for i, m in enumerate(_words("jan feb mar apr may jun jul aug sep oct nov dec"), 1)},
    "sept": 9, "jänner": 1, "mär": 3, "okt": 10, "dez": 12,
}  # fmt: skip
_MONTH_NAMES = "|".join(sorted((re.escape(m) for m in _MONTHS), key=len, reverse=True))

_EMAIL = re.compile(r"(?<![\w.%+-])[\w.%+-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\.){1,8}[A-Za-z]{2,24}\b")
_URL = re.compile(r"(?<![\w/])(?:https?://|www\.)[^\s<>\"'`{}|\\^\[\]]{2,2000}", re.IGNORECASE)
_DATE_ISO = re.compile(r"(?<![\d.-])(\d{4})-(\d{2})-(\d{2})(?![\d-])")
_DATE_DOTTED = re.compile(r"(?<![\d.])(\d{1,2})\.(\d{1,2})\.(\d{4}|\d{2})(?![\d.]*\d)")
_DATE_SLASH = re.compile(r"(?<![\d/])(\d{1,2})/(\d{1,2})/(\d{4}|\d{2})(?![\d/])")
_DATE_DAY_MONTH = re.compile(rf"(?<!\w)(\d{{1,2}})\.?\s+({_MONTH_NAMES})\.?,?\s+(\d{{4}})(?!\d)", re.IGNORECASE)
_DATE_MONTH_DAY = re.compile(
    rf"(?<!\w)({_MONTH_NAMES})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?,?\s+(\d{{4}})(?!\d)", re.IGNORECASE
)
_CURRENCY = r"(?:[$€£¥₹]|USD|EUR|GBP|CHF|JPY|CAD|AUD|SEK|NOK|DKK|PLN|CZK|US\$)"
_NUMBER = r"\d{1,3}(?:[,.' \u00a0\u202f]\d{3})+(?:[.,]\d{1,2})?|\d+(?:[.,]\d{1,2})?"
_AMOUNT = re.compile(
    rf"(?<![\w.,])(?:(?P<pre>{_CURRENCY})\s?(?P<num1>{_NUMBER})(?:\s?(?:Mio\.?|million|Mrd\.?|billion|[kKmM])\b)?"
    rf"|(?P<num2>{_NUMBER})\s?(?P<post>{_CURRENCY}|Euro|euros?|dollars?|Franken)(?![A-Za-z]))",
)
_SYMBOLS = {"$": "USD", "US$": "USD", "€": "EUR", "£": "GBP", "¥": "JPY", "₹": "INR", "euro": "EUR", "euros": "EUR",
            "dollar": "USD", "dollars": "USD", "franken": "CHF"}  # fmt: skip


def text_of_chunks(chunks: Iterable[Mapping[str, Any]]) -> str:
    """A document's normalised text rebuilt from its overlapping chunks."""
    parts: list[str] = []
    position = 0
    for chunk in sorted(chunks, key=lambda c: c["start_char"]):
        start, end, piece = int(chunk["start_char"]), int(chunk["end_char"]), chunk["text"]
        if end <= position:
            continue
        if start > position and parts:
            parts.append("\n")
        parts.append(piece[max(0, position - start) :])
        position = end
    return "".join(parts)


def _ends_sentence(text: str, match: re.Match[str]) -> bool:
    """A full stop after an abbreviation or an ordinal ("am 5. Januar") does not end a sentence."""
    if match["mark"] != ".":
        return True
    before = _WORD_BEFORE.search(text, max(0, match.start() - 40), match.start())
    word = before.group(1).lower().lstrip("([\"'") if before else ""
    if word in ABBREVIATIONS or (word.isdigit() and len(word) <= 2) or (len(word) == 1 and word.isalpha()):
        return False
    following = text[match.end() : match.end() + 3].lstrip()
    return not following or not following[0].islower()


def sentence_count(text: str) -> int:
    """Sentences: pieces with at least one word between sentence ends (. ! ? …) or blank lines."""
    count = 0
    start = 0
    for match in _SENTENCE_END.finditer(text):
        if match["mark"] and not _ends_sentence(text, match):
            continue
        if any(ch.isalnum() for ch in text[start : match.start()]):
            count += 1
        start = match.end()
    if any(ch.isalnum() for ch in text[start:]):
        count += 1
    return count


def keyword_counts(text: str) -> Counter[str]:
    """Candidate keyword counts: lower-case words of 3+ letters that are not stopwords."""
    return Counter(t for t in (m.group().lower() for m in _TOKEN.finditer(text)) if t not in STOPWORDS)


def distinctive_keywords(url: str, text_value: str, limit: int = KEYWORDS) -> list[dict[str, Any]]:
    """The words that characterise this text against the whole store (TF-IDF, smoothed idf)."""
    counts = keyword_counts(text_value)
    total_tokens = sum(counts.values())
    if not total_tokens:
        return []
    candidates = [term for term, _ in counts.most_common(_KEYWORD_CANDIDATES)]
    documents, frequencies = document_frequencies(url, candidates)
    documents = max(documents, 1)
    scored = []
    for term in candidates:
        df = max(frequencies.get(term, 0), 1)
        idf = math.log((1 + documents) / (1 + df)) + 1.0
        tf = counts[term] / total_tokens
        scored.append({"term": term, "count": counts[term], "documents": df, "score": round(tf * idf, 6)})
    scored.sort(key=lambda k: (-k["score"], k["term"]))
    return scored[:limit]


def _valid_date(year: int, month: int, day: int) -> str | None:
    try:
        return date(year, month, day).isoformat()
    except ValueError:
        return None


def _full_year(year: str) -> int:
    value = int(year)
    if len(year) == 2:
        value += 2000 if value < 70 else 1900
    return value


def _amount_value(number: str) -> float | None:
    digits = re.sub(r"[ '\u00a0\u202f]", "", number)
    last_sep = max(digits.rfind("."), digits.rfind(","))
    if last_sep >= 0 and len(digits) - last_sep - 1 in (1, 2):  # a decimal part
        whole, fraction = digits[:last_sep], digits[last_sep + 1 :]
        whole = re.sub(r"[.,]", "", whole)
        digits = f"{whole}.{fraction}"
    else:
        digits = re.sub(r"[.,]", "", digits)
    try:
        return float(digits)
    except ValueError:
        return None


def find_entities(text_value: str) -> dict[str, list[dict[str, Any]]]:
    """Emails, URLs, dates and money amounts found by regular expressions, most frequent first."""
    found: dict[str, Counter[tuple[Any, ...]]] = {k: Counter() for k in ("emails", "urls", "dates", "amounts")}
    for match in _EMAIL.finditer(text_value):
        found["emails"][(match.group().lower(),)] += 1
    for match in _URL.finditer(text_value):
        url = match.group().rstrip(".,;:!?)»”’'\"")
        if "." in url.split("//", 1)[-1]:
            found["urls"][(url,)] += 1
    for match in _DATE_ISO.finditer(text_value):
        iso = _valid_date(int(match[1]), int(match[2]), int(match[3]))
        if iso:
            found["dates"][(match.group(), iso)] += 1
    for match in _DATE_DOTTED.finditer(text_value):
        iso = _valid_date(_full_year(match[3]), int(match[2]), int(match[1]))
        if iso:
            found["dates"][(match.group(), iso)] += 1
    for match in _DATE_SLASH.finditer(text_value):
        first, second, year = int(match[1]), int(match[2]), _full_year(match[3])
        us, eu = _valid_date(year, first, second), _valid_date(year, second, first)
        iso = us if us and not eu else eu if eu and not us else (us if us == eu else None)
        if us or eu:
            found["dates"][(match.group(), iso)] += 1  # iso None: day and month are ambiguous
    for pattern, day_group, month_group in ((_DATE_DAY_MONTH, 1, 2), (_DATE_MONTH_DAY, 2, 1)):
        for match in pattern.finditer(text_value):
            month = _MONTHS.get(match[month_group].lower().rstrip("."))
            iso = _valid_date(int(match[3]), month, int(match[day_group])) if month else None
            if iso:
                found["dates"][(match.group(), iso)] += 1
    for match in _AMOUNT.finditer(text_value):
        number = match["num1"] or match["num2"]
        symbol = match["pre"] or match["post"]
        value = _amount_value(number)
        if value is None:
            continue
        currency = _SYMBOLS.get(symbol.lower() if symbol.isalpha() else symbol, symbol.upper())
        found["amounts"][(match.group().strip(), currency, value)] += 1

    def listed(kind: str, fields: tuple[str, ...]) -> list[dict[str, Any]]:
        items = found[kind].most_common(MAX_ENTITIES)
        return [{**dict(zip(fields, key, strict=True)), "count": count} for key, count in items]

    return {
        "emails": listed("emails", ("value",)),
        "urls": listed("urls", ("value",)),
        "dates": listed("dates", ("text", "iso")),
        "amounts": listed("amounts", ("text", "currency", "value")),
    }


def analyze_text(text_value: str, url: str, language: str | None = None) -> dict[str, Any]:
    """Text analytics of one document's text (keywords against the store at ``url``)."""
    truncated = len(text_value) > MAX_ANALYSIS_CHARS
    if truncated:
        text_value = text_value[:MAX_ANALYSIS_CHARS]
    words = word_count(text_value)
    result: dict[str, Any] = {
        "language": language or detect_language(text_value),
        "characters": len(text_value),
        "word_count": words,
        "sentence_count": sentence_count(text_value),
        "reading_time_minutes": round(words / READING_WPM, 1),
        "keywords": distinctive_keywords(url, text_value),
        "entities": find_entities(text_value),
    }
    if truncated:
        result["truncated_at_chars"] = MAX_ANALYSIS_CHARS
    return result


def analyze_document_text(document_id: int, store: Any) -> dict[str, Any]:
    """Analyse a processed document's stored text and store the result. Raises only TransientError."""
    started = time.monotonic()
    document = store.get_document(document_id)
    if document is None:
        return {"status": "failed", "kind": "text", "document_id": document_id, "error_type": "not_found",
                "error": f"no document with id {document_id}"}  # fmt: skip
    base = {"kind": "text", "document_id": document_id, "path": document.get("path"), "sha256": document["sha256"]}
    if document["status"] != "success":
        return {**base, "status": "failed", "error_type": "not_processed",
                "error": f"document {document_id} is {document['status']}, not processed successfully"}  # fmt: skip
    text_value = text_of_chunks(store.get_chunks(document_id))
    metadata = document.get("metadata") or {}
    result = {**base, "status": "success", **analyze_text(text_value, store.url, metadata.get("language"))}
    result["duration_s"] = round(time.monotonic() - started, 4)
    result["analyzed_at"] = datetime.now(UTC).isoformat()
    result = jsonable(result)
    if document["sha256"]:
        save_analysis(store.url, document["sha256"], "text", result, document_id)
    return result


__all__ = [
    "AnalysisRow",
    "analyze_data_path",
    "analyze_document_text",
    "analyze_text",
    "distinctive_keywords",
    "find_entities",
    "get_analysis",
    "save_analysis",
    "sentence_count",
    "text_of_chunks",
]
