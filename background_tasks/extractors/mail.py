"""SKELETON - to be replaced by the real extractor."""

from __future__ import annotations

from pathlib import Path

from background_tasks.extractors.base import Extraction, Extractor, Limits


class EmlExtractor(Extractor):
    name = "email"
    extensions = frozenset({'.eml'})

    def extract(self, path: Path, limits: Limits) -> Extraction:
        raise NotImplementedError


class MsgExtractor(Extractor):
    name = "email"
    extensions = frozenset({'.msg'})

    def extract(self, path: Path, limits: Limits) -> Extraction:
        raise NotImplementedError
