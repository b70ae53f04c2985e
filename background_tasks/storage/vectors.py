"""Chunk embeddings: stored as bytes in ``chunk_embeddings``, searched by an exact scan.

Both databases keep the vector in a plain binary column (SQLite BLOB, PostgreSQL
``bytea``): no extension to install (pgvector is not among Debian's packages here,
and this Python's ``sqlite3`` cannot load extensions such as sqlite-vec). Nearest
neighbours are found exactly: the vectors of one model are read once into a numpy
matrix per process, in batches by chunk id, and a query is one matrix product. The
matrix is read again only when the table's fingerprint for that model (count, largest
and summed chunk id: one index-only aggregate, looked at most every 2 s) has changed. 100,000 chunks of 256
float32 dimensions are 100 MB in the table and in the memory of a process that searches.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from background_tasks.storage.db import read_scope, session_scope, transient_db_errors
from background_tasks.storage.models import ChunkEmbeddingRow, ChunkRow, DocumentPathRow, DocumentRow
from background_tasks.storage.schema import create_schema
from background_tasks.storage.values import upsert

#: rows read per query when loading a model's vectors
LOAD_BATCH = 5000
#: a searching process looks whether the vectors changed at most this often (seconds)
RECHECK_S = 2.0
#: the metadata key under which a document records the model that embedded it
METADATA_KEY = "embedding"


def to_bytes(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def from_bytes(blob: bytes, dim: int) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4", count=dim)


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------


def chunks_to_embed(url: str, document_id: int, model: str) -> list[tuple[int, str]]:
    """(chunk id, text) of a processed document's chunks that ``model`` has not embedded, in order."""
    create_schema(url)
    with transient_db_errors(), read_scope(url) as s:
        done = select(ChunkEmbeddingRow.chunk_id).where(
            ChunkEmbeddingRow.document_id == document_id, ChunkEmbeddingRow.model == model
        )
        rows = s.execute(
            select(ChunkRow.id, ChunkRow.text)
            .join(DocumentRow, DocumentRow.id == ChunkRow.document_id)
            .where(ChunkRow.document_id == document_id, DocumentRow.status == "success", ChunkRow.id.not_in(done))
            .order_by(ChunkRow.chunk_index)
        )
        return [(int(r.id), r.text) for r in rows]


def save(url: str, document_id: int, model: str, dim: int, vectors: Sequence[tuple[int, bytes]]) -> int:
    """Insert or replace embeddings of one document's chunks; returns how many were written.

    A chunk deleted meanwhile (the document was processed again) is left out: the new
    chunks get their own embedding task.
    """
    if not vectors:
        return 0
    create_schema(url)
    ids = [chunk_id for chunk_id, _ in vectors]
    try:
        with transient_db_errors(), session_scope(url) as s:
            alive = set(s.execute(select(ChunkRow.id).where(ChunkRow.id.in_(ids))).scalars())
            values = [
                {"chunk_id": cid, "document_id": document_id, "model": model, "dim": dim, "vector": blob}
                for cid, blob in vectors
                if cid in alive
            ]
            if values:
                stmt = upsert(s, ChunkEmbeddingRow)
                stmt = stmt.on_conflict_do_update(
                    index_elements=["chunk_id"],
                    set_={k: stmt.excluded[k] for k in ("document_id", "model", "dim", "vector")},
                )
                s.execute(stmt, values)
            return len(values)
    except IntegrityError:  # a chunk vanished between the check and the write (PostgreSQL)
        return 0


def record_model(url: str, document_id: int, info: Mapping[str, Any]) -> None:
    """Note in the document's metadata which model embedded it (``metadata["embedding"]``)."""
    with transient_db_errors(), session_scope(url) as s:
        current = s.execute(select(DocumentRow.metadata_json).where(DocumentRow.id == document_id)).scalar()
        if current is None and not s.get(DocumentRow, document_id):
            return
        metadata = {**(current or {}), METADATA_KEY: dict(info)}
        s.execute(update(DocumentRow).where(DocumentRow.id == document_id).values(metadata_json=metadata))


def documents_to_embed(url: str, model: str) -> list[int]:
    """Processed documents with at least one chunk that ``model`` has not embedded, oldest first."""
    create_schema(url)
    with transient_db_errors(), read_scope(url) as s:
        embedded = (
            select(ChunkEmbeddingRow.chunk_id)
            .where(ChunkEmbeddingRow.chunk_id == ChunkRow.id, ChunkEmbeddingRow.model == model)
            .exists()
        )
        rows = s.execute(
            select(ChunkRow.document_id)
            .join(DocumentRow, DocumentRow.id == ChunkRow.document_id)
            .where(DocumentRow.status == "success", ~embedded)
            .group_by(ChunkRow.document_id)
            .order_by(ChunkRow.document_id)
        )
        return [int(r[0]) for r in rows]


def drop_other_models(url: str, model: str) -> int:
    """Delete embeddings made by any model but ``model`` (after a rebuild); returns how many."""
    with transient_db_errors(), session_scope(url) as s:
        return s.execute(delete(ChunkEmbeddingRow).where(ChunkEmbeddingRow.model != model)).rowcount or 0


def counts(url: str) -> dict[str, Any]:
    """``{"chunks": <chunks of processed documents>, "by_model": {model: embedded chunks}}``."""
    create_schema(url)
    with transient_db_errors(), read_scope(url) as s:
        chunks = s.execute(
            select(func.count())
            .select_from(ChunkRow)
            .join(DocumentRow, DocumentRow.id == ChunkRow.document_id)
            .where(DocumentRow.status == "success")
        ).scalar_one()
        rows = s.execute(select(ChunkEmbeddingRow.model, func.count()).group_by(ChunkEmbeddingRow.model))
        by_model = {model: int(n) for model, n in rows}
    return {"chunks": int(chunks), "by_model": by_model}


# --------------------------------------------------------------------------
# Searching
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Matrix:
    """One model's vectors in memory: row i is the embedding of ``chunk_ids[i]`` of ``document_ids[i]``.

    Rows are sorted by document, then chunk id: document ``documents[j]`` owns rows
    ``starts[j]`` to ``starts[j + 1]`` (``np.maximum.reduceat(scores, starts)`` is each document's best).
    """

    fingerprint: tuple[int, int, int]
    chunk_ids: np.ndarray
    document_ids: np.ndarray
    vectors: np.ndarray
    checked_at: float = 0.0
    documents: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    starts: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    #: one unit vector per document (``documents[j]``): the mean of its chunks' vectors, normalized
    document_vectors: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0), np.float32))

    def rows_of(self, j: int) -> slice:
        """The rows of the j-th document (``documents[j]``)."""
        end = int(self.starts[j + 1]) if j + 1 < len(self.starts) else len(self.chunk_ids)
        return slice(int(self.starts[j]), end)


_cache: dict[tuple[str, str], Matrix] = {}
_cache_lock = threading.Lock()


def _fingerprint(s: Any, model: str) -> tuple[int, int, int]:
    chunk_id = ChunkEmbeddingRow.chunk_id
    row = s.execute(
        select(func.count(), func.coalesce(func.max(chunk_id), 0), func.coalesce(func.sum(chunk_id), 0)).where(
            ChunkEmbeddingRow.model == model
        )
    ).one()
    return int(row[0]), int(row[1]), int(row[2])


def matrix(url: str, model: str, dim: int) -> Matrix:
    """The vectors of ``model``, read again when the table changed (looked at most every ``RECHECK_S``)."""
    create_schema(url)
    with _cache_lock:
        cached = _cache.get((url, model))
    if cached is not None and time.monotonic() - cached.checked_at < RECHECK_S:
        return cached
    with transient_db_errors(), read_scope(url) as s:
        fingerprint = _fingerprint(s, model)
        if cached is not None and cached.fingerprint == fingerprint:
            fresh = dataclasses.replace(cached, checked_at=time.monotonic())
            with _cache_lock:
                _cache[(url, model)] = fresh
            return fresh
        chunk_ids: list[int] = []
        document_ids: list[int] = []
        blobs: list[bytes] = []
        after = -1
        while True:  # keyset pages by chunk id: each one an index range scan
            rows = s.execute(
                select(ChunkEmbeddingRow.chunk_id, ChunkEmbeddingRow.document_id, ChunkEmbeddingRow.vector)
                .where(ChunkEmbeddingRow.model == model, ChunkEmbeddingRow.dim == dim)
                .where(ChunkEmbeddingRow.chunk_id > after)
                .order_by(ChunkEmbeddingRow.chunk_id)
                .limit(LOAD_BATCH)
            ).all()
            if not rows:
                break
            for chunk_id, document_id, blob in rows:
                chunk_ids.append(chunk_id)
                document_ids.append(document_id)
                blobs.append(bytes(blob))
            after = rows[-1][0]
    loaded = _sorted_matrix(fingerprint, chunk_ids, document_ids, blobs, dim)
    with _cache_lock:
        _cache[(url, model)] = loaded
    return loaded


def _sorted_matrix(
    fingerprint: tuple[int, int, int], chunk_ids: list[int], document_ids: list[int], blobs: list[bytes], dim: int
) -> Matrix:
    chunks = np.asarray(chunk_ids, np.int64)
    owners = np.asarray(document_ids, np.int64)
    order = np.lexsort((chunks, owners))  # by document, then chunk id
    vectors = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), dim)[order]
    chunks, owners = chunks[order], owners[order]
    documents, starts = np.unique(owners, return_index=True)
    starts = starts.astype(np.int64)
    means = np.add.reduceat(vectors, starts, axis=0) if len(starts) else np.zeros((0, dim), np.float32)
    norms = np.linalg.norm(means, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    document_vectors = (means / norms).astype(np.float32)
    return Matrix(fingerprint, chunks, owners, vectors, time.monotonic(), documents, starts, document_vectors)


def forget(url: str) -> None:
    """Drop the cached matrices of ``url`` (tests, before dropping a database)."""
    with _cache_lock:
        for key in [k for k in _cache if k[0] == url]:
            del _cache[key]


def top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indexes of the ``k`` highest scores, best first."""
    k = min(k, scores.size)
    if k <= 0:
        return np.zeros(0, np.int64)
    best = np.argpartition(-scores, k - 1)[:k]
    return best[np.argsort(-scores[best], kind="stable")]


@dataclass(frozen=True)
class ChunkInfo:
    chunk_id: int
    document_id: int
    chunk_index: int
    page: int | None
    text: str
    file_type: str | None
    path: str | None
    start_char: int = 0
    end_char: int = 0


def latest_paths(s: Any, document_ids: Iterable[int]) -> dict[int, str]:
    """The path each document was seen at last (one query; a correlated subquery per row costs a sort each)."""
    ids = sorted(set(document_ids))
    if not ids:
        return {}
    rows = s.execute(
        select(DocumentPathRow.document_id, DocumentPathRow.path)
        .where(DocumentPathRow.document_id.in_(ids))
        .order_by(DocumentPathRow.document_id, DocumentPathRow.last_seen.desc(), DocumentPathRow.id.desc())
    )
    paths: dict[int, str] = {}
    for document_id, path in rows:
        paths.setdefault(int(document_id), path)
    return paths


@dataclass(frozen=True)
class DocumentFacts:
    file_type: str | None
    status: str
    path: str | None


def document_facts(s: Any, document_ids: Iterable[int]) -> dict[int, DocumentFacts]:
    """Type, status and latest path of each document: primary-key lookups, whatever the planner knows."""
    ids = sorted(set(document_ids))
    if not ids:
        return {}
    rows = s.execute(select(DocumentRow.id, DocumentRow.file_type, DocumentRow.status).where(DocumentRow.id.in_(ids)))
    paths = latest_paths(s, ids)
    return {int(i): DocumentFacts(t, st, paths.get(int(i))) for i, t, st in rows}


def _chunk_query() -> Any:
    """Chunks alone (by primary key or the (document, index) index); their documents are looked up apart, so no
    plan joins them row by row (PostgreSQL does on tables it has no statistics of yet)."""
    return select(
        ChunkRow.id,
        ChunkRow.document_id,
        ChunkRow.chunk_index,
        ChunkRow.page,
        ChunkRow.text,
        ChunkRow.start_char,
        ChunkRow.end_char,
    )


def _infos(s: Any, rows: Iterable[Any], processed_only: bool) -> list[ChunkInfo]:
    rows = list(rows)
    facts = document_facts(s, (r.document_id for r in rows))
    found = []
    for r in rows:
        fact = facts.get(r.document_id)
        if fact is None or (processed_only and fact.status != "success"):
            continue
        found.append(
            ChunkInfo(
                r.id, r.document_id, r.chunk_index, r.page, r.text, fact.file_type, fact.path, r.start_char, r.end_char
            )
        )
    return found


def chunk_info(url: str, chunk_ids: Iterable[int]) -> dict[int, ChunkInfo]:
    """Chunks of processed documents by id, with their document's type and path."""
    ids = list(chunk_ids)
    if not ids:
        return {}
    with transient_db_errors(), read_scope(url) as s:
        rows = s.execute(_chunk_query().where(ChunkRow.id.in_(ids)))
        return {c.chunk_id: c for c in _infos(s, rows, processed_only=True)}


def chunks_at(url: str, positions: Iterable[tuple[int, int]]) -> dict[tuple[int, int], ChunkInfo]:
    """Chunks by (document id, chunk index), with their document's type and path.

    The ids first, from the unique index on (document_id, chunk_index) alone, then the chunks by id:
    both indexed on SQLite and PostgreSQL (a row-value IN list is a scan on SQLite).
    """
    wanted = set(positions)
    if not wanted:
        return {}
    documents = sorted({d for d, _ in wanted})
    indexes = sorted({i for _, i in wanted})
    with transient_db_errors(), read_scope(url) as s:
        pairs = s.execute(
            select(ChunkRow.document_id, ChunkRow.chunk_index, ChunkRow.id).where(
                ChunkRow.document_id.in_(documents), ChunkRow.chunk_index.in_(indexes)
            )
        )
        ids = [int(c) for d, i, c in pairs if (d, i) in wanted]
        found: dict[tuple[int, int], ChunkInfo] = {}
        for start in range(0, len(ids), 1000):
            rows = s.execute(_chunk_query().where(ChunkRow.id.in_(ids[start : start + 1000])))
            found.update({(c.document_id, c.chunk_index): c for c in _infos(s, rows, processed_only=False)})
    return found
