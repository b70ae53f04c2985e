"""SKELETON - to be replaced by the real extractor."""

from __future__ import annotations

from pathlib import Path

from background_tasks.extractors.base import Extraction, Extractor, Limits


class HtmlExtractor(Extractor):
    name = "html"
    extensions = frozenset({'.html', '.htm'})

    def extract(self, path: Path, limits: Limits) -> Extraction:
        raise NotImplementedError
