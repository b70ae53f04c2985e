"""Objects embedded with OLE, unwrapped into files the registry reads.

An RTF ``\\objdata`` holds an OLE 1.0 EmbeddedObject (MS-OLEDS 2.2.4): a
class name and the object's native data. A Word .doc keeps each embedded
object as a storage under ``ObjectPool``. Either way the native data is an
OLE Package (a file dropped into the document, with its name), a compound
file (an embedded Word or Excel 97-2003 document, or one whose ``Package``
stream holds an OOXML document and whose ``CONTENTS`` stream holds a PDF),
or a format MIDAS does not read (pictures, equations, PowerPoint).

Every length read from the data is checked against what is there, so
damaged or hostile objects give ``None``, never an exception or a huge
allocation.
"""

from __future__ import annotations

import io
import logging
import re
import struct
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_NOT_HEX = re.compile(r"[^0-9a-fA-F]+")
#: streams of an object's storage that hold a whole file, in the order they are looked for
_FILE_STREAMS = ("Package", "CONTENTS", "Contents")
#: streams that make a storage an Excel workbook (BIFF), read as a raw .xls stream
_WORKBOOK_STREAMS = ("Workbook", "Book")


@dataclass(frozen=True)
class Payload:
    """A file an object embeds: ``name`` for the heading (the packaged file's name, else the object's class).

    Its type is detected from the bytes (and a packaged file's name);
    ``extension`` is set when the type is known and the bytes carry no
    signature of their own (a raw Excel ``Workbook`` stream).
    """

    name: str
    data: bytes
    extension: str | None = None


def hex_bytes(text: str, limit: int) -> bytes | None:
    """The bytes of RTF hex data (whitespace and stray characters dropped); None when over ``limit`` bytes."""
    digits = _NOT_HEX.sub("", text)
    if len(digits) // 2 > limit:
        return None
    return bytes.fromhex(digits[: len(digits) // 2 * 2])


def _ansi(data: bytes, pos: int) -> tuple[str, int] | None:
    """A LengthPrefixedAnsiString at ``pos``: (text, position after it), or None when it does not fit."""
    if pos + 4 > len(data):
        return None
    (length,) = struct.unpack_from("<I", data, pos)
    if pos + 4 + length > len(data):
        return None
    raw = data[pos + 4 : pos + 4 + length].split(b"\x00", 1)[0]
    return raw.decode("cp1252", "replace"), pos + 4 + length


def _cstring(data: bytes, pos: int, limit: int = 1024) -> tuple[str, int] | None:
    """A NUL-terminated ANSI string of at most ``limit`` bytes at ``pos``."""
    stop = data.find(b"\x00", pos, pos + limit)
    if stop < 0:
        return None
    return data[pos:stop].decode("cp1252", "replace"), stop + 1


def ole1_object(data: bytes) -> tuple[str, bytes] | None:
    """(class name, native data) of an OLE 1.0 embedded object; None for a linked or static object, or damage."""
    if len(data) < 8:
        return None
    _version, format_id = struct.unpack_from("<II", data, 0)
    if format_id != 2:  # 1: linked (no data here), 3: a presentation only
        return None
    pos = 8
    strings = []
    for _ in range(3):  # ClassName, TopicName, ItemName
        found = _ansi(data, pos)
        if found is None:
            return None
        strings.append(found[0])
        pos = found[1]
    if pos + 4 > len(data):
        return None
    (size,) = struct.unpack_from("<I", data, pos)
    native = data[pos + 4 : pos + 4 + size]
    return (strings[0], native) if len(native) == size else None


def ole_package(native: bytes) -> tuple[str, bytes] | None:
    """(file name, content) of an OLE Package (the Packager's native data: a file dropped into a document)."""
    pos = 2  # a 2-byte signature
    label = _cstring(native, pos)
    if label is None:
        return None
    source = _cstring(native, label[1], 4096)
    if source is None:
        return None
    pos = source[1] + 4  # 2 reserved bytes and the 2-byte type (3: an embedded file)
    if pos + 4 > len(native):
        return None
    (temp_length,) = struct.unpack_from("<I", native, pos)
    pos += 4 + temp_length
    if pos + 4 > len(native):
        return None
    (size,) = struct.unpack_from("<I", native, pos)
    content = native[pos + 4 : pos + 4 + size]
    if len(content) != size:
        return None
    name = label[0] or source[0].replace("\\", "/").rsplit("/", 1)[-1]
    return name or "package", content


def class_name(ole: Any, storage: str) -> str:
    """The ProgID an object's ``\\x01CompObj`` stream names (``Excel.Chart.8``), or "" when unreadable."""
    try:
        data = _read(ole, f"{storage}\x01CompObj", 64 * 1024)
    except Exception:
        return ""
    if data is None:
        return ""
    user_type = _ansi(data, 28)  # after a 28-byte header: the user type, the clipboard format, the ProgID
    if user_type is None or user_type[1] + 4 > len(data):
        return ""
    pos = user_type[1]
    (marker,) = struct.unpack_from("<I", data, pos)
    if marker in (0xFFFFFFFF, 0xFFFFFFFE):
        pos += 8
    elif marker:
        pos += 4 + marker
    else:
        pos += 4
    prog_id = _ansi(data, pos)
    return prog_id[0].strip() if prog_id else ""


def _read(ole: Any, path: str, limit: int) -> bytes | None:
    """A stream's bytes, None when it is missing or larger than ``limit``."""
    if not ole.exists(path) or ole.get_type(path) != 2:  # 2: a stream
        return None
    if ole.get_size(path) > limit:
        raise OverflowError(f"{path!r} is larger than the decompression limit")
    return ole.openstream(path).read()


def storage_payload(ole: Any, storage: str, label: str, limit: int) -> Payload | None:
    """The file an object's storage (``"ObjectPool/_123/"`` or ``""`` for a whole compound file) holds, if any.

    Raises OverflowError when the file is larger than ``limit`` bytes.
    """
    prog_id = class_name(ole, storage) or label
    native = _read(ole, f"{storage}\x01Ole10Native", limit)
    if native is not None:
        package = ole_package(native[4:]) if len(native) > 4 else None  # a 4-byte size, then the native data
        return Payload(package[0], package[1]) if package else None
    for stream in _FILE_STREAMS:
        data = _read(ole, f"{storage}{stream}", limit)
        if data:
            return Payload(prog_id, data)
    for stream in _WORKBOOK_STREAMS:
        data = _read(ole, f"{storage}{stream}", limit)
        if data:
            return Payload(prog_id, data, extension=".xls")
    return None


def objdata_payload(class_hint: str, objdata: str, limit: int) -> Payload | None:
    """The file an RTF ``\\objdata`` embeds: an OLE Package's file, an OOXML or PDF document, a whole
    Word or Excel 97-2003 document; None for what MIDAS does not read. OverflowError when over ``limit``."""
    data = hex_bytes(objdata, limit)
    if data is None:
        raise OverflowError("the object is larger than the decompression limit")
    found = ole1_object(data)
    if found is None:
        return None
    name, native = found
    name = name or class_hint or "object"
    if name == "Package":
        package = ole_package(native)
        return Payload(package[0], package[1]) if package else None
    if not native.startswith(OLE_MAGIC):
        return Payload(name, native) if native else None
    import olefile

    try:
        with olefile.OleFileIO(io.BytesIO(native)) as ole:
            if ole.exists("WordDocument") or any(ole.exists(s) for s in _WORKBOOK_STREAMS):
                return Payload(name, native)  # a whole .doc or .xls: read as the file it is
            return storage_payload(ole, "", name, limit)
    except OverflowError:
        raise
    except Exception as exc:  # olefile raises many types for damaged containers
        logger.info("embedded %s object unreadable: %s", name, exc)
        return None
