"""SKELETON - to be replaced by the real extractor."""

from __future__ import annotations

from pathlib import Path

from background_tasks.extractors.base import Extraction, Extractor, Limits


class PlainTextExtractor(Extractor):
    name = "text"
    extensions = frozenset({'.txt'})

    def extract(self, path: Path, limits: Limits) -> Extraction:
        raise NotImplementedError


class LogExtractor(Extractor):
    name = "log"
    extensions = frozenset({'.log'})

    def extract(self, path: Path, limits: Limits) -> Extraction:
        raise NotImplementedError


class MarkdownExtractor(Extractor):
    name = "markdown"
    extensions = frozenset({'.md'})

    def extract(self, path: Path, limits: Limits) -> Extraction:
        raise NotImplementedError
