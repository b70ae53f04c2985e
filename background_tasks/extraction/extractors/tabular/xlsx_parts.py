"""SpreadsheetML read straight from the package: for what openpyxl cannot open, charts, core properties."""

from __future__ import annotations

import logging
import posixpath
import re
import zipfile
from collections.abc import Iterator
from typing import Any

from background_tasks.errors import CorruptDocument, MidasError
from background_tasks.extraction.extractors.base import Limits
from background_tasks.extraction.extractors.metadata import shaped
from background_tasks.extraction.extractors.tabular.table import format_value

log = logging.getLogger(__name__)

#: Charts and pictures described per sheet at most.
_MAX_DRAWINGS = 200


def _column_index(ref: str) -> int:
    index = 0
    for ch in ref:
        if "A" <= ch <= "Z":
            index = index * 26 + (ord(ch) - 64)
        elif "a" <= ch <= "z":
            index = index * 26 + (ord(ch) - 96)
        else:
            break
    return index


def _local(tag: Any) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


class RawXlsxReader:
    """Namespace-agnostic SpreadsheetML reader for what openpyxl cannot open.

    openpyxl does not understand ISO/IEC 29500 *Strict* workbooks (different
    namespaces) and loads them with zero sheets. This reads workbook, shared
    strings and sheet XML directly with a hardened parser. Cell formats are
    not interpreted, so dates come out as Excel serial numbers.
    """

    def __init__(self, zf: zipfile.ZipFile, limits: Limits) -> None:
        self.zf = zf
        self.limits = limits
        self.names = set(zf.namelist())

    def _xml(self, name: str) -> Any:
        from lxml import etree

        from background_tasks.extraction.zipsafe import read_member

        data = read_member(self.zf, name, self.limits.max_decompressed_bytes)
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
        try:
            return etree.fromstring(data, parser)
        except etree.XMLSyntaxError as exc:
            raise CorruptDocument(f"{name}: malformed XML ({exc})") from exc

    def rels(self, part: str) -> dict[str, tuple[str, str]]:
        """A part's relationships: id -> (type suffix such as "drawing", target part name)."""
        folder, _, name = part.rpartition("/")
        rels_name = f"{folder}/_rels/{name}.rels" if folder else f"_rels/{name}.rels"
        if rels_name not in self.names:
            return {}
        found = {}
        for rel in self._xml(rels_name):
            target = rel.get("Target", "")
            if rel.get("TargetMode") == "External" or not target:
                continue
            target = target.lstrip("/") if target.startswith("/") else posixpath.normpath(f"{folder}/{target}")
            found[rel.get("Id")] = (rel.get("Type", "").rsplit("/", 1)[-1], target)
        return found

    def sheets(self) -> list[tuple[str, str]]:
        root = self._xml("xl/workbook.xml")
        targets = {rid: target for rid, (_kind, target) in self.rels("xl/workbook.xml").items()}
        found = []
        for element in root.iter():
            if _local(element.tag) == "sheet":
                rid = next((v for k, v in element.attrib.items() if _local(k) == "id"), None)
                target = targets.get(rid)
                if target and target in self.names:
                    found.append((element.get("name", f"Sheet{len(found) + 1}"), target))
        return found

    def shared_strings(self) -> list[str]:
        name = next((n for n in ("xl/sharedStrings.xml", "xl/sharedstrings.xml") if n in self.names), None)
        if name is None:
            return []
        strings = []
        for item in self._xml(name):
            if _local(item.tag) == "si":
                strings.append("".join(t.text or "" for t in item.iter() if _local(t.tag) == "t"))
        return strings

    def rows(self, target: str, strings: list[str]) -> Iterator[list[str]]:
        root = self._xml(target)
        for row in root.iter():
            if _local(row.tag) != "row":
                continue
            cells: dict[int, str] = {}
            for cell in row:
                if _local(cell.tag) != "c":
                    continue
                column = _column_index(cell.get("r", "")) or (max(cells) + 1 if cells else 1)
                kind = cell.get("t", "n")
                value = ""
                for child in cell:
                    tag = _local(child.tag)
                    if tag == "v":
                        value = child.text or ""
                    elif tag == "is":
                        value = "".join(t.text or "" for t in child.iter() if _local(t.tag) == "t")
                if kind == "s" and value.strip().isdigit():
                    index = int(value)
                    value = strings[index] if index < len(strings) else ""
                elif kind == "b":
                    value = "TRUE" if value.strip() == "1" else "FALSE"
                elif kind == "n" and value:
                    try:
                        value = format_value(float(value))
                    except ValueError:
                        pass
                if column <= 16384:
                    cells[column] = format_value(value)
            if cells:
                width = max(cells)
                yield [cells.get(i, "") for i in range(1, width + 1)]

    def drawings(self, sheet_part: str) -> list[str]:
        """One line per chart or picture on the sheet: chart type, title, series, alt text."""
        lines: list[str] = []
        for kind, drawing in self.rels(sheet_part).values():
            if kind != "drawing" or drawing not in self.names:
                continue
            targets = self.rels(drawing)
            root = self._xml(drawing)
            for element in root.iter():
                tag = _local(element.tag)
                if tag not in ("graphicFrame", "pic") or len(lines) >= _MAX_DRAWINGS:
                    continue
                alt = ""
                chart_part = None
                for inner in element.iter():
                    inner_tag = _local(inner.tag)
                    if inner_tag == "cNvPr":
                        alt = " ".join((inner.get("descr") or inner.get("title") or "").split())
                    elif inner_tag == "chart":
                        rid = next((v for k, v in inner.attrib.items() if _local(k) == "id"), None)
                        chart_part = targets.get(rid, ("", None))[1]
                parts = []
                if chart_part and chart_part in self.names:
                    parts.extend(self._chart(chart_part))
                elif tag == "pic":
                    parts.append("Image")
                if alt:
                    parts.append(f"alt text: {alt}")
                if parts:
                    lines.append(f"[{' — '.join(parts)}]")
        return lines

    def _chart(self, part: str) -> list[str]:
        root = self._xml(part)
        kinds: list[str] = []
        series: list[str] = []
        title = ""
        for element in root.iter():
            tag = _local(element.tag)
            if tag.endswith("Chart") and tag not in ("chart",) and element.getparent() is not None:
                if _local(element.getparent().tag) == "plotArea":
                    kind = re.sub(r"3D$", "", tag[: -len("Chart")])
                    kind = re.sub(r"(?<!^)([A-Z])", r" \1", kind).lower()
                    if kind not in kinds:
                        kinds.append(kind)
            elif tag == "title" and not title and _local(element.getparent().tag) == "chart":
                title = " ".join("".join(t.text or "" for t in element.iter() if _local(t.tag) in ("t", "v")).split())
            elif tag == "ser":
                for child in element:
                    if _local(child.tag) == "tx":
                        name = " ".join(" ".join(v.text or "" for v in child.iter() if _local(v.tag) == "v").split())
                        if name:
                            series.append(name)
        parts = [f"{'/'.join(kinds).capitalize() or 'A'} chart"]
        if title:
            parts.append(f"title: {title}")
        if series:
            parts.append(f"series: {', '.join(series[:50])}")
        return parts


_CORE_KEYS = {
    "title": "title",
    "creator": "authors",
    "subject": "subject",
    "description": "description",
    "keywords": "keywords",
    "lastModifiedBy": "last_modified_by",
    "created": "created",
    "modified": "modified",
}


def core_properties(zf: zipfile.ZipFile, limits: Limits) -> dict[str, Any]:
    """Title, authors, dates from ``docProps/core.xml`` as written (openpyxl invents defaults for missing ones)."""
    if "docProps/core.xml" not in zf.namelist():
        return {}
    from lxml import etree

    from background_tasks.extraction.zipsafe import read_member

    try:
        data = read_member(zf, "docProps/core.xml", min(limits.max_decompressed_bytes, 16 * 1024 * 1024))
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
        root = etree.fromstring(data, parser)
    except (MidasError, etree.XMLSyntaxError) as exc:
        log.debug("unreadable core properties: %s", exc)
        return {}
    values: dict[str, Any] = {}
    for element in root:
        key = _CORE_KEYS.get(_local(element.tag))
        if key:
            values[key] = " ".join((element.text or "").split())
    return shaped(values)
