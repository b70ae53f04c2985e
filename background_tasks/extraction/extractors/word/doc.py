"""Legacy Word .doc (Word 6 to 2003) through antiword/catdoc or the built-in Word 97 reader.

``antiword`` gives the best layout; ``catdoc`` is the fallback for files
antiword rejects (Word 6/95, tiny text streams). Neither tool can hide deleted
tracked changes, so Word 97+ files that contain revision marks are read by the
built-in piece-table reader (``word97``), which drops deleted runs and field
codes. Metadata comes from the OLE summary information.
"""

from __future__ import annotations

import logging
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from datetime import datetime, timedelta
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
from background_tasks.extraction.extractors.base import Extraction, Extractor, Limits
from background_tasks.extraction.extractors.word.common import clip, split_authors, tidy
from background_tasks.extraction.extractors.word.word97 import Word97Reader

logger = logging.getLogger(__name__)

#: seconds an external converter (antiword/catdoc) may run
TOOL_TIMEOUT = 30


class DocExtractor(Extractor):
    """Legacy Word (.doc, Word 6 to 2003).

    Needs the Debian package ``antiword`` (preferred) or ``catdoc``; Word 97+
    files can also be read by the built-in reader when neither is installed.
    Deleted tracked changes are never part of the text.
    """

    name = "doc"
    extensions = frozenset({".doc"})
    mime_types = frozenset({"application/msword"})

    def extract(self, path: Path, limits: Limits) -> Extraction:
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
        if not text.strip():
            warnings.append("document contains no text")
        return Extraction(text=clip(text, limits, warnings), metadata=info.metadata, warnings=tuple(warnings))

    def metadata(self, path: Path, limits: Limits) -> dict[str, Any]:
        """OLE summary information only; the text is not converted."""
        return _inspect_doc(path, with_reader=False).metadata


@dataclass(frozen=True)
class _DocInfo:
    metadata: dict[str, Any]
    reader: Word97Reader | None
    reader_error: str
    word97: bool


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
        metadata = _ole_metadata(ole, path)
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
    return _DocInfo(metadata=metadata, reader=reader, reader_error=error, word97=word97)


def _codec(codepage: int | None) -> str:
    if codepage is None:
        return "cp1252"
    codepage &= 0xFFFF
    known = {65001: "utf-8", 1200: "utf-16-le", 1201: "utf-16-be", 10000: "mac_roman", 20127: "ascii"}
    name = known.get(codepage, f"cp{codepage}")
    try:
        "".encode(name)
    except LookupError:
        return "cp1252"
    return name


#: SummaryInformation property ids -> metadata keys (MS-OLEPS PIDSI_*)
_PIDSI = {
    2: "title",
    3: "subject",
    4: "authors",
    5: "keywords",
    8: "last_modified_by",
    9: "revision",
    12: "created",
    13: "modified",
    14: "page_count",
    18: "application",
}
_VT_I2, _VT_I4, _VT_LPSTR, _VT_LPWSTR, _VT_FILETIME = 2, 3, 30, 31, 64
_MAX_SUMMARY_BYTES = 1024 * 1024


def _ole_metadata(ole: Any, path: Path) -> dict[str, Any]:
    """Title, authors, subject, dates and page count from the OLE SummaryInformation stream.

    Parsed here with bounds checks on every offset and length: olefile's own
    property parser trusts vector counts and can loop for minutes on a damaged file.
    """
    try:
        if not ole.exists("\x05SummaryInformation"):
            return {}
        stream = ole.openstream("\x05SummaryInformation").read(_MAX_SUMMARY_BYTES)
        raw = _property_set(stream)
    except Exception as exc:
        logger.info("%s: summary information unreadable (%s)", path.name, exc)
        return {}
    codec = _codec(raw.pop(1, None) if isinstance(raw.get(1), int) else None)
    metadata: dict[str, Any] = {}
    for pid, key in _PIDSI.items():
        value = raw.get(pid)
        if isinstance(value, bytes):
            value = value.decode(codec, errors="replace")
        if isinstance(value, str):
            value = value.replace("\x00", "").strip()
            if not value:
                continue
            if key == "authors":
                metadata[key] = split_authors(value)
            elif key not in ("created", "modified", "page_count"):
                metadata[key] = value
        elif isinstance(value, datetime) and key in ("created", "modified"):
            metadata[key] = value.isoformat()
        elif isinstance(value, int) and key == "page_count" and value > 0:
            metadata[key] = value
    return {k: v for k, v in metadata.items() if v}


def _property_set(stream: bytes) -> dict[int, Any]:
    """Property id -> value (bytes, str, int or datetime) of the first section of a property set stream."""
    if len(stream) < 48 or stream[:2] != b"\xfe\xff":
        return {}
    (section,) = struct.unpack_from("<I", stream, 44)
    if section + 8 > len(stream):
        return {}
    size, count = struct.unpack_from("<II", stream, section)
    end = min(len(stream), section + size)
    count = min(count, (end - section - 8) // 8)
    values: dict[int, Any] = {}
    for i in range(count):
        pid, offset = struct.unpack_from("<II", stream, section + 8 + 8 * i)
        at = section + offset
        if at + 4 > end:
            continue
        vtype = struct.unpack_from("<H", stream, at)[0]
        body = at + 4
        try:
            if vtype == _VT_I2:
                values[pid] = struct.unpack_from("<h", stream, body)[0]
            elif vtype == _VT_I4:
                values[pid] = struct.unpack_from("<i", stream, body)[0]
            elif vtype == _VT_LPSTR:
                (length,) = struct.unpack_from("<I", stream, body)
                values[pid] = stream[body + 4 : min(body + 4 + length, end)].split(b"\x00", 1)[0]
            elif vtype == _VT_LPWSTR:
                (length,) = struct.unpack_from("<I", stream, body)
                data = stream[body + 4 : min(body + 4 + 2 * length, end)]
                values[pid] = data.decode("utf-16-le", errors="replace").split("\x00", 1)[0]
            elif vtype == _VT_FILETIME:
                (ticks,) = struct.unpack_from("<Q", stream, body)
                if ticks:
                    values[pid] = datetime(1601, 1, 1) + timedelta(microseconds=ticks // 10)
        except (struct.error, OverflowError, ValueError):
            continue
    return values


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
        return text, ([f"{'; '.join(failures)}; used {used}"] if failures else [])

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
