"""Word equations (OMML, ``m:oMath``) as readable linear text.

Reading only the text runs of an equation loses its structure:
``x^2/(n+1)`` became ``x2n+1``. This writes each construct the way one types
it on one line, close to Word's own linear format: fractions ``a/b`` and
``(a+b)/(c+d)``, scripts ``x_i``, ``x^2``, ``x_i^(n+1)``, n-ary operators
``∑_(i=1)^n x_i``, radicals ``√x`` and ``∛(x+1)``, functions ``sin θ``,
delimiters with their own characters, matrices ``(1, 0; 0, 1)`` and
accents as combining characters. Anything unknown gives its text. An
operand is put in parentheses unless it is one character, a number, or
already in brackets: ``(mλ)/a``, ``x^(-6)``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from background_tasks.extraction.extractors.base import NestingGuard

M_NS = "http://schemas.openxmlformats.org/officeDocument/2006/math"
W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"


def _m(tag: str) -> str:
    return f"{{{M_NS}}}{tag}"


M_OMATH, M_OMATH_PARA = _m("oMath"), _m("oMathPara")
_VAL = _m("val")
#: operands that need no parentheses: one character, a number (x, 2, ∞, 10.5)
_ATOM = re.compile(r"\d+(?:[.,]\d+)*|.")
#: a script's base may also be a word of letters (sin^(-1), x_max)
_BASE = re.compile(r"[^\W\d_]+|\d+(?:[.,]\d+)*|.")
#: word text that belongs to the equation (runs of ordinary text inside it)
_W_TEXT = frozenset({f"{{{W_NS}}}t"})
#: what Word hides: deleted text and the properties of every construct
_SKIPPED = frozenset({f"{{{W_NS}}}del", f"{{{W_NS}}}moveFrom", f"{{{W_NS}}}rPr"})
_RADICALS = {"2": "√", "3": "∛", "4": "∜"}


def _group(text: str, atom: re.Pattern[str] = _ATOM) -> str:
    """``text`` as one operand: as it is when it is one token or already bracketed, else in parentheses."""
    text = text.strip()
    if not text or atom.fullmatch(text) or _bracketed(text):
        return text
    return f"({text})"


def _bracketed(text: str) -> bool:
    """Whether ``text`` is one pair of parentheses (or brackets, braces) around the rest."""
    pairs = {"(": ")", "[": "]", "{": "}"}
    if text[0] not in pairs or text[-1] != pairs[text[0]]:
        return False
    depth = 0
    for index, ch in enumerate(text):
        if ch == text[0]:
            depth += 1
        elif ch == pairs[text[0]]:
            depth -= 1
            if depth == 0 and index < len(text) - 1:
                return False
    return depth == 0


def _prop(element: Any, props: str, name: str, default: str) -> str:
    """The ``m:val`` of ``<m:{props}><m:{name} m:val=…/>`` of a construct, or ``default``."""
    node = element.find(f"{_m(props)}/{_m(name)}")
    if node is None:
        return default
    value = node.get(_VAL)
    return default if value is None else value


class OmmlText:
    """Linear text of equations; depth-limited by the document walker's guard."""

    def __init__(self, nesting: NestingGuard) -> None:
        self.nesting = nesting
        self._handlers: dict[str, Callable[[Any], str]] = {
            _m("r"): self._run,
            _m("f"): self._fraction,
            _m("sSup"): lambda e: f"{self._base(e)}^{self._part(e, 'sup')}",
            _m("sSub"): lambda e: f"{self._base(e)}_{self._part(e, 'sub')}",
            _m("sSubSup"): lambda e: f"{self._base(e)}_{self._part(e, 'sub')}^{self._part(e, 'sup')}",
            _m("sPre"): lambda e: f"_{self._part(e, 'sub')}^{self._part(e, 'sup')} {self._base(e)}",
            _m("rad"): self._radical,
            _m("nary"): self._nary,
            _m("d"): self._delimiter,
            _m("func"): self._function,
            _m("limLow"): lambda e: f"{self._child(e, 'e')}_{self._part(e, 'lim')}",
            _m("limUpp"): lambda e: f"{self._child(e, 'e')}^{self._part(e, 'lim')}",
            _m("acc"): self._accent,
            _m("bar"): self._bar,
            _m("m"): self._matrix,
            _m("eqArr"): lambda e: "\n".join(self.text(row) for row in e.findall(_m("e"))),
        }

    def paragraph(self, element: Any) -> str:
        """An ``m:oMathPara``: its equations, one per line."""
        return "\n".join(self.equation(math) for math in element.iter(M_OMATH))

    def equation(self, element: Any) -> str:
        """An ``m:oMath``; the invisible function application sign (``sin⁡θ``) becomes a space."""
        return self.text(element).replace("\u2061", " ").replace("  ", " ")

    def text(self, element: Any) -> str:
        """The linear text of any OMML element (an ``m:oMath``, an argument such as ``m:e``)."""
        with self.nesting:
            out = []
            for child in element:
                tag = child.tag
                if not isinstance(tag, str) or tag in _SKIPPED or tag.endswith("Pr"):
                    continue
                handler = self._handlers.get(tag)
                if handler is not None:
                    out.append(handler(child))
                elif tag in _W_TEXT:
                    out.append(child.text or "")
                else:  # m:e, m:num and other argument wrappers, w:ins, w:r, m:box, m:borderBox, m:phant, m:groupChr
                    out.append(self.text(child))
            return "".join(out)

    def _child(self, element: Any, name: str) -> str:
        child = element.find(_m(name))
        return "" if child is None else self.text(child).strip()

    def _part(self, element: Any, name: str) -> str:
        return _group(self._child(element, name))

    def _base(self, element: Any) -> str:
        return _group(self._child(element, "e"), _BASE)

    def _run(self, run: Any) -> str:
        return "".join(node.text or "" for node in run if node.tag == _m("t") or node.tag in _W_TEXT)

    def _fraction(self, element: Any) -> str:
        numerator, denominator = self._part(element, "num"), self._part(element, "den")
        if _prop(element, "fPr", "type", "bar") == "noBar":  # a stack, as in a binomial coefficient
            return f"({numerator} ¦ {denominator})"
        return f"{numerator}/{denominator}"

    def _radical(self, element: Any) -> str:
        degree = self._child(element, "deg")
        sign = _RADICALS.get(degree or "2")
        base = self._base(element)
        return f"{sign}{base}" if sign else f"{_group(degree)}√{base}"

    def _nary(self, element: Any) -> str:
        operator = _prop(element, "naryPr", "chr", "∫")
        lower, upper = self._child(element, "sub"), self._child(element, "sup")
        limits = (f"_{_group(lower)}" if lower else "") + (f"^{_group(upper)}" if upper else "")
        return f"{operator}{limits} {self._child(element, 'e')}".rstrip()

    def _delimiter(self, element: Any) -> str:
        begin = _prop(element, "dPr", "begChr", "(")
        end = _prop(element, "dPr", "endChr", ")")
        separator = _prop(element, "dPr", "sepChr", "|")
        parts = [self.text(part).strip() for part in element.findall(_m("e"))]
        return f"{begin}{separator.join(parts)}{end}"

    def _function(self, element: Any) -> str:
        name = self._child(element, "fName").replace("\u2061", "").strip()
        return f"{name} {self._child(element, 'e')}".strip()

    def _accent(self, element: Any) -> str:
        return self._child(element, "e") + _prop(element, "accPr", "chr", "\u0302")

    def _bar(self, element: Any) -> str:
        line = "\u0332" if _prop(element, "barPr", "pos", "bot") == "bot" else "\u0305"
        return self._child(element, "e") + line

    def _matrix(self, element: Any) -> str:
        rows = element.findall(_m("mr"))
        return "; ".join(", ".join(self.text(cell).strip() for cell in row.findall(_m("e"))) for row in rows)
