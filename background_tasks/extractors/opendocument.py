"""SKELETON - to be replaced by the real extractor."""

from __future__ import annotations

from pathlib import Path

from background_tasks.extractors.base import Extraction, Extractor, Limits


class OdtExtractor(Extractor):
    name = "odt"
    extensions = frozenset({'.odt'})

    def extract(self, path: Path, limits: Limits) -> Extraction:
        raise NotImplementedError
