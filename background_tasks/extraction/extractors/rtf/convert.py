"""RTF to plain text: striprtf's rules with a tokenizer that reads runs, and embedded objects kept.

striprtf (``rtf_to_text``) matches one regular expression per character of
text and walks every control word of the font table, style sheet and
pictures, so a 750 KB file took half a second. This converter follows the
same tables (striprtf's destinations, special characters, font table and
code pages) and gives the same text, but reads a run of plain text as one
token and jumps over an ignored group (``{\\*\\...}``, a destination, a
picture's ``\\binN`` bytes) to its closing brace without tokenizing it.

Embedded objects (``{\\object ...}``), which striprtf drops whole, are kept:
the text of their ``\\result`` group (what the document shows) is part of
the text where the object stands, and each object is reported with its
class and ``\\objdata`` hex, so the extractor can read what it embeds.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from striprtf.striprtf import FONTTABLE, HYPERLINKS, charset_map, destinations, font_table_group, specialchars

#: one token: a control word, a hex escape, a control symbol, a brace, line breaks (no group), a run of text,
#: a lone backslash at the very end (no group)
_TOKEN = re.compile(
    r"\\([a-z]{1,32})(-?\d{1,10})?[ ]?|\\'([0-9a-f]{2})|\\([^a-z])|([{}])|[\r\n]+|([^\\{}\r\n]+)|\\",
    re.IGNORECASE,
)
_WORD, _ARG, _HEX, _SYMBOL, _BRACE, _RUN = 1, 2, 3, 4, 5, 6
_WORD_KINDS = frozenset({_WORD, _ARG})
#: what a control word does (any other only formats): skip its group, write a character, or change the state
_SKIP_GROUP, _SPECIAL, _UNICODE, _UC, _FONT, _CODEPAGE, _BINARY = range(7)
_ACTIONS: dict[str, int] = {
    **{word: _SPECIAL for word in specialchars},
    **dict.fromkeys(destinations, _SKIP_GROUP),
    **{"u": _UNICODE, "uc": _UC, "f": _FONT, "ansicpg": _CODEPAGE, "bin": _BINARY},
}
#: what matters when jumping over a group: escaped backslashes and braces, braces, binary data
_SKIP = re.compile(r"\\[\\{}]|[{}]|\\bin(\d{1,10}) ?")
#: objects inside objects' results are followed this deep; deeper ones are dropped
MAX_OBJECT_NESTING = 4


@dataclass(frozen=True)
class RtfObject:
    """One ``\\object`` group: its class (``Excel.Sheet.8``), whether its result had text, its ``\\objdata`` hex."""

    class_name: str
    has_result_text: bool
    objdata: str


class RtfConverter:
    """One document's conversion: ``text()`` once, then ``objects``."""

    def __init__(self, source: str, errors: str = "replace") -> None:
        self.source = re.sub(HYPERLINKS, "\\1(\\2)", source)  # link text("url"), as striprtf writes links
        self.errors = errors
        self.encoding = "cp1252"
        self.fonts: dict[str, str] = {
            font_id: charset_map.get(int(charset), self.encoding)
            for font_id, charset, _name in FONTTABLE.findall(font_table_group(self.source))
        }
        self.objects: list[RtfObject] = []
        self._object_depth = 0

    def text(self) -> str:
        out: list[str] = []
        self._walk(0, len(self.source), out, top=True)
        return "".join(out)

    def _walk(self, pos: int, end: int, out: list[str], top: bool, font: str | None = None) -> None:
        """Convert ``source[pos:end]`` into ``out``; ``top``: stop where the outermost group closes.

        The tokens come from ``finditer`` (a C loop); a jump over a group or binary data starts a new one.
        """
        source, append = self.source, out.append
        stack: list[tuple[int, str | None]] = []
        ucskip, curskip = 1, 0
        hexes: list[str] = []
        while pos < end:
            jump, skipped_group = end, False  # where the next iterator starts; whether a group was jumped over
            for m in _TOKEN.finditer(source, pos, end):
                kind = m.lastindex
                if hexes and kind != _HEX:
                    append(self._decode(hexes, font))
                    hexes = []
                if kind in _WORD_KINDS:  # the most frequent token: formatting words do nothing but end a \\uN
                    curskip = 0
                    word = m[_WORD]
                    action = _ACTIONS.get(word)
                    if action is None:
                        continue
                    if action == _SKIP_GROUP:  # the rest of the group is not text (an object's result is)
                        if word == "object" and self._object_depth < MAX_OBJECT_NESTING:
                            jump = self._object(m.end(), out, font)
                        else:
                            jump = _group_end(source, m.end(), end)
                        skipped_group = True
                        break
                    if action == _SPECIAL:
                        append(specialchars[word])
                    elif action == _UNICODE:
                        arg = m.group(_ARG)
                        if arg is not None:
                            code = int(arg)
                            code += 0x10000 if code < 0 else 0
                            append(chr(code) if 0 <= code <= 0x10FFFF else "\ufffd")
                        curskip = ucskip
                    elif action == _UC:
                        ucskip = int(m.group(_ARG) or 1)
                    elif action == _FONT:
                        font = m.group(_ARG)
                    elif action == _CODEPAGE:
                        self.encoding = _codec(m.group(_ARG))
                    elif m.group(_ARG):  # \\binN: N bytes of binary data
                        jump = min(end, m.end() + max(0, int(m.group(_ARG))))
                        break
                elif kind == _RUN:
                    run = m[_RUN]
                    if curskip:
                        skipped = min(curskip, len(run))
                        run, curskip = run[skipped:], curskip - skipped
                    append(run)
                elif kind == _HEX:
                    if curskip:
                        curskip -= 1
                    else:
                        hexes.append(m.group(_HEX))
                elif kind == _BRACE:
                    curskip = 0
                    if m.group(_BRACE) == "{":
                        stack.append((ucskip, font))
                    elif stack:
                        ucskip, font = stack.pop()
                        if top and not stack:
                            return self._flush(hexes, font, out)
                elif kind == _SYMBOL:
                    curskip = 0
                    symbol = m.group(_SYMBOL)
                    if symbol == "*":  # an ignorable destination: the rest of the group is skipped
                        jump, skipped_group = _group_end(source, m.end(), end), True
                        break
                    if symbol in specialchars:
                        append(specialchars[symbol])
                elif m.group(0) == "\\":  # a lone backslash at the very end (line breaks are no text)
                    append("\\")
            if skipped_group:  # as if its closing brace had been read
                if stack:
                    ucskip, font = stack.pop()
                if top and not stack:
                    break
            pos = jump
        return self._flush(hexes, font, out)

    def _flush(self, hexes: list[str], font: str | None, out: list[str]) -> None:
        if hexes:
            out.append(self._decode(hexes, font))

    def _decode(self, hexes: list[str], font: str | None) -> str:
        encoding = self.fonts.get(font, self.encoding) if font is not None else self.encoding
        return bytes.fromhex("".join(hexes)).decode(encoding, errors=self.errors)

    def _object(self, pos: int, out: list[str], font: str | None) -> int:
        """An ``\\object`` group from just after its control word: its result's text, its class and data recorded."""
        source = self.source
        content_end, end = _group_span(source, pos, len(source))
        class_name, objdata, result = "", "", ""
        for start, stop in _child_groups(source, pos, content_end):
            head = source[start + 1 : start + 40].lstrip()
            if head.startswith("\\*"):
                head = head[2:].lstrip()
            if head.startswith("\\objclass"):
                class_name = self._plain(start, stop)
            elif head.startswith("\\objdata"):
                objdata = source[source.index("\\objdata", start) + len("\\objdata") : stop]
            elif re.match(r"\\result(?![a-z])", head):
                at = source.index("\\result", start) + len("\\result")
                at += source.startswith(" ", at)  # the space that ends the control word
                pieces: list[str] = []
                self._object_depth += 1
                try:
                    self._walk(at, stop, pieces, top=False, font=font)
                finally:
                    self._object_depth -= 1
                result = "".join(pieces)
        out.append(result)
        shown = bool(result.strip())  # an object showing text is read from its result alone: its data is not kept
        self.objects.append(RtfObject(class_name.strip(), shown, "" if shown else objdata))
        return end

    def _plain(self, start: int, stop: int) -> str:
        """The text of a small group such as ``{\\*\\objclass Excel.Sheet.8}`` (``stop``: where its content ends)."""
        inner = self.source[start + 1 : stop]
        return re.sub(r"\\[a-z]+-?\d* ?|\\\*|[{}]", "", inner, flags=re.I)


def _codec(arg: str | None) -> str:
    """striprtf's rule: ``\\ansicpgN`` is cpN when Python knows it, else UTF-8."""
    name = f"cp{arg}"
    try:
        codecs.lookup(name)
    except LookupError:
        return "utf8"
    return name


def _group_end(source: str, pos: int, end: int) -> int:
    """Just past the brace that closes the group ``pos`` is in (or ``end`` when it never closes)."""
    return _group_span(source, pos, end)[1]


def _group_span(source: str, pos: int, end: int) -> tuple[int, int]:
    """(where the content of the group ``pos`` is in ends, just past its closing brace); both ``end`` when it
    never closes."""
    depth = 1
    while pos < end:
        m = _SKIP.search(source, pos, end)
        if m is None:
            break
        pos = m.end()
        token = m.group(0)
        if token == "{":
            depth += 1
        elif token == "}":
            depth -= 1
            if depth == 0:
                return m.start(), pos
        elif m.group(1) is not None:
            pos = min(end, pos + int(m.group(1)))
    return end, end


def _child_groups(source: str, pos: int, end: int) -> list[tuple[int, int]]:
    """(start, content end) of the groups directly inside ``source[pos:end]``: ``source[start]`` is the brace."""
    children = []
    while pos < end:
        m = _SKIP.search(source, pos, end)
        if m is None:
            break
        if m.group(0) == "{":
            content_end, after = _group_span(source, m.end(), end)
            children.append((m.start(), content_end))
            pos = after
        elif m.group(1) is not None:
            pos = min(end, m.end() + int(m.group(1)))
        else:
            pos = m.end()
    return children


def rtf_to_text(source: str, errors: str = "replace") -> tuple[str, list[RtfObject]]:
    """The text of an RTF document and the objects it embeds."""
    converter = RtfConverter(source, errors)
    return converter.text(), converter.objects
