"""Related documents: the nearest document vectors, and near-duplicates among them.

A document's vector is the mean of its chunks' embeddings, normalized (``vectors.Matrix``
computes it when it reads a model's vectors), so nothing more is stored and a document is
related to others as soon as it is embedded. Cosine similarity ranks them.

Near-duplicates (the same letter as ``.docx`` and ``.pdf``, a table as ``.xls`` and ``.xlsx``) are
flagged when the similarity is at least ``NEAR_DUPLICATE`` and their texts are of like length
(the shorter at least ``LENGTH_RATIO`` of the longer). Measured on the shared corpus with the
built-in model (``python -m bench bench_search``): near-identical texts (the same text in another
format or encoding) score 0.974-1.000; the closest pairs of different texts score 0.948 ("Some
text" against a page repeating "Some more text": told apart by their lengths) and 0.938 (two
Arabic texts, a script the model has no vocabulary for).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy import select

from background_tasks.errors import DocumentNotFound
from background_tasks.storage import vectors
from background_tasks.storage.db import read_scope, transient_db_errors
from background_tasks.storage.models import DocumentRow

#: cosine similarity of two document vectors from which they may be the same text
NEAR_DUPLICATE = 0.96
#: and the shorter text has at least this share of the longer one's characters
LENGTH_RATIO = 0.8


@dataclass(frozen=True)
class RelatedDocument:
    document_id: int
    path: str | None
    file_type: str | None
    #: cosine similarity of the two document vectors (1.0: the same direction)
    similarity: float
    near_duplicate: bool


def _facts(url: str, ids: list[int]) -> dict[int, tuple[str | None, str | None, int, str]]:
    """(path, file type, characters, status) of each document."""
    with transient_db_errors(), read_scope(url) as s:
        chars = dict(s.execute(select(DocumentRow.id, DocumentRow.text_chars).where(DocumentRow.id.in_(ids))).all())
        facts = vectors.document_facts(s, ids)
    return {i: (f.path, f.file_type, int(chars.get(i) or 0), f.status) for i, f in facts.items()}


def near_duplicate(similarity: float, chars: int, other_chars: int) -> bool:
    longer = max(chars, other_chars)
    return similarity >= NEAR_DUPLICATE and longer > 0 and min(chars, other_chars) / longer >= LENGTH_RATIO


def related(url: str, model: str, dim: int, document_id: int, limit: int = 5) -> list[RelatedDocument] | None:
    """The ``limit`` processed documents nearest to ``document_id``, nearest first.

    None when the document has no embedding by ``model`` yet; ``DocumentNotFound`` for an unknown id.
    """
    own = _facts(url, [int(document_id)]).get(int(document_id))
    if own is None:
        raise DocumentNotFound(f"no document {document_id} (deleted, or never there)")
    matrix = vectors.matrix(url, model, dim)
    at = np.flatnonzero(matrix.documents == int(document_id))
    if not at.size:
        return None
    similarity = matrix.document_vectors @ matrix.document_vectors[int(at[0])]
    similarity[int(at[0])] = -np.inf
    found: list[RelatedDocument] = []
    pool = max(0, int(limit)) + 5
    while pool and len(found) < limit:
        order = vectors.top(similarity, pool)
        order = order[np.isfinite(similarity[order])]
        facts = _facts(url, [int(matrix.documents[j]) for j in order])
        found = []
        for j in order:
            other = int(matrix.documents[j])
            fact = facts.get(other)
            if fact is None or fact[3] != "success":
                continue
            score = float(similarity[j])
            found.append(
                RelatedDocument(other, fact[0], fact[1], round(score, 4), near_duplicate(score, own[2], fact[2]))
            )
            if len(found) == limit:
                break
        if len(order) < pool:
            break
        pool *= 4
    return found
