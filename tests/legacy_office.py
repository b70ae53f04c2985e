"""Minimal legacy Office files (.doc, .xls, .msg) written by hand for the generated test corpus.

No installed library writes these formats (python-docx and openpyxl write only
OOXML, olefile only rewrites existing streams, extract-msg only reads), so the
few structures MIDAS reads are written here: a Compound File (MS-CFB, version
3, with a mini stream), an OLE property set (MS-OLEPS), a Word 97 FIB with a
one-piece table (MS-DOC), BIFF8 records (MS-XLS) and Outlook property streams
(MS-OXMSG). Each file is what the real readers (antiword, olefile, xlrd,
extract-msg) accept, and no more.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

_SECTOR, _MINI, _CUTOFF = 512, 64, 4096
_FREE, _END, _FATSECT, _NOSTREAM = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD, 0xFFFFFFFF
_STORAGE, _STREAM, _ROOT = 1, 2, 5
_BLACK = 1

#: a storage: names -> stream bytes or nested storages
Tree = Mapping[str, "bytes | Tree"]


class _Entry:
    def __init__(self, name: str, kind: int, data: bytes = b"") -> None:
        self.name, self.kind, self.data = name, kind, data
        self.left = self.right = self.child = _NOSTREAM
        self.start, self.size = _END, 0

    def pack(self) -> bytes:
        encoded = self.name.encode("utf-16-le") + b"\0\0"
        head = encoded.ljust(64, b"\0") + struct.pack("<HBB3I", len(encoded), self.kind, _BLACK, *self._links())
        return head + b"\0" * 36 + struct.pack("<3I", self.start, self.size, 0)

    def _links(self) -> tuple[int, int, int]:
        return self.left, self.right, self.child


def _unused_entry() -> bytes:
    return b"\0" * 64 + struct.pack("<HBB3I", 0, 0, 0, _NOSTREAM, _NOSTREAM, _NOSTREAM) + b"\0" * 48


def _chain(fat: list[int], first: int, count: int) -> None:
    for i in range(count):
        fat[first + i] = first + i + 1 if i + 1 < count else _END


def compound_file(tree: Tree) -> bytes:
    """A Compound File Binary (version 3) holding ``tree``; streams under 4096 bytes go to the mini stream."""
    entries = [_Entry("Root Entry", _ROOT)]

    def add(storage: Tree) -> int:
        ids = []
        for name, value in storage.items():
            entry = _Entry(name, _STORAGE) if isinstance(value, Mapping) else _Entry(name, _STREAM, bytes(value))
            entries.append(entry)
            ids.append(len(entries) - 1)
            if isinstance(value, Mapping):
                entry.child = add(value)
        # siblings form a binary search tree ordered by name length, then upper-case name
        ids.sort(key=lambda i: (len(entries[i].name), entries[i].name.upper()))
        return _balanced(ids)

    def _balanced(ids: list[int]) -> int:
        if not ids:
            return _NOSTREAM
        mid = len(ids) // 2
        entries[ids[mid]].left = _balanced(ids[:mid])
        entries[ids[mid]].right = _balanced(ids[mid + 1 :])
        return ids[mid]

    entries[0].child = add(tree)
    mini, minifat = bytearray(), []
    big: list[_Entry] = []
    for entry in entries:
        if entry.kind != _STREAM:
            continue
        entry.size = len(entry.data)
        if entry.size >= _CUTOFF:
            big.append(entry)
        elif entry.size:
            entry.start = len(mini) // _MINI
            count = -(-entry.size // _MINI)
            mini += entry.data.ljust(count * _MINI, b"\0")
            minifat += [_FREE] * count
            _chain(minifat, entry.start, count)
    # sectors: big streams, the mini stream, the mini FAT, the directory, then the FAT
    body = bytearray()
    fat: list[int] = []

    def place(data: bytes) -> int:
        count = -(-len(data) // _SECTOR)
        first = len(fat) if count else _END
        fat.extend([_FREE] * count)
        if count:
            _chain(fat, first, count)
        body.extend(data.ljust(count * _SECTOR, b"\0"))
        return first

    for entry in big:
        entry.start = place(entry.data)
    entries[0].start, entries[0].size = (place(bytes(mini)), len(mini)) if mini else (_END, 0)
    minifat_sectors = -(-len(minifat) * 4 // _SECTOR)
    minifat += [_FREE] * (minifat_sectors * _SECTOR // 4 - len(minifat))
    first_minifat = place(struct.pack(f"<{len(minifat)}I", *minifat))
    directory = b"".join(e.pack() for e in entries)
    directory += _unused_entry() * (-len(entries) % 4)
    first_dir = place(directory)
    fat_sectors = 1
    while fat_sectors * (_SECTOR // 4) < len(fat) + fat_sectors:
        fat_sectors += 1
    if fat_sectors > 109:
        raise ValueError("too large for a header-only DIFAT")
    first_fat = len(fat)
    fat += [_FATSECT] * fat_sectors
    fat += [_FREE] * (fat_sectors * (_SECTOR // 4) - len(fat))
    body += struct.pack(f"<{len(fat)}I", *fat)
    difat = list(range(first_fat, first_fat + fat_sectors)) + [_FREE] * (109 - fat_sectors)
    header = (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
        + b"\0" * 16
        + struct.pack("<HHHHH", 0x3E, 3, 0xFFFE, 9, 6)
        + b"\0" * 6
        + struct.pack("<9I", 0, fat_sectors, first_dir, 0, _CUTOFF, first_minifat, minifat_sectors, _END, 0)
        + struct.pack("<109I", *difat)
    )
    return header + bytes(body)


_VT_I2, _VT_I4, _VT_LPSTR = 2, 3, 30
_FMTID_SUMMARY = bytes.fromhex("e0859ff2f94f6810ab9108002b27b3d9")
PID_TITLE, PID_SUBJECT, PID_NUM_PAGES = 2, 3, 14


def summary_information(properties: Mapping[int, str | int]) -> bytes:
    """A SummaryInformation property-set stream (code page 1252): strings as VT_LPSTR, ints as VT_I4."""
    values = [(1, struct.pack("<HHh2x", _VT_I2, 0, 1252))]
    for pid, value in properties.items():
        if isinstance(value, str):
            raw = value.encode("cp1252") + b"\0"
            raw = raw.ljust(-(-len(raw) // 4) * 4, b"\0")
            values.append((pid, struct.pack("<HHI", _VT_LPSTR, 0, len(value) + 1) + raw))
        else:
            values.append((pid, struct.pack("<HHi", _VT_I4, 0, value)))
    offset = 8 + 8 * len(values)
    index, blobs = b"", b""
    for pid, blob in values:
        index += struct.pack("<II", pid, offset + len(blobs))
        blobs += blob
    section = struct.pack("<II", offset + len(blobs), len(values)) + index + blobs
    header = struct.pack("<HHI", 0xFFFE, 0, 0x00020006) + b"\0" * 16 + struct.pack("<I", 1)
    return header + _FMTID_SUMMARY + struct.pack("<I", 48) + section


# -- Word 97 ---------------------------------------------------------------------------------

_FIB_SIZE, _TEXT_AT = 0x382, 0x400


def word97_document(paragraphs: Sequence[str], title: str, pages: int = 1, objects: Tree | None = None) -> bytes:
    """A Word 97 .doc: a FIB, the text as one cp1252 piece, the piece table in ``1Table``, summary information;
    ``objects`` (storage name -> streams) become its ``ObjectPool``."""
    text = "\r".join(paragraphs) + "\r"
    encoded = text.encode("cp1252")
    fib = bytearray(_FIB_SIZE)
    struct.pack_into("<HHHHH", fib, 0, 0xA5EC, 0x00C1, 0x6027, 0x0409, 0)
    struct.pack_into("<HH", fib, 0x0A, 0x0200 | 0x1000, 0x00BF)  # fWhichTblStm (1Table), fExtChar; nFibBack
    struct.pack_into("<II", fib, 0x18, _TEXT_AT, _TEXT_AT + len(encoded))  # fcMin, fcMac
    struct.pack_into("<H", fib, 0x20, 14)  # csw
    struct.pack_into("<H", fib, 0x3E, 22)  # cslw
    struct.pack_into("<I", fib, 0x40, _TEXT_AT + len(encoded))  # cbMac
    struct.pack_into("<I", fib, 0x4C, len(text))  # ccpText
    struct.pack_into("<H", fib, 0x98, 93)  # cbRgFcLcb
    # Clx: one piece from CP 0 to the end, compressed (8-bit) text at _TEXT_AT
    plc = struct.pack("<II", 0, len(text)) + struct.pack("<HIH", 0, (_TEXT_AT * 2) | 0x40000000, 0)
    clx = b"\x02" + struct.pack("<I", len(plc)) + plc
    struct.pack_into("<II", fib, 0x1A2, 0, len(clx))  # fcClx, lcbClx (in 1Table)
    word = bytes(fib).ljust(_TEXT_AT, b"\0") + encoded
    word = word.ljust(max(len(word), _CUTOFF), b"\0")  # a regular stream, as Word writes it
    info = summary_information({PID_TITLE: title, PID_NUM_PAGES: pages})
    tree: dict[str, bytes | Tree] = {"WordDocument": word, "1Table": clx, "\x05SummaryInformation": info}
    if objects:
        tree["ObjectPool"] = objects
    return compound_file(tree)


# -- Excel 97 (BIFF8) ------------------------------------------------------------------------


def _record(kind: int, data: bytes = b"") -> bytes:
    return struct.pack("<HH", kind, len(data)) + data


def _bof(sheet_type: int) -> bytes:
    return _record(0x0809, struct.pack("<HHHHII", 0x0600, sheet_type, 0x0DBB, 0x07CC, 0, 6))


def _sheet(rows: Sequence[Sequence[str | float]]) -> bytes:
    width = max((len(r) for r in rows), default=0)
    out = _bof(0x0010) + _record(0x0200, struct.pack("<IIHHH", 0, len(rows), 0, width, 0))
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            if isinstance(value, str):
                raw = value.encode("utf-16-le")
                out += _record(0x0204, struct.pack("<HHHHB", r, c, 0, len(value), 1) + raw)  # LABEL
            else:
                out += _record(0x0203, struct.pack("<HHHd", r, c, 0, float(value)))  # NUMBER
    return out + _record(0x000A)


def excel97_workbook(sheets: Mapping[str, Sequence[Sequence[str | float]]], title: str) -> bytes:
    """An .xls (BIFF8): globals with one BOUNDSHEET per sheet, then the sheets as LABEL and NUMBER cells."""
    info = summary_information({PID_TITLE: title})
    return compound_file({"Workbook": excel97_stream(sheets), "\x05SummaryInformation": info})


def excel97_stream(sheets: Mapping[str, Sequence[Sequence[str | float]]]) -> bytes:
    """The ``Workbook`` stream of an .xls (what an Excel object embedded in a .doc keeps in its storage)."""
    bodies = [_sheet(rows) for rows in sheets.values()]

    def boundsheets(offsets: Sequence[int]) -> bytes:
        out = b""
        for offset, name in zip(offsets, sheets, strict=True):
            out += _record(0x0085, struct.pack("<IBBBB", offset, 0, 0, len(name), 0) + name.encode("latin-1"))
        return out

    head = _bof(0x0005) + _record(0x0042, struct.pack("<H", 1200))  # CODEPAGE: UTF-16
    globals_size = len(head) + len(boundsheets([0] * len(bodies))) + len(_record(0x000A))
    offsets, at = [], globals_size
    for body in bodies:
        offsets.append(at)
        at += len(body)
    stream = head + boundsheets(offsets) + _record(0x000A) + b"".join(bodies)
    return stream.ljust(_CUTOFF, b"\0")  # Excel's Workbook stream is never in the mini stream


# -- Outlook .msg ----------------------------------------------------------------------------


def outlook_message(
    subject: str, sender: str, to: str, body: str, attachments: Mapping[str, bytes] | None = None
) -> bytes:
    """An Outlook .msg (IPM.Note) with Unicode subject, sender, recipients display and plain body, and
    ``attachments`` (file name -> content) attached by value."""

    def text(value: str) -> bytes:
        return value.encode("utf-16-le")

    strings = {
        "001A": text("IPM.Note"),
        "0037": text(subject),
        "0C1A": text(sender.split("<")[0].strip()),
        "0C1F": text(sender.split("<")[-1].rstrip(">")),
        "5D01": text(sender.split("<")[-1].rstrip(">")),
        "0E04": text(to),
        "1000": text(body),
    }
    name, address = to.split("<")[0].strip(), to.split("<")[-1].rstrip(">")
    recipient = {"3001": text(name), "3003": text(address), "39FE": text(address)}
    count = len(attachments or {})
    header = b"\0" * 8 + struct.pack("<IIII", 1, count, 1, count) + b"\0" * 8  # next recipient/attachment id, counts
    fixed = struct.pack("<IIII", 0x340D0003, 2, 0x00040000, 0)  # PR_STORE_SUPPORT_MASK: STORE_UNICODE_OK
    tree: dict[str, bytes | Tree] = _string_properties(strings, header + fixed)
    tree["__recip_version1.0_#00000000"] = _string_properties(
        recipient,
        b"\0" * 8 + struct.pack("<IIII", 0x0C150003, 2, 1, 0),  # PR_RECIPIENT_TYPE: To
    )
    for index, (filename, data) in enumerate((attachments or {}).items()):
        attachment = _string_properties(
            {"3707": text(filename), "3704": text(filename)},
            b"\0" * 8 + struct.pack("<IIII", 0x37050003, 2, 1, 0),  # PR_ATTACH_METHOD: ATTACH_BY_VALUE
        )
        attachment["__properties_version1.0"] += struct.pack("<IIII", 0x37010102, 6, len(data), 0)
        attachment["__substg1.0_37010102"] = data  # PR_ATTACH_DATA_BIN
        tree[f"__attach_version1.0_#{index:08X}"] = attachment
    tree["__nameid_version1.0"] = {f"__substg1.0_000{n}0102": b"" for n in (2, 3, 4)}
    return compound_file(tree)


def _string_properties(strings: Mapping[str, bytes], head: bytes) -> dict[str, bytes | Tree]:
    """Unicode string streams of one property object plus its ``__properties_version1.0`` (after ``head``)."""
    props = head + b"".join(
        struct.pack("<IIII", (int(pid, 16) << 16) | 0x001F, 6, len(raw) + 2, 0) for pid, raw in strings.items()
    )
    tree: dict[str, bytes | Tree] = {f"__substg1.0_{pid}001F": raw for pid, raw in strings.items()}
    tree["__properties_version1.0"] = props
    return tree


# -- OLE objects (embedded in RTF and Word documents) ------------------------------------------


def ole_package(filename: str, data: bytes) -> bytes:
    """The Packager's native data for a file dropped into a document (what an ``\\x01Ole10Native`` stream holds
    after its 4-byte size, and what an RTF ``Package`` object's native data is)."""
    path = f"C:\\Users\\someone\\{filename}".encode("cp1252") + b"\0"
    return (
        struct.pack("<H", 2)
        + filename.encode("cp1252")
        + b"\0"
        + path
        + struct.pack("<HHI", 0, 3, len(path))
        + path
        + struct.pack("<I", len(data))
        + data
    )


def ole1_object(class_name: str, native: bytes) -> bytes:
    """An OLE 1.0 EmbeddedObject (MS-OLEDS 2.2.4), what an RTF ``\\objdata`` holds in hex."""

    def ansi(text: str) -> bytes:
        raw = text.encode("cp1252") + b"\0" if text else b""
        return struct.pack("<I", len(raw)) + raw

    return (
        struct.pack("<II", 0x0501, 2) + ansi(class_name) + ansi("") + ansi("") + struct.pack("<I", len(native)) + native
    )


def comp_obj(user_type: str, prog_id: str) -> bytes:
    """A ``\\x01CompObj`` stream naming an object's class (MS-OLEDS 2.3.8)."""

    def ansi(text: str) -> bytes:
        raw = text.encode("cp1252") + b"\0"
        return struct.pack("<I", len(raw)) + raw

    header = struct.pack("<HHII", 1, 0xFFFE, 0x0A03, 0xFFFFFFFF) + b"\0" * 16
    return header + ansi(user_type) + struct.pack("<I", 0) + ansi(prog_id) + struct.pack("<I", 0x71B239F4)
