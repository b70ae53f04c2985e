"""Search as issue 17 asks: filters, passages (overlapping chunks as one), related documents and
near-duplicates, and a clear answer for any query, in the Python function, the CLI, the HTTP API
and the dashboard. Real SQLite and PostgreSQL, the real pipeline, the built-in model."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from background_tasks.analysis.embeddings import load_embedder
from background_tasks.analysis.embeddings_index import embed_chunks
from background_tasks.api.auth import digest, new_token
from background_tasks.errors import DocumentNotFound, InvalidQuery
from background_tasks.processing import pipeline
from background_tasks.processing.chunking import Chunk, chunk_text, normalize_text
from background_tasks.settings import load_settings
from background_tasks.storage import vectors
from background_tasks.storage.search_results import COMMON_WORDS_NOTICE
from background_tasks.storage.store import DocumentStore
from tests import db_fixtures
from tests.generated_corpus import samples_script
from tests.support import ApiServer, free_port, midas_cli
from tests.test_store import sha

database_url = db_fixtures.database_url  # the SQLite + PostgreSQL fixture

MODES = ("keyword", "semantic", "hybrid")
INVOICE = "The invoice for the garden furniture must be paid within thirty days; late payment costs a fee."
TODAY = datetime.now(UTC).date().isoformat()


@pytest.fixture(scope="module")
def embedder():
    return load_embedder()


def add(
    store: DocumentStore,
    label: str,
    path: str,
    text: str,
    metadata: dict | None = None,
    warnings: tuple[str, ...] = (),
    file_type: str = "txt",
) -> int:
    claim = store.claim(sha(label), path, file_type, "text/plain", len(text), task_id=f"t-{label}")
    body = normalize_text(text)
    chunks = chunk_text(body, size=300, overlap=40)
    store.record_success(claim.document_id, metadata or {}, chunks, len(body), warnings=warnings)
    return claim.document_id


def embed_all(store: DocumentStore, embedder) -> None:
    for document_id in vectors.documents_to_embed(store.url, embedder.info.key):
        embed_chunks(store.url, document_id, embedder)


# --------------------------------------------------------------------------
# Filters: type, date, source, status, the same in every mode
# --------------------------------------------------------------------------


@pytest.fixture
def invoices(database_url, embedder):
    store = DocumentStore(database_url, embedder=embedder)
    store.create_schema()
    ids = {
        "2019": add(store, "2019", "/data/invoices/2019.txt", INVOICE, {"created": "2019-05-01T10:00:00Z"}),
        "2023": add(store, "2023", "/data/invoices/2023.md", INVOICE + " (2023)", {"created": "2023-02-01"}, (), "md"),
        "next door": add(
            store, "next door", "/data/invoices-old/2020.txt", INVOICE + " Old.", {"created": "2020-06-30"}
        ),
        "mail": add(
            store,
            "mail",
            "/midas/inbox/mail/acme/INBOX/1-2/invoice.txt",
            INVOICE + " By mail.",
            {"origin": {"source": "mail", "account": "acme", "subject": "Invoice"}},
        ),
        "s3": add(store, "s3", "s3://bucket/incoming/2022.txt", INVOICE + " From S3.", {"created": "2022-07-01"}),
        "warned": add(
            store,
            "warned",
            "/scans/warned.txt",
            INVOICE + " Scanned.",
            {"created": "2021-01-01"},
            ("page 2 has no text layer",),
        ),
        "pending": add(
            store,
            "pending",
            "/scans/pending.txt",
            INVOICE + " Long scan.",
            {"created": "2021-03-01", "ocr_status": "pending"},
        ),
    }
    embed_all(store, embedder)
    yield store, ids
    vectors.forget(database_url)


def found(store: DocumentStore, mode: str, **filters) -> set[int]:
    return {h.document_id for h in store.search("invoice payment", mode=mode, limit=20, **filters)}


@pytest.mark.parametrize("mode", MODES)
def test_filters_by_type_date_source_and_status_in_every_mode(invoices, mode) -> None:
    store, ids = invoices
    every = set(ids.values())
    assert found(store, mode) == every
    assert found(store, mode, file_type=".MD") == {ids["2023"]}
    # the document's own date; without one, the day MIDAS stored it (today)
    assert found(store, mode, since="2023-01-01") == {ids["2023"], ids["mail"]}
    assert found(store, mode, until="2019-12-31") == {ids["2019"]}
    assert found(store, mode, since="2020-06-30", until="2021-01-01") == {ids["next door"], ids["warned"]}
    assert found(store, mode, since=TODAY, until=TODAY) == {ids["mail"]}
    # a folder holds what lies under it, not its namesake next door
    assert found(store, mode, source="/data/invoices") == {ids["2019"], ids["2023"]}
    assert found(store, mode, source="/data/invoices/") == {ids["2019"], ids["2023"]}
    assert found(store, mode, source="mail") == {ids["mail"]}
    assert found(store, mode, source="mail:acme") == {ids["mail"]}
    assert found(store, mode, source="mail:nobody") == set()
    assert found(store, mode, source="s3://bucket/inc") == {ids["s3"]}  # an S3 prefix is a prefix of keys
    assert found(store, mode, status="warnings") == {ids["warned"]}
    assert found(store, mode, status="ocr_pending") == {ids["pending"]}
    assert found(store, mode, status="complete") == every - {ids["warned"], ids["pending"]}
    assert found(store, mode, source="/data", since="2020-01-01", file_type="txt") == {ids["next door"]}


def test_malformed_filters_are_refused_with_a_message(invoices) -> None:
    store, _ = invoices
    for filters, words in (
        ({"since": "2024-13-01"}, "since must be a date"),
        ({"until": "yesterday"}, "until must be a date"),
        ({"since": "2024-02-01", "until": "2024-01-01"}, "after until"),
        ({"status": "lost"}, "status must be one of complete, warnings, ocr_pending"),
        ({"source": "/x" * 600}, "source must be"),
    ):
        with pytest.raises(InvalidQuery, match=words):
            store.search("invoice", **filters)


# --------------------------------------------------------------------------
# Passages: overlapping chunks that show the same text are one
# --------------------------------------------------------------------------


def test_a_match_in_the_overlap_of_two_chunks_is_one_passage_with_both_pages(database_url, embedder) -> None:
    """GeoTopo's pages 10 and 11: the end of one chunk is the start of the next; a match there is one passage."""
    filler = "Topology studies spaces and the maps between them, and which properties survive a deformation. "
    text = normalize_text(
        filler * 3
        + "The quasar lantern glows in the overlap. "
        + filler * 6
        + "Another quasar lantern here. "
        + filler * 2
    )
    overlap_at = text.index("The quasar")
    second_at = text.index("Another quasar")
    bounds = [(0, overlap_at + 60), (overlap_at - 40, second_at - 50), (second_at - 100, len(text))]
    chunks = [Chunk(i, text[a:b], a, b, 10 + i) for i, (a, b) in enumerate(bounds)]
    assert "quasar lantern" in chunks[0].text and "quasar lantern" in chunks[1].text  # the same passage twice
    store = DocumentStore(database_url, embedder=embedder)
    store.create_schema()
    claim = store.claim(sha("geo"), "/books/geotopo.pdf", "pdf", "application/pdf", 1000, task_id="t-geo")
    store.record_success(claim.document_id, {}, chunks, len(text), page_count=12)
    embed_all(store, embedder)

    passages = store.search("quasar lantern", mode="keyword", group=False)
    assert sorted((h.chunks, h.pages) for h in passages) == [((0, 1), (10, 11)), ((2,), (12,))]
    assert passages[0].snippet.count("**quasar**") == 1  # shown once, not twice
    for mode in MODES:
        (hit,) = store.search("quasar lantern", mode=mode)
        assert hit.document_id == claim.document_id and hit.more >= 1, mode
        if mode != "semantic":
            assert hit.more == 1 and (hit.chunks, hit.pages) in (((0, 1), (10, 11)), ((2,), (12,))), mode
    vectors.forget(database_url)


# --------------------------------------------------------------------------
# A clear answer for every query
# --------------------------------------------------------------------------

UNKNOWN_SCRIPT = "ᚠᛇᚻ᛫ᛒᛦᚦ"  # runes: letters, but the model has no token for them


@pytest.mark.parametrize("mode", MODES)
def test_queries_that_cannot_be_searched_get_a_notice_never_a_traceback(invoices, mode) -> None:
    store, _ = invoices
    for query in ("", "   ", "🙂🚀", "?!…", "-invoice"):
        hits = store.search(query, mode=mode)
        assert hits == [] and hits.notice and "word" in hits.notice, (query, hits.notice)
    common = store.search("the of and a", mode=mode)
    assert common.notice == COMMON_WORDS_NOTICE
    if mode == "semantic":
        assert common == []  # common words carry no meaning to compare
    strange = store.search(UNKNOWN_SCRIPT, mode=mode)
    assert strange == []
    if mode == "keyword":
        assert strange.notice is None  # nothing has these letters: plain "no matches"
    else:
        assert "knows none of these words" in strange.notice
    emoji_and_word = store.search("invoice 🙂", mode=mode)
    assert emoji_and_word and emoji_and_word.notice is None
    with pytest.raises(InvalidQuery, match="10,000 characters; at most 1,000"):
        store.search("x" * 10_000, mode=mode)
    normal = store.search("invoice", mode=mode)
    assert normal and normal.notice is None


# --------------------------------------------------------------------------
# Related documents and near-duplicates: the same letter as .docx and .pdf
# --------------------------------------------------------------------------

LETTER = [
    "Dear Ms Lindqvist,",
    "thank you for your order of twelve oak garden chairs and two folding tables.",
    "The furniture will be delivered to your house in Uppsala on Tuesday morning.",
    "Please make sure that someone can open the gate for the driver between eight and ten.",
    "The invoice is enclosed; it is due within thirty days of delivery.",
    "With kind regards, Henrik Dahl, Dahl Garden Furniture",
]
OTHER_LETTER = [
    "Dear Mr Okafor,",
    "we regret that the kitchen cabinets you ordered are delayed by two weeks.",
    "Our supplier in Porto could not ship the walnut doors in time.",
    "We will call you to agree on a new day for the fitting.",
    "With apologies, Ana Costa, Costa Kitchens",
]
RECIPE = ["Lemon cake", "Beat butter and sugar, add eggs, flour and the zest of two lemons.", "Bake for forty minutes."]


def write_docx(path: Path, paragraphs: list[str]) -> Path:
    import docx

    document = docx.Document()
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    document.save(path)
    return path


def process(folder: Path, url: str, *paths: Path) -> dict[str, int]:
    env = {"MIDAS_DATA_DIR": str(folder / "data"), "MIDAS_ALLOWED_ROOTS": str(folder), "MIDAS_DATABASE_URL": url}
    settings = load_settings(env, env_file=Path(os.devnull))
    store = DocumentStore(url)
    store.create_schema()
    ids = {}
    for path in paths:
        result = pipeline.process_file(str(path), settings, store)
        assert result.status == "success", (path, result.error)
        ids[path.name] = result.document_id
    return ids


def letters(folder: Path, url: str, embedder) -> dict[str, int]:
    """The same letter as .docx and .pdf, another letter, and a recipe, processed and embedded."""
    folder.mkdir(parents=True, exist_ok=True)
    pdf = folder / "letter.pdf"
    pdf.write_bytes(samples_script()._pdf(LETTER, title="Order confirmation"))
    ids = process(
        folder,
        url,
        write_docx(folder / "letter.docx", LETTER),
        pdf,
        write_docx(folder / "other-letter.docx", OTHER_LETTER),
        write_docx(folder / "recipe.docx", RECIPE),
    )
    embed_all(DocumentStore(url), embedder)
    return ids


def test_related_documents_flag_the_same_letter_in_another_format(database_url, embedder, tmp_path) -> None:
    ids = letters(tmp_path / "letters", database_url, embedder)
    store = DocumentStore(database_url, embedder=embedder)
    related = store.related(ids["letter.docx"])
    assert [r.document_id for r in related][:1] == [ids["letter.pdf"]]
    assert related[0].near_duplicate and related[0].similarity > 0.96 and related[0].file_type == "pdf"
    assert {r.document_id for r in related} == {ids["letter.pdf"], ids["other-letter.docx"], ids["recipe.docx"]}
    others = {r.document_id: r for r in related[1:]}
    assert not any(r.near_duplicate for r in others.values())  # another letter, however alike, is not the same
    assert others[ids["other-letter.docx"]].similarity > others[ids["recipe.docx"]].similarity
    assert [r.document_id for r in store.related(ids["letter.pdf"], limit=1)] == [ids["letter.docx"]]
    assert store.related(ids["letter.docx"], limit=0) == []
    with pytest.raises(DocumentNotFound):
        store.related(999_999)
    unembedded = add(store, "fresh", "/docs/fresh.txt", "Just stored, not embedded yet.")
    assert store.related(unembedded) is None
    vectors.forget(database_url)


# --------------------------------------------------------------------------
# The command line, the HTTP API and the dashboard
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared(tmp_path_factory, embedder):
    """One SQLite store with the letters and the invoices, embedded, for the CLI, the API and the dashboard."""
    root = tmp_path_factory.mktemp("search-features")
    url = f"sqlite:///{root / 'db' / 'midas.sqlite3'}"
    store = DocumentStore(url, embedder=embedder)
    store.create_schema()
    ids = letters(root / "letters", url, embedder)
    ids["mail"] = add(
        store, "mail", "/inbox/mail/acme/1.txt", INVOICE, {"origin": {"source": "mail", "account": "acme"}}
    )
    ids["old"] = add(store, "old", "/archive/old.txt", INVOICE + " Old.", {"created": "2001-01-01"})
    embed_all(store, embedder)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MIDAS_", "REDIS_"))},
        "MIDAS_DATABASE_URL": url,
        "MIDAS_DATA_DIR": str(root / "data"),
        "MIDAS_LOG_DIR": str(root / "logs"),
        "MIDAS_ENV_FILE": os.devnull,
        "MIDAS_LAUNCH_FILE": os.devnull,
        "REDIS_PORT": str(free_port()),  # nothing listens: search needs no broker
    }
    yield root, url, ids, env
    vectors.forget(url)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = midas_cli(env, *args)
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return done


def test_cli_answers_every_query_filters_and_lists_related_documents(shared) -> None:
    root, _url, ids, env = shared
    for query, said in (
        ("", "no word to search for"),
        ("🙂🚀", "no word to search for"),
        ("the of and a", "only common words"),
        (UNKNOWN_SCRIPT, "knows none of these words"),
    ):
        done = cli(env, "search", query)
        assert done.returncode == 0 and said in done.stdout, (query, done.stdout)
    long = cli(env, "search", "x" * 10_000)
    assert long.returncode == 2 and "Search refused: the query has 10,000 characters" in long.stderr
    bad = cli(env, "search", "invoice", "--since", "2024-13-01")
    assert bad.returncode == 2 and "since must be a date" in bad.stderr

    every = cli(env, "search", "invoice", "--mode", "keyword").stdout
    assert "/inbox/mail/acme/1.txt" in every and "/archive/old.txt" in every
    assert "/archive/old.txt" not in cli(env, "search", "invoice", "--source", "mail").stdout
    dated = cli(env, "search", "invoice", "--until", "2010-12-31", "--mode", "semantic").stdout
    assert dated.startswith("1. /archive/old.txt") and "/inbox/" not in dated
    in_folder = cli(env, "search", "garden chairs", "--source", str(root / "letters"), "--type", "pdf").stdout
    assert in_folder.startswith(f"1. {root / 'letters' / 'letter.pdf'}") and "letter.docx" not in in_folder

    off = {**env, "MIDAS_EMBEDDINGS": "false"}  # the settings say embeddings are off
    said = cli(off, "search", "when is the bill due", "--mode", "semantic")
    assert said.returncode == 0 and "semantic search is off (MIDAS_EMBEDDINGS=false)" in said.stdout
    assert "/archive/old.txt" in cli(off, "search", "invoice").stdout  # hybrid falls back to the words
    assert "not embedded yet" in cli(off, "documents", "related", str(ids["letter.docx"])).stdout

    related = cli(env, "documents", "related", str(ids["letter.docx"])).stdout
    first = related.splitlines()[0]
    assert first.startswith(f"1. {root / 'letters' / 'letter.pdf'}") and first.endswith("NEAR-DUPLICATE")
    assert related.count("NEAR-DUPLICATE") == 1
    missing = cli(env, "documents", "related", "999999")
    assert missing.returncode == 1 and "no document 999999" in missing.stderr


@pytest.fixture(scope="module")
def api(shared):
    root, _url, _ids, env = shared
    token = new_token()
    server = ApiServer({**env, "MIDAS_API_TOKENS": digest(token)}, root / "logs").wait_ready()
    client = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    try:
        yield client
    finally:
        client.close()
        server.stop()


def test_api_search_answers_every_query_and_filters(api, shared) -> None:
    root, _url, _ids, _env = shared
    for q, said in (("", "no word"), ("🙂🚀", "no word"), ("the of and a", "common words"),
                    (UNKNOWN_SCRIPT, "knows none of these words")):  # fmt: skip
        answer = api.get("/search", params={"q": q})
        assert answer.status_code == 200 and said in answer.json()["notice"], (q, answer.text)
    refused = api.get("/search", params={"q": "x" * 10_000})
    assert refused.status_code == 422 and refused.json()["error"] == "invalid_query"
    assert "10,000 characters" in refused.json()["message"]
    for bad in ({"since": "2024-13-01"}, {"status": "lost"}, {"since": "2024-02-01", "until": "2024-01-01"}):
        answer = api.get("/search", params={"q": "invoice", **bad})
        assert answer.status_code == 422 and answer.json()["error"] in ("invalid_argument", "invalid_query"), bad

    def paths(**params) -> list[str]:
        body = api.get("/search", params={"q": "invoice", **params}).json()
        assert body["notice"] is None
        return [h["path"] for h in body["hits"]]

    assert set(paths()) >= {"/inbox/mail/acme/1.txt", "/archive/old.txt"}
    assert paths(source="mail:acme", mode="keyword") == ["/inbox/mail/acme/1.txt"]
    assert paths(until="2001-12-31", mode="semantic") == ["/archive/old.txt"]
    assert paths(status="warnings") == []
    hit = api.get("/search", params={"q": "garden chairs", "type": "pdf"}).json()["hits"][0]
    assert hit["path"] == str(root / "letters" / "letter.pdf") and hit["chunks"] and hit["page"] == 1


def test_api_lists_related_documents(api, shared) -> None:
    root, _url, ids, _env = shared
    body = api.get(f"/documents/{ids['letter.pdf']}/related", params={"limit": 2}).json()
    assert body["embedded"] is True and len(body["related"]) == 2
    first = body["related"][0]
    assert first["document_id"] == ids["letter.docx"] and first["near_duplicate"] is True
    assert first["path"] == str(root / "letters" / "letter.docx") and 0.96 < first["similarity"] <= 1.0001
    assert api.get("/documents/999999/related").status_code == 404
    assert api.get("/documents/0/related").status_code == 422


def test_dashboard_search_filters_notice_and_related_documents(shared) -> None:
    from tests.test_dashboard import assert_no_traceback, make_settings, page, visible_text

    root, url, ids, _env = shared
    settings = make_settings(root / "dash", MIDAS_DATABASE_URL=url)
    at = page(settings, "Documents")
    at.text_input(key="doc_query").input("🙂🚀").run()
    assert_no_traceback(at)
    assert any("no word to search for" in i.value for i in at.info)

    at.text_input(key="doc_query").input("garden chairs").run()
    assert at.radio(key="doc_search_mode").value == "hybrid"
    at.selectbox(key="doc_search_type").set_value("pdf").run()
    assert_no_traceback(at)
    opens = [b.key for b in at.button if b.key.startswith("open_hit_")]
    assert opens and all(k.startswith(f"open_hit_{ids['letter.pdf']}_") for k in opens), opens
    at.text_input(key="doc_search_source").input("mail:acme").run()
    assert "Nothing found." in visible_text(at)
    at.text_input(key="doc_search_source").input("").run()

    at.number_input(key="doc_id").set_value(ids["letter.docx"]).run()
    assert_no_traceback(at)
    text = visible_text(at)
    assert "Related documents" in text and "letter.pdf" in text and "near-duplicate" in text
    assert f"open_related_{ids['letter.docx']}_{ids['letter.pdf']}" in [b.key for b in at.button]
