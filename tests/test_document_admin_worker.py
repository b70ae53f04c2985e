"""Delete, process again and the original, end to end: a real worker on a private Redis, the
command line as a user runs it, the dashboard's document view, and a real object store."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select

from background_tasks import keys
from background_tasks.ops.dashboard.actions import save_upload
from background_tasks.processing import pipeline
from background_tasks.processing.manage import delete_document, open_original, reprocess_document
from background_tasks.sources.s3.staging import stage, staged_copies
from background_tasks.storage.db import read_scope
from background_tasks.storage.models import ChunkEmbeddingRow, ChunkRow
from background_tasks.storage.store import DocumentStore
from tests.db_fixtures import throwaway_postgres
from tests.s3_server import s3_server  # noqa: F401  (the module's fixture)
from tests.support import midas_cli, wait_until
from tests.test_dashboard import assert_no_traceback, page, visible_text
from tests.test_document_admin import fingerprint

#: real workers, servers and the command line: deselected by -m "not integration"
pytestmark = pytest.mark.integration

TERMS = (
    "Payment terms. The invoice must be paid within thirty days of receipt.\n\n"
    + "Late payment incurs a fee of five percent per month. " * 60
)


def chunk_ids(url: str, document_id: int) -> set[int]:
    with read_scope(url) as s:
        return set(s.execute(select(ChunkRow.id).where(ChunkRow.document_id == document_id)).scalars())


def embedded_chunk_ids(url: str, document_id: int) -> set[int]:
    with read_scope(url) as s:
        return set(
            s.execute(select(ChunkEmbeddingRow.chunk_id).where(ChunkEmbeddingRow.document_id == document_id)).scalars()
        )


def midas(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The command line exactly as a user runs it (``python -m background_tasks`` is ``midas``)."""
    return midas_cli(env, *args, timeout=180)


def test_reprocess_on_a_real_worker_replaces_the_result_and_the_cli_deletes_it(isolated_stack, tmp_path) -> None:
    watch = tmp_path / "watch"
    watch.mkdir()
    stack = isolated_stack(MIDAS_WATCH_DIRS=str(watch))
    stack.start_worker(concurrency=1)
    settings, url = stack.settings, stack.settings.database_url_resolved
    store = DocumentStore(url)
    path = watch / "terms.txt"
    path.write_text(TERMS, encoding="utf-8")
    before = fingerprint(path)
    first = stack.send(keys.PROCESS_DOCUMENT_FILE, str(path)).get(timeout=120)
    assert first["status"] == "success" and first["chunks_created"] > 1, first
    document_id = first["document_id"]
    old_chunks = chunk_ids(url, document_id)
    wait_until(lambda: embedded_chunk_ids(url, document_id) == old_chunks, 90, 0.3, "the first embeddings")
    # sent again the ordinary way, known content is a duplicate and nothing changes
    assert stack.send(keys.PROCESS_DOCUMENT_FILE, str(path)).get(timeout=120)["status"] == "duplicate"

    task_id = reprocess_document(settings, document_id)  # no app given: one is made for the stack's broker
    again = stack.app.AsyncResult(task_id).get(timeout=120)

    assert again["status"] == "success" and again["document_id"] == document_id, again
    assert again["chunks_created"] == first["chunks_created"]
    doc = store.get_document(document_id)
    assert store.count_documents() == 1 and doc["attempts"] == 2 and doc["task_id"] == task_id
    new_chunks = chunk_ids(url, document_id)
    assert len(new_chunks) == first["chunks_created"] and not new_chunks & old_chunks  # fresh rows
    wait_until(lambda: embedded_chunk_ids(url, document_id) == new_chunks, 90, 0.3, "the new run's embeddings")
    assert {h.document_id for h in store.search("invoice thirty days", mode="keyword")} == {document_id}
    assert fingerprint(path) == before

    # the same through the command line, then the original, then delete
    ran = midas(stack.env, "documents", "reprocess", str(document_id), "--wait", "120")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert f"document {document_id} sent to be processed again (task " in ran.stdout
    assert f"success: document {document_id}, {first['chunks_created']} chunks" in ran.stdout
    assert store.get_document(document_id)["attempts"] == 3 and store.count_documents() == 1

    copy = tmp_path / "copy.txt"
    got = midas(stack.env, "documents", "original", str(document_id), "-o", str(copy))
    assert got.returncode == 0, got.stderr
    assert copy.read_bytes() == path.read_bytes() and "(text/plain)" in got.stdout
    for target in (copy, path):  # never over an existing file, least of all the original itself
        refused = midas(stack.env, "documents", "original", str(document_id), "-o", str(target))
        assert refused.returncode == 1 and "exists; choose another name" in refused.stderr
    assert fingerprint(path) == before and copy.read_bytes() == path.read_bytes()

    deleted = midas(stack.env, "documents", "delete", str(document_id))
    assert deleted.returncode == 0, deleted.stderr
    assert f"document {document_id} deleted (success, {path})" in deleted.stdout
    assert f"left your file alone: {path}" in deleted.stdout
    assert store.count_documents() == 0 and store.search("invoice", mode="keyword") == []
    assert fingerprint(path) == before
    gone = midas(stack.env, "documents", "delete", str(document_id))
    assert gone.returncode == 1 and f"no document {document_id}" in gone.stderr and "Traceback" not in gone.stderr


def test_a_document_rejected_before_it_was_read_is_sent_again_as_one_new_row(isolated_stack, tmp_path) -> None:
    watch = tmp_path / "watch"
    watch.mkdir()
    stack = isolated_stack(MIDAS_WATCH_DIRS=str(watch))
    stack.start_worker(queues=["documents"], concurrency=1)
    store = DocumentStore(stack.settings.database_url_resolved)
    later = watch / "later.txt"
    missing = stack.send(keys.PROCESS_DOCUMENT_FILE, str(later)).get(timeout=120)
    assert missing["status"] == "rejected" and missing["error_type"] == "not_found"
    later.write_text("It arrived after all: the delivery note for order 5512.", encoding="utf-8")

    result = stack.app.AsyncResult(reprocess_document(stack.settings, missing["document_id"], app=stack.app))

    done = result.get(timeout=120)
    assert done["status"] == "success" and done["chunks_created"] == 1
    assert store.count_documents() == 1 and store.get_document(missing["document_id"]) is None
    assert [d["status"] for d in store.list_documents()] == ["success"]


def test_the_document_view_processes_again_deletes_and_hands_out_the_original(isolated_stack, tmp_path) -> None:
    (tmp_path / "watch").mkdir()
    stack = isolated_stack(MIDAS_WATCH_DIRS=str(tmp_path / "watch"), MIDAS_LOG_DIR=str(tmp_path / "logs"))
    stack.start_worker(queues=["documents"], concurrency=1)
    settings = stack.settings
    store = DocumentStore(settings.database_url_resolved)
    body = TERMS.encode()
    upload = save_upload(settings, "terms.txt", body)
    first = stack.send(keys.PROCESS_DOCUMENT_FILE, str(upload)).get(timeout=120)
    document_id = first["document_id"]

    at = page(settings, "Documents", timeout=60)
    at.number_input(key="doc_id").set_value(document_id).run()
    assert_no_traceback(at)
    assert at.button(key="doc_delete").disabled  # not before the confirmation is ticked

    at.button(key="doc_reprocess").click().run()
    said = [s.value for s in at.success if "sent to be processed again" in s.value]
    assert said, visible_text(at)
    task_id = re.search(r"task `([0-9a-f-]+)`", said[0]).group(1)
    assert stack.app.AsyncResult(task_id).get(timeout=120)["status"] == "success"
    assert store.get_document(document_id)["attempts"] == 2

    at.button(key="doc_original_get").click().run()
    assert_no_traceback(at)
    held_id, data, name, mime = at.session_state["doc_original"]
    assert (held_id, data, name, mime) == (document_id, body, "terms.txt", "text/plain")

    at.checkbox(key="doc_delete_sure").check().run()
    at.button(key="doc_delete").click().run()
    assert_no_traceback(at)
    assert any(f"Document {document_id} deleted" in s.value for s in at.success), visible_text(at)
    assert f"No document {document_id}." in visible_text(at)
    assert store.count_documents() == 0 and not upload.exists()
    assert "doc_original" not in at.session_state


@pytest.mark.postgres
def test_with_an_object_store_the_staged_copy_is_read_and_removed_never_the_users_file(
    s3_server,  # noqa: F811
    settings_for,
    monkeypatch,
    docs_dir: Path,
) -> None:
    s3_server.make_bucket("midas-admin")
    for name, value in s3_server.aws_env().items():
        monkeypatch.setenv(name, value)
    env = {k: v for k, v in s3_server.env().items() if k.startswith("MIDAS_")}
    with throwaway_postgres() as url:  # an object store is for several hosts, which cannot share a SQLite file
        settings = settings_for(**env, MIDAS_OBJECT_STORE="s3://midas-admin/content", MIDAS_DATABASE_URL=url)
        _object_store_round_trip(settings, docs_dir)


def _object_store_round_trip(settings, docs_dir: Path) -> None:
    store = DocumentStore(settings.database_url_resolved)
    store.create_schema()
    local = docs_dir / "pier.txt"
    local.write_text("Inspection report of the east pier, signed off in June.\n" * 30, encoding="utf-8")
    before = fingerprint(local)
    staged = stage(local, settings)
    result = pipeline.process_file(staged.target, settings, store).as_dict()
    assert result["status"] == "success" and result["path"] == staged.target
    document_id = result["document_id"]

    with open_original(settings, document_id) as (handle, name, mime):
        assert handle.read() == local.read_bytes() and name == "pier.txt" and mime == "text/plain"
    report = delete_document(settings, document_id)

    assert report.working_copies_removed == (staged.target,) and report.originals_kept == ()
    assert staged_copies(settings, staged.sha256) == [] and store.count_documents() == 0
    assert fingerprint(local) == before
