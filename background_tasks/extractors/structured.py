"""SKELETON - to be replaced by the real extractor."""

from __future__ import annotations

from pathlib import Path

from background_tasks.extractors.base import Extraction, Extractor, Limits


class JsonExtractor(Extractor):
    name = "json"
    extensions = frozenset({'.json'})

    def extract(self, path: Path, limits: Limits) -> Extraction:
        raise NotImplementedError


class XmlExtractor(Extractor):
    name = "xml"
    extensions = frozenset({'.xml'})

    def extract(self, path: Path, limits: Limits) -> Extraction:
        raise NotImplementedError
