"""Text-encoding detection for files that do not reliably say what they are.

Plain text, CSV, Markdown, logs and HTML arrive in every encoding that was ever
common: UTF-8 (with or without BOM), UTF-16/32 (with or without BOM), and the
legacy code pages (cp1252, cp1250, cp866, Shift-JIS...). Assuming UTF-8 turns
those into mojibake, so ``decode_bytes`` detects in a fixed, explainable order:

1. a byte-order mark (UTF-32 before UTF-16, since their BOMs overlap);
2. BOM-less UTF-16 recognised by its NUL-byte pattern (ASCII-heavy text);
3. strict UTF-8 (the overwhelming majority; ASCII is a subset);
4. charset-normalizer for legacy code pages, with a tie-break that reports the
   common sibling code page (cp1252 rather than cp1250, cp866 rather than
   cp1125) when both decode the bytes to exactly the same text.

Decoding never raises: when nothing fits, the bytes are decoded as UTF-8 with
replacement characters and the caller gets a warning.
"""

from __future__ import annotations

import codecs
import logging
from pathlib import Path

from background_tasks.errors import ResourceLimitExceeded
from background_tasks.extraction.extractors.base import Limits

log = logging.getLogger(__name__)

#: BOMs, longest first so UTF-32-LE (FF FE 00 00) is not taken for UTF-16-LE (FF FE).
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

#: How much of a large input charset-normalizer and the NUL heuristics look at.
_SAMPLE_BYTES = 256 * 1024

#: When charset-normalizer's choice decodes to the very same text as one of these,
#: report the more common one (the bytes cannot tell them apart, so the text is identical).
_PREFERRED_SIBLINGS: dict[str, tuple[str, ...]] = {
    "cp1250": ("cp1252",),
    "cp1258": ("cp1252",),
    "cp1254": ("cp1252",),
    "cp1257": ("cp1252",),
    "iso8859_2": ("cp1252", "iso8859_1"),
    "iso8859_10": ("cp1252", "iso8859_1"),
    "iso8859_13": ("cp1252", "iso8859_1"),
    "iso8859_14": ("cp1252", "iso8859_1"),
    "iso8859_15": ("cp1252", "iso8859_1"),
    "iso8859_16": ("cp1252", "iso8859_1"),
    "latin_1": ("cp1252",),
    "iso8859_1": ("cp1252",),
    "mac_iceland": ("cp1252", "mac_roman"),
    "mac_latin2": ("cp1252", "mac_roman"),
    "cp850": ("cp437",),
    "cp775": ("cp1252",),
    "cp852": ("cp437",),
    "hp_roman8": ("cp1252",),
    "cp1125": ("cp866",),
    "koi8_u": ("koi8_r",),
    "shift_jis_2004": ("cp932",),
    "shift_jisx0213": ("cp932",),
}


def _bom(data: bytes) -> tuple[str, int] | None:
    for bom, name in _BOMS:
        if data.startswith(bom):
            return name, len(bom)
    return None


def _utf16_without_bom(data: bytes) -> str | None:
    """``utf-16-le``/``utf-16-be`` when NULs sit almost only at odd/even offsets.

    Text in Latin scripts stored as UTF-16 has a NUL as the high byte of nearly
    every character; no 8-bit encoding of real text looks like that.
    """
    sample = data[:_SAMPLE_BYTES]
    if len(sample) < 4:
        return None
    sample = sample[: len(sample) - (len(sample) % 2)]
    even_nuls = sample[0::2].count(0)
    odd_nuls = sample[1::2].count(0)
    pairs = len(sample) // 2
    if even_nuls >= 0.3 * pairs and odd_nuls <= 0.05 * pairs:
        candidate = "utf-16-be"
    elif odd_nuls >= 0.3 * pairs and even_nuls <= 0.05 * pairs:
        candidate = "utf-16-le"
    else:
        return None
    try:
        data[: len(data) - (len(data) % 2)].decode(candidate)
    except UnicodeDecodeError:
        return None
    return candidate


def _utf32_without_bom(data: bytes) -> str | None:
    """``utf-32-le``/``-be`` for BOM-less UTF-32 (three NULs in every four bytes of ASCII text)."""
    if len(data) < 8 or len(data) % 4:
        return None
    sample = data[:_SAMPLE_BYTES]
    quads = len(sample) // 4
    if sample[2::4].count(0) < 0.9 * quads:
        return None
    for name in ("utf-32-le", "utf-32-be"):
        try:
            data.decode(name)
        except UnicodeDecodeError:
            continue
        return name
    return None


def _prefer_sibling(data: bytes, encoding: str, text: str) -> str:
    for sibling in _PREFERRED_SIBLINGS.get(encoding, ()):
        try:
            if data.decode(sibling) == text:
                return sibling
        except UnicodeDecodeError:
            continue
    return encoding


def _legacy_guess(data: bytes) -> tuple[str, float] | None:
    """charset-normalizer's best code page for bytes that are not UTF-8, or None."""
    try:
        from charset_normalizer import from_bytes
    except ImportError:  # pragma: no cover - pinned in requirements
        log.warning("charset-normalizer missing; legacy code pages fall back to cp1252")
        return None
    try:
        matches = list(from_bytes(data[: _SAMPLE_BYTES * 4]))
    except Exception as exc:  # detection is best effort; decoding below never depends on it
        log.warning("charset detection failed: %s", exc)
        return None
    if not matches:
        return None
    # Among the equally clean decodings (same mess ratio), the one whose letters best
    # fit a language wins; charset-normalizer's own order does not always weigh that.
    least_chaos = min(m.chaos for m in matches)
    tied = [m for m in matches if m.chaos <= least_chaos + 0.005]
    best = max(tied, key=lambda m: m.coherence)
    confidence = max(0.0, min(1.0, 1.0 - float(best.chaos)))
    return best.encoding, confidence


#: Declared labels that mean something else in practice (WHATWG encoding standard).
_DECLARED_ALIASES = {"iso8859_1": "cp1252", "latin_1": "cp1252", "ascii": "cp1252", "iso8859_9": "cp1254"}


def _declared_codec(declared: str | None) -> str | None:
    """The Python codec for a declared charset label, or None if unknown or not usable as a hint."""
    if not declared:
        return None
    try:
        name = codecs.lookup(declared.strip().strip("\"'")).name
    except LookupError:
        return None
    name = name.replace("-", "_")
    if name.startswith(("utf_16", "utf_32")):
        return None  # a page re-encoded to an ASCII-compatible form still saying UTF-16 (HTML treats it as UTF-8)
    return _DECLARED_ALIASES.get(name, name)


def decode_bytes(data: bytes, declared: str | None = None) -> tuple[str, str, float]:
    """Decode ``data`` as (text, encoding name, confidence 0..1). Never raises.

    ``declared`` is what the document says about itself (an HTML meta charset):
    it is used after BOM and UTF-8 checks, and only if the bytes decode cleanly
    with it, because such declarations are often wrong.
    The confidence is 1.0 for a BOM, 0.99 for valid UTF-8 and lower for a guess;
    0.0 means nothing fit and the text holds U+FFFD replacement characters.
    """
    if not data:
        return "", "utf-8", 1.0
    bom = _bom(data)
    if bom is not None:
        name, skip = bom
        body = data[skip:]
        if name.startswith(("utf-16", "utf-32")):
            unit = 2 if name.startswith("utf-16") else 4
            body = body[: len(body) - (len(body) % unit)]
        try:
            return body.decode(name), name, 1.0
        except UnicodeDecodeError:
            return body.decode(name, errors="replace"), name, 0.3

    utf32 = _utf32_without_bom(data)
    if utf32 is not None:
        return data.decode(utf32), utf32, 0.9
    utf16 = _utf16_without_bom(data)
    if utf16 is not None:
        even = data[: len(data) - (len(data) % 2)]
        return even.decode(utf16), utf16, 0.9

    try:
        return data.decode("utf-8"), "utf-8", 0.99
    except UnicodeDecodeError as exc:
        # A multi-byte character cut off by a size cap at the very end is still UTF-8.
        if exc.start >= len(data) - 3 and exc.reason == "unexpected end of data":
            return data[: exc.start].decode("utf-8"), "utf-8", 0.95

    codec = _declared_codec(declared)
    if codec is not None and codec != "utf_8":
        try:
            return data.decode(codec), codec, 0.8
        except (UnicodeDecodeError, LookupError):
            pass

    guess = _legacy_guess(data)
    if guess is not None:
        encoding, confidence = guess
        try:
            text = data.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            # The guess was made on a sample; the full data may hold bytes it never saw.
            try:
                text = data.decode(encoding, errors="replace")
            except LookupError:
                text = None
            confidence = min(confidence, 0.3)
        if text is not None:
            return text, _prefer_sibling(data, encoding, text), confidence

    try:
        return data.decode("cp1252"), "cp1252", 0.1
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="replace"), "utf-8", 0.0


def decode_with_warnings(data: bytes) -> tuple[str, str, list[str]]:
    """``decode_bytes`` plus the warnings an extractor should pass on to the user."""
    text, encoding, confidence = decode_bytes(data)
    warnings = []
    if confidence == 0.0:
        warnings.append("no text encoding fits the bytes; undecodable bytes were replaced with U+FFFD")
    elif confidence < 0.5:
        warnings.append(f"text encoding uncertain: guessed {encoding} (confidence {confidence:.2f})")
    return text, encoding, warnings


def text_byte_cap(limits: Limits) -> int:
    """The most bytes a text file may have: ``max_text_chars`` characters of up to 4 bytes each."""
    return limits.max_text_chars * 4


def read_capped(path: Path, cap: int) -> bytes:
    """The file's bytes, or ResourceLimitExceeded if it is longer than ``cap`` bytes.

    Reads at most ``cap + 1`` bytes, so a file that grows or lies about its size
    cannot make us read more than that.
    """
    with open(path, "rb") as handle:
        data = handle.read(cap + 1)
    if len(data) > cap:
        raise ResourceLimitExceeded(f"file is larger than the text limit of {cap} bytes")
    return data


def read_text_file(path: Path, limits: Limits) -> tuple[str, str, list[str]]:
    """Read and decode a text file: (text, encoding, warnings).

    Raises ResourceLimitExceeded when the file or its decoded text is beyond
    ``limits``; decoding itself never fails (see ``decode_bytes``).
    """
    data = read_capped(path, text_byte_cap(limits))
    text, encoding, warnings = decode_with_warnings(data)
    del data
    if len(text) > limits.max_text_chars:
        raise ResourceLimitExceeded(f"text has {len(text)} characters, more than the limit of {limits.max_text_chars}")
    return text, encoding, warnings


def normalize_newlines(text: str) -> str:
    """CRLF and lone CR become LF, so line counts and chunk boundaries do not depend on the OS."""
    if "\r" not in text:
        return text
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _has_long_line(text: str, max_line_chars: int) -> bool:
    """Cheap scan, so the common case (no long line) costs no copy of the text."""
    pos, length = 0, len(text)
    while pos < length:
        end = text.find("\n", pos)
        if end < 0:
            end = length
        if end - pos > max_line_chars:
            return True
        pos = end + 1
    return False


def split_long_lines(text: str, max_line_chars: int) -> tuple[str, int]:
    """Break lines longer than ``max_line_chars``, preferably at a space: (text, lines broken).

    A single multi-megabyte line (minified data, a log without newlines) would
    otherwise become one unsplittable chunk. Nothing is dropped.
    """
    if max_line_chars <= 0 or len(text) <= max_line_chars or not _has_long_line(text, max_line_chars):
        return text, 0
    pieces: list[str] = []
    broken = 0
    pos = 0
    length = len(text)
    while pos < length:
        end = text.find("\n", pos)
        if end < 0:
            end = length
        if end - pos <= max_line_chars:
            pieces.append(text[pos:end])
        else:
            broken += 1
            start = pos
            while end - start > max_line_chars:
                cut = text.rfind(" ", start + max_line_chars // 2, start + max_line_chars)
                if cut < 0:
                    cut = start + max_line_chars
                    pieces.append(text[start:cut])
                    start = cut
                else:
                    pieces.append(text[start:cut])
                    start = cut + 1
            pieces.append(text[start:end])
        pos = end + 1
    result = "\n".join(pieces)
    if text.endswith("\n"):
        result += "\n"
    return result, broken


def looks_binary(text: str, sample: int = 65536) -> bool:
    """Decoded "text" that is really binary data: NULs, or many control/replacement characters, in its start."""
    part = text[:sample]
    if "\x00" in part:
        return True
    if not part:
        return False
    bad = sum(1 for ch in part if (ch < " " and ch not in "\t\n\r\f") or ch == "\ufffd")
    return bad / len(part) > 0.10


def control_char_ratio(text: str, sample: int = 65536) -> float:
    """Share of C0 control characters (other than tab, newline, CR, form feed) in a sample."""
    part = text[:sample]
    if not part:
        return 0.0
    bad = sum(1 for ch in part if ch < " " and ch not in "\t\n\r\f")
    return bad / len(part)
