"""The document store on a real SQLite file and a real PostgreSQL database.

Every store test runs twice: on a fresh SQLite file under tmp_path and on a
throwaway PostgreSQL database created on the local server (127.0.0.1:5432,
user postgres) and dropped afterwards.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError

from background_tasks.errors import TransientError
from background_tasks.extraction.extractors.base import PageSpan
from background_tasks.processing.chunking import Chunk, chunk_text, normalize_text
from background_tasks.storage.db import dispose_engine, get_engine, session_scope, transient_db_errors
from background_tasks.storage.store import DocumentStore, SearchHit, parse_query, websearch_query
from tests import db_fixtures
from tests.db_fixtures import pg_admin, throwaway_postgres
from tests.support import midas_cli

PROJECT_ROOT = Path(__file__).resolve().parent.parent
database_url = db_fixtures.database_url  # the SQLite + PostgreSQL fixture


def sha(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def processes(claim) -> bool:
    """What a task does with a claim (see ``Claim``): it processes the file when the content is new or resumed."""
    return claim.state in ("new", "resume")


@pytest.fixture
def db_url(database_url):
    return database_url


@pytest.fixture
def store(db_url) -> DocumentStore:
    s = DocumentStore(db_url)
    s.create_schema()
    return s


def add_document(
    store: DocumentStore,
    label: str,
    text_: str,
    path: str,
    file_type: str = "txt",
    pages: tuple[PageSpan, ...] = (),
    size: int = 300,
) -> int:
    claim = store.claim(sha(label), path, file_type, "text/plain", len(text_), task_id=f"task-{label}")
    assert claim.state == "new"
    text_ = normalize_text(text_)
    chunks = chunk_text(text_, size=size, overlap=40, pages=pages)
    store.record_success(claim.document_id, {"title": label}, chunks, len(text_), len(pages) or None, [], 0.01)
    return claim.document_id


# --------------------------------------------------------------------------
# Claiming
# --------------------------------------------------------------------------


def test_claim_new_duplicate_resume_busy(store, db_url) -> None:
    first = store.claim(sha("a"), "/in/a.txt", "TXT", "text/plain", 11, task_id="t1")
    assert (first.state, first.attempts, processes(first)) == ("new", 1, True)
    doc = store.get_document(first.document_id)
    assert doc["status"] == "processing" and doc["file_type"] == "txt" and doc["task_id"] == "t1"
    assert doc["paths"][0]["path"] == "/in/a.txt"

    # the same task redelivered after a crash takes its row over
    again = store.claim(sha("a"), "/in/a.txt", "txt", "text/plain", 11, task_id="t1")
    assert (again.document_id, again.state, again.attempts) == (first.document_id, "resume", 2)
    # another task while t1 is (recently) processing: do not process twice
    other = store.claim(sha("a"), "/in/copy-of-a.txt", "txt", "text/plain", 11, task_id="t2")
    assert (other.state, processes(other)) == ("busy", False)
    # ... unless the processing row is abandoned
    impatient = DocumentStore(db_url, stale_after_s=0)
    taken = impatient.claim(sha("a"), "/in/a.txt", "txt", None, None, task_id="t3")
    assert (taken.state, taken.attempts) == ("resume", 3)

    store.record_success(first.document_id, {"k": 1}, chunk_text("some words here"), 15)
    before = store.get_document(first.document_id)
    dup = store.claim(sha("a"), "/elsewhere/a-copy.txt", "txt", "text/plain", 11, task_id="t4")
    assert (dup.document_id, dup.state, processes(dup)) == (first.document_id, "duplicate", False)
    after = store.get_document(first.document_id)
    assert after["status"] == "success" and after["attempts"] == before["attempts"]
    assert after["task_id"] == before["task_id"] and after["chunk_count"] == 1
    assert {p["path"] for p in after["paths"]} == {"/in/a.txt", "/in/copy-of-a.txt", "/elsewhere/a-copy.txt"}
    assert after["path"] == "/elsewhere/a-copy.txt"  # most recently seen

    # a failed document is resumed by the next claim
    b = store.claim(sha("b"), "/in/b.pdf", "pdf", "application/pdf", 5, task_id="tb")
    store.record_failure("/in/b.pdf", "failed", "corrupt", "bad xref", document_id=b.document_id)
    assert store.get_document(b.document_id)["status"] == "failed"
    retry = store.claim(sha("b"), "/in/b.pdf", "pdf", "application/pdf", 5, task_id="tb2")
    assert (retry.document_id, retry.state, retry.attempts) == (b.document_id, "resume", 2)
    resumed = store.get_document(b.document_id)
    assert resumed["status"] == "processing" and resumed["error"] is None and resumed["task_id"] == "tb2"

    with pytest.raises(ValueError):
        store.claim("not-a-sha", "/x", "txt")


def _claim_in_thread(store, digest, task_id, barrier, results):
    barrier.wait()
    results.append(store.claim(digest, f"/in/{task_id}.txt", "txt", "text/plain", 1, task_id=task_id))


def test_claim_race_between_threads(store) -> None:
    for round_ in range(4):
        digest = sha(f"race-{round_}")
        if round_ % 2:  # a failed row: the racers compete to resume it
            first = store.claim(digest, "/in/x", "txt", task_id="original")
            store.record_failure("/in/x", "failed", "corrupt", "boom", document_id=first.document_id)
        barrier = threading.Barrier(6)
        results: list = []
        threads = [
            threading.Thread(target=_claim_in_thread, args=(store, digest, f"t{round_}-{i}", barrier, results))
            for i in range(6)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(results) == 6
        winners = [r for r in results if processes(r)]
        assert len(winners) == 1, results
        assert winners[0].state == ("resume" if round_ % 2 else "new")
        assert {r.state for r in results if not processes(r)} == {"busy"}
        assert len({r.document_id for r in results}) == 1
        assert store.count_documents() == round_ + 1
        assert len(store.get_document(winners[0].document_id)["paths"]) >= 6


def _claim_in_process(url, digest, task_id, barrier, queue):
    """Runs in a spawned process: create the schema and claim, all at the same moment."""
    store = DocumentStore(url)
    barrier.wait()
    store.create_schema()
    barrier.wait()
    claim = store.claim(digest, f"/in/{task_id}", "txt", "text/plain", 1, task_id=task_id)
    queue.put(claim.state)


def test_claim_race_between_processes_on_fresh_database(db_url) -> None:
    """Several worker processes start on an empty database: schema creation and claim both race."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(3)
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_claim_in_process, args=(db_url, sha("proc"), f"p{i}", barrier, queue)) for i in range(3)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    for p in procs:
        if p.exitcode is None:  # one died before the barrier: do not wait for the rest
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0, 0]
    states = sorted(queue.get(timeout=5) for _ in procs)
    assert states == ["busy", "busy", "new"]
    store = DocumentStore(db_url)
    assert store.count_documents() == 1
    assert len(store.find_by_path("/in/p0")) == 1


# --------------------------------------------------------------------------
# Recording
# --------------------------------------------------------------------------


def _fts_integrity(db_url: str) -> None:
    """SQLite only: the FTS index agrees with the chunks table (raises if not)."""
    if db_url.startswith("sqlite"):
        with get_engine(db_url).begin() as conn:
            conn.execute(text("INSERT INTO chunks_fts(chunks_fts, rank) VALUES ('integrity-check', 1)"))


def test_record_success_replaces_chunks(store, db_url) -> None:
    store.create_schema()  # idempotent: a second call changes nothing
    claim = store.claim(sha("doc"), "/in/doc.txt", "txt", "text/plain", 100, task_id="t")
    old_text = "Obsolete walrus paragraph. " * 30
    store.record_success(claim.document_id, {"v": 1}, chunk_text(old_text.strip(), 200, 20), len(old_text))
    assert store.search("walrus")

    # redelivered task: the same document processed again with different output
    new_text = normalize_text("Fresh pelican sentence number one.\n\nAnother pelican line. " * 20)
    new_chunks = chunk_text(new_text, 200, 20, pages=(PageSpan(1, 0, 500), PageSpan(2, 500, len(new_text))))
    for _ in range(2):
        store.record_success(
            claim.document_id, {"v": 2}, new_chunks, len(new_text), page_count=2, warnings=["w1"], duration_s=1.5
        )
    stored = store.get_chunks(claim.document_id)
    assert [c["chunk_index"] for c in stored] == list(range(len(new_chunks)))
    assert [(c["text"], c["start_char"], c["end_char"], c["page"]) for c in stored] == [
        (c.text, c.start, c.end, c.page) for c in new_chunks
    ]
    doc = store.get_document(claim.document_id)
    assert doc["status"] == "success" and doc["chunk_count"] == len(new_chunks) == len(stored)
    assert (doc["metadata"], doc["warnings"], doc["page_count"], doc["duration_s"]) == ({"v": 2}, ["w1"], 2, 1.5)
    assert doc["text_chars"] == len(new_text) and doc["finished_at"] is not None
    assert store.search("walrus") == []
    hits = store.search("pelican", limit=100, mode="keyword", group=False)
    assert len(hits) == len(new_chunks)  # each chunk once: no duplicates (no snippet lies in an overlap here)
    (grouped,) = store.search("pelican", limit=100, mode="keyword")
    assert grouped.more == len(new_chunks) - 1
    assert {h.page for h in hits} == {1, 2}
    assert store.stats()["chunks"] == len(new_chunks)
    _fts_integrity(db_url)

    with pytest.raises(LookupError):
        store.record_success(999_999, {}, new_chunks, 1)


def test_record_failure_with_and_without_sha(store) -> None:
    # rejected before reading: no sha, the path is what identifies it
    rid = store.record_failure(
        "/in/huge.pdf", "rejected", "too_large", "file is 900 MB", file_type=".PDF", size_bytes=900 << 20
    )
    doc = store.get_document(rid)
    assert (doc["sha256"], doc["status"], doc["error_type"], doc["file_type"]) == (None, "rejected", "too_large", "pdf")
    assert doc["size_bytes"] == 900 << 20 and doc["path"] == "/in/huge.pdf"
    # seen again: the same row, not a new one; another file: another row
    assert store.record_failure("/in/huge.pdf", "rejected", "too_large", "file is 900 MB") == rid
    other = store.record_failure("/in/other.exe", "rejected", "unsupported", "no extractor for .exe")
    assert other != rid
    assert store.count_documents(status="rejected") == 2

    # failure after reading, without a claim: a row with the sha; the next claim resumes it
    fid = store.record_failure(
        "/in/enc.docx", "failed", "encrypted", "password needed", sha256=sha("enc"), task_id="t9", duration_s=0.2
    )
    doc = store.get_document(fid)
    assert (doc["sha256"], doc["status"], doc["task_id"], doc["duration_s"]) == (sha("enc"), "failed", "t9", 0.2)
    assert store.claim(sha("enc"), "/in/enc.docx", "docx", task_id="t10").state == "resume"

    # a failure reported for content that succeeded elsewhere never downgrades it
    good = add_document(store, "good", "fine text", "/in/good.txt")
    assert store.record_failure("/in/good-copy.txt", "failed", "timeout", "slow", sha256=sha("good")) == good
    doc = store.get_document(good)
    assert doc["status"] == "success" and "/in/good-copy.txt" in {p["path"] for p in doc["paths"]}

    with pytest.raises(ValueError):
        store.record_failure("/x", "success", "x", "y")
    # the encrypted document is processing again (resumed), the two rejections stay
    assert store.stats()["by_status"] == {"processing": 1, "success": 1, "failed": 0, "rejected": 2}


def test_awkward_values_are_stored(store) -> None:
    """NUL bytes, lone surrogates, undecodable path bytes, NaN and bytes in metadata."""
    odd_path = os.fsdecode(b"/in/caf\xe9 \xff.txt")  # not UTF-8: surrogate escapes
    claim = store.claim(sha("odd"), odd_path, "txt", "text/plain\x00", 3, task_id="t\x00")
    metadata = {
        "title": "nul\x00 and \ud800 surrogate",
        "nan": float("nan"),
        "blob": b"\x00\x01",
        "when": __import__("datetime").datetime(2024, 1, 2, 3, 4, 5),
        1: "int key",
        "deep": [[[[["x"]]]]],
    }
    chunks = [Chunk(0, "raw\x00text with \udcff", 0, 16, None)]
    store.record_success(claim.document_id, metadata, chunks, 16, warnings=["w\x00"])
    doc = store.get_document(claim.document_id)
    assert doc["metadata"]["title"] == "nul and \ufffd surrogate"
    assert doc["metadata"]["nan"] is None and doc["metadata"]["blob"] == "<2 bytes>"
    assert doc["metadata"]["when"] == "2024-01-02T03:04:05" and doc["metadata"]["1"] == "int key"
    assert doc["warnings"] == ["w"]
    assert store.get_chunks(claim.document_id)[0]["text"] == "rawtext with \ufffd"
    found = store.find_by_path(odd_path)
    assert [d["id"] for d in found] == [claim.document_id]
    assert found[0]["path"] == "/in/caf\\xe9 \\xff.txt"
    long_path = "/in/" + "d" * 5000 + "/file.txt"  # longer than a PostgreSQL btree entry may be
    assert store.claim(sha("long"), long_path, "txt", task_id="t").state == "new"
    assert store.find_by_path(long_path)[0]["path"] == long_path


# --------------------------------------------------------------------------
# Search
# --------------------------------------------------------------------------


@pytest.fixture
def corpus_store(store) -> DocumentStore:
    add_document(store, "apples", "Apple orchard report. " + "The apple harvest was large. " * 8, "/docs/apples.txt")
    add_document(store, "fruit", "Bananas, cherries and one apple. Nothing else.", "/docs/fruit.md", file_type="md")
    paged = "Introduction without the word.\n\nThe second page mentions a zebra crossing.\n\nThird page: zebra stripes."
    first = paged.index("The second")
    third = paged.index("Third")
    pages = (PageSpan(1, 0, first - 2), PageSpan(2, first, third - 2), PageSpan(3, third, len(paged)))
    add_document(store, "zebra", paged, "/docs/zebra.pdf", file_type="pdf", pages=pages, size=60)
    add_document(store, "phrase", "red car and blue bicycle. The blue car was fast.", "/docs/cars.txt")
    failed = store.claim(sha("failed"), "/docs/broken.txt", "txt", task_id="tf")
    store.record_failure("/docs/broken.txt", "failed", "corrupt", "apple apple apple", document_id=failed.document_id)
    return store


def test_search_finds_ranks_and_highlights(corpus_store) -> None:
    hits = corpus_store.search("apple")
    assert hits and all(isinstance(h, SearchHit) for h in hits)
    assert [h.path for h in hits][:1] == ["/docs/apples.txt"]  # many mentions rank first
    assert {h.path for h in hits} == {"/docs/apples.txt", "/docs/fruit.md"}
    assert all(h.score > 0 for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all("**apple**" in h.snippet.lower() for h in hits)
    assert corpus_store.search("APPLE")[0].path == "/docs/apples.txt"  # case-insensitive

    assert [h.path for h in corpus_store.search("apple", file_type="md")] == ["/docs/fruit.md"]
    assert [h.path for h in corpus_store.search("apple", file_type=".MD")] == ["/docs/fruit.md"]
    assert corpus_store.search("apple", file_type="pdf") == []
    assert len(corpus_store.search("apple", limit=1)) == 1
    assert corpus_store.search("apple", limit=0) == []

    zebra = corpus_store.search("zebra", limit=10)
    assert 2 in {h.page for h in zebra}  # page 1 may show up too: a chunk's page is where it begins
    stored = {c["chunk_index"]: c for c in corpus_store.get_chunks(zebra[0].document_id)}
    assert all(h.page == stored[h.chunk_index]["page"] and "zebra" in stored[h.chunk_index]["text"] for h in zebra)
    assert all(h.file_type == "pdf" and h.document_id == zebra[0].document_id for h in zebra)

    marked = corpus_store.search("zebra", marks=("<b>", "</b>"))
    assert "<b>zebra</b>" in marked[0].snippet.lower() and "**" not in marked[0].snippet

    # web-search syntax: all words, "phrases", or, -exclusion
    assert {h.path for h in corpus_store.search("apple bananas")} == {"/docs/fruit.md"}
    assert {h.path for h in corpus_store.search('"blue car"')} == {"/docs/cars.txt"}
    assert corpus_store.search('"car blue"') == []
    assert {h.path for h in corpus_store.search("zebra or bananas")} == {"/docs/zebra.pdf", "/docs/fruit.md"}
    assert {h.path for h in corpus_store.search("apple -bananas")} == {"/docs/apples.txt"}
    assert corpus_store.search("nonexistentword") == []
    assert corpus_store.search("-apple") == []  # only exclusions: nothing to look for


HOSTILE_QUERIES = [
    "",
    "   ",
    '"',
    '""',
    '"unterminated apple',
    "*",
    "apple*",
    "NEAR(apple orchard)",
    "NEAR",
    "(",
    ")",
    "(apple",
    "apple)",
    "AND",
    "OR",
    "NOT",
    "NOT apple",
    "apple AND",
    "apple OR",
    "or or or",
    "-",
    "--",
    "- -",
    "text:apple",
    "^apple",
    "{apple orchard}",
    "apple + orchard",
    "'; DROP TABLE documents; --",
    "\x00apple",
    "\ud800",
    "💥 🍎",
    "東京 データ",
    "e\u0301",
    "%_\\",
    "a" * 5000,
    " ".join(["apple"] * 300),
    "!@#$%^&*()[]{}<>?/|\\~`",
]


def assert_hits_or_refusal(store: DocumentStore, query: str) -> None:
    """Any input gives hits or, when it is too long to search, a clear refusal; never another error."""
    from background_tasks.errors import InvalidQuery
    from background_tasks.storage.store import MAX_QUERY_CHARS

    if len(query) > MAX_QUERY_CHARS:
        with pytest.raises(InvalidQuery, match="at most"):
            store.search(query)
    else:
        assert isinstance(store.search(query), list), query


def test_hostile_queries_never_raise(corpus_store) -> None:
    for query in HOSTILE_QUERIES:
        assert_hits_or_refusal(corpus_store, query)
    # syntax characters are taken literally: the word in them is still found
    for query in ['"apple', "apple*", "(apple", "apple)", "(apple orchard)", "^apple", "\x00apple", "apple:"]:
        assert any(h.path == "/docs/apples.txt" for h in corpus_store.search(query)), query
    assert corpus_store.count_documents() == 5  # and nothing was dropped


def test_parse_query() -> None:
    parsed = parse_query('alpha "beta gamma" or delta -epsilon -"zeta eta" * ( NEAR')
    assert parsed.groups == (("alpha", "beta gamma"), ("delta", "NEAR"))
    assert parsed.negatives == ("epsilon", "zeta eta")
    assert parse_query("").groups == () and parse_query('* ( ) "').groups == ()
    assert parse_query("Apple apple APPLE pear").groups == (("Apple", "pear"),)  # repeats dropped
    assert len(parse_query(" ".join(f"w{i}" for i in range(500))).terms) == 32  # bounded work
    assert websearch_query(parse_query('a "b c" or d -e')) == '"a" "b c" or "d" -"e"'


def test_search_without_fts5_falls_back_to_substrings(tmp_path) -> None:
    """SQLite builds without FTS5 still search (slowly, unranked)."""
    url = f"sqlite:///{tmp_path / 'nofts.sqlite3'}"
    try:
        store = DocumentStore(url)
        store.create_schema()
        add_document(store, "a", "Apple orchard. The apple harvest.", "/docs/a.txt")
        add_document(store, "b", "Bananas and one apple_pie%.", "/docs/b.txt")
        store._fts = False  # what create_schema decides when FTS5 is missing
        hits = store.search("APPLE")
        assert {h.path for h in hits} == {"/docs/a.txt", "/docs/b.txt"}
        assert all("**apple**" in h.snippet.lower() for h in hits)
        assert [h.path for h in store.search("apple -bananas")] == ["/docs/a.txt"]
        assert [h.path for h in store.search("apple_pie%")] == ["/docs/b.txt"]  # LIKE wildcards are literal
        assert store.search("apple_pi%e") == []
        for query in HOSTILE_QUERIES:
            assert_hits_or_refusal(store, query)
    finally:
        dispose_engine(url)


# --------------------------------------------------------------------------
# Listing, stats, retention
# --------------------------------------------------------------------------


def test_listing_stats_and_retention(corpus_store, db_url) -> None:
    docs = corpus_store.list_documents()
    assert len(docs) == corpus_store.count_documents() == 5
    assert [d["id"] for d in docs] == sorted((d["id"] for d in docs), reverse=True)  # newest first
    assert corpus_store.count_documents(status="success") == 4
    assert [d["path"] for d in corpus_store.list_documents(status="failed")] == ["/docs/broken.txt"]
    assert [d["path"] for d in corpus_store.list_documents(file_type="pdf")] == ["/docs/zebra.pdf"]
    assert len(corpus_store.list_documents(limit=2)) == 2
    assert [d["id"] for d in corpus_store.list_documents(limit=2, offset=4)] == [docs[4]["id"]]
    assert corpus_store.get_document(123456) is None
    assert corpus_store.get_chunks(123456) == []
    assert corpus_store.find_by_path("/nowhere") == []

    stats = corpus_store.stats()
    assert stats["documents"] == 5
    assert stats["by_status"] == {"processing": 0, "success": 4, "failed": 1, "rejected": 0}
    total_chunks = sum(len(corpus_store.get_chunks(d["id"])) for d in docs)
    assert stats["chunks"] == total_chunks
    assert stats["by_file_type"]["pdf"]["documents"] == 1
    assert stats["by_file_type"]["pdf"]["chunks"] == len(corpus_store.get_chunks(docs[2]["id"]))
    assert stats["by_file_type"]["txt"]["documents"] == 3 and stats["by_file_type"]["txt"]["failed"] == 1

    assert corpus_store.delete_documents_older_than(1) == 0
    with get_engine(db_url).begin() as conn:  # age one document by a year
        conn.execute(
            text("UPDATE documents SET created_at = :t WHERE id = :id"),
            {"t": docs[0]["created_at"].replace(year=docs[0]["created_at"].year - 1), "id": docs[0]["id"]},
        )
    assert corpus_store.delete_documents_older_than(10) == 1
    assert corpus_store.get_document(docs[0]["id"]) is None
    assert corpus_store.count_documents() == 4
    assert corpus_store.delete_documents_older_than(0) == 4
    assert corpus_store.stats()["chunks"] == 0  # chunks and paths went with their documents
    assert corpus_store.search("apple") == []
    with get_engine(db_url).begin() as conn:
        assert conn.execute(text("SELECT count(*) FROM document_paths")).scalar_one() == 0
    _fts_integrity(db_url)
    with pytest.raises(ValueError):
        corpus_store.delete_documents_older_than(-1)


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def test_cli_search_and_documents(corpus_store, db_url, tmp_path) -> None:
    env = {
        **os.environ,
        "MIDAS_DATABASE_URL": db_url,
        "MIDAS_DATA_DIR": str(tmp_path / "data"),
        "MIDAS_ENV_FILE": os.devnull,
    }

    def run(*args: str) -> subprocess.CompletedProcess:
        return midas_cli(env, *args, timeout=60)

    result = run("search", "zebra", "--limit", "5")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("1. /docs/zebra.pdf  (page")  # "pages 1-2": its matching chunks overlap
    assert "**zebra**" in result.stdout.lower()  # not a tty: visible markers, no escape codes
    assert "\x1b" not in result.stdout

    # on a terminal the highlight is bold instead (pseudo-terminals are POSIX only)
    if os.name == "posix":
        _check_bold_on_tty(env)

    result = run("search", "apple", "--type", "md")
    assert result.returncode == 0 and "/docs/fruit.md" in result.stdout and "apples.txt" not in result.stdout
    result = run("search", "no-such-word-anywhere")
    assert result.returncode == 0 and "No matches." in result.stdout

    result = run("documents")
    assert result.returncode == 0, result.stderr
    for path in ("/docs/apples.txt", "/docs/zebra.pdf", "/docs/broken.txt"):
        assert path in result.stdout
    assert "corrupt" in result.stdout
    result = run("stats")
    assert result.returncode == 0 and "documents: 5" in result.stdout


def _check_bold_on_tty(env: dict[str, str]) -> None:
    import pty

    leader, follower = pty.openpty()
    with os.fdopen(leader, "rb", buffering=0) as reader:
        proc = subprocess.Popen(
            [sys.executable, "-m", "background_tasks", "search", "zebra"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=follower,
            stderr=subprocess.PIPE,
        )
        os.close(follower)
        received = []
        while True:
            try:
                data = reader.read(4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            received.append(data)
        assert proc.wait(60) == 0, proc.stderr.read()
        proc.stderr.close()
    shown = b"".join(received).decode()
    assert "\x1b[1mzebra\x1b[0m" in shown.lower() and "**" not in shown


# --------------------------------------------------------------------------
# Database layer
# --------------------------------------------------------------------------


def test_sqlite_file_is_private_and_in_wal_mode(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'private' / 'nested' / 'midas.sqlite3'}"
    try:
        store = DocumentStore(url)
        store.create_schema()
        add_document(store, "x", "hello world", "/in/x.txt")
        db_file = tmp_path / "private" / "nested" / "midas.sqlite3"
        assert stat.S_IMODE(db_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(db_file.parent.stat().st_mode) == 0o700
        for sidecar in db_file.parent.glob("midas.sqlite3-*"):  # -wal / -shm follow the database's mode
            assert stat.S_IMODE(sidecar.stat().st_mode) & 0o077 == 0, sidecar
        with get_engine(url).connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
            assert conn.execute(text("PRAGMA busy_timeout")).scalar_one() == 30000
            assert conn.execute(text("PRAGMA foreign_keys")).scalar_one() == 1
            assert conn.execute(text("PRAGMA synchronous")).scalar_one() == 1  # NORMAL
        assert get_engine(url) is get_engine(url)
    finally:
        dispose_engine(url)


def test_sqlite_locked_database_is_transient(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'locked.sqlite3'}"
    store = DocumentStore(url)
    store.create_schema()
    impatient = create_engine(url, connect_args={"timeout": 0.2})
    holder = get_engine(url).raw_connection()
    try:
        holder.cursor().execute("BEGIN EXCLUSIVE")
        with pytest.raises(TransientError, match="locked"), transient_db_errors(), impatient.begin() as conn:
            conn.execute(text("DELETE FROM chunks"))
    finally:
        holder.rollback()
        holder.close()
        impatient.dispose()
        dispose_engine(url)


def test_sqlite_readers_never_wait_for_a_writer_and_writers_queue(tmp_path) -> None:
    """A read scope reads its snapshot while another process holds the write lock; a write scope waits for it."""
    url = f"sqlite:///{tmp_path / 'busy.sqlite3'}"
    store = DocumentStore(url)
    store.create_schema()
    add_document(store, "r", "readable while locked", "/in/r.txt")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time\n"
            f"c = sqlite3.connect({str(tmp_path / 'busy.sqlite3')!r}, isolation_level=None)\n"
            "c.execute('BEGIN IMMEDIATE'); c.execute(\"UPDATE documents SET error = 'held'\")\n"
            "print('locked', flush=True); sys.stdin.readline(); c.execute('COMMIT')\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        # read_scope takes no lock: it reads the snapshot before the writer's change while the lock is held
        hits = store.search("readable")
        assert [h.path for h in hits] == ["/in/r.txt"]
        assert store.count_documents() == 1
        assert holder.poll() is None, "the lock was held throughout the reads"
        seen: list[str] = []

        def write_scope_read() -> None:  # BEGIN IMMEDIATE: waits on the busy timeout, then sees the commit
            with session_scope(url) as session:
                seen.append(session.execute(text("SELECT error FROM documents")).scalar_one())

        writer = threading.Thread(target=write_scope_read)
        writer.start()
        writer.join(0.5)
        assert writer.is_alive() and not seen, "a write scope must wait for the lock"
        holder.stdin.write("commit\n")
        holder.stdin.flush()
        writer.join(30)
        assert seen == ["held"]
    finally:
        if holder.poll() is None:
            holder.stdin.close()
        holder.wait(10)
        dispose_engine(url)


def test_non_transient_errors_pass_through(store, db_url) -> None:
    store.claim(sha("dup"), "/in/d", "txt", task_id="t")
    with pytest.raises(IntegrityError), transient_db_errors(), get_engine(db_url).begin() as conn:
        conn.execute(
            text(
                "INSERT INTO documents (sha256, status, attempts, chunk_count, created_at, updated_at) "
                "VALUES (:s, 'processing', 1, 0, :t, :t)"
            ),
            {"s": sha("dup"), "t": "2024-01-01 00:00:00"},
        )


def test_postgres_errors_are_transient() -> None:
    pg_admin().close()  # skip (or fail in CI) when the server is missing
    # a server that is not there
    with pytest.raises(TransientError):
        DocumentStore("postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=3").count_documents()
    dispose_engine("postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=3")
    # a real serialization failure: two repeatable-read transactions update the same row
    with throwaway_postgres() as url:
        engine = create_engine(url, isolation_level="REPEATABLE READ")
        try:
            with engine.begin() as conn:
                conn.execute(text("CREATE TABLE t (id int PRIMARY KEY, v int)"))
                conn.execute(text("INSERT INTO t VALUES (1, 0)"))
            with engine.connect() as a, engine.connect() as b:
                a.execute(text("SELECT v FROM t"))
                b.execute(text("SELECT v FROM t"))
                a.execute(text("UPDATE t SET v = 1"))
                a.commit()
                with pytest.raises(TransientError, match="serialize"), transient_db_errors():
                    b.execute(text("UPDATE t SET v = 2"))
                b.rollback()
        finally:
            engine.dispose()


def test_a_long_document_is_written_in_batches_and_searchable_only_when_complete(store, monkeypatch) -> None:
    """Chunks go in in several short transactions; a failure half-way leaves nothing searchable."""
    from background_tasks.storage import documents as store_module  # where the record transactions are

    monkeypatch.setattr(store_module, "CHUNK_WRITE_BATCH", 4)
    body = normalize_text(" ".join(f"Sentence {i} about the batched lighthouse keeper." for i in range(60)))
    chunks = chunk_text(body, size=200, overlap=40)
    assert len(chunks) > 2 * 4
    claim = store.claim(sha("batched"), "/in/batched.txt", "txt", "text/plain", len(body), task_id="t-batch")
    real_scope, calls = store_module.session_scope, []

    def failing_third_transaction(url):
        calls.append(url)
        if len(calls) == 3:
            raise TransientError("simulated: the worker lost the database half-way")
        return real_scope(url)

    monkeypatch.setattr(store_module, "session_scope", failing_third_transaction)
    with pytest.raises(TransientError):
        store.record_success(claim.document_id, {}, chunks, len(body))
    monkeypatch.setattr(store_module, "session_scope", real_scope)
    assert store.get_document(claim.document_id)["status"] == "processing"
    assert store.search("lighthouse keeper") == []  # two batches are in, but the document is not done

    store.record_success(claim.document_id, {}, chunks, len(body))  # the redelivered task
    assert store.get_document(claim.document_id)["status"] == "success"
    with session_scope(store.url) as s:
        indexes = [
            i for (i,) in s.execute(text(f"SELECT chunk_index FROM chunks WHERE document_id = {claim.document_id}"))
        ]
    assert sorted(indexes) == list(range(len(chunks)))
    assert store.search("lighthouse keeper")


def test_the_ledger_entry_is_finished_in_the_transaction_that_records_the_outcome(store, monkeypatch) -> None:
    """``in_transaction`` commits with the record, and a record that fails leaves the entry open."""
    from datetime import UTC, datetime

    from background_tasks.statuses import LedgerState
    from background_tasks.storage import documents, ledger

    now = datetime.now(UTC)
    ledger.record_sent(
        store.url, [ledger.Submission(task_id=f"t-{n}", name="process") for n in ("ok", "bad", "fail")], now, 30
    )

    def finish(task_id: str, state: LedgerState = LedgerState.DONE):
        return lambda session, document_id, status: ledger.finish_in(session, task_id, state, now)

    body = normalize_text(" ".join(f"Sentence {i} about the ledgered lighthouse." for i in range(60)))
    chunks = chunk_text(body, size=200, overlap=40)
    ok = store.claim(sha("ledger-ok"), "/in/ok.txt", "txt", task_id="t-ok")
    store.record_success(ok.document_id, {}, chunks, len(body), in_transaction=finish("t-ok"))
    assert store.get_document(ok.document_id)["status"] == "success"
    assert ledger.get(store.url, "t-ok")["state"] == LedgerState.DONE

    monkeypatch.setattr(documents, "CHUNK_WRITE_BATCH", 4)  # the hook runs with the last of several batches
    bad = store.claim(sha("ledger-bad"), "/in/bad.txt", "txt", task_id="t-bad")

    def finish_then_fail(session, document_id: int, status: str) -> None:
        finish("t-bad")(session, document_id, status)
        raise TransientError("simulated: the commit of the outcome failed")

    with pytest.raises(TransientError):
        store.record_success(bad.document_id, {}, chunks, len(body), in_transaction=finish_then_fail)
    assert store.get_document(bad.document_id)["status"] == "processing"
    assert ledger.get(store.url, "t-bad")["state"] == LedgerState.QUEUED  # rolled back with the record

    failed = store.record_failure(
        "/in/fail.txt", "failed", "corrupt", "broken", sha256=sha("ledger-fail"), task_id="t-fail",
        in_transaction=finish("t-fail", LedgerState.FAILED),
    )  # fmt: skip
    assert store.get_document(failed)["status"] == "failed"
    assert ledger.get(store.url, "t-fail")["state"] == LedgerState.FAILED
