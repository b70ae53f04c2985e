"""SKELETON - to be replaced by the real extractor."""

from __future__ import annotations

from pathlib import Path

from background_tasks.extractors.base import Extraction, Extractor, Limits


class DocxExtractor(Extractor):
    name = "docx"
    extensions = frozenset({'.docx'})

    def extract(self, path: Path, limits: Limits) -> Extraction:
        raise NotImplementedError


class DocExtractor(Extractor):
    name = "doc"
    extensions = frozenset({'.doc'})

    def extract(self, path: Path, limits: Limits) -> Extraction:
        raise NotImplementedError
