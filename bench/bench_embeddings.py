"""Embedding throughput and search latency: keyword, semantic and hybrid in the same run.

    python -m bench bench_embeddings [--chunks 20000] [--queries 40] [--postgres]

Stores ``--chunks`` generated chunks (documents of 100 chunks, ~900 characters each)
in a fresh SQLite file (or a throwaway PostgreSQL database with ``--postgres``),
then measures, in one process: the built-in model alone (chunks/s), the whole
embedding step (embed + write, chunks/s), the table's growth, and the latency of
each search mode (p50/p95 over the queries; the first semantic query, which reads
the vectors into memory, is reported apart as "cold"). Targets (issue 17):
>= 2,000 chunks/s embedding with the default model, hybrid p95 <= 150 ms at 100k chunks.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from bench.common import print_table

_VOCABULARY = (
    "invoice payment contract supplier delivery warehouse river mountain volcano island harvest orchard "
    "engine turbine voltage circuit patient clinic therapy dosage school teacher lesson exam budget tax "
    "revenue audit court judge verdict appeal forest wildlife climate rainfall satellite orbit telescope "
    "galaxy recipe flour oven bread railway station timetable passenger museum painting sculpture gallery"
)
WORDS = _VOCABULARY.split()
QUERIES = (
    "when is the bill due",
    "trains leaving the station",
    "medicine given to the sick",
    "pictures hanging in an art exhibition",
    "stars seen through a lens",
    "baking bread at home",
    "tax revenue audit",
    '"river mountain"',
)


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 16))).capitalize() + "."


def fill(store, chunks: int, rng: random.Random) -> list[int]:
    from background_tasks.processing.chunking import Chunk

    ids = []
    for d in range(0, chunks, 100):
        claim = store.claim(f"{d:064x}", f"/bench/doc{d}.txt", "txt", "text/plain", 90_000, task_id=f"b{d}")
        parts, at = [], 0
        for i in range(min(100, chunks - d)):
            text = " ".join(sentence(rng) for _ in range(9))[:900]
            parts.append(Chunk(i, text, at, at + len(text), None))
            at += len(text)
        store.record_success(claim.document_id, {}, parts, at)
        ids.append(claim.document_id)
    return ids


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _postgres_table_bytes(url: str) -> int:
    from sqlalchemy import text

    from background_tasks.storage.db import read_scope

    with read_scope(url) as s:
        return int(s.execute(text("SELECT pg_total_relation_size('chunk_embeddings')")).scalar_one())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=20000)
    parser.add_argument("--queries", type=int, default=40, help="searches per mode")
    parser.add_argument("--postgres", action="store_true", help="a throwaway database on 127.0.0.1:5432")
    args = parser.parse_args(argv)

    from background_tasks.analysis.embeddings import load_embedder
    from background_tasks.analysis.embeddings_index import embed_chunks
    from background_tasks.storage import vectors
    from background_tasks.storage.db import sqlite_path
    from background_tasks.storage.store import DocumentStore

    rng = random.Random(17)
    embedder = load_embedder()
    with ExitStack() as stack:
        if args.postgres:
            from tests.db_fixtures import throwaway_postgres

            url = stack.enter_context(throwaway_postgres("midas_bench"))
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="midas-bench-embed-"))
            url = f"sqlite:///{Path(tmp) / 'midas.sqlite3'}"
        store = DocumentStore(url, embedder=embedder)
        store.create_schema()
        documents = fill(store, args.chunks, rng)
        texts = [" ".join(sentence(rng) for _ in range(9))[:900] for _ in range(min(args.chunks, 5000))]
        started = time.perf_counter()
        embedder.embed(texts)
        model_rate = len(texts) / (time.perf_counter() - started)
        path = sqlite_path(url)
        before = path.stat().st_size if path else 0
        started = time.perf_counter()
        written = sum(embed_chunks(url, d, embedder) for d in documents)
        step_rate = written / (time.perf_counter() - started)
        growth = (path.stat().st_size - before) if path else _postgres_table_bytes(url)

        latency: dict[str, list[float]] = {}
        started = time.perf_counter()
        store.search(QUERIES[0], mode="semantic")
        cold_ms = (time.perf_counter() - started) * 1000
        for mode in ("keyword", "semantic", "hybrid"):
            for i in range(args.queries):
                started = time.perf_counter()
                store.search(QUERIES[i % len(QUERIES)], mode=mode)
                latency.setdefault(mode, []).append((time.perf_counter() - started) * 1000)
        vectors.forget(url)

    backend = "PostgreSQL" if args.postgres else "SQLite"
    print(f"{backend}, {written:,} chunks embedded by {embedder.info.key}")
    print(f"model alone: {model_rate:,.0f} chunks/s; embedding step (embed + write): {step_rate:,.0f} chunks/s")
    if growth:
        what = "chunk_embeddings table (with its indexes) holds" if args.postgres else "SQLite file grew"
        print(f"{what} {growth / 1e6:.1f} MB: {growth / written * 100_000 / 1e6:.0f} MB per 100k chunks")
    print(f"first semantic query (reads the vectors into memory): {cold_ms:.0f} ms")
    rows = [(mode, f"{percentiles(s)[0]:.1f}", f"{percentiles(s)[1]:.1f}") for mode, s in latency.items()]
    print_table(("mode", "p50 ms", "p95 ms"), rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
