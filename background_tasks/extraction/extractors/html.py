"""HTML: the text a reader sees, plus title, description, authors and language.

The encoding is decided from the bytes, not trusted from the page: a BOM
first, then valid UTF-8, then the ``<meta charset>`` declaration only if the
bytes really decode with it, then statistical detection (pages declaring
UTF-8 while written in cp1256 exist). The page is parsed with lxml's HTML
parser (no network); script, style, noscript, template and hidden elements are
dropped. Block elements become line breaks, table cells are joined with
`` | `` per row, headings are marked with ``#`` so the chunker sees structure,
and ``<pre>`` keeps its whitespace.

libxml2 stops building the tree at 256 levels of nesting. A page that deep is
re-read with the standard library's streaming tokenizer, which has no tree
and therefore no depth limit, so its text is not lost; the walk over lxml's
tree is iterative as well, so nesting can never cause a RecursionError.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from background_tasks.errors import EmptyDocument, ResourceLimitExceeded, TypeMismatch
from background_tasks.extraction.extractors.base import Extraction, Extractor, Limits
from background_tasks.extraction.extractors.encoding import (
    decode_bytes,
    looks_binary,
    read_capped,
    split_long_lines,
    text_byte_cap,
)
from background_tasks.extraction.extractors.metadata import shaped

_META_CHARSET = re.compile(rb"""<meta[^>]+?charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.IGNORECASE)
_XML_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")

SKIP_TAGS = frozenset(
    {"script", "style", "noscript", "template", "head", "svg", "iframe", "object", "embed", "canvas", "select"}
)
#: Break strength: 1 = new line, 2 = blank line (paragraph).
BLOCK_TAGS: dict[str, int] = {
    **dict.fromkeys(
        (
            "p",
            "div",
            "section",
            "article",
            "header",
            "footer",
            "nav",
            "aside",
            "main",
            "blockquote",
            "pre",
            "table",
            "figure",
            "form",
            "fieldset",
            "address",
            "details",
            "center",
            "ul",
            "ol",
            "dl",
            "hr",
            "h1",
            "h2",
            "h3",
            "h4",
            "h5",
            "h6",
        ),
        2,
    ),
    **dict.fromkeys(
        ("li", "dt", "dd", "tr", "br", "caption", "figcaption", "summary", "legend", "option", "thead", "tbody"), 1
    ),
}
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_CELL_TAGS = frozenset({"td", "th"})
_SPACE = re.compile(r"[ \t\r\n\f\v\u00a0\u200b]+")


class TextSink:
    """Collects text runs and line breaks into readable text with collapsed whitespace.

    More than ``max_chars`` characters raise ``ResourceLimitExceeded``, or with
    ``truncate`` are dropped (``truncated`` says so).
    """

    def __init__(self, max_chars: int, truncate: bool = False) -> None:
        self._parts: list[str] = []
        self._pending = 0  # strongest break requested since the last text
        self._chars = 0
        self._max = max_chars
        self._truncate = truncate
        self.truncated = False
        self._last = "\n"  # last character written
        self._row_text = False  # the current line already has text (for cell separators)
        self._sep = False
        self._prefix = ""  # heading mark or bullet waiting for the block's first text

    def text(self, data: str, pre: bool = False) -> None:
        if not pre:
            data = _SPACE.sub(" ", data)
            if self._last in " \n" or self._pending or self._sep:
                data = data.lstrip(" ")
        if not data:
            return
        if self._pending and self._parts:
            self._write("\n" * self._pending)
        self._pending = 0
        if self._prefix:
            self._write(self._prefix)
            self._prefix = ""
            data = data.lstrip(" ")
            if not data:
                return
        if self._sep:
            if self._parts and self._last == " ":
                self._parts[-1] = self._parts[-1].rstrip(" ")
            self._write(" | ")
            self._sep = False
        self._write(data)
        self._row_text = True

    def brk(self, level: int) -> None:
        if self._parts and self._last == " ":
            self._parts[-1] = self._parts[-1].rstrip(" ")
            self._last = self._parts[-1][-1:] or "\n"
        self._pending = max(self._pending, level)
        self._row_text = False
        self._sep = False

    def cell(self) -> None:
        """A table cell starts: `` | `` separates it from earlier cells of the row that had text."""
        if self._row_text:
            self._sep = True

    def prefix(self, marker: str) -> None:
        """Marks the next text as starting a heading or list item; dropped if the block stays empty."""
        self._prefix = marker

    def end_prefixed(self) -> None:
        self._prefix = ""

    def _write(self, data: str) -> None:
        if self._chars + len(data) > self._max:
            if not self._truncate:
                raise ResourceLimitExceeded(f"HTML text exceeds the limit of {self._max} characters")
            self.truncated = True
            data = data[: self._max - self._chars]
            if not data:
                return
        self._chars += len(data)
        self._parts.append(data)
        self._last = data[-1]

    def result(self) -> str:
        return "\n".join(line.rstrip() for line in "".join(self._parts).split("\n")).strip()


def _hidden(attrs: Any) -> bool:
    if attrs.get("hidden") is not None or str(attrs.get("aria-hidden", "")).lower() == "true":
        return True
    style = str(attrs.get("style", "")).replace(" ", "").lower()
    return "display:none" in style or "visibility:hidden" in style


def _open(sink: TextSink, tag: str) -> None:
    level = BLOCK_TAGS.get(tag)
    if level:
        sink.brk(level)
    if tag in _HEADINGS:
        sink.prefix("#" * _HEADINGS[tag] + " ")
    elif tag == "li":
        sink.prefix("- ")
    elif tag in _CELL_TAGS:
        sink.cell()


def _close(sink: TextSink, tag: str) -> None:
    level = BLOCK_TAGS.get(tag)
    if level:
        sink.brk(level)
    if tag == "li" or tag in _HEADINGS:
        sink.end_prefixed()


def walk_tree(root: Any, sink: TextSink) -> int:
    """Visible text of an lxml tree into ``sink``; iterative. Returns the deepest nesting seen."""
    stack: list[tuple[Any, int, bool]] = [(root, 0, False)]
    pre_depth = 0
    deepest = 0
    while stack:
        node, depth, closing = stack.pop()
        tag = node.tag if isinstance(node.tag, str) else None
        name = tag.lower() if tag else None
        if closing:
            if name == "pre":
                pre_depth -= 1
            if name:
                _close(sink, name)
            if node.tail:
                sink.text(node.tail, pre=pre_depth > 0)
            continue
        deepest = max(deepest, depth)
        if name is None or name in SKIP_TAGS or _hidden(node.attrib):
            if node.tail:
                sink.text(node.tail, pre=pre_depth > 0)
            continue
        _open(sink, name)
        if name == "pre":
            pre_depth += 1
        if node.text:
            sink.text(node.text, pre=pre_depth > 0)
        stack.append((node, depth, True))
        stack.extend((child, depth + 1, False) for child in reversed(node))
    return deepest


class _StreamingText(HTMLParser):
    """Tree-less fallback: visible text straight from the tokenizer, for pages too deep for libxml2."""

    _VOID = frozenset({"br", "hr", "img", "meta", "link", "input", "area", "base", "col", "source", "wbr"})

    def __init__(self, sink: TextSink) -> None:
        super().__init__(convert_charrefs=True)
        self.sink = sink
        self.skip = 0
        self.pre = 0
        self.in_title = False
        self.title: list[str] = []
        self.depth = 0
        self.deepest = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self._VOID:
            self.depth += 1
            self.deepest = max(self.deepest, self.depth)
        if tag == "title":
            self.in_title = True
        if tag in SKIP_TAGS and tag not in self._VOID:
            self.skip += 1
        if self.skip:
            return
        _open(self.sink, tag)
        if tag == "pre":
            self.pre += 1

    def handle_endtag(self, tag: str) -> None:
        self.depth = max(0, self.depth - 1)
        if tag == "title":
            self.in_title = False
        if tag in SKIP_TAGS:
            self.skip = max(0, self.skip - 1)
            return
        if self.skip:
            return
        if tag == "pre":
            self.pre = max(0, self.pre - 1)
        _close(self.sink, tag)

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title.append(data)
        elif not self.skip:
            self.sink.text(data, pre=self.pre > 0)


def _clean(value: Any) -> str:
    return _SPACE.sub(" ", str(value or "")).strip()


def _page_metadata(root: Any) -> dict[str, Any]:
    """Title, description, authors, keywords, application, dates and language from the lxml tree."""
    metadata: dict[str, Any] = {}
    title_el = root.find(".//title")
    if title_el is not None:
        title = _clean(title_el.text_content() if hasattr(title_el, "text_content") else title_el.text)
        if title:
            metadata["title"] = title[:1000]
    metas: dict[str, str] = {}
    for meta in root.iter("meta"):
        key = (meta.get("name") or meta.get("property") or meta.get("http-equiv") or "").strip().lower()
        content = _clean(meta.get("content"))
        if key and content and key not in metas:
            metas[key] = content[:2000]
    found: dict[str, str] = {}
    for field, keys in (
        ("title", ("og:title", "twitter:title", "dc.title")),
        ("description", ("description", "og:description", "twitter:description", "dc.description")),
        ("authors", ("author", "article:author", "dc.creator")),
        ("keywords", ("keywords",)),
        ("application", ("generator",)),
        ("created", ("article:published_time", "dc.date", "date")),
        ("modified", ("article:modified_time", "og:updated_time", "dc.date.modified")),
    ):
        if field in metadata:
            continue
        for key in keys:
            if key in metas:
                found[field] = metas[key]
                break
    lang = root.get("lang") or root.get("{http://www.w3.org/XML/1998/namespace}lang") or metas.get("content-language")
    if lang:
        found["language"] = _clean(lang)
    metadata.update(shaped(found))
    return metadata


def decode_html(data: bytes) -> tuple[str, str, float]:
    """HTML bytes to text: BOM, UTF-8, then the page's own declaration if it fits, then detection."""
    head = data[:16384]
    declared = None
    match = _META_CHARSET.search(head) or _XML_ENCODING.match(head)
    if match:
        declared = match.group(1).decode("ascii", errors="ignore")
    return decode_bytes(data, declared=declared)


def html_to_text(markup: str | bytes, max_chars: int, truncate: bool = False) -> str:
    """Visible text of HTML inside other formats: RSS descriptions in XML, e-mail bodies.

    One conversion for every format, the same the HTML extractor makes of a
    page. Bytes are decoded like an HTML file (``decode_html``). Past
    ``max_chars`` it raises ``ResourceLimitExceeded``, or with ``truncate``
    stops there.
    """
    import lxml.html
    from lxml import etree

    if isinstance(markup, bytes):
        markup = decode_html(markup)[0].removeprefix("\ufeff")
    if not markup.strip():
        return ""
    parser = etree.HTMLParser(encoding="utf-8", remove_comments=True, remove_pis=True, no_network=True)
    try:
        root = lxml.html.document_fromstring(markup.encode("utf-8"), parser=parser)
    except (etree.ParserError, ValueError):
        return _SPACE.sub(" ", markup).strip()
    sink = TextSink(max_chars, truncate)
    walk_tree(root, sink)
    return sink.result()


class HtmlExtractor(Extractor):
    """``.html``/``.htm``: visible text with the title on top; description, authors, language in metadata."""

    name = "html"
    extensions = frozenset({".html", ".htm"})
    mime_types = frozenset({"text/html", "application/xhtml+xml"})

    def extract(self, path: Path, limits: Limits) -> Extraction:
        import lxml.html
        from lxml import etree

        data = read_capped(path, text_byte_cap(limits))
        if not data.strip():
            raise EmptyDocument("the HTML file is empty" if not data else "the HTML file contains only whitespace")
        text, encoding, confidence = decode_html(data)
        del data
        warnings: list[str] = []
        if confidence == 0.0:
            warnings.append("no text encoding fits the bytes; undecodable bytes were replaced with U+FFFD")
        text = text.removeprefix("\ufeff")
        if looks_binary(text):
            raise TypeMismatch("the file looks binary, not HTML")

        parser = etree.HTMLParser(
            encoding="utf-8", remove_comments=True, remove_pis=True, no_network=True, huge_tree=False
        )
        metadata: dict[str, Any] = {"encoding": encoding}
        sink = TextSink(limits.max_text_chars)
        try:
            root = lxml.html.document_fromstring(text.encode("utf-8", errors="replace"), parser=parser)
        except (etree.ParserError, ValueError) as exc:
            raise EmptyDocument(f"no HTML content: {exc}") from exc
        too_deep = any("Excessive depth" in str(error.message) for error in parser.error_log)
        if too_deep:
            warnings.append("nesting deeper than libxml2's 256 levels; text read with the streaming tokenizer")
            streaming = _StreamingText(sink)
            streaming.feed(text)
            streaming.close()
            depth = streaming.deepest
            title = _clean("".join(streaming.title))
            metadata.update({k: v for k, v in _page_metadata(root).items() if k != "title"})
            if title:
                metadata["title"] = title
        else:
            metadata.update(_page_metadata(root))
            body = root.find("body")
            depth = walk_tree(body if body is not None else root, sink)
        if depth > limits.max_nesting:
            warnings.append(f"markup nested {depth} levels deep (limit {limits.max_nesting}); flattened")
        metadata["max_depth"] = depth

        body_text = sink.result()
        title = metadata.get("title")
        if title and not body_text.startswith(title):
            body_text = f"{title}\n\n{body_text}" if body_text else title
        if not body_text.strip():
            raise EmptyDocument("the HTML page has no visible text")
        body_text, broken = split_long_lines(body_text, limits.max_line_chars)
        if broken:
            warnings.append(f"{broken} line(s) longer than {limits.max_line_chars} characters were broken up")
        return Extraction(text=body_text, metadata=metadata, warnings=tuple(warnings))


__all__: Iterable[str] = ["HtmlExtractor", "TextSink", "decode_html", "html_to_text", "walk_tree"]
