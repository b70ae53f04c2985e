"""SKELETON - to be replaced by the real extractor."""

from __future__ import annotations

from pathlib import Path

from background_tasks.extractors.base import Extraction, Extractor, Limits


class CsvExtractor(Extractor):
    name = "csv"
    extensions = frozenset({'.csv'})

    def extract(self, path: Path, limits: Limits) -> Extraction:
        raise NotImplementedError


class XlsxExtractor(Extractor):
    name = "xlsx"
    extensions = frozenset({'.xlsx'})

    def extract(self, path: Path, limits: Limits) -> Extraction:
        raise NotImplementedError


class XlsExtractor(Extractor):
    name = "xls"
    extensions = frozenset({'.xls'})

    def extract(self, path: Path, limits: Limits) -> Extraction:
        raise NotImplementedError
