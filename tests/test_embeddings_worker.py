"""The embedding follow-up through real workers: a document is processed on the documents queue and embedded on
the analysis queue, or as it is recorded when it is small."""

from __future__ import annotations

from background_tasks import keys
from background_tasks.processing.finish import INLINE_EMBED_MAX_CHUNKS
from background_tasks.storage import vectors
from background_tasks.storage.store import DocumentStore
from tests.support import wait_until


def test_a_processed_document_is_embedded_on_the_analysis_queue(isolated_stack, docs_dir) -> None:
    stack = isolated_stack()
    stack.start_worker(queues=["documents"], concurrency=1, name="docs-only")
    analyst = stack.start_worker(queues=["analysis"], concurrency=1, name="analysis-only")
    url = stack.settings.database_url_resolved
    path = docs_dir / "terms.txt"
    path.write_text(
        "Payment terms. The invoice must be paid within thirty days of receipt.\n\n"
        + "Late payment incurs a fee of five percent per month. " * 400,
        encoding="utf-8",
    )
    processed = stack.send(keys.PROCESS_DOCUMENT_FILE, str(path)).get(timeout=120)
    assert processed["status"] == "success" and processed["chunks_created"] > INLINE_EMBED_MAX_CHUNKS
    document_id = processed["document_id"]

    def embedded() -> dict | None:
        meta = DocumentStore(url).get_document(document_id)["metadata"]
        return meta.get("embedding")

    noted = wait_until(embedded, timeout=90, interval=0.3, what="the document's embedding")
    counts = vectors.counts(url)
    assert counts["by_model"] == {noted["key"]: processed["chunks_created"]} == {noted["key"]: counts["chunks"]}
    assert noted["dim"] == 256 and noted["model"] == "wordllama-l2-supercat-256"
    assert (
        keys.embedding_task_id(document_id, f"{processed['sha256']}:{processed['chunks_created']}")
        in analyst.log_text()
    )

    store = DocumentStore(url)
    assert store.search("when is the bill due", mode="keyword") == []
    hits = store.search("when is the bill due", mode="hybrid")
    assert [h.document_id for h in hits] == [document_id] and hits[0].path == str(path)

    # a small document is embedded as it is recorded: no task of its own, embedded when its task returns
    small = docs_dir / "small.txt"
    small.write_text("The delivery of forty pallets arrives on Tuesday morning at the harbour.", encoding="utf-8")
    done = stack.send(keys.PROCESS_DOCUMENT_FILE, str(small)).get(timeout=120)
    assert done["status"] == "success" and 0 < done["chunks_created"] <= INLINE_EMBED_MAX_CHUNKS
    assert DocumentStore(url).get_document(done["document_id"])["metadata"]["embedding"]["key"] == noted["key"]
    assert vectors.counts(url)["chunks"] == processed["chunks_created"] + done["chunks_created"]
    own_task = keys.embedding_task_id(done["document_id"], f"{done['sha256']}:{done['chunks_created']}")
    assert own_task not in analyst.log_text(), "no embedding task of its own"
    vectors.forget(url)
