"""JSON and XML: structured data as readable, searchable text.

JSON becomes one ``path.to.key: value`` line per scalar (array items as
``items[3].name``), so every chunk keeps the context of its values. Top-level
records (a JSON array, JSON Lines, or concatenated documents) are separated by
blank lines. Nesting is measured before parsing, so a 100,000-deep document is
a ``ResourceLimitExceeded``, never a ``RecursionError``.

Invalid or truncated JSON is *recovered*, not rejected: a tolerant tokenizer
reads every value it can (a truncated file keeps everything up to the cut),
text that is not JSON at all is kept as plain text, and the result carries a
warning naming the first syntax error. Only input that yields nothing is a
``CorruptDocument``. Losing a whole log export because its last line was cut
off would be worse than a warning.

XML is parsed with lxml configured never to resolve entities, load a DTD or
touch the network (no XXE, no billion laughs); nesting deeper than the limit is
``ResourceLimitExceeded``. Text is taken in document order: element-only
content becomes separate lines, mixed content (``<p>a <b>bold</b> word</p>``)
stays inline so words are not split.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from background_tasks.errors import CorruptDocument, EmptyDocument, ResourceLimitExceeded, TypeMismatch
from background_tasks.extraction.extractors.base import Extraction, Extractor, Limits
from background_tasks.extraction.extractors.encoding import (
    decode_bytes,
    looks_binary,
    normalize_newlines,
    read_capped,
    read_text_file,
    split_long_lines,
    text_byte_cap,
)
from background_tasks.extraction.extractors.html import html_to_text
from background_tasks.extraction.extractors.metadata import split_authors

# --------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------

_JSON_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")
_WS = re.compile(r"\s*")


def json_depth(text: str, limit: int) -> int:
    """Deepest bracket nesting outside strings; ResourceLimitExceeded as soon as it passes ``limit``."""
    stripped = _JSON_STRING.sub('""', text) if '"' in text else text
    depth = deepest = 0
    for match in _BRACKETS.finditer(stripped):
        if match.group() in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if depth > limit:
                    raise ResourceLimitExceeded(f"JSON nesting deeper than the limit of {limit} levels")
        elif depth:
            depth -= 1
    return deepest


def _scalar(value: Any) -> str | None:
    if value is None:
        return None
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    return str(value)


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class _Lines:
    """Output lines with a running size check."""

    def __init__(self, max_chars: int) -> None:
        self.lines: list[str] = []
        self.chars = 0
        self.values = 0
        self.max_chars = max_chars

    def value(self, path: str, text: str) -> None:
        line = f"{path}: {text}" if path else text
        self.values += 1
        self.add(line)

    def add(self, line: str) -> None:
        self.chars += len(line) + 1
        if self.chars > self.max_chars:
            raise ResourceLimitExceeded(f"JSON text exceeds the limit of {self.max_chars} characters")
        self.lines.append(line)

    def separate(self) -> None:
        if self.lines and self.lines[-1] != "":
            self.lines.append("")


def _flatten(value: Any, out: _Lines, prefix: str = "") -> None:
    """Emit ``path: value`` lines for a parsed value with an explicit stack (no recursion)."""
    stack: list[tuple[str, Any]] = [(prefix, value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, dict):
            stack.extend((_child(path, str(k)), v) for k, v in reversed(list(item.items())))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", v) for i, v in reversed(list(enumerate(item))))
        else:
            text = _scalar(item)
            if text is not None and text != "":
                out.value(path, text)


def _parse_stream(text: str) -> list[Any]:
    """All JSON values in ``text`` (one document, JSON Lines, or concatenated); JSONDecodeError if invalid."""
    decoder = json.JSONDecoder()
    values = []
    index = _WS.match(text, 0).end()
    while index < len(text):
        value, index = decoder.raw_decode(text, index)
        values.append(value)
        index = _WS.match(text, index).end()
    return values


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<str>"(?:[^"\\]++|\\.)*+")
      | (?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
      | (?P<lit>true|false|null)\b
      | (?P<punct>[{}\[\]:,])
    )""",
    re.VERBOSE | re.DOTALL,
)
_NOT_JSON = re.compile(r"""[^"{}\[\]:,\s]+(?:[ \t]+[^"{}\[\]:,\s]+)*""")


def _unquote(token: str) -> str:
    try:
        return json.loads(token)
    except ValueError:
        return token[1:-1]


def _recover(text: str, out: _Lines, max_nesting: int) -> int:
    """Read whatever JSON values a damaged document holds; returns the number of problems skipped.

    A stack of (kind, path, index/key) frames replaces recursion; unclosed
    containers at the end (truncation) are simply left open.
    """
    frames: list[list[Any]] = []  # [kind "{" or "[", path, array index, pending key, expecting key]
    problems = 0
    pos = 0
    length = len(text)
    top_level = 0

    def value_path() -> str:
        if not frames:
            return ""
        kind, path, index, key, _expect = frames[-1]
        if kind == "[":
            return f"{path}[{index}]"
        return _child(path, key if key is not None else "?")

    def emit(value_text: str) -> None:
        nonlocal top_level
        if not frames:
            out.separate()
            top_level += 1
        out.value(value_path(), value_text)
        if frames and frames[-1][0] == "{":
            frames[-1][3] = None
            frames[-1][4] = True

    while pos < length:
        match = _TOKEN.match(text, pos)
        if match is None:
            rest = _WS.match(text, pos).end()
            if rest >= length:
                break
            if text[rest] == '"':  # unterminated string: the document was cut inside it
                emit(text[rest + 1 :].replace('\\"', '"'))
                problems += 1
                break
            junk = _NOT_JSON.match(text, rest)
            end = junk.end() if junk and junk.end() > rest else rest + 1
            words = text[rest:end].strip()
            if words:
                emit(words)
            problems += 1
            pos = end
            continue
        pos = match.end()
        kind = match.lastgroup
        token = match.group(kind)
        if kind == "punct":
            if token in "{[":
                if len(frames) >= max_nesting:
                    raise ResourceLimitExceeded(f"JSON nesting deeper than the limit of {max_nesting} levels")
                path = value_path()
                if not frames:
                    out.separate()
                    top_level += 1
                elif frames[-1][0] == "{":
                    frames[-1][3] = None
                    frames[-1][4] = True
                frames.append([token, path, 0, None, True])
            elif token in "}]":
                if frames:
                    frames.pop()
                else:
                    problems += 1
            elif token == ",":
                if frames and frames[-1][0] == "[":
                    frames[-1][2] += 1
                elif frames:
                    frames[-1][3] = None
                    frames[-1][4] = True
            elif token == ":" and frames and frames[-1][0] == "{":
                frames[-1][4] = False
        elif kind == "str":
            value = _unquote(token)
            if frames and frames[-1][0] == "{" and frames[-1][4] and frames[-1][3] is None:
                frames[-1][3] = value
            elif value:
                emit(value)
        elif kind == "num" or token != "null":
            emit(token)
    return problems + (1 if frames else 0)


def _json_title(values: list[Any]) -> str | None:
    if len(values) == 1 and isinstance(values[0], dict):
        for key in ("title", "name", "headline", "subject"):
            candidate = values[0].get(key)
            if isinstance(candidate, str) and candidate.strip():
                return candidate.strip()[:500]
    return None


class JsonExtractor(Extractor):
    """``.json`` (also JSON Lines): ``path.to.key: value`` lines; damaged JSON recovered with a warning."""

    name = "json"
    extensions = frozenset({".json", ".jsonl", ".ndjson"})
    mime_types = frozenset({"application/json", "application/x-ndjson"})

    def extract(self, path: Path, limits: Limits) -> Extraction:
        text, encoding, warnings = read_text_file(path, limits)
        text = text.removeprefix("\ufeff")
        if not text.strip():
            raise EmptyDocument("the JSON file is empty" if not text else "the JSON file contains only whitespace")
        if looks_binary(text):
            raise TypeMismatch("the file looks binary, not JSON")
        depth = json_depth(text, limits.max_nesting)
        out = _Lines(limits.max_text_chars)
        metadata: dict[str, Any] = {"encoding": encoding, "max_depth": depth}
        try:
            values = _parse_stream(text)
        except RecursionError as exc:  # only if max_nesting is set above what the C parser allows
            raise ResourceLimitExceeded("JSON nesting too deep to parse") from exc
        except json.JSONDecodeError as exc:
            problems = _recover(text, out, limits.max_nesting)
            if not out.values:
                raise CorruptDocument(f"not valid JSON and nothing recoverable: {exc}") from exc
            warnings.append(
                f"invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                f"recovered {out.values} value(s), {problems} problem(s) skipped"
            )
            metadata.update({"valid": False, "json_type": "invalid"})
        else:
            if len(values) > 1:
                metadata.update({"json_type": "json-lines", "records": len(values)})
                records = [("", value) for value in values]
            elif isinstance(values[0], list):
                metadata.update({"json_type": "array", "records": len(values[0])})
                records = [(f"[{index}]", value) for index, value in enumerate(values[0])]
            else:
                metadata["json_type"] = "object" if isinstance(values[0], dict) else "scalar"
                records = [("", values[0])]
            for prefix, record in records:
                out.separate()
                _flatten(record, out, prefix)
            metadata["valid"] = True
            title = _json_title(values)
            if title:
                metadata["title"] = title
        body = "\n".join(out.lines).strip("\n")
        if not body.strip():
            raise EmptyDocument("the JSON document holds no values")
        body, broken = split_long_lines(normalize_newlines(body), limits.max_line_chars)
        if broken:
            warnings.append(f"{broken} line(s) longer than {limits.max_line_chars} characters were broken up")
        metadata["value_count"] = out.values
        return Extraction(text=body, metadata=metadata, warnings=tuple(warnings))


# --------------------------------------------------------------------------
# XML
# --------------------------------------------------------------------------

_XML_DECL_ENCODING = re.compile(rb"""^(?:\xef\xbb\xbf)?\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_EMBEDDED_HTML = re.compile(r"</?(?:p|div|a|br|span|img|strong|em|b|i|u|ul|ol|li|table|tr|td|h[1-6])\b[^<>]*>", re.I)
_TITLE_TAGS = ("title", "article-title", "invention-title", "headline")
_AUTHOR_TAGS = ("creator", "author")


def _localname(tag: Any) -> str | None:
    if not isinstance(tag, str):
        return None
    return tag.rsplit("}", 1)[-1].rsplit(":", 1)[-1]


def _xml_parser(limits: Limits, encoding: str | None = None, recover: bool = False) -> Any:
    from lxml import etree

    return etree.XMLParser(
        encoding=encoding,
        resolve_entities=False,  # no internal expansion (billion laughs) and no external entities (XXE)
        load_dtd=False,
        dtd_validation=False,
        no_network=True,
        huge_tree=False,  # keeps libxml2's own depth and size caps
        remove_comments=True,
        remove_pis=True,
        recover=recover,
    )


def _bom_encoding(data: bytes) -> str | None:
    for bom, name in (
        (codecs.BOM_UTF32_LE, "UTF-32LE"),
        (codecs.BOM_UTF32_BE, "UTF-32BE"),
        (codecs.BOM_UTF8, "UTF-8"),
        (codecs.BOM_UTF16_LE, "UTF-16LE"),
        (codecs.BOM_UTF16_BE, "UTF-16BE"),
    ):
        if data.startswith(bom):
            return name
    return None


def _check_depth(root: Any, limit: int) -> int:
    """Deepest element nesting, walked with an explicit stack; ResourceLimitExceeded past ``limit``."""
    deepest = 0
    stack = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        if depth > deepest:
            deepest = depth
            if depth > limit:
                raise ResourceLimitExceeded(f"XML nesting deeper than the limit of {limit} levels")
        stack.extend((child, depth + 1) for child in element)
    return deepest


def _is_element(node: Any) -> bool:
    return isinstance(node.tag, str)


def _xml_blocks(root: Any) -> Iterator[str]:
    """Text in document order: one block per element with text; mixed content kept inline."""
    stack: list[Any] = [root]
    while stack:
        element = stack.pop()
        children = [c for c in element if _is_element(c)]
        has_text = bool(element.text and element.text.strip())
        mixed = has_text or any(c.tail and c.tail.strip() for c in children)
        if not children or mixed:
            text = " ".join("".join(_itertext(element)).split())
            if text:
                yield text
            continue
        stack.extend(reversed(children))


def _itertext(element: Any) -> Iterator[str]:
    """Element text and tails in document order; comments, PIs and unexpanded entities skipped (their tails kept)."""
    stack: list[tuple[Any, bool]] = [(element, False)]
    while stack:
        node, closing = stack.pop()
        if closing:
            if node is not element and node.tail:
                yield node.tail
        elif _is_element(node):
            if node.text:
                yield node.text
            stack.append((node, True))
            stack.extend((child, False) for child in reversed(node))
        elif node.tail:
            yield node.tail


def _first_text(root: Any, names: tuple[str, ...]) -> str | None:
    for element in root.iter():
        if _localname(element.tag) in names:
            text = " ".join("".join(_itertext(element)).split())
            if text:
                return text[:500]
    return None


class XmlExtractor(Extractor):
    """``.xml``: element text in document order; entities never expanded, DTDs and network never loaded."""

    name = "xml"
    extensions = frozenset({".xml"})
    mime_types = frozenset({"application/xml", "text/xml", "application/rss+xml", "application/atom+xml"})

    def extract(self, path: Path, limits: Limits) -> Extraction:
        from lxml import etree

        data = read_capped(path, text_byte_cap(limits))
        if not data.strip():
            raise EmptyDocument("the XML file is empty" if not data else "the XML file contains only whitespace")
        warnings: list[str] = []
        # A BOM outranks the declaration (factbook-utf-16.xml: UTF-16 bytes declaring UTF-8).
        encoding = _bom_encoding(data)
        root = None
        try:
            root = etree.fromstring(data, _xml_parser(limits, encoding))
        except etree.XMLSyntaxError as exc:
            root = self._retry(data, limits, encoding, exc, warnings)
        except ValueError as exc:
            raise CorruptDocument(f"unreadable XML: {exc}") from exc
        if root is None:
            raise CorruptDocument("no XML element found")
        depth = _check_depth(root, limits.max_nesting)

        builder: list[str] = []
        chars = 0
        embedded_html = 0
        for block in _xml_blocks(root):
            if "<" in block and _EMBEDDED_HTML.search(block):
                # RSS/Atom descriptions and similar carry escaped HTML: index its text, not its tags.
                block = html_to_text(block, limits.max_text_chars)
                embedded_html += 1
                if not block:
                    continue
            chars += len(block) + 1
            if chars > limits.max_text_chars:
                raise ResourceLimitExceeded(f"XML text exceeds the limit of {limits.max_text_chars} characters")
            builder.append(block)
        text = "\n".join(builder)
        if not text.strip():
            raise EmptyDocument("the XML document holds no text")
        if embedded_html:
            warnings.append(f"{embedded_html} text block(s) held HTML markup; their visible text was kept")
        text, broken = split_long_lines(text, limits.max_line_chars)
        if broken:
            warnings.append(f"{broken} line(s) longer than {limits.max_line_chars} characters were broken up")

        tree = root.getroottree()
        metadata: dict[str, Any] = {
            "root": _localname(root.tag),
            "encoding": tree.docinfo.encoding or encoding or "UTF-8",
            "max_depth": depth,
        }
        namespace = etree.QName(root).namespace
        if namespace:
            metadata["namespace"] = namespace
        title = _first_text(root, _TITLE_TAGS)
        if title:
            metadata["title"] = title
        author = _first_text(root, _AUTHOR_TAGS)
        if author:
            metadata["authors"] = split_authors(author)
        if tree.docinfo.doctype:
            metadata["doctype"] = tree.docinfo.doctype
        return Extraction(text=text, metadata=metadata, warnings=tuple(warnings))

    @staticmethod
    def _retry(data: bytes, limits: Limits, encoding: str | None, error: Exception, warnings: list[str]) -> Any:
        """Second chance for malformed or mislabelled XML: detected encoding, then libxml2's recover mode."""
        from lxml import etree

        message = str(error)
        if "Excessive depth" in message or "Detected an entity reference loop" in message:
            raise ResourceLimitExceeded(f"XML refused by the parser's safety limits: {message}") from error
        if "amplification" in message.lower() or "huge" in message.lower():
            raise ResourceLimitExceeded(f"XML refused by the parser's safety limits: {message}") from error
        if encoding is None and ("encoding" in message.lower() or "UTF-8" in message or "Char 0x" in message):
            _text, detected, _confidence = decode_bytes(data)
            try:
                root = etree.fromstring(data, _xml_parser(limits, detected))
            except (etree.XMLSyntaxError, LookupError, ValueError):
                pass
            else:
                warnings.append(f"the declared encoding was wrong; decoded as {detected}")
                return root
            encoding = detected
        try:
            root = etree.fromstring(data, _xml_parser(limits, encoding, recover=True))
        except (etree.XMLSyntaxError, LookupError, ValueError) as exc:
            raise CorruptDocument(f"malformed XML: {message}") from exc
        if root is None:
            raise CorruptDocument(f"malformed XML: {message}")
        warnings.append(f"malformed XML ({message}); text recovered in libxml2 recover mode")
        return root
