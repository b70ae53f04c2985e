"""Deleting a document, processing it again and reading its original back, as plain functions
(``processing.manage``) on a real store: SQLite and PostgreSQL, real files through the real pipeline,
real embeddings. The user's file is hashed before and after: it is never touched."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from background_tasks.analysis.embeddings_index import embed_document
from background_tasks.errors import DocumentBusy, DocumentNotFound, InvalidArgument, OriginalUnavailable
from background_tasks.ops.dashboard.actions import save_upload
from background_tasks.processing import pipeline
from background_tasks.processing.manage import delete_document, open_original, reprocess_document
from background_tasks.storage import analyses, ocr_pages, vectors
from background_tasks.storage.db import is_sqlite, read_scope
from background_tasks.storage.documents import CHUNK_WRITE_BATCH
from background_tasks.storage.models import (
    AnalysisRow,
    ChunkEmbeddingRow,
    ChunkRow,
    DocumentPathRow,
    OcrPageRow,
)
from background_tasks.storage.store import DocumentStore
from tests.db_fixtures import database_url  # noqa: F401  (the sqlite/postgres fixture)

OSPREY = "The osprey report counts forty-two nesting pairs along the estuary this spring.\n\n"
HERON = "The heron survey found the colony by the weir had doubled since last year.\n\n"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fingerprint(path: Path) -> tuple[str, int, int]:
    """What must not change about a user's file: content, size, modification time."""
    st = path.stat()
    return sha256_of(path), st.st_size, st.st_mtime_ns


@pytest.fixture
def watch(tmp_path: Path) -> Path:
    folder = tmp_path / "watch"
    folder.mkdir()
    return folder


@pytest.fixture
def admin_settings(settings_for, database_url, watch):  # noqa: F811
    return settings_for(MIDAS_DATABASE_URL=database_url, MIDAS_WATCH_DIRS=str(watch))


@pytest.fixture
def admin_store(admin_settings) -> DocumentStore:
    store = DocumentStore(admin_settings.database_url_resolved)
    store.create_schema()
    return store


def process(path: Path, settings, store: DocumentStore) -> dict:
    result = pipeline.process_file(str(path), settings, store).as_dict()
    assert result["status"] == "success", result
    return result


def write(path: Path, content: str) -> Path:
    path.write_text(content, encoding="utf-8")
    return path


def rows_of(url: str, model, document_id: int) -> int:
    with read_scope(url) as s:
        return int(s.execute(select(func.count()).select_from(model).where(model.document_id == document_id)).scalar())


def test_delete_removes_every_row_of_one_document_and_never_the_users_file(
    admin_settings, admin_store, watch: Path
) -> None:
    settings, store = admin_settings, admin_store
    url = store.url
    original = watch / "osprey.txt"
    original.write_text(OSPREY * 40, encoding="utf-8")
    other = watch / "heron.txt"
    other.write_text(HERON * 40, encoding="utf-8")
    osprey, heron = process(original, settings, store), process(other, settings, store)
    target, kept = osprey["document_id"], heron["document_id"]
    assert osprey["chunks_created"] > 1
    for document_id in (target, kept):
        embed_document(document_id, settings, url)  # small documents are embedded already, as they are recorded
    embedded = vectors.counts(url)
    assert sum(embedded["by_model"].values()) == embedded["chunks"] > 2
    ocr_pages.save(url, target, [{"page": 1, "text": "osprey", "confidence": 91.0, "words": 1, "seconds": 0.1}])
    analyses.save(url, osprey["sha256"], "text", "success", {"words": 9}, target)
    analyses.save(url, osprey["sha256"], "data", "success", {"rows": 0}, None)  # linked by content only
    analyses.save(url, heron["sha256"], "text", "success", {"words": 9}, kept)
    before = fingerprint(original)
    heron_chunks = store.get_chunks(kept)

    report = delete_document(settings, target)

    assert report.document_id == target and report.status == "success" and report.sha256 == osprey["sha256"]
    assert report.path == str(original) and report.originals_kept == (str(original),)
    assert report.chunks_deleted == osprey["chunks_created"] == report.embeddings_deleted
    assert (report.ocr_pages_deleted, report.analyses_deleted, report.paths_forgotten) == (1, 2, 1)
    assert report.working_copies_removed == ()  # a watched folder's file is the user's
    assert report.as_dict()["originals_kept"] == [str(original)]
    assert fingerprint(original) == before
    assert store.get_document(target) is None
    for model in (ChunkRow, ChunkEmbeddingRow, OcrPageRow, AnalysisRow, DocumentPathRow):
        assert rows_of(url, model, target) == 0, model.__tablename__
    with read_scope(url) as s:
        assert s.execute(select(func.count()).select_from(AnalysisRow).where(
            AnalysisRow.sha256 == osprey["sha256"])).scalar() == 0  # fmt: skip
    assert store.search("osprey", mode="keyword") == [] and store.search("estuary nesting", mode="keyword") == []
    if is_sqlite(url):  # the full-text index itself forgot the chunks, not only the join
        with read_scope(url) as s:
            assert s.execute(text("SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH 'osprey'")).scalar() == 0
            assert s.execute(text("SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH 'heron'")).scalar() > 0
    # the other document is whole: chunks, search, embeddings, analysis
    assert store.get_chunks(kept) == heron_chunks
    hits = store.search("heron colony", mode="keyword")
    assert hits and {h.document_id for h in hits} == {kept}
    assert rows_of(url, ChunkEmbeddingRow, kept) == heron["chunks_created"]
    assert sum(vectors.counts(url)["by_model"].values()) == heron["chunks_created"]
    assert analyses.for_document(url, kept, ("text",))["text"] == {"words": 9}
    assert store.count_documents() == 1

    with pytest.raises(DocumentNotFound, match=f"no document {target}"):
        delete_document(settings, target)
    with pytest.raises(DocumentNotFound):
        reprocess_document(settings, target)
    with pytest.raises(DocumentNotFound), open_original(settings, target):
        pass


def test_delete_removes_midas_own_inbox_copy_and_a_long_document_in_batches(admin_settings, admin_store) -> None:
    settings, store = admin_settings.replace(chunk_size=200, chunk_overlap=20), admin_store
    upload = save_upload(settings, "long notes.txt", (OSPREY * 2600).encode())
    result = process(upload, settings, store)
    assert result["chunks_created"] > 2 * CHUNK_WRITE_BATCH  # deleted over several transactions
    assert embed_document(result["document_id"], settings, store.url).embedded == result["chunks_created"]

    report = delete_document(settings, result["document_id"])

    assert report.chunks_deleted == result["chunks_created"] == report.embeddings_deleted
    assert report.working_copies_removed == (str(upload),) and report.originals_kept == ()
    assert not upload.exists() and list(settings.inbox_dir.iterdir()) == []
    assert store.stats()["chunks"] == 0 and vectors.counts(store.url)["by_model"] == {}


def test_an_inbox_file_that_holds_other_content_now_is_not_removed(admin_settings, admin_store) -> None:
    settings, store = admin_settings, admin_store
    upload = save_upload(settings, "notes.txt", OSPREY.encode())
    first = process(upload, settings, store)
    upload.write_text(HERON, encoding="utf-8")  # the same name now holds another document's content
    second = process(upload, settings, store)
    assert second["document_id"] != first["document_id"]

    report = delete_document(settings, first["document_id"])

    assert report.working_copies_removed == () and upload.read_text(encoding="utf-8") == HERON
    assert store.get_document(second["document_id"])["status"] == "success"
    assert delete_document(settings, second["document_id"]).working_copies_removed == (str(upload),)


def test_a_document_being_processed_is_left_to_its_task(settings, store) -> None:
    claim = store.claim("a" * 64, "/somewhere/busy.txt", "txt", "text/plain", 10, task_id="running-task")
    assert claim.state == "new"
    with pytest.raises(DocumentBusy, match="being processed right now; delete it"):
        delete_document(settings, claim.document_id)
    with pytest.raises(DocumentBusy, match="process it when"):
        reprocess_document(settings, claim.document_id)
    store.record_failure("/somewhere/busy.txt", "failed", "corrupt", "bad", document_id=claim.document_id)
    assert delete_document(settings, claim.document_id).status == "failed"


@pytest.mark.parametrize("bad", [0, -3, True, "7"])
def test_an_id_that_cannot_be_one_is_not_found(settings, store, bad) -> None:
    with pytest.raises(DocumentNotFound):
        delete_document(settings, bad)


def test_the_forced_claim_takes_over_known_content_and_drops_its_old_result(
    admin_settings, admin_store, watch: Path
) -> None:
    settings, store = admin_settings, admin_store
    path = write(watch / "osprey.txt", OSPREY * 20)
    done = pipeline.process_file(str(path), settings, store, task_id="first-run").as_dict()
    document_id, sha = done["document_id"], done["sha256"]
    embed_document(document_id, settings, store.url)
    assert store.claim(sha, str(path), task_id="other").state == "duplicate"  # as before: known content

    assert store.claim(sha, str(path), task_id="first-run", force=True).state == "duplicate"  # its own redelivery
    claim = store.claim(sha, str(path), task_id="again", force=True)

    assert (claim.state, claim.document_id, claim.attempts) == ("resume", document_id, 2)
    doc = store.get_document(document_id)
    assert doc["status"] == "processing" and doc["chunk_count"] == 0 and store.get_chunks(document_id) == []
    assert rows_of(store.url, ChunkEmbeddingRow, document_id) == 0 and store.search("osprey", mode="keyword") == []


def test_reprocess_in_the_pipeline_replaces_the_result_on_the_same_row(
    admin_settings, admin_store, watch: Path
) -> None:
    settings, store = admin_settings, admin_store
    path = write(watch / "osprey.txt", OSPREY * 20)
    first = process(path, settings, store)
    old_ids = {c["chunk_index"]: c for c in store.get_chunks(first["document_id"])}
    with read_scope(store.url) as s:
        old_rows = set(s.execute(select(ChunkRow.id).where(ChunkRow.document_id == first["document_id"])).scalars())

    again = pipeline.process_file(str(path), settings, store, task_id="again", reprocess=first["sha256"]).as_dict()

    assert again["status"] == "success" and again["document_id"] == first["document_id"]
    assert again["chunks_created"] == first["chunks_created"] and store.count_documents() == 1
    with read_scope(store.url) as s:
        new_rows = set(s.execute(select(ChunkRow.id).where(ChunkRow.document_id == first["document_id"])).scalars())
    assert new_rows and not new_rows & old_rows  # fresh chunks, not the old ones kept
    assert {c["chunk_index"]: c for c in store.get_chunks(first["document_id"])} == old_ids  # same text
    assert store.get_document(first["document_id"])["attempts"] == 2

    path.write_text(HERON, encoding="utf-8")
    changed = pipeline.process_file(str(path), settings, store, task_id="late", reprocess=first["sha256"]).as_dict()
    assert changed["status"] == "rejected" and changed["error_type"] == "content_changed", changed
    assert "nothing was changed" in changed["error"] and store.count_documents() == 1
    assert store.get_document(first["document_id"])["status"] == "success"

    bad = pipeline.process_file(str(path), settings, store, reprocess="not-a-hash").as_dict()
    assert bad["status"] == "rejected" and bad["error_type"] == InvalidArgument.error_type


def test_the_original_comes_from_midas_copy_or_from_the_users_unchanged_file(settings, store, docs_dir) -> None:
    body = ("Minutes of the harbour board. " * 200).encode()
    upload = save_upload(settings, "minutes.txt", body)
    kept = process(upload, settings, store)
    with open_original(settings, kept["document_id"]) as (handle, name, mime):
        assert handle.read() == body and name == "minutes.txt" and mime == "text/plain"
        copies = list(settings.work_dir.iterdir())
        assert len(copies) == 1  # read from a private working copy...
    assert list(settings.work_dir.iterdir()) == []  # ...removed afterwards

    user_file = docs_dir / "report.txt"
    user_file.write_text(HERON * 5, encoding="utf-8")
    before = fingerprint(user_file)
    theirs = process(user_file, settings, store)
    with open_original(settings, theirs["document_id"]) as (handle, name, _mime):
        assert handle.read() == user_file.read_bytes() and name == "report.txt"
    assert fingerprint(user_file) == before

    user_file.write_text("Something else entirely.", encoding="utf-8")
    with (
        pytest.raises(OriginalUnavailable, match="holds other content now"),
        open_original(settings, theirs["document_id"]),
    ):
        pass
    user_file.unlink()
    with pytest.raises(OriginalUnavailable, match="no file holds its content"):
        reprocess_document(settings, theirs["document_id"])

    missing = pipeline.process_file(str(docs_dir / "typo.txt"), settings, store).as_dict()
    assert missing["status"] == "rejected" and missing["error_type"] == "not_found"
    with (
        pytest.raises(OriginalUnavailable, match="before its content was read"),
        open_original(settings, missing["document_id"]),
    ):
        pass
    assert os.listdir(settings.work_dir) == []
