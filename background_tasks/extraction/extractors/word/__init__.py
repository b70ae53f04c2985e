"""Word documents: .docx (``docx``) and legacy .doc (``doc``, with the ``word97`` binary reader).

``common`` holds what both share. The extractors are re-exported here, the
import path the registry and the tests use.
"""

from __future__ import annotations

from background_tasks.extraction.extractors.word.doc import DocExtractor
from background_tasks.extraction.extractors.word.docx import DocxExtractor

__all__ = ["DocExtractor", "DocxExtractor"]
