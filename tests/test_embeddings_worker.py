"""The embedding follow-up through real workers: processed on the documents queue, embedded on the analysis queue."""

from __future__ import annotations

from background_tasks import keys
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
        + "Late payment incurs a fee of five percent per month. " * 40,
        encoding="utf-8",
    )
    processed = stack.send(keys.PROCESS_DOCUMENT_FILE, str(path)).get(timeout=120)
    assert processed["status"] == "success" and processed["chunks_created"] > 1
    document_id = processed["document_id"]

    def embedded() -> dict | None:
        meta = DocumentStore(url).get_document(document_id)["metadata"]
        return meta.get("embedding")

    noted = wait_until(embedded, timeout=90, interval=0.3, what="the document's embedding")
    counts = vectors.counts(url)
    assert counts["by_model"] == {noted["key"]: processed["chunks_created"]} == {noted["key"]: counts["chunks"]}
    assert noted["dim"] == 256 and noted["model"] == "wordllama-l2-supercat-256"
    assert f"{keys.EMBED_DOCUMENT}[" in analyst.log_text()

    store = DocumentStore(url)
    assert store.search("when is the bill due", mode="keyword") == []
    hits = store.search("when is the bill due", mode="hybrid")
    assert [h.document_id for h in hits] == [document_id] and hits[0].path == str(path)
    vectors.forget(url)
