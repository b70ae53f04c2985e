"""Plain text, log files and Markdown.

These are already text; the work is decoding them correctly (see
``encoding.py``), normalising newlines, keeping pathological single lines
chunkable, and refusing files that hold nothing or are really binary.
Markdown keeps its syntax (headings and emphasis are harmless for search and
give the chunker structure); only inline ``data:`` URIs are dropped, since
kilobytes of base64 are noise to a search index.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

from background_tasks.errors import EmptyDocument, TypeMismatch
from background_tasks.extraction.extractors.base import Extraction, Extractor, Limits
from background_tasks.extraction.extractors.encoding import (
    control_char_ratio,
    looks_binary,
    normalize_newlines,
    read_text_file,
    split_long_lines,
)


def load_text(path: Path, limits: Limits, split_lines: bool = True) -> tuple[str, dict[str, Any], list[str]]:
    """Decoded, newline-normalised text with long lines broken: (text, metadata, warnings).

    Raises EmptyDocument for empty or whitespace-only files and TypeMismatch
    for binary content. ``split_lines=False`` leaves long lines to the caller
    (CSV must parse its rows before they may be broken).
    """
    text, encoding, warnings = read_text_file(path, limits)
    if text.startswith("\ufeff"):
        text = text[1:]
    text = normalize_newlines(text)
    if not text.strip():
        raise EmptyDocument("the file is empty" if not text else "the file contains only whitespace")
    if looks_binary(text):
        ratio = control_char_ratio(text)
        raise TypeMismatch(f"the file looks binary, not text (NUL bytes or {ratio:.0%} control characters)")
    if "\x00" in text:
        text = text.replace("\x00", "")
        warnings.append("NUL characters removed")
    broken = 0
    if split_lines:
        text, broken = split_long_lines(text, limits.max_line_chars)
    if broken:
        warnings.append(f"{broken} line(s) longer than {limits.max_line_chars} characters were broken up")
    metadata: dict[str, Any] = {
        "encoding": encoding,
        "line_count": text.count("\n") + (0 if text.endswith("\n") else 1),
        "char_count": len(text),
    }
    return text, metadata, warnings


class PlainTextExtractor(Extractor):
    """``.txt``: the decoded text as it is."""

    name = "text"
    extensions = frozenset({".txt"})
    needs_isolation = False
    # No MIME types: "text/plain" is what sniffers say for CSV, Markdown and logs too,
    # and claiming it here would take those files from their own extractors.

    def extract(self, path: Path, limits: Limits) -> Extraction:
        text, metadata, warnings = load_text(path, limits)
        return Extraction(text=text, metadata=metadata, warnings=tuple(warnings))


_W3C_FIELDS = re.compile(r"^#Fields:\s*(.+)$", re.MULTILINE)
_W3C_SOFTWARE = re.compile(r"^#Software:\s*(.+)$", re.MULTILINE)


class LogExtractor(Extractor):
    """``.log``: the decoded text, plus the field names of W3C extended logs (IIS)."""

    name = "log"
    extensions = frozenset({".log"})
    needs_isolation = False
    mime_types = frozenset({"text/x-log"})

    def extract(self, path: Path, limits: Limits) -> Extraction:
        text, metadata, warnings = load_text(path, limits)
        head = text[:65536]
        fields = _W3C_FIELDS.search(head)
        if fields:
            metadata["log_format"] = "w3c-extended"
            metadata["fields"] = fields.group(1).split()
            software = _W3C_SOFTWARE.search(head)
            if software:
                metadata["application"] = software.group(1).strip()  # the program that wrote the log
        return Extraction(text=text, metadata=metadata, warnings=tuple(warnings))


#: ``![alt](data:...)`` keeps the alt text; any other ``data:`` URI with base64 is removed.
_MD_DATA_IMAGE = re.compile(r"!\[([^\]\n]*)\]\(\s*data:[^)\s]*\s*(?:\"[^\"\n]*\")?\s*\)", re.IGNORECASE)
_DATA_URI = re.compile(r"data:[\w.+-]+/[\w.+-]+(?:;[\w.+-]+=[\w.+-]+)*;base64,[A-Za-z0-9+/=]+", re.IGNORECASE)
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FRONT_MATTER_TITLE = re.compile(r"^title:\s*[\"']?(.+?)[\"']?\s*$", re.MULTILINE)
_INLINE_MARKUP = re.compile(r"[*_`]+|!?\[([^\]]*)\]\([^)]*\)")


def _strip_inline(text: str) -> str:
    return _INLINE_MARKUP.sub(lambda m: m.group(1) or "", text).strip()


def markdown_title(text: str) -> str | None:
    """The document title: front-matter ``title:``, else the first heading outside code fences."""
    if text.startswith("---\n"):
        end = text.find("\n---", 4)
        if end > 0:
            match = _FRONT_MATTER_TITLE.search(text[4:end])
            if match:
                return match.group(1).strip()
    in_fence = False
    previous = ""
    for count, line in enumerate(text.split("\n", 5000)):
        if count >= 5000:
            break
        if _FENCE.match(line):
            in_fence = not in_fence
            previous = ""
            continue
        if in_fence:
            continue
        atx = _ATX.match(line)
        if atx:
            title = _strip_inline(atx.group(2))
            if title:
                return title
        if previous.strip() and _SETEXT.match(line) and not previous.startswith((" " * 4, "\t", "-", "*", ">")):
            title = _strip_inline(previous)
            if title:
                return title
        previous = line
    return None


def _unescape_outside_code(text: str) -> str:
    """Turn HTML entities (``&amp;``, ``&#39;``) into characters, as a Markdown renderer would, except in fences."""
    if "&" not in text:
        return text
    lines = text.split("\n")
    in_fence = False
    for index, line in enumerate(lines):
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and "&" in line:
            lines[index] = html.unescape(line)
    return "\n".join(lines)


class MarkdownExtractor(Extractor):
    """``.md``: the Markdown source without inline data URIs; title from the first heading."""

    name = "markdown"
    extensions = frozenset({".md", ".markdown"})
    needs_isolation = False
    mime_types = frozenset({"text/markdown", "text/x-markdown"})

    def extract(self, path: Path, limits: Limits) -> Extraction:
        text, metadata, warnings = load_text(path, limits)
        cleaned, images = _MD_DATA_IMAGE.subn(lambda m: f"[image: {m.group(1)}]" if m.group(1) else "", text)
        cleaned, uris = _DATA_URI.subn("", cleaned)
        cleaned = _unescape_outside_code(cleaned)
        if images or uris:
            warnings.append(f"{images + uris} inline data URI(s) removed")
        if not cleaned.strip():
            raise EmptyDocument("the Markdown file holds only embedded data")
        metadata["line_count"] = cleaned.count("\n") + (0 if cleaned.endswith("\n") else 1)
        metadata["char_count"] = len(cleaned)
        title = markdown_title(cleaned)
        if title:
            metadata["title"] = title
        return Extraction(text=cleaned, metadata=metadata, warnings=tuple(warnings))
