"""Search quality on the shared corpus: recall@5 and MRR of keyword, semantic and hybrid, and near-duplicates.

    python -m bench bench_search [--details]

Processes every file of the shared corpus (``../shared/corpus``) into a fresh SQLite store
with the real pipeline, embeds it with the built-in model, and runs the labelled query set
of ``tests/search_queries.py`` in each mode (documents, one per hit; recall in the first 5,
mean reciprocal rank of the first answer in the first 10). Keyword is the baseline measured
in the same run. Targets (issue 17): hybrid recall@5 at least keyword + 0.15 on the queries
in other words (paraphrase and language), and not below keyword on the exact-term ones.

Then the near-duplicate flag (``storage.related``) against the texts themselves: the cosine of
the document vectors of every pair whose word 3-grams mostly agree (near-identical texts) and
of the closest pairs that mostly differ, and what the flag says of each.

Throughput and latency at 100k chunks: ``python -m bench bench_embeddings``.
"""

from __future__ import annotations

import argparse
import itertools
import re
import statistics
import tempfile
from pathlib import Path

from bench.common import corpus_dir, print_table

TARGET_GAIN = 0.15


def _quality(store, corpus: Path, details: bool) -> bool:
    from tests.search_queries import EXACT, LANGUAGE, OTHER_WORDS, PARAPHRASE, QUERIES, corpus_searcher, run

    search = corpus_searcher(store, corpus)
    search("warm up", "hybrid")  # the first semantic search reads the vectors into memory
    sets = (("paraphrase", (PARAPHRASE,)), ("language", (LANGUAGE,)), ("other words", OTHER_WORDS), ("exact", (EXACT,)))
    scores, latency = {}, {}
    for label, kinds in sets:
        for mode in ("keyword", "semantic", "hybrid"):
            scores[label, mode], ms = run(search, mode, kinds)
            latency.setdefault(mode, []).extend(ms)
    rows = []
    for label, _ in sets:
        base = scores[label, "keyword"]
        row = [label, base.queries]
        for mode in ("keyword", "semantic", "hybrid"):
            s = scores[label, mode]
            row += [f"{s.recall:.3f}", f"{s.mrr:.3f}"]
        row.append(f"{scores[label, 'hybrid'].recall - base.recall:+.3f}")
        rows.append(row)
    header = ("queries", "n", "kw R@5", "kw MRR", "sem R@5", "sem MRR", "hyb R@5", "hyb MRR", "hyb-kw R@5")
    print_table(header, rows)
    timing = [
        (mode, f"{statistics.median(ms):.1f}", f"{sorted(ms)[round(0.95 * (len(ms) - 1))]:.1f}")
        for mode, ms in latency.items()
    ]
    print()
    print_table(("mode", "p50 ms", "p95 ms"), timing)
    gain = scores["other words", "hybrid"].recall - scores["other words", "keyword"].recall
    exact_ok = scores["exact", "hybrid"].recall >= scores["exact", "keyword"].recall
    print(
        f"\ntarget: hybrid recall@5 >= keyword + {TARGET_GAIN} on queries in other words: {gain:+.3f} "
        f"({'met' if gain >= TARGET_GAIN else 'MISSED'}); not below keyword on exact terms: "
        f"{'met' if exact_ok else 'MISSED'}"
    )
    if details:
        print()
        for labelled in QUERIES:
            ranks = []
            for mode in ("keyword", "semantic", "hybrid"):
                files = search(labelled.query, mode)
                ranks.append(next((str(i) for i, f in enumerate(files, 1) if f in labelled.answers), "-"))
            print(f"{labelled.kind:<10} kw {ranks[0]:>2} sem {ranks[1]:>2} hyb {ranks[2]:>2}  {labelled.query}")
    return gain >= TARGET_GAIN and exact_ok


def _shingles(text: str) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.casefold())
    return {tuple(words[i : i + 3]) for i in range(max(1, len(words) - 2))}


def _near_duplicates(store, embedder, corpus: Path) -> None:
    """The flag against the texts themselves: pairs whose word 3-grams mostly agree are near-identical."""
    from background_tasks.storage import vectors
    from background_tasks.storage.related import LENGTH_RATIO, NEAR_DUPLICATE, near_duplicate
    from tests.search_queries import corpus_file

    matrix = vectors.matrix(store.url, embedder.info.key, embedder.info.dim)
    grams, chars, names = {}, {}, {}
    for j, document_id in enumerate(matrix.documents):
        document = store.get_document(int(document_id))
        grams[j] = _shingles(" ".join(c["text"] for c in store.get_chunks(int(document_id))))
        chars[j] = int(document["text_chars"] or 0)
        names[j] = corpus_file(document["path"], corpus)
    alike, different = [], []
    for a, b in itertools.combinations(range(len(matrix.documents)), 2):
        similarity = float(matrix.document_vectors[a] @ matrix.document_vectors[b])
        overlap = len(grams[a] & grams[b]) / max(1, len(grams[a] | grams[b]))
        pair = (similarity, near_duplicate(similarity, chars[a], chars[b]), overlap, names[a], names[b])
        if overlap >= 0.8:
            alike.append(pair)
        elif overlap < 0.5:
            different.append(pair)
    print(f"\nnear-duplicates: cosine >= {NEAR_DUPLICATE} and lengths within {LENGTH_RATIO:.0%}")
    print(f"  {len(alike)} pairs whose word 3-grams agree at least 80 % (near-identical texts), flagged "
          f"{sum(p[1] for p in alike)}:")  # fmt: skip
    for similarity, flagged, overlap, a, b in sorted(alike):
        print(f"    {similarity:.4f} {'FLAGGED' if flagged else 'not flagged'}  ({overlap:.0%} alike) {a} ~ {b}")
    print(f"  {len(different)} pairs agreeing less than 50 %, the closest (flagged {sum(p[1] for p in different)}):")
    for similarity, flagged, overlap, a, b in sorted(different, reverse=True)[:5]:
        print(f"    {similarity:.4f} {'FLAGGED' if flagged else 'not flagged'}  ({overlap:.0%} alike) {a} ~ {b}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--details", action="store_true", help="each query's rank of its first answer per mode")
    args = parser.parse_args(argv)

    from background_tasks.analysis.embeddings import load_embedder
    from background_tasks.storage import vectors
    from tests.search_queries import build_corpus_store

    corpus = corpus_dir()
    embedder = load_embedder()
    with tempfile.TemporaryDirectory(prefix="midas-bench-search-") as tmp:
        store, seconds = build_corpus_store(Path(tmp), corpus, embedder)
        stats = store.stats()
        print(f"shared corpus: {stats['by_status'].get('success', 0)} documents, {stats['chunks']:,} chunks, "
              f"processed and embedded by {embedder.info.key} in {seconds:.0f} s")  # fmt: skip
        met = _quality(store, corpus, args.details)
        _near_duplicates(store, embedder, corpus)
        vectors.forget(store.url)
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
