"""Small helpers both Word readers (.docx and .doc) share."""

from __future__ import annotations

import re

from background_tasks.extraction.extractors.base import Limits

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def clip(text: str, limits: Limits, warnings: list[str]) -> str:
    """The text cut at ``limits.max_text_chars``, with a warning when it was cut."""
    if len(text) > limits.max_text_chars:
        warnings.append(f"text truncated at {limits.max_text_chars} characters")
        return text[: limits.max_text_chars]
    return text


def tidy(text: str) -> str:
    """No carriage returns, no trailing blanks, at most one empty line in a row."""
    text = text.replace("\r", "")
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()
