"""A labelled query set over the shared corpus, and how a search mode scores on it (recall@5, MRR).

Written by hand after reading the documents (``../shared/corpus``). Three kinds:

- ``paraphrase``: what a document says, in other words than its own (synonyms, a description
  of its subject, a question it answers); its distinctive words are left out on purpose.
- ``language``: the same in another language than the document's: English for the German
  documents (and the Hebrew, Russian, Japanese ... ones), German and Greek for English ones,
  Greek for the document about Greek heading styles.
- ``exact``: a term or name that stands in the document word for word.

``answers`` are the corpus files (``ext/name``) that answer the query: every copy when the corpus
holds the same text twice (``csv-comma.csv`` and ``csv-tab.csv``). Paraphrase and language
queries together are the "other words" set of issue 17; ``exact`` the exact-term set.
The bench (``python -m bench bench_search``) and ``tests/test_search_quality.py`` score them.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

PARAPHRASE = "paraphrase"
LANGUAGE = "language"
EXACT = "exact"
#: recall is measured in the first K results (documents)
K = 5


@dataclass(frozen=True)
class LabelledQuery:
    query: str
    kind: str
    answers: tuple[str, ...]


def _q(kind: str, query: str, *answers: str) -> LabelledQuery:
    return LabelledQuery(query, kind, answers)


SQUARES_TABLES = ("csv/testCSV.csv", "xls/testEXCEL.xls", "xlsx/testEXCEL.xlsx")

QUERIES: tuple[LabelledQuery, ...] = (
    # -- paraphrases: the subject in other words -----------------------------------------------
    _q(PARAPHRASE, "plans so that handicapped people can use government buildings and services",
       "doc/testException1.doc"),
    _q(PARAPHRASE, "orchard fruit that can be red or green and is baked into a dessert",
       "rtf/testRTFCorruptListOverride.rtf"),
    _q(PARAPHRASE, "who invented the smiley face used in electronic messages", "eml/mime-html-only.eml"),
    _q(PARAPHRASE, "developer asks other projects how they depend on the file format identification classes",
       "msg/testMSG.msg"),
    _q(PARAPHRASE, "a little bird paddling in a pond in the warm season and what it likes to snack on",
       "docx/word_sample.docx"),
    _q(PARAPHRASE, "worked physics example of light spreading out after passing a narrow slit",
       "docx/equations.docx"),
    _q(PARAPHRASE, "does changing sampling settings of a chatbot model raise accuracy on high school contest maths",
       "html/test_blog.html"),
    _q(PARAPHRASE, "an old American computer maker famous for room sized business machines", "md/wiki.md"),
    _q(PARAPHRASE, "python library converting office documents and spreadsheets to plain text markup for AI",
       "md/README.md"),
    _q(PARAPHRASE, "unwanted advertising mail kept out of the inbox by a desktop mail program",
       "msg/test-outlook2003.msg"),
    _q(PARAPHRASE, "waterfowl: how they feed, breed and which kinds are kept on farms", "html/wiki_duck.html"),
    _q(PARAPHRASE, "daily military analysis of the front lines in the war against Kyiv",
       "html/example-with-scripts.html"),
    _q(PARAPHRASE, "law passed after the 2001 attacks giving investigators wider wiretapping powers",
       "html/fake-html-pre.html"),
    _q(PARAPHRASE, "yearly filing to the stock market regulator by a casino card game licensing firm",
       "html/example-10k.html"),
    _q(PARAPHRASE, "duties of the official who collects and distributes payments in a debtor's repayment plan",
       "docx/handbook-872p.docx"),
    _q(PARAPHRASE, "Russian aristocrats and soldiers when the French emperor marched on Moscow",
       "txt/book-war-and-peace-1225p.txt"),
    _q(PARAPHRASE, "mouse genome study of proteins that silence jumping genetic elements", "xml/elife-56337.xml"),
    _q(PARAPHRASE, "patent on crop protection compounds that kill weeds and insect pests",
       "xml/ipa20110039701.xml"),
    _q(PARAPHRASE, "federal regulation listing narcotic medicines and which preparations are exempt",
       "pdf/testPDF_bad_page_303226.pdf"),
    _q(PARAPHRASE, "corporate blog on how big firms adopt its generative AI assistant", "xml/test_rss.xml"),
    _q(PARAPHRASE, "encyclopedia article about the maker of the Windows operating system",
       "html/test_wikipedia.html"),
    _q(PARAPHRASE, "a phone network operator's quarterly figures and subscriber counts", "xlsx/vodafone.xlsx"),
    _q(PARAPHRASE, "which nations grow leafy green vegetables and ship them to America",
       "xls/testEXCEL_labels-govdocs-515858.xls"),
    _q(PARAPHRASE, "bill for a monthly cloud office software subscription", "pdf/invalid_pdf.pdf"),
    _q(PARAPHRASE, "Japanese industrial standard for an alloy used to make fasteners",
       "html/example-steelJIS-datasheet-utf-16.html"),
    _q(PARAPHRASE, "website access records with requests, client addresses and response codes", "log/u_ex160110.log"),
    _q(PARAPHRASE, "how immune cell measurements relate to blood protein levels, as rank coefficients",
       "csv/csv-with-long-lines.csv"),
    _q(PARAPHRASE, "client list with employer, town, telephone and subscription date",
       "csv/csv-comma.csv", "csv/csv-tab.csv"),
    _q(PARAPHRASE, "how many ice hockey championship trophies each club has",
       "csv/stanley-cups.csv", "csv/stanley-cups-with-emoji.csv"),
    _q(PARAPHRASE, "table of whole numbers next to each number multiplied by itself", *SQUARES_TABLES),
    _q(PARAPHRASE, "nations with their capital, head of government and favourite sport",
       "xml/factbook.xml", "xml/factbook-utf-16.xml"),
    _q(PARAPHRASE, "garden equipment with prices and whether it can be bought now", "json/arbitrary-records.json"),
    _q(PARAPHRASE, "verse about a child who stays on a ship in flames", "odt/serious_poem.odt"),
    _q(PARAPHRASE, "statement that every person has the same freedom and worth",
       "md/eng_spa_mult.md", "odt/eng_spa_mult.odt"),
    _q(PARAPHRASE, "a sample paragraph that deliberately carries no meaning, to show how a font looks",
       "pdf/truncated_pdflatex-4-pages.pdf"),
    _q(PARAPHRASE, "product categories of a shop for pets, from aquarium fish to grooming",
       "xls/biff4_no_format_no_window2.xls"),
    _q(PARAPHRASE, "batch job settings naming where each input is read and where each output goes",
       "json/tika_test.json", "json/truncated_test-with-unpack.json"),
    _q(PARAPHRASE, "a data scientist mails the company's picture mark to herself", "eml/email-with-image.eml"),
    _q(PARAPHRASE, "mail carrying a PDF that was saved with several revisions appended",
       "eml/test-incremental-updates.eml"),
    _q(PARAPHRASE, "someone aged thirty living in a big US city who likes jogging and cooking",
       "json/fake-incomplete-json.json"),
    _q(PARAPHRASE, "test note saying burgers taste great and fluffy covers are lovely",
       "txt/fake-text-utf-16.txt", "txt/fake-text-utf-16-be.txt"),
    _q(PARAPHRASE, "test message with a little rhyme about flowers and their colours",
       "eml/fake-email-malformed-encoding.eml", "eml/fake-email-utf-16.eml", "msg/fake-email.msg"),
    _q(PARAPHRASE, "a scanned greeting for the start of the calendar year", "pdf/testOCR.pdf"),
    _q(PARAPHRASE, "may the trustee pay for small office items with his own plastic card", "docx/handbook-872p.docx"),
    _q(PARAPHRASE, "how much money the software giant lost on handsets and how many staff it let go",
       "html/test_wikipedia.html"),
    _q(PARAPHRASE, "which animal people find funniest according to a psychology experiment", "html/wiki_duck.html"),
    _q(PARAPHRASE, "why a lightweight markup format suits large language models", "md/README.md"),
    _q(PARAPHRASE, "guidelines for destroying confiscated narcotics safely", "pdf/testPDF_bad_page_303226.pdf"),
    _q(PARAPHRASE, "American air defence missiles to be sent to protect Ukrainian cities",
       "html/example-with-scripts.html"),
    _q(PARAPHRASE, "the firm's breakthroughs such as the cash machine and the floppy disk storage", "md/wiki.md"),
    # -- in another language than the document's ----------------------------------------------
    _q(LANGUAGE, "heart CT scan finding no narrowing of the coronary vessels", "rtf/nested_table.rtf"),
    _q(LANGUAGE, "student upset about a failing exam grade wants to appeal",
       "eml/email-no-utf8-2008-07-16.062410.eml"),
    _q(LANGUAGE, "lecture notes on manifolds, covering spaces and hyperbolic planes",
       "pdf/GeoTopo-komprimiert.pdf"),
    _q(LANGUAGE, "proof by contradiction that there are infinitely many prime numbers", "pdf/GeoTopo-komprimiert.pdf"),
    _q(LANGUAGE, "court decision on a privacy fine for selling marketing profiles of people",
       "rtf/BVWGT_20241227_W258_2227269_1_00_01.rtf"),
    _q(LANGUAGE, "information notice about processing personal data under the EU regulation",
       "rtf/ansicpg1250.rtf"),
    _q(LANGUAGE, "weekly lunch menu of a canteen with soups and vegetarian dishes",
       "txt/cp1252_Speiseplan_KW_32-33_Eybl.txt"),
    _q(LANGUAGE, "headings in a non-English language are lost when converting old Word files",
       "doc/greek_heading_styles.doc"),
    _q(LANGUAGE, "annual financial statements for the business year 2020", "html/fake-html-lang-de.html"),
    _q(LANGUAGE, "records of the execution of a spy found in a second-hand bookshop", "rtf/testRTFJapanese.rtf"),
    _q(LANGUAGE, "poem about a peasant boy leading a horse with a load of firewood in winter",
       "txt/russian.cp866.txt"),
    _q(LANGUAGE, "a wise man in a village teaches people to live in peace",
       "html/testArabicMisleadingCharset.html"),
    _q(LANGUAGE, "allocation table of telephone number ranges for a region of Ukraine", "rtf/issue_29_bad.rtf"),
    _q(LANGUAGE, "price list for steel water pipes per tonne", "xls/corrupted_error.xls"),
    _q(LANGUAGE, "trade union congratulates a worker elected model employee", "msg/testMSG_chinese.msg"),
    _q(LANGUAGE, "Jahresbericht eines Unternehmens, das Kartenspiele an Spielbanken lizenziert",
       "html/example-10k.html"),
    _q(LANGUAGE, "Roman über russische Adelsfamilien während der Feldzüge Napoleons",
       "txt/book-war-and-peace-1225p.txt"),
    _q(LANGUAGE, "Enzyklopädieartikel über Enten und ihre Lebensweise", "html/wiki_duck.html"),
    _q(LANGUAGE, "επικεφαλίδες εγγράφων σε γλώσσα άλλη από τα αγγλικά", "doc/greek_heading_styles.doc"),
    _q(LANGUAGE, "άρθρο εγκυκλοπαίδειας για τη Microsoft", "html/test_wikipedia.html"),
    # -- exact terms: in the document word for word ----------------------------------------------
    _q(EXACT, "Genoa and Lucca", "txt/book-war-and-peace-1225p.txt"),
    _q(EXACT, "Zariski", "pdf/GeoTopo-komprimiert.pdf"),
    _q(EXACT, "Calcium-Score", "rtf/nested_table.rtf"),
    _q(EXACT, "KRAB-ZFP", "xml/elife-56337.xml"),
    _q(EXACT, "Stanley Cups", "csv/stanley-cups.csv", "csv/stanley-cups-with-emoji.csv"),
    _q(EXACT, "Scott Fahlman", "eml/mime-html-only.eml"),
    _q(EXACT, "Galaxy Gaming", "html/example-10k.html"),
    _q(EXACT, "Junk E-mail Filter", "msg/test-outlook2003.msg"),
    _q(EXACT, "Methcathinone", "pdf/testPDF_bad_page_303226.pdf"),
    _q(EXACT, "Disability Access and Inclusion Plans", "doc/testException1.doc"),
    _q(EXACT, "Bundesverwaltungsgericht", "rtf/BVWGT_20241227_W258_2227269_1_00_01.rtf"),
    _q(EXACT, "Speiseplan", "txt/cp1252_Speiseplan_KW_32-33_Eybl.txt"),
    _q(EXACT, "Google Workspace", "pdf/invalid_pdf.pdf"),
    _q(EXACT, "SNB22-3", "html/example-steelJIS-datasheet-utf-16.html"),
    _q(EXACT, "Herman Hollerith", "md/wiki.md"),
    _q(EXACT, "cloquintocet-mexyl", "xml/ipa20110039701.xml"),
    _q(EXACT, "Jahresabschluss", "html/fake-html-lang-de.html"),
    _q(EXACT, "Diabrotica balteata", "xml/ipa20110039701.xml"),
    _q(EXACT, "Bakhmut", "html/example-with-scripts.html"),
    _q(EXACT, "Muscovy duckling", "html/wiki_duck.html"),
    _q(EXACT, '"quick brown fox"', "doc/testWORD6.doc", "doc/testWORD_2006ml.doc", "xlsx/testEXCEL_embeded.xlsx"),
    _q(EXACT, "MarkItDown", "md/README.md", "rtf/test.rtf"),
    _q(EXACT, "USA PATRIOT ACT", "html/fake-html-pre.html"),
    _q(EXACT, "Chapter 13 Standing Trustees", "docx/handbook-872p.docx"),
)  # fmt: skip

OTHER_WORDS = (PARAPHRASE, LANGUAGE)


# --------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Score:
    """Mean recall@K and mean reciprocal rank (first answer in the first 10) of one mode on some queries."""

    queries: int
    recall: float
    mrr: float


def score(ranked: Iterable[tuple[LabelledQuery, list[str]]]) -> Score:
    """``ranked``: each query with the corpus files a search returned, best first."""
    recalls, reciprocal = [], []
    for labelled, files in ranked:
        answers = set(labelled.answers)
        recalls.append(len(answers & set(files[:K])) / len(answers))
        rank = next((i for i, f in enumerate(files[:10], 1) if f in answers), None)
        reciprocal.append(1.0 / rank if rank else 0.0)
    if not recalls:
        return Score(0, 0.0, 0.0)
    return Score(len(recalls), statistics.fmean(recalls), statistics.fmean(reciprocal))


def corpus_file(path: str | None, corpus: Path) -> str:
    """``ext/name`` of a stored path inside the corpus ('' for anything else)."""
    if not path:
        return ""
    try:
        return Path(path).relative_to(corpus).as_posix()
    except ValueError:
        return ""


Search = Callable[[str, str], list[str]]


def run(search: Search, mode: str, kinds: Iterable[str]) -> tuple[Score, list[float]]:
    """Score ``mode`` on the queries of ``kinds``; also each search's latency in ms. ``search(query, mode)``."""
    wanted = set(kinds)
    ranked, latency = [], []
    for labelled in QUERIES:
        if labelled.kind in wanted:
            started = time.perf_counter()
            files = search(labelled.query, mode)
            latency.append((time.perf_counter() - started) * 1000)
            ranked.append((labelled, files))
    return score(ranked), latency


def corpus_searcher(store, corpus: Path) -> Search:
    """``search(query, mode)`` over a store holding the corpus: the corpus files of the first 10 documents."""

    def search(query: str, mode: str) -> list[str]:
        return [corpus_file(hit.path, corpus) for hit in store.search(query, limit=10, mode=mode)]

    return search


def build_corpus_store(data_dir: Path, corpus: Path, embedder) -> tuple[object, float]:
    """Every corpus file processed into a fresh SQLite store under ``data_dir`` and embedded; (store, seconds)."""
    from background_tasks.analysis.embeddings_index import embed_chunks
    from background_tasks.processing import pipeline
    from background_tasks.settings import load_settings
    from background_tasks.storage import vectors
    from background_tasks.storage.store import DocumentStore

    started = time.perf_counter()
    env = {
        "MIDAS_DATA_DIR": str(data_dir),
        "MIDAS_LOG_DIR": str(data_dir / "logs"),
        "MIDAS_ALLOWED_ROOTS": str(corpus),
        "MIDAS_EXTRACT_TIMEOUT": "120",
        "MIDAS_OCR_LANGUAGES": "eng",
    }
    settings = load_settings(env, env_file=Path(os.devnull))
    store = DocumentStore(settings.database_url_resolved, embedder=embedder)
    store.create_schema()
    for path in sorted(p for p in corpus.glob("*/*") if p.is_file() and p.parent.name != "_expected"):
        pipeline.process_file(str(path), settings, store)
    for document_id in vectors.documents_to_embed(store.url, embedder.info.key):
        embed_chunks(store.url, document_id, embedder)
    return store, time.perf_counter() - started
