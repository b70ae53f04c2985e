"""Files inside files (e-mail attachments, objects embedded in RTF and Word documents), read through the registry.

``read_contained`` writes the bytes of one contained file to its container's
private folder, detects the type and runs the registry's extractor on it
(containers one level deeper). ``EmbeddedFiles`` collects the texts of the
objects one document embeds, each under a ``--- Embedded: name ---``
heading, within a count and a byte budget: a document of ten thousand
objects, or one that embeds itself, costs no more than its limits. A failing
object becomes a warning, never an error of the document.
"""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path
from types import TracebackType

from background_tasks.errors import MidasError
from background_tasks.extraction import detect
from background_tasks.extraction.extractors.base import ContainerExtractor, Extraction, ExtractorLookup, Limits

logger = logging.getLogger(__name__)

#: a file inside a file inside a file is read; deeper ones are listed
MAX_DEPTH = 3
#: embedded objects read per document; more are listed with a warning
MAX_EMBEDDED_OBJECTS = 100


def safe_name(name: str, index: int, prefix: str = "attachment") -> tuple[str, str]:
    """(display name, file name for the temp copy): only the suffix of an attacker-chosen name is reused."""
    display = (name or "").replace("\x00", "").strip() or f"{prefix}-{index}"
    suffix = Path(display.replace("\\", "/")).suffix.lower()
    if not re.fullmatch(r"\.[a-z0-9]{1,10}", suffix):
        suffix = ""
    return display, f"{prefix}-{index}{suffix}"


def read_contained(
    data: bytes,
    target: Path,
    extractor_for: ExtractorLookup,
    limits: Limits,
    depth: int,
    extension: str | None = None,
    pictures: bool = True,
) -> tuple[str, Extraction] | None:
    """(the type it was read as, its extraction) of one contained file written to ``target``; None when it is
    no type MIDAS reads.

    ``extension`` skips detection, for bytes whose type the container states
    and that carry no signature of their own (a raw Excel ``Workbook`` stream).
    ``pictures=False`` leaves images unread (they have no text unless OCR'd).
    Raises MidasError (and whatever a third-party parser raises) for bad content.
    """
    target.write_bytes(data)
    mime_type = None
    if extension is None:
        suffix = target.suffix.lower()
        sniffed = detect.sniff(target)
        if not detect.is_supported(suffix) and (not sniffed.extension or sniffed.kind == "text"):
            return None  # archives, unknown binaries, extension-less text blobs: listed, not extracted
        if sniffed.kind == "image" and not pictures:
            return None
        extension, mime_type = detect.resolve_extension(target, suffix or sniffed.extension)
    extractor = extractor_for(extension, mime_type)
    if isinstance(extractor, ContainerExtractor):
        return extension, extractor.extract_nested(target, limits, depth + 1)
    return extension, extractor.extract(target, limits)


class EmbeddedFiles:
    """The objects one document embeds, read within limits; ``with`` gives them a private folder."""

    def __init__(self, extractor_for: ExtractorLookup | None, limits: Limits, depth: int, label: str) -> None:
        self.extractor_for = extractor_for
        self.limits = limits
        self.depth = depth
        self.label = label
        self.names: list[str] = []
        self.sections: list[str] = []
        self.warnings: list[str] = []
        self._budget = limits.max_decompressed_bytes
        self._work: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> EmbeddedFiles:
        return self

    def __exit__(self, *exc: object | TracebackType | None) -> None:
        if self._work is not None:
            self._work.cleanup()
            self._work = None

    def room_for(self, name: str, size: int) -> bool:
        """Whether one more object of ``size`` bytes may be read; says why not (once per reason) when it may not."""
        self.names.append(name)
        if self.extractor_for is None:
            self._warn_once("embedded objects listed, not read (no extractors were given for them)")
        elif self.depth >= MAX_DEPTH:
            self._warn_once("embedded objects nested too deeply; the deeper ones were not read")
        elif len(self.names) > MAX_EMBEDDED_OBJECTS:
            self._warn_once(f"more than {MAX_EMBEDDED_OBJECTS} embedded objects; the rest were not read")
        elif size > self._budget:
            self.warnings.append(f"embedded object {name!r} not read: larger than the decompression limit")
        else:
            self._budget -= size
            return True
        return False

    def add_file(self, name: str, data: bytes, extension: str | None = None, filename: str = "") -> None:
        """Read one embedded file through the registry and keep its text under ``name``.

        ``filename`` (a packaged file's own name) lends its suffix to the type detection.
        """
        if not data or not self.room_for(name, len(data)) or self.extractor_for is None:
            return
        if self._work is None:
            self._work = tempfile.TemporaryDirectory(prefix="midas-embedded-")
        temp_name = safe_name(filename, len(self.names), prefix="embedded")[1]
        try:
            target = Path(self._work.name) / temp_name
            lookup, limits = self.extractor_for, self.limits
            result = read_contained(data, target, lookup, limits, self.depth, extension, pictures=False)
        except MidasError as exc:
            self.warnings.append(f"embedded object {name!r} not read: {exc.message.replace(temp_name, name)}")
            return
        except Exception as exc:  # a third-party parser failing on one object must not fail the document
            logger.info("%s: embedded object %r failed: %s", self.label, name, exc, exc_info=True)
            self.warnings.append(f"embedded object {name!r} not read: {type(exc).__name__}: {exc}")
            return
        if result is not None:
            self.add_text(name, result[1].text, result[1].warnings)

    def add_text(self, name: str, text: str, warnings: tuple[str, ...] | list[str] = ()) -> None:
        """An embedded object's text, already read, under its heading."""
        self.warnings.extend(f"embedded object {name!r}: {w}" for w in warnings if w != "document contains no text")
        if text.strip():
            self.sections.append(f"--- Embedded: {name} ---\n{text.strip()}")

    def text(self) -> str:
        return "\n\n".join(self.sections)

    def _warn_once(self, warning: str) -> None:
        if warning not in self.warnings:
            self.warnings.append(warning)
