"""Chunk embeddings stored on SQLite and PostgreSQL, and semantic and hybrid search over them."""

from __future__ import annotations

import os

import numpy as np
import pytest

from background_tasks.analysis.embeddings import load_embedder
from background_tasks.analysis.embeddings_index import embed_chunks
from background_tasks.errors import InvalidQuery
from background_tasks.processing.chunking import chunk_text, normalize_text
from background_tasks.storage import vectors
from background_tasks.storage.store import DocumentStore
from tests import db_fixtures
from tests.support import midas_cli
from tests.test_store import sha

database_url = db_fixtures.database_url  # the SQLite + PostgreSQL fixture

DOCS = {
    "invoice": "The invoice must be paid within thirty days of receipt. Late payment incurs a fee of five percent.",
    "volcano": "Volcanic eruptions shaped the island mountains over millions of years, layer upon layer of rock.",
    "recipe": "Mix flour, sugar and eggs, then bake the cake in the oven for forty minutes until golden.",
    "lighthouse": " ".join(
        f"Night {i}: the lighthouse keeper climbed the tower to light the lamp for passing ships." for i in range(12)
    ),
}


@pytest.fixture(scope="module")
def embedder():
    return load_embedder()


def add(store: DocumentStore, label: str, text: str, size: int = 200) -> int:
    claim = store.claim(sha(label), f"/docs/{label}.txt", "txt", "text/plain", len(text), task_id=f"t-{label}")
    body = normalize_text(text)
    store.record_success(claim.document_id, {"title": label}, chunk_text(body, size=size, overlap=40), len(body))
    return claim.document_id


@pytest.fixture
def corpus(database_url, embedder):
    store = DocumentStore(database_url, embedder=embedder)
    store.create_schema()
    ids = {label: add(store, label, text) for label, text in DOCS.items()}
    for document_id in ids.values():
        embed_chunks(database_url, document_id, embedder, batch=3)  # several batches for the long one
    yield store, ids
    vectors.forget(database_url)


def test_every_chunk_is_embedded_once_and_the_document_says_by_what(corpus, embedder) -> None:
    store, ids = corpus
    counts = vectors.counts(store.url)
    assert counts["by_model"] == {embedder.info.key: counts["chunks"]} and counts["chunks"] > len(DOCS)
    assert vectors.documents_to_embed(store.url, embedder.info.key) == []
    assert embed_chunks(store.url, ids["invoice"], embedder) == 0  # nothing left to do: idempotent
    meta = store.get_document(ids["invoice"])["metadata"]
    assert meta["title"] == "invoice"
    assert meta["embedding"] == {
        "model": embedder.info.name,
        "version": embedder.info.version,
        "dim": 256,
        "key": embedder.info.key,
    }
    stored = vectors.matrix(store.url, embedder.info.key, 256)
    assert stored.vectors.shape == (counts["chunks"], 256)
    first = store.get_chunks(ids["invoice"])[0]["text"]
    row = int(np.flatnonzero(stored.document_ids == ids["invoice"])[0])
    assert np.allclose(stored.vectors[row], embedder.embed([first])[0], atol=1e-6)


def test_recording_a_document_again_drops_its_embeddings(corpus, embedder) -> None:
    store, ids = corpus
    body = normalize_text("A new text about a volcano erupting.")
    store.record_success(ids["volcano"], {}, chunk_text(body, 200, 40), len(body))
    assert vectors.documents_to_embed(store.url, embedder.info.key) == [ids["volcano"]]
    assert embed_chunks(store.url, ids["volcano"], embedder) == 1
    assert vectors.documents_to_embed(store.url, embedder.info.key) == []


def test_other_words_found_by_meaning_not_by_keyword(corpus) -> None:
    store, ids = corpus
    query = "when is the bill due"
    assert store.search(query, mode="keyword") == []
    semantic = store.search(query, mode="semantic")
    assert semantic and semantic[0].document_id == ids["invoice"]
    assert store.search(query, mode="hybrid")[0].document_id == ids["invoice"]
    assert store.search("baking a dessert", mode="hybrid")[0].document_id == ids["recipe"]
    assert store.search("sailors guided by a beacon", mode="semantic")[0].document_id == ids["lighthouse"]
    assert store.search("when is the bill due -invoice", mode="semantic") == []  # exclusions hold here too
    assert store.search("baking a dessert", mode="semantic", file_type="pdf") == []


def test_hybrid_groups_one_document_and_exact_phrase_wins(corpus) -> None:
    store, ids = corpus
    chunks = store.search("lighthouse keeper", mode="keyword", limit=50, group=False)
    assert len({h.chunk_index for h in chunks}) > 5  # many chunks match, more than a search fetches of one
    (keyword,) = store.search("lighthouse keeper", mode="keyword")
    assert keyword.document_id == ids["lighthouse"] and keyword.more == len(chunks) - 1  # counted, not fetched
    grouped = store.search("lighthouse keeper", mode="hybrid")
    assert [h.document_id for h in grouped].count(ids["lighthouse"]) == 1
    top = grouped[0]
    assert top.document_id == ids["lighthouse"] and top.more >= len(chunks) - 1
    assert "**lighthouse**" in top.snippet.lower()

    # a quoted phrase: the document that has it first, whatever the vectors think
    quoted = store.search('"late payment"', mode="hybrid")
    assert quoted[0].document_id == ids["invoice"]
    # the whole query verbatim in a chunk ranks it first too
    verbatim = store.search("layer upon layer of rock", mode="hybrid")
    assert verbatim[0].document_id == ids["volcano"]


def test_vectors_of_another_model_never_join_a_ranking(corpus, embedder) -> None:
    store, ids = corpus
    query_vector = embedder.embed(["recipe for a cake"])[0]
    recipe_chunk = vectors.chunks_to_embed(store.url, ids["recipe"], "other-model@1")[0][0]
    # another model's vector identical to the query: it would win any ranking it took part in
    vectors.save(store.url, ids["recipe"], "other-model@1", 256, [(recipe_chunk, vectors.to_bytes(query_vector))])
    assert vectors.counts(store.url)["by_model"].get("other-model@1") == 1
    hits = store.search("recipe for a cake", mode="semantic", group=False)
    assert all(h.score < 0.999 for h in hits)
    assert vectors.drop_other_models(store.url, embedder.info.key) == 1
    assert "other-model@1" not in vectors.counts(store.url)["by_model"]


@pytest.mark.parametrize("mode", ["semantic", "hybrid"])
def test_bad_queries_get_an_answer_not_a_traceback(corpus, mode) -> None:
    store, _ = corpus
    for query in ("", "   ", "🙂🚀", "the of and a", "asdkjh qwzx", "ᚠᛇᚻ᛫ᛒᛦᚦ", '"', "-", "or"):
        assert isinstance(store.search(query, mode=mode), list), query
    assert store.search("", mode=mode) == [] and store.search("🙂🚀", mode=mode) == []
    with pytest.raises(InvalidQuery, match="characters"):
        store.search("word " * 2000, mode=mode)
    with pytest.raises(InvalidQuery, match="mode"):
        store.search("cake", mode="fuzzy")


def test_keyword_mode_unchanged_and_without_embeddings_hybrid_is_keyword(database_url) -> None:
    class NoVectors:
        info = load_embedder().info

        def embed(self, texts):
            return np.zeros((len(texts), 256), np.float32)

    store = DocumentStore(database_url, embedder=NoVectors())
    store.create_schema()
    add(store, "recipe", DOCS["recipe"])
    keyword = store.search("cake")
    assert keyword and keyword == store.search("cake", mode="keyword")
    hybrid = store.search("cake", mode="hybrid", group=False)
    assert [(h.document_id, h.chunk_index, h.score) for h in hybrid] == [
        (h.document_id, h.chunk_index, h.score) for h in keyword
    ]
    assert store.search("cake", mode="semantic") == []
    vectors.forget(database_url)


def test_cli_rebuilds_embeddings_and_searches_by_mode(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'db' / 'midas.sqlite3'}"
    store = DocumentStore(url)
    store.create_schema()
    for label, text in DOCS.items():
        add(store, label, text)
    env = {
        **os.environ,
        "MIDAS_DATABASE_URL": url,
        "MIDAS_DATA_DIR": str(tmp_path / "data"),
        "MIDAS_ENV_FILE": os.devnull,
    }

    def run(*args: str) -> str:
        done = midas_cli(env, *args)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        return done.stdout

    chunks = vectors.counts(url)["chunks"]
    assert f": 0 of {chunks} chunks embedded, {len(DOCS)} document(s) to do" in run("embeddings", "status")
    assert "No matches." in run("search", "when is the bill due")  # nothing embedded yet: keyword only
    assert f"{chunks} chunk(s) of {len(DOCS)} document(s) embedded" in run("embeddings", "rebuild", "--here")
    assert f": {chunks} of {chunks} chunks embedded, 0 document(s) to do" in run("embeddings", "status")
    assert run("search", "when is the bill due").startswith("1. /docs/invoice.txt")
    assert "No matches." in run("search", "when is the bill due", "--mode", "keyword")
    lighthouse = run("search", "lighthouse keeper", "--mode", "hybrid")
    assert lighthouse.count("/docs/lighthouse.txt") == 1 and "more passages in it" in lighthouse
    vectors.forget(url)


def test_dashboard_search_box_by_mode(corpus) -> None:
    from background_tasks.ops.dashboard.documents import search_documents

    store, ids = corpus
    # the dashboard opens its own store, which embeds queries with the configured (built-in) model
    assert DocumentStore(store.url).query_embedder().info.key == store.query_embedder().info.key
    found = search_documents(store.url, "when is the bill due", mode="semantic")
    assert found[0]["document_id"] == ids["invoice"] and found[0]["name"] == "invoice.txt"
    assert search_documents(store.url, "when is the bill due", mode="keyword") == []
    hybrid = search_documents(store.url, "lighthouse keeper")
    assert hybrid[0]["more"] > 0 and "<mark>lighthouse</mark>" in hybrid[0]["snippet_html"].lower()
