"""The document pipeline as plain functions, on real files and a real SQLite store."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from background_tasks.errors import ExtractionTimeout, ExtractorCrashed, FileNotReady
from background_tasks.extraction.isolation import run_isolated
from background_tasks.processing import pipeline
from background_tasks.processing.finish import INLINE_EMBED_MAX_CHUNKS
from background_tasks.settings import PROJECT_ROOT
from background_tasks.storage import vectors

SAMPLES = PROJECT_ROOT / "samples"


def write(folder: Path, name: str, data: bytes | str) -> Path:
    path = folder / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def fingerprint(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return hashlib.sha256(path.read_bytes()).hexdigest(), st.st_size, st.st_mtime_ns


def test_a_text_document_becomes_chunks_and_metadata(settings, store, docs_dir) -> None:
    text = "\n\n".join(f"Paragraph {i}. The quick brown fox jumps over the lazy dog." * 8 for i in range(30))
    path = write(docs_dir, "fox.txt", text)
    before = fingerprint(path)
    result = pipeline.process_file(str(path), settings, store, task_id="t-1")
    assert result.status == "success", result
    assert result.sha256 == hashlib.sha256(text.encode()).hexdigest()
    assert result.chunks_created == len(store.get_chunks(result.document_id)) > 5
    assert result.text_chars > 10_000
    meta = result.metadata
    assert meta["file_name"] == "fox.txt" and meta["extension"] == ".txt" and meta["size_bytes"] == len(text)
    assert meta["mime_type"].startswith("text/plain")
    assert meta["word_count"] >= 30 * 8 * 11 and meta["language"] == "en"
    assert all(len(c["text"]) <= settings.chunk_size for c in store.get_chunks(result.document_id))
    assert fingerprint(path) == before, "the original must never change"
    assert set(result.as_dict()) >= {
        "status", "document_id", "path", "file_type", "sha256", "chunks_created", "pages",
        "text_chars", "metadata", "warnings", "duration_s",
    }  # fmt: skip


def test_same_content_again_is_a_duplicate_and_adds_nothing(settings, store, docs_dir) -> None:
    first = write(docs_dir, "a.md", "# Title\n\nSome unique words: zebra quokka.\n")
    second = write(docs_dir, "copy-of-a.md", first.read_bytes())
    r1 = pipeline.process_file(str(first), settings, store)
    chunks_before = store.get_chunks(r1.document_id)
    r2 = pipeline.process_file(str(second), settings, store)
    assert (r1.status, r2.status) == ("success", "duplicate")
    assert r2.document_id == r1.document_id and r2.chunks_created == 0
    assert store.get_chunks(r1.document_id) == chunks_before
    assert {p["path"] for p in store.get_document(r1.document_id)["paths"]} >= {str(first), str(second)}


def test_a_small_document_is_embedded_in_the_transaction_that_records_it(settings, store, docs_dir) -> None:
    small = pipeline.process_file(
        str(write(docs_dir, "s.txt", "Forty pallets arrive on Tuesday. " * 60)), settings, store
    )
    model = small.metadata["embedding"]
    assert 1 < small.chunks_created <= INLINE_EMBED_MAX_CHUNKS and model["model"] == "wordllama-l2-supercat-256"
    assert store.get_document(small.document_id)["metadata"]["embedding"] == model
    assert vectors.chunks_to_embed(store.url, small.document_id, model["key"]) == []
    large = pipeline.process_file(str(write(docs_dir, "l.txt", "Cranes lift containers. " * 1000)), settings, store)
    assert large.chunks_created > INLINE_EMBED_MAX_CHUNKS and "embedding" not in large.metadata
    assert len(vectors.chunks_to_embed(store.url, large.document_id, model["key"])) == large.chunks_created
    assert vectors.counts(store.url)["by_model"] == {model["key"]: small.chunks_created}


def test_a_redelivered_task_does_not_duplicate_chunks(settings, store, docs_dir) -> None:
    path = write(docs_dir, "r.txt", "Redelivery must not duplicate anything. " * 200)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    # A first delivery claimed the content and died before finishing.
    claim = store.claim(sha, str(path), "txt", "text/plain", path.stat().st_size, "task-1")
    assert claim.state == "new"
    result = pipeline.process_file(str(path), settings, store, task_id="task-1")
    assert result.status == "success" and result.document_id == claim.document_id
    # redelivered once more after it stored its result: it reports that result, adds nothing
    again = pipeline.process_file(str(path), settings, store, task_id="task-1")
    assert (again.status, again.chunks_created) == ("success", result.chunks_created)
    other = pipeline.process_file(str(path), settings, store, task_id="task-2")
    assert (other.status, other.chunks_created) == ("duplicate", 0)
    indexes = [c["chunk_index"] for c in store.get_chunks(claim.document_id)]
    assert indexes == list(range(len(indexes)))


def test_every_sample_is_processed(settings, store) -> None:
    results = {p.name: pipeline.process_file(str(p), settings, store) for p in sorted(SAMPLES.iterdir())}
    statuses = {name: r.status for name, r in results.items()}
    assert set(statuses.values()) == {"success"}, {n: (r.error_type, r.error) for n, r in results.items()}
    assert "revenue" in " ".join(c["text"] for c in store.get_chunks(results["report.pdf"].document_id)).lower()
    assert results["report.pdf"].pages == 1
    html_text = " ".join(c["text"] for c in store.get_chunks(results["page.html"].document_id))
    assert "never indexed" not in html_text and "Welcome" in html_text


@pytest.mark.parametrize(
    ("name", "content", "status", "error_type"),
    [
        ("empty.pdf", b"", "failed", "empty"),
        ("random.pdf", os.urandom(4096), "rejected", "type_mismatch"),
        ("random.docx", os.urandom(4096), "rejected", "type_mismatch"),
        ("truncated.pdf", b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog", "failed", "corrupt"),
    ],
)
def test_bad_files_get_a_clear_recorded_error(settings, store, docs_dir, name, content, status, error_type) -> None:
    path = write(docs_dir, name, content)
    result = pipeline.process_file(str(path), settings, store)
    assert (result.status, result.error_type) == (status, error_type), result.error
    assert result.error
    recorded = store.get_document(result.document_id)
    assert recorded["status"] == status and recorded["error_type"] == error_type


def test_too_large_is_rejected_before_reading(settings_for, store, docs_dir) -> None:
    settings = settings_for(MIDAS_MAX_FILE_MB="1")
    path = docs_dir / "huge.txt"
    with path.open("wb") as handle:  # sparse: 200 MB that were never written
        handle.truncate(200 * 1024 * 1024)
    result = pipeline.process_file(str(path), settings, store)
    assert (result.status, result.error_type) == ("rejected", "too_large")
    assert "MIDAS_MAX_FILE_MB" in result.error
    assert result.sha256 is None  # the content was never read


def test_paths_outside_the_allowed_roots_are_rejected(settings, store, docs_dir, tmp_path) -> None:
    outside = write(tmp_path, "secret.txt", "outside the allowed roots")
    link = docs_dir / "escape.txt"
    link.symlink_to(outside)
    fifo = docs_dir / "pipe.txt"
    os.mkfifo(fifo)
    for path, fragment in [
        (outside, "outside the allowed folders"),
        (link, "outside the allowed folders"),
        (docs_dir, "is a directory"),
        (fifo, "FIFO"),
        (Path("/dev/zero"), "outside"),
    ]:
        result = pipeline.process_file(str(path), settings, store)
        assert result.status == "rejected", path
        assert result.error_type == "path_not_allowed"
        assert fragment in result.error, (path, result.error)
    # A missing file inside the allowed folders is not_found (outside them it stays path_not_allowed).
    missing = pipeline.process_file(str(docs_dir / "missing.txt"), settings, store)
    assert (missing.status, missing.error_type) == ("rejected", "not_found")
    assert "no such file" in missing.error


def test_a_file_still_being_written_is_not_read(settings_for, store, docs_dir) -> None:
    settings = settings_for(MIDAS_STABILITY_SECONDS="1")
    path = write(docs_dir, "growing.txt", "start ")
    stop = threading.Event()

    def keep_writing() -> None:
        while not stop.is_set():
            with path.open("a") as handle:
                handle.write("more ")
            time.sleep(0.05)

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        with pytest.raises(FileNotReady):
            pipeline.process_file(str(path), settings, store)
    finally:
        stop.set()
        writer.join()


def test_no_stability_wait_when_the_caller_vouches_or_midas_wrote_the_file(settings_for, store, docs_dir) -> None:
    settings = settings_for(MIDAS_STABILITY_SECONDS="5")
    settings.inbox_dir.mkdir(parents=True, exist_ok=True)
    fresh = [write(docs_dir, "fresh.txt", "Written a moment ago. " * 5)]
    fresh.append(write(settings.inbox_dir, "uploaded.txt", "An upload MIDAS wrote itself. " * 5))
    fresh.append(write(docs_dir, "waited.txt", "A fresh file nobody vouches for. " * 5))
    started = time.monotonic()
    vouched = pipeline.process_file(str(fresh[0]), settings, store, complete=True)
    uploaded = pipeline.process_file(str(fresh[1]), settings, store)
    assert (vouched.status, uploaded.status) == ("success", "success")
    assert time.monotonic() - started < 4, "neither waited for the stability window"
    waited = pipeline.process_file(str(fresh[2]), settings, store)
    assert waited.status == "success" and time.monotonic() - started >= 4, "a fresh file is still watched"


def test_a_zip_bomb_is_refused(settings_for, store, docs_dir) -> None:
    settings = settings_for(MIDAS_MAX_DECOMPRESSED_MB="5")
    path = docs_dir / "bomb.docx"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        archive.writestr("word/document.xml", b"\0" * (50 * 1024 * 1024))
    result = pipeline.process_file(str(path), settings, store)
    assert result.status in {"failed", "rejected"}
    assert result.error_type in {"limit_exceeded", "corrupt"}, result.error


def test_extraction_time_limit_is_enforced_and_recorded(settings_for, store, docs_dir) -> None:
    settings = settings_for(MIDAS_EXTRACT_TIMEOUT="0.01")
    path = write(docs_dir, "slow.csv", "a,b,c\n" + "1,2,3\n" * 300_000)
    result = pipeline.process_file(str(path), settings, store)
    assert (result.status, result.error_type) == ("failed", "timeout")
    assert "MIDAS_EXTRACT_TIMEOUT" in result.error


def _sleep_forever() -> dict:
    time.sleep(60)
    return {}


def _die() -> dict:
    os.kill(os.getpid(), 9)
    return {}


def test_isolation_survives_hangs_and_crashes(tmp_path) -> None:
    started = time.monotonic()
    with pytest.raises(ExtractionTimeout):
        run_isolated(_sleep_forever, (), timeout=0.3)
    assert time.monotonic() - started < 5
    with pytest.raises(ExtractorCrashed, match="SIGKILL"):
        run_isolated(_die, (), timeout=5)
    assert run_isolated(dict, (), timeout=5) == {}
    assert list(tmp_path.iterdir()) == []


def test_quick_metadata(settings) -> None:
    meta = pipeline.document_metadata(str(SAMPLES / "report.pdf"), settings)
    assert meta["file_type"] == "pdf" and meta["page_count"] == 1 and meta["title"] == "MIDAS sample PDF"
    assert meta["sha256"] == hashlib.sha256((SAMPLES / "report.pdf").read_bytes()).hexdigest()
    sheet = pipeline.document_metadata(str(SAMPLES / "sales.xlsx"), settings)
    assert [s["name"] for s in sheet["sheets"]] == ["Sales", "Notes"]


def test_stale_working_copies_are_cleaned_but_originals_kept(settings, docs_dir) -> None:
    original = write(docs_dir, "keep.txt", "keep me")
    stale = settings.work_dir / "doc-stale"
    stale.mkdir(parents=True)
    (stale / "document.txt").write_text("left by a dead worker")
    old = time.time() - 3 * 86400
    os.utime(stale, (old, old))
    fresh = settings.work_dir / "doc-fresh"
    fresh.mkdir()
    removed = pipeline.remove_stale_work(settings, older_than_s=86400)
    assert removed == [str(stale)]
    assert fresh.exists() and original.read_text() == "keep me"


def test_preloading_leaves_nothing_for_the_first_document_to_load() -> None:
    """The worker preloads before forking; pool processes must find parsers and language profiles ready."""
    code = (
        "import sys\n"
        "from background_tasks.processing import extract\n"
        "missing = extract.preload_parsers()\n"
        "from langdetect import detector_factory\n"
        "assert detector_factory._factory is not None, 'langdetect profiles not loaded'\n"
        "assert not [m for m in extract.PRELOAD_MODULES if m not in sys.modules and m not in missing]\n"
        "print(len(detector_factory._factory.langlist))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 50  # langdetect ships 55 language profiles


def test_the_outcome_and_the_callers_rows_are_recorded_in_one_transaction(settings, store, docs_dir) -> None:
    """``in_transaction`` sees the outcome row in its session, for a success and for a failure."""
    from sqlalchemy import text

    seen = []

    def look(session, document_id: int, status: str) -> None:
        query = text("SELECT status FROM documents WHERE id = :id")
        seen.append((session.execute(query, {"id": document_id}).scalar_one(), status))

    good = write(docs_dir, "good.txt", "A document whose outcome is recorded with the ledger. " * 40)
    bad = write(docs_dir, "bad.pdf", os.urandom(4096))
    assert pipeline.process_file(str(good), settings, store, "t-good", in_transaction=look).status == "success"
    assert pipeline.process_file(str(bad), settings, store, "t-bad", in_transaction=look).status == "rejected"
    assert seen == [("success", "success"), ("rejected", "rejected")]
