"""The built-in Word 97-2003 reader: main text from the piece table, minus deleted runs and field codes.

antiword and catdoc cannot hide deleted tracked changes; this reader can, and
it also reads .doc files when neither tool is installed.
"""

from __future__ import annotations

import bisect
import re
import struct
from collections.abc import Iterator
from typing import Any


class DocFormatError(ValueError):
    """The FIB/piece table does not make sense; the caller falls back to the external tools."""


def _sprm_operand_size(sprm: int, data: bytes, pos: int) -> int:
    spra = (sprm >> 13) & 7
    if spra in (0, 1):
        return 1
    if spra in (2, 4, 5):
        return 2
    if spra == 3:
        return 4
    if spra == 7:
        return 3
    if pos >= len(data):
        return 1
    if sprm == 0xD608:  # sprmTDefTable: two-byte length
        return struct.unpack_from("<H", data, pos)[0] + 1 if pos + 2 <= len(data) else len(data)
    return data[pos] + 1


def _sprms(grpprl: bytes) -> Iterator[tuple[int, bytes]]:
    pos = 0
    while pos + 2 < len(grpprl):
        sprm = struct.unpack_from("<H", grpprl, pos)[0]
        pos += 2
        size = _sprm_operand_size(sprm, grpprl, pos)
        yield sprm, grpprl[pos : pos + size]
        pos += size


_SPRM_DELETED = 0x0800  # sprmCFRMarkDel
_SPRM_HIDDEN = 0x083C  # sprmCFVanish
_CHAR_MAP = {
    "\r": "\n",
    "\x0b": "\n",
    "\x0c": "\n",
    "\x0e": "\n",
    "\x07": "\t",
    "\x1e": "-",
    "\xa0": " ",
}
_DROP = re.compile(r"[\x00-\x06\x08\x0f-\x12\x16-\x1d\x1f]")


class Word97Reader:
    """Main text of a Word 97-2003 file from the piece table, minus deleted/hidden runs and field codes."""

    def __init__(self, ole: Any) -> None:
        wd = ole.openstream("WordDocument").read()
        flags = struct.unpack_from("<H", wd, 0x0A)[0]
        table_name = "1Table" if flags & 0x0200 else "0Table"
        if not ole.exists(table_name):
            raise DocFormatError(f"{table_name} stream missing")
        tbl = ole.openstream(table_name).read()
        if len(wd) < 0x1AA:
            raise DocFormatError("FIB too short")
        self._wd = wd
        self._ccp = struct.unpack_from("<8I", wd, 0x4C)
        fc_clx, lcb_clx = struct.unpack_from("<II", wd, 0x1A2)
        fc_chpx, lcb_chpx = struct.unpack_from("<II", wd, 0xFA)
        if fc_clx + lcb_clx > len(tbl) or fc_chpx + lcb_chpx > len(tbl):
            raise DocFormatError("FIB points outside the table stream")
        self._pieces = self._read_pieces(tbl[fc_clx : fc_clx + lcb_clx], len(wd))
        self._runs, self.has_revisions = self._read_runs(tbl, fc_chpx, lcb_chpx, wd)
        self._run_starts = [r[0] for r in self._runs]

    @staticmethod
    def _read_pieces(clx: bytes, stream_len: int) -> list[tuple[int, int, int, bool]]:
        pos = 0
        while pos < len(clx) and clx[pos] == 0x01:  # Prc blocks before the piece table
            cb = struct.unpack_from("<h", clx, pos + 1)[0]
            pos += 3 + max(cb, 0)
        if pos >= len(clx) or clx[pos] != 0x02:
            raise DocFormatError("no piece table")
        lcb = struct.unpack_from("<I", clx, pos + 1)[0]
        plc = clx[pos + 5 : pos + 5 + lcb]
        if lcb < 16 or (lcb - 4) % 12 or len(plc) < lcb:
            raise DocFormatError("malformed piece table")
        count = (lcb - 4) // 12
        cps = struct.unpack_from(f"<{count + 1}I", plc, 0)
        pieces = []
        for i in range(count):
            fc = struct.unpack_from("<I", plc, 4 * (count + 1) + 8 * i + 2)[0]
            compressed = bool(fc & 0x40000000)
            fc &= 0x3FFFFFFF
            if compressed:
                fc //= 2
            start, end = cps[i], cps[i + 1]
            if end < start or fc + (end - start) * (1 if compressed else 2) > stream_len:
                raise DocFormatError("piece outside the document stream")
            pieces.append((start, end, fc, compressed))
        return pieces

    @staticmethod
    def _read_runs(tbl: bytes, fc: int, lcb: int, wd: bytes) -> tuple[list[tuple[int, int, bool]], bool]:
        """(fcStart, fcEnd, skip) for every character run; skip = deleted or hidden."""
        if lcb < 12:
            return [], False
        count = (lcb - 4) // 8
        pns = struct.unpack_from(f"<{count}I", tbl, fc + 4 * (count + 1))
        runs: list[tuple[int, int, bool]] = []
        revisions = False
        for pn in pns:
            offset = (pn & 0x3FFFFF) * 512
            page = wd[offset : offset + 512]
            if len(page) < 512:
                raise DocFormatError("character property page outside the stream")
            crun = page[511]
            if 4 * (crun + 1) + crun > 511:
                raise DocFormatError("malformed character property page")
            fcs = struct.unpack_from(f"<{crun + 1}I", page, 0)
            for k in range(crun):
                where = page[4 * (crun + 1) + k] * 2
                skip = False
                if where:
                    size = page[where]
                    for sprm, operand in _sprms(page[where + 1 : where + 1 + size]):
                        if sprm == _SPRM_DELETED and operand[:1] in (b"\x01", b"\x81"):
                            skip = revisions = True
                        elif sprm == _SPRM_HIDDEN and operand[:1] in (b"\x01", b"\x81"):
                            skip = True
                runs.append((fcs[k], fcs[k + 1], skip))
        runs.sort()
        return runs, revisions

    def _raw(self, cp_start: int, cp_end: int) -> str:
        out: list[str] = []
        for start, end, fc, compressed in self._pieces:
            lo, hi = max(start, cp_start), min(end, cp_end)
            if lo >= hi:
                continue
            width = 1 if compressed else 2
            fc_lo = fc + (lo - start) * width
            fc_hi = fc + (hi - start) * width
            pos = fc_lo
            while pos < fc_hi:
                i = bisect.bisect_right(self._run_starts, pos) - 1
                skip = False
                seg_end = fc_hi
                if i >= 0 and self._runs[i][0] <= pos < self._runs[i][1]:
                    skip = self._runs[i][2]
                    seg_end = min(fc_hi, self._runs[i][1])
                elif i + 1 < len(self._runs):
                    seg_end = min(fc_hi, max(self._runs[i + 1][0], pos + width))
                seg_end = pos + ((seg_end - pos + width - 1) // width) * width
                if not skip:
                    chunk = self._wd[pos:seg_end]
                    out.append(
                        chunk.decode("cp1252", "replace") if compressed else chunk.decode("utf-16-le", "replace")
                    )
                pos = seg_end
        return "".join(out)

    def text(self) -> str:
        ccp_text, ccp_ftn, ccp_hdd, ccp_mcr, ccp_atn, ccp_edn, ccp_txbx, ccp_hdr_txbx = self._ccp
        bounds: list[tuple[str, int, int]] = []
        cp = 0
        for name, length in (
            ("main", ccp_text),
            ("footnotes", ccp_ftn),
            ("headers", ccp_hdd),
            ("macro", ccp_mcr),
            ("comments", ccp_atn),
            ("endnotes", ccp_edn),
            ("textboxes", ccp_txbx),
            ("header textboxes", ccp_hdr_txbx),
        ):
            bounds.append((name, cp, cp + length))
            cp += length
        stories = {name: _strip_fields(self._raw(a, b)) for name, a, b in bounds if b > a and name != "macro"}
        order = ("main", "textboxes", "footnotes", "endnotes", "comments", "headers", "header textboxes")
        parts = []
        for name in order:
            story = stories.get(name, "")
            story = _DROP.sub("", story.translate(str.maketrans(_CHAR_MAP)))
            if name == "headers":  # header story repeats separators and identical headers per section
                lines: list[str] = []
                for line in story.splitlines():
                    if line.strip() and line.strip() not in lines:
                        lines.append(line.strip())
                story = "\n".join(lines)
            if story.strip():
                parts.append(story.strip("\n"))
        return "\n\n".join(parts)


def _strip_fields(text: str) -> str:
    """Keep field results (between 0x14 and 0x15), drop field codes (between 0x13 and 0x14)."""
    if "\x13" not in text:
        return text.replace("\x14", "").replace("\x15", "")
    out: list[str] = []
    stack: list[bool] = []  # per open field: True while in its code part
    for piece in re.split(r"([\x13\x14\x15])", text):
        if piece == "\x13":
            stack.append(True)
        elif piece == "\x14":
            if stack:
                stack[-1] = False
        elif piece == "\x15":
            if stack:
                stack.pop()
        elif not any(stack):
            out.append(piece)
    return "".join(out)
