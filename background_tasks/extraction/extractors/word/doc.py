"""Legacy Word .doc (Word 6 to 2003) through antiword/catdoc or the built-in Word 97 reader.

``antiword`` gives the best layout; ``catdoc`` is the fallback for files
antiword rejects (Word 6/95, tiny text streams). Neither tool can hide deleted
tracked changes, so Word 97+ files that contain revision marks are read by the
built-in piece-table reader (``word97``), which drops deleted runs and field
codes. Metadata comes from the OLE summary information (``ole``). Embedded
objects (charts, sheets, documents, packaged files in the ``ObjectPool``)
follow the text under ``--- Embedded: name ---`` headings (``objects``).
"""

from __future__ import annotations

import logging
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from background_tasks.errors import (
    CorruptDocument,
    EmptyDocument,
    EncryptedDocument,
    ExtractionTimeout,
    MidasError,
    MissingDependency,
)
from background_tasks.extraction.extractors.base import ContainerExtractor, Extraction, Limits
from background_tasks.extraction.extractors.embedded import EmbeddedFiles
from background_tasks.extraction.extractors.ole import summary_metadata
from background_tasks.extraction.extractors.word.common import clip, tidy
from background_tasks.extraction.extractors.word.objects import OBJECT_POOL, read_objects
from background_tasks.extraction.extractors.word.word97 import Word97Reader

logger = logging.getLogger(__name__)

#: seconds an external converter (antiword/catdoc) may run
TOOL_TIMEOUT = 30


class DocExtractor(ContainerExtractor):
    """Legacy Word (.doc, Word 6 to 2003).

    Needs the Debian package ``antiword`` (preferred) or ``catdoc``; Word 97+
    files can also be read by the built-in reader when neither is installed.
    Deleted tracked changes are never part of the text.
    """

    name = "doc"
    extensions = frozenset({".doc"})
    mime_types = frozenset({"application/msword"})

    def extract_nested(self, path: Path, limits: Limits, depth: int) -> Extraction:
        info = _inspect_doc(path)
        warnings: list[str] = []
        text: str | None = None
        if info.reader_error:
            logger.info("%s: built-in reader unavailable (%s)", path.name, info.reader_error)
        if info.reader is not None and info.reader.has_revisions:
            text = info.reader.text()
            warnings.append("tracked changes present: deleted text omitted, insertions kept")
        if text is None:
            text, tool_warnings = _run_tools(path, limits, info)
            warnings.extend(tool_warnings)
        text = tidy(text)
        metadata = info.metadata
        if info.has_objects:
            text, names = self._objects(path, limits, depth, text, warnings)
            metadata = {**metadata, "embedded_objects": names}
        if not text.strip():
            warnings.append("document contains no text")
        return Extraction(text=clip(text, limits, warnings), metadata=metadata, warnings=tuple(warnings))

    def _objects(self, path: Path, limits: Limits, depth: int, text: str, warnings: list[str]) -> tuple[str, list[str]]:
        """The text followed by the embedded objects' texts, and the objects' names."""
        import olefile

        with EmbeddedFiles(self.extractor_for, limits, depth, path.name) as embedded:
            with olefile.OleFileIO(str(path)) as ole:
                read_objects(ole, embedded)
            warnings.extend(embedded.warnings)
            text = "\n\n".join(part for part in (text, embedded.text()) if part.strip())
        return text, embedded.names

    def metadata(self, path: Path, limits: Limits) -> dict[str, Any]:
        """OLE summary information only; the text is not converted."""
        return _inspect_doc(path, with_reader=False).metadata


@dataclass(frozen=True)
class _DocInfo:
    metadata: dict[str, Any]
    reader: Word97Reader | None
    reader_error: str
    word97: bool
    has_objects: bool = False


def _inspect_doc(path: Path, with_reader: bool = True) -> _DocInfo:
    try:
        import olefile
    except ImportError as exc:  # pragma: no cover - comes with extract-msg
        raise MissingDependency("olefile is not installed (pip install olefile)") from exc
    if path.stat().st_size == 0:
        raise EmptyDocument(f"{path.name}: file is empty (0 bytes)")
    if not olefile.isOleFile(str(path)):
        raise CorruptDocument(f"{path.name}: not a Word 97-2003 document (no OLE2 signature)")
    try:
        ole = olefile.OleFileIO(str(path))
    except Exception as exc:
        raise CorruptDocument(f"{path.name}: damaged OLE2 container ({type(exc).__name__}: {exc})") from exc
    with ole:
        if not ole.exists("WordDocument"):
            raise CorruptDocument(f"{path.name}: OLE2 file without a WordDocument stream (not a Word document)")
        try:
            fib_head = ole.openstream("WordDocument").read(32)
        except Exception as exc:
            raise CorruptDocument(f"{path.name}: WordDocument stream unreadable ({exc})") from exc
        if len(fib_head) < 32:
            raise CorruptDocument(f"{path.name}: WordDocument stream is truncated")
        ident, nfib = struct.unpack_from("<HH", fib_head, 0)
        flags = struct.unpack_from("<H", fib_head, 0x0A)[0]
        if flags & 0x0100 or flags & 0x8000:  # fEncrypted / fObfuscated
            raise EncryptedDocument(f"{path.name}: Word document is password-protected")
        metadata = summary_metadata(ole, path.name)
        word97 = ident == 0xA5EC and nfib >= 0x00C1
        reader: Word97Reader | None = None
        error = ""
        if with_reader and word97:
            try:
                reader = Word97Reader(ole)
            except MidasError:
                raise
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
        has_objects = ole.exists(OBJECT_POOL)
    return _DocInfo(metadata=metadata, reader=reader, reader_error=error, word97=word97, has_objects=has_objects)


def _run_tools(path: Path, limits: Limits, info: _DocInfo) -> tuple[str, list[str]]:
    """antiword, then the built-in reader (Word 97+), then catdoc; MissingDependency when nothing can read the file.

    catdoc comes last because it loops forever on some damaged files (it is stopped after ``TOOL_TIMEOUT``).
    """
    failures: list[str] = []
    timed_out: list[str] = []
    installed: list[str] = []

    def tool(name: str, args: list[str]) -> str | None:
        exe = shutil.which(name)
        if exe is None:
            return None
        installed.append(name)
        status, output = _run(exe, [*args, str(path)], limits)
        if status == "ok" and output.strip():
            return output
        if re.search(r"encrypt", output, re.I):
            raise EncryptedDocument(f"{path.name}: Word document is password-protected ({name})")
        if status == "timeout":
            timed_out.append(name)
        failures.append(f"{name} failed ({output.strip()[:120] or 'no output'})")
        return None

    def done(text: str, used: str) -> tuple[str, list[str]]:
        # A converter that gave up on a file another one then read ("the text stream of this file
        # is too small" from antiword on Word 6 files) is not a problem with the document: logged, not a warning.
        if failures:
            logger.info("%s: %s; used %s", path.name, "; ".join(failures), used)
        return text, []

    # -w 0: no wrapping; no -r, so text marked as removed stays hidden
    text = tool("antiword", ["-m", "UTF-8.txt", "-w", "0"])
    if text is not None:
        return done(text, "antiword")
    if info.reader is not None:
        text = info.reader.text()
        if text.strip():
            if not installed:
                return text, ["antiword not installed; used the built-in Word 97 reader"]
            return done(text, "the built-in Word 97 reader")
    text = tool("catdoc", ["-d", "utf-8", "-w"])
    if text is not None:
        return done(text, "catdoc")
    if not installed and info.reader is None:
        raise MissingDependency(
            f"{path.name}: reading .doc needs 'antiword' or 'catdoc' (Debian packages: antiword, catdoc)"
        )
    if timed_out and info.reader is None:
        raise ExtractionTimeout(f"{path.name}: {' and '.join(timed_out)} did not finish within {TOOL_TIMEOUT} s")
    if info.reader is not None or all("no output" in f for f in failures):
        return "", failures  # readable, but there is no text in it
    raise CorruptDocument(f"{path.name}: Word document could not be converted ({'; '.join(failures)})")


def _run(exe: str, args: list[str], limits: Limits) -> tuple[str, str]:
    """("ok" | "error" | "timeout", output or error text) of one converter run; no shell, bounded time."""
    try:
        proc = subprocess.run(
            [exe, *args],
            capture_output=True,
            timeout=TOOL_TIMEOUT,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return "timeout", f"timed out after {TOOL_TIMEOUT} s"
    except OSError as exc:
        return "error", f"cannot run {exe}: {exc}"
    out = proc.stdout[: limits.max_text_chars * 4].decode("utf-8", errors="replace")
    err = proc.stderr[:2000].decode("utf-8", errors="replace")
    if proc.returncode != 0:
        return "error", (err or out).strip()
    return "ok", out
