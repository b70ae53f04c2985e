"""SKELETON - to be replaced by the real extractor."""

from __future__ import annotations

from pathlib import Path

from background_tasks.extractors.base import Extraction, Extractor, Limits


class PdfExtractor(Extractor):
    name = "pdf"
    extensions = frozenset({'.pdf'})

    def extract(self, path: Path, limits: Limits) -> Extraction:
        raise NotImplementedError
