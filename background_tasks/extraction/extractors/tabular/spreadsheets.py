"""``.xlsx`` (openpyxl, raw SpreadsheetML fallback) and ``.xls`` (xlrd).

Both live here because each hands a file over to the other when its bytes
say it is the other kind (an .xls that is really a ZIP, an .xlsx that is OLE).
"""

from __future__ import annotations

import io
import logging
import warnings as pywarnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from background_tasks.errors import (
    CorruptDocument,
    EmptyDocument,
    EncryptedDocument,
    MidasError,
    MissingDependency,
    ResourceLimitExceeded,
    TypeMismatch,
)
from background_tasks.extraction.extractors.base import Extraction, Extractor, Limits
from background_tasks.extraction.extractors.tabular.table import format_value
from background_tasks.extraction.extractors.tabular.workbook import (
    OLE_MAGIC,
    ZIP_MAGIC,
    Workbook,
    ole_is_encrypted,
    ole_summary,
    sniff_magic,
)
from background_tasks.extraction.extractors.tabular.xlsx_parts import RawXlsxReader, core_properties

log = logging.getLogger(__name__)

#: Excel's own limit; a sheet claiming more rows than this is lying.
_EXCEL_MAX_ROWS = 1_048_576


def _iter_openpyxl_rows(ws: Any, warnings: list[str]) -> Iterator[list[str]]:
    # reset_dimensions: trust the rows present, not the declared used range, so an
    # "inflated" sheet (dimension A1:Z1048576, seven real rows) stays cheap.
    ws.reset_dimensions()
    for seen, row in enumerate(ws.iter_rows(values_only=True), start=1):
        if seen > _EXCEL_MAX_ROWS:
            warnings.append(f"sheet {ws.title!r}: stopped after {_EXCEL_MAX_ROWS} rows")
            return
        if row:
            yield [format_value(v) for v in row]


class XlsxExtractor(Extractor):
    """``.xlsx``: every sheet via openpyxl (read-only, cached values); zip bombs rejected first."""

    name = "xlsx"
    extensions = frozenset({".xlsx", ".xlsm"})
    mime_types = frozenset(
        {
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "application/vnd.ms-excel.sheet.macroEnabled.12",
        }
    )

    def extract(self, path: Path, limits: Limits) -> Extraction:
        magic = sniff_magic(path)
        if magic.startswith(OLE_MAGIC):
            if ole_is_encrypted(path, limits):
                raise EncryptedDocument("the workbook is password-protected (encrypted OOXML package)")
            extraction = XlsExtractor().extract(path, limits)
            notice = "the .xlsx file is really a legacy .xls workbook"
            return Extraction(extraction.text, extraction.metadata, extraction.pages, (notice, *extraction.warnings))
        if not magic.startswith(ZIP_MAGIC):
            if not magic:
                raise EmptyDocument("the file is empty")
            raise CorruptDocument("not an XLSX workbook (neither a ZIP nor an OLE container)")

        from background_tasks.extraction.zipsafe import check_zip, open_zip

        check_zip(path, limits.max_decompressed_bytes)
        try:
            import openpyxl
        except ImportError as exc:  # pragma: no cover - pinned in requirements
            raise MissingDependency("openpyxl is needed for .xlsx files") from exc

        with open_zip(path) as zf:
            names = set(zf.namelist())
            if "xl/workbook.xml" not in names:
                if "word/document.xml" in names or "ppt/presentation.xml" in names or "content.xml" in names:
                    raise TypeMismatch("the .xlsx file is another kind of office document")
                raise CorruptDocument("the ZIP archive has no xl/workbook.xml: not an XLSX workbook")
            if any(info.flag_bits & 0x1 for info in zf.infolist()):
                raise EncryptedDocument("the workbook's ZIP members are encrypted")
            metadata: dict[str, Any] = core_properties(zf, limits)
            reader = RawXlsxReader(zf, limits)
            try:
                parts = dict(reader.sheets())
            except MidasError as exc:
                raise CorruptDocument(f"the workbook part is unreadable: {exc.message}") from exc

            book = Workbook(limits)
            try:
                with pywarnings.catch_warnings():
                    pywarnings.simplefilter("ignore")
                    wb = openpyxl.load_workbook(path, read_only=True, data_only=True, keep_links=False)
                    try:
                        for ws in wb.worksheets:
                            drawings = self._drawings(reader, parts.get(ws.title), book.warnings)
                            rows = _iter_openpyxl_rows(ws, book.warnings)
                            book.add_sheet(ws.title, rows, drawings, state=ws.sheet_state)
                    finally:
                        wb.close()
            except MidasError:
                raise
            except Exception as exc:
                log.info("openpyxl failed on %s (%s); trying the raw SpreadsheetML reader", path.name, exc)
                book = Workbook(limits)
                book.warnings.append(f"openpyxl could not read the workbook ({type(exc).__name__}); read raw XML")
            if not book.sheets:
                self._raw(reader, parts, book)
        return book.extraction(metadata)

    def metadata(self, path: Path, limits: Limits) -> dict[str, Any]:
        """Core properties and sheet names from the package parts, without reading any cells."""
        magic = sniff_magic(path)
        if magic.startswith(OLE_MAGIC):
            if ole_is_encrypted(path, limits):
                raise EncryptedDocument("the workbook is password-protected (encrypted OOXML package)")
            return XlsExtractor().metadata(path, limits)
        if not magic.startswith(ZIP_MAGIC):
            raise CorruptDocument("not an XLSX workbook (neither a ZIP nor an OLE container)")
        from background_tasks.extraction.zipsafe import check_zip, open_zip

        check_zip(path, limits.max_decompressed_bytes)
        with open_zip(path) as zf:
            if "xl/workbook.xml" not in zf.namelist():
                raise CorruptDocument("the ZIP archive has no xl/workbook.xml: not an XLSX workbook")
            metadata: dict[str, Any] = core_properties(zf, limits)
            try:
                names = [name for name, _part in RawXlsxReader(zf, limits).sheets()]
            except MidasError as exc:
                raise CorruptDocument(f"the workbook part is unreadable: {exc.message}") from exc
        metadata.update({"sheets": [{"name": name} for name in names], "sheet_count": len(names)})
        return metadata

    @staticmethod
    def _drawings(reader: RawXlsxReader, part: str | None, warnings: list[str]) -> list[str]:
        """Chart and picture descriptions; a damaged drawing costs a warning, never the sheet."""
        if not part:
            return []
        try:
            return reader.drawings(part)
        except ResourceLimitExceeded:
            raise
        except Exception as exc:
            warnings.append(f"charts/pictures of {part} skipped: {exc}")
            return []

    @classmethod
    def _raw(cls, reader: RawXlsxReader, parts: dict[str, str], book: Workbook) -> None:
        try:
            strings = reader.shared_strings()
            for name, target in parts.items():
                book.add_sheet(name, reader.rows(target, strings), cls._drawings(reader, target, book.warnings))
        except MidasError:
            raise
        except Exception as exc:
            raise CorruptDocument(f"cannot read the workbook: {type(exc).__name__}: {exc}") from exc
        if book.sheets:
            book.warnings.append("read with the raw SpreadsheetML reader (e.g. Strict OOXML); dates are serial numbers")


# --------------------------------------------------------------------------
# XLS
# --------------------------------------------------------------------------


def _xls_rows(sheet: Any, datemode: int, xlrd: Any) -> Iterator[list[str]]:
    for index in range(sheet.nrows):
        cells = []
        for cell in sheet.row(index):
            ctype, value = cell.ctype, cell.value
            if ctype == xlrd.XL_CELL_DATE:
                try:
                    value = xlrd.xldate.xldate_as_datetime(value, datemode)
                except (ValueError, OverflowError, xlrd.xldate.XLDateError):
                    pass
            elif ctype == xlrd.XL_CELL_BOOLEAN:
                value = bool(value)
            elif ctype == xlrd.XL_CELL_ERROR:
                value = xlrd.error_text_from_code.get(value, "#ERR")
            elif ctype in (xlrd.XL_CELL_EMPTY, xlrd.XL_CELL_BLANK):
                value = None
            cells.append(format_value(value))
        yield cells


class XlsExtractor(Extractor):
    """``.xls`` (BIFF2-8) via xlrd: every sheet, dates as dates; encrypted and corrupt files get clear errors."""

    name = "xls"
    extensions = frozenset({".xls"})
    mime_types = frozenset({"application/vnd.ms-excel"})

    def extract(self, path: Path, limits: Limits) -> Extraction:
        magic = sniff_magic(path)
        if not magic:
            raise EmptyDocument("the file is empty")
        if magic.startswith(ZIP_MAGIC):
            extraction = XlsxExtractor().extract(path, limits)
            notice = "the .xls file is really an .xlsx workbook"
            return Extraction(extraction.text, extraction.metadata, extraction.pages, (notice, *extraction.warnings))
        try:
            import xlrd
            from xlrd.compdoc import CompDocError
        except ImportError as exc:  # pragma: no cover - pinned in requirements
            raise MissingDependency("xlrd is needed for .xls files") from exc

        book = Workbook(limits)
        sink = io.StringIO()
        try:
            try:
                wb = xlrd.open_workbook(str(path), on_demand=True, logfile=sink, ragged_rows=True)
            except CompDocError as exc:
                wb = xlrd.open_workbook(
                    str(path), on_demand=True, logfile=sink, ragged_rows=True, ignore_workbook_corruption=True
                )
                book.warnings.append(f"the workbook's container is damaged ({exc}); read what could be recovered")
            try:
                metadata: dict[str, Any] = {"biff_version": wb.biff_version, **ole_summary(path)}
                if wb.user_name and "last_modified_by" not in metadata:
                    metadata["last_modified_by"] = wb.user_name.strip()
                for index in range(wb.nsheets):
                    sheet = wb.sheet_by_index(index)
                    book.add_sheet(sheet.name, _xls_rows(sheet, wb.datemode, xlrd))
                    wb.unload_sheet(index)
            finally:
                wb.release_resources()
        except MidasError:
            raise
        except xlrd.XLRDError as exc:
            message = str(exc)
            if "encrypted" in message.lower():
                raise EncryptedDocument("the workbook is password-protected") from exc
            if "xlsx" in message.lower():
                raise TypeMismatch(f"not a legacy .xls workbook: {message}") from exc
            raise CorruptDocument(f"cannot read the workbook: {message}") from exc
        except CompDocError as exc:
            raise CorruptDocument(f"the workbook is corrupt: {exc}") from exc
        except MemoryError as exc:
            raise ResourceLimitExceeded("the workbook needs more memory than available") from exc
        except Exception as exc:  # xlrd raises assorted low-level errors on damaged BIFF data
            raise CorruptDocument(f"cannot read the workbook: {type(exc).__name__}: {exc}") from exc
        return book.extraction(metadata)

    def metadata(self, path: Path, limits: Limits) -> dict[str, Any]:
        """Summary properties and sheet names without reading any cells."""
        if sniff_magic(path).startswith(ZIP_MAGIC):
            return XlsxExtractor().metadata(path, limits)
        try:
            import xlrd
        except ImportError as exc:  # pragma: no cover - pinned in requirements
            raise MissingDependency("xlrd is needed for .xls files") from exc
        try:
            wb = xlrd.open_workbook(str(path), on_demand=True, logfile=io.StringIO(), ignore_workbook_corruption=True)
        except xlrd.XLRDError as exc:
            if "encrypted" in str(exc).lower():
                raise EncryptedDocument("the workbook is password-protected") from exc
            raise CorruptDocument(f"cannot read the workbook: {exc}") from exc
        except Exception as exc:
            raise CorruptDocument(f"cannot read the workbook: {type(exc).__name__}: {exc}") from exc
        try:
            names = wb.sheet_names()
            metadata: dict[str, Any] = {"biff_version": wb.biff_version, **ole_summary(path)}
        finally:
            wb.release_resources()
        metadata.update({"sheets": [{"name": name} for name in names], "sheet_count": len(names)})
        return metadata
