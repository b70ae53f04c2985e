"""Analysis: table profiles checked against pandas on generated data, text analytics on known text,
storage with the document, and the tasks on the analysis queue through real workers."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pytest

from background_tasks.analysis import analyze as analysis
from background_tasks.analysis import columns as profile_columns
from background_tasks.analysis import profiles as data_profile
from background_tasks.analysis import table_readers
from background_tasks.analysis_tasks import schedule_follow_ups
from background_tasks.extraction.extractors.base import Limits
from background_tasks.processing import pipeline
from background_tasks.processing.chunking import normalize_text
from background_tasks.settings import load_settings
from background_tasks.storage.store import DocumentStore
from tests import db_fixtures
from tests.corpus import corpus_file_or
from tests.support import wait_until

database_url = db_fixtures.database_url  # the SQLite + PostgreSQL fixture


@pytest.fixture
def settings(tmp_path):
    env = {k: v for k, v in os.environ.items() if k.startswith(("MIDAS_", "REDIS_"))}
    env.update({"MIDAS_DATA_DIR": str(tmp_path / "data"), "MIDAS_STABILITY_SECONDS": "0"})
    return load_settings(env, env_file=Path(os.devnull))


@pytest.fixture
def store(settings) -> DocumentStore:
    store = DocumentStore(settings.database_url_resolved)
    store.create_schema()
    return store


def known_frame(rows: int = 5000, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "id": np.arange(1, rows + 1),
            "price": rng.gamma(2.0, 30.0, rows).round(2),
            "city": rng.choice(["Berlin", "Paris", "Rome", "Oslo", "Wien"], rows, p=[0.38, 0.27, 0.2, 0.1, 0.05]),
            "when": pd.date_range("2023-01-01", periods=rows, freq="D").strftime("%Y-%m-%d"),
            "active": rng.choice(["true", "false"], rows, p=[0.7, 0.3]),
        }
    )
    frame.loc[rng.choice(rows, rows // 20, replace=False), "price"] = np.nan
    frame.loc[rng.choice(rows, rows // 50, replace=False), "city"] = None
    return frame


def column(table: dict, name: str) -> dict:
    return next(c for c in table["columns"] if c["name"] == name)


def assert_numeric_matches(profile: dict, series: pd.Series) -> None:
    stats = series.describe()
    numeric = profile["numeric"]
    assert numeric["count"] == stats["count"]
    for ours, theirs in (("min", "min"), ("max", "max"), ("mean", "mean"), ("std", "std"), ("q25", "25%"),
                         ("median", "50%"), ("q75", "75%")):  # fmt: skip
        assert numeric[ours] == pytest.approx(stats[theirs], rel=1e-9, abs=1e-9), ours


# -- tables, against pandas ------------------------------------------------------


def test_csv_profile_matches_pandas_across_many_chunks(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(table_readers, "CHUNK_ROWS", 997)  # read in six uneven chunks, merged
    path = tmp_path / "sales.csv"
    known_frame().to_csv(path, index=False)
    profile = data_profile.profile_file(str(path), ".csv", Limits())
    reference = pd.read_csv(path)
    [table] = profile["tables"]
    assert (table["row_count"], table["column_count"]) == reference.shape
    assert table["column_types"] == {
        "id": "integer", "price": "float", "city": "text", "when": "date", "active": "boolean",
    }  # fmt: skip
    assert table["date_columns"] == ["when"] and table["numeric_columns"] == ["id", "price"]
    for name in reference.columns:
        assert column(table, name)["missing"] == reference[name].isna().sum(), name
    assert table["missing_cells"] == int(reference.isna().sum().sum())
    assert_numeric_matches(column(table, "id"), reference["id"])
    assert_numeric_matches(column(table, "price"), reference["price"])
    city = column(table, "city")
    counts = reference["city"].value_counts()
    assert [(v["value"], v["count"]) for v in city["top_values"]] == list(counts.items())
    assert city["distinct"] == reference["city"].nunique() and city["top_values_exact"]
    dates = pd.to_datetime(reference["when"])
    assert column(table, "when")["dates"]["min"] == dates.min().isoformat()
    assert column(table, "when")["dates"]["max"] == dates.max().isoformat()
    assert {v["value"]: v["count"] for v in column(table, "active")["top_values"]} == dict(
        reference["active"].map({True: "true", False: "false"}).value_counts()
    )


def test_csv_with_title_lines_bad_lines_and_no_header(tmp_path) -> None:
    path = tmp_path / "report.csv"
    body = "region;amount;units\nNorth;10,5;3\nSouth;;4\nNorth;7;\nbroken;line;with;extra\nEast;1;1\n"
    path.write_text("Sales report 2024\n\n" + body.replace("10,5", "10.5"), encoding="utf-8")
    profile = data_profile.profile_file(str(path), ".csv", Limits())
    reference = pd.read_csv(path, sep=";", skiprows=2, on_bad_lines="skip")
    [table] = profile["tables"]
    assert (table["row_count"], table["column_count"]) == reference.shape == (4, 3)
    assert profile["warnings"] == ["2 line(s) above the header row skipped", "1 malformed line(s) skipped"]
    assert {c["name"]: c["missing"] for c in table["columns"]} == reference.isna().sum().to_dict()
    assert_numeric_matches(column(table, "amount"), reference["amount"])
    bare = tmp_path / "bare.csv"
    bare.write_text("1,2.5,x\n3,4.5,y\n5,,x\n")
    profile = data_profile.profile_file(str(bare), ".csv", Limits())
    [table] = profile["tables"]
    assert table["column_types"] == {"column_1": "integer", "column_2": "float", "column_3": "text"}
    assert table["row_count"] == len(pd.read_csv(bare, header=None)) == 3


def test_quartiles_beyond_the_sample_are_close_and_flagged(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(profile_columns, "QUANTILE_SAMPLE", 4000)
    monkeypatch.setattr(table_readers, "CHUNK_ROWS", 5000)
    rng = np.random.default_rng(3)
    path = tmp_path / "big.csv"
    pd.DataFrame({"x": rng.uniform(0, 1000, 60_000).round(3)}).to_csv(path, index=False)
    [table] = data_profile.profile_file(str(path), ".csv", Limits())["tables"]
    numeric = column(table, "x")["numeric"]
    reference = pd.read_csv(path)["x"]
    assert numeric["quartiles_exact"] is False
    assert numeric["mean"] == pytest.approx(reference.mean(), rel=1e-9)  # moments stay exact
    assert numeric["std"] == pytest.approx(reference.std(), rel=1e-9)
    assert (numeric["min"], numeric["max"]) == (reference.min(), reference.max())
    for key, q in (("q25", 0.25), ("median", 0.5), ("q75", 0.75)):
        assert abs(numeric[key] - reference.quantile(q)) < 0.03 * 1000, key


def test_top_values_survive_pruning_of_rare_values(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(profile_columns, "MAX_TRACKED_VALUES", 200)
    monkeypatch.setattr(table_readers, "CHUNK_ROWS", 500)
    values = ["alpha"] * 900 + ["beta"] * 600 + ["gamma"] * 300 + [f"id-{i}" for i in range(3000)]
    rng = np.random.default_rng(5)
    rng.shuffle(values)
    path = tmp_path / "codes.csv"
    pd.DataFrame({"code": values}).to_csv(path, index=False)
    [table] = data_profile.profile_file(str(path), ".csv", Limits())["tables"]
    code = column(table, "code")
    assert [(v["value"], v["count"]) for v in code["top_values"][:3]] == [("alpha", 900), ("beta", 600), ("gamma", 300)]
    assert code["top_values_exact"] is False and "distinct" not in code


def test_xlsx_sheets_with_native_types_and_a_title_line(tmp_path) -> None:
    rng = np.random.default_rng(11)
    path = tmp_path / "book.xlsx"
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "Sales"
    sheet.append(["Sales report 2024"])  # a title above the header
    sheet.append(["Region", "Amount", "Booked", "Units"])
    for i in range(300):
        amount = None if i % 17 == 0 else round(float(rng.normal(500, 80)), 2)
        sheet.append(["North" if i % 3 else "South", amount, pd.Timestamp("2024-01-01") + pd.Timedelta(days=i), i % 7])
    other = workbook.create_sheet("Notes")
    other.append(["Topic", "Owner"])
    other.append(["Budget", "Ann"])
    other.append(["Hiring", None])
    workbook.create_sheet("Empty")
    workbook.save(path)

    profile = data_profile.profile_file(str(path), ".xlsx", Limits())
    sales, notes, empty = profile["tables"]
    reference = pd.read_excel(path, sheet_name="Sales", header=1)
    assert sales["name"] == "Sales" and (sales["row_count"], sales["column_count"]) == reference.shape
    assert sales["notes"] == ["1 line(s) above the header row skipped"]
    assert sales["column_types"] == {"Region": "text", "Amount": "float", "Booked": "date", "Units": "integer"}
    assert sales["date_columns"] == ["Booked"]
    assert column(sales, "Amount")["missing"] == reference["Amount"].isna().sum() == 18
    assert_numeric_matches(column(sales, "Amount"), reference["Amount"])
    assert_numeric_matches(column(sales, "Units"), reference["Units"])
    assert column(sales, "Booked")["dates"]["max"] == reference["Booked"].max().isoformat()
    assert [(v["value"], v["count"]) for v in column(sales, "Region")["top_values"]] == list(
        reference["Region"].value_counts().items()
    )
    assert (notes["row_count"], notes["column_count"], notes["missing_cells"]) == (2, 2, 1)
    assert (empty["name"], empty["row_count"], empty["column_count"]) == ("Empty", 0, 0)


@pytest.mark.filterwarnings("ignore:The xlrd engine is deprecated")
def test_xls_from_the_corpus_matches_pandas(generated_corpus) -> None:
    path = corpus_file_or("xls/test.xls", generated_corpus / "budget.xls")
    profile = data_profile.profile_file(str(path), ".xls", Limits())
    reference = pd.read_excel(path, sheet_name=None, engine="xlrd")
    assert [t["name"] for t in profile["tables"]] == list(reference)
    for table in profile["tables"]:
        frame = reference[table["name"]]
        assert (table["row_count"], table["column_count"]) == frame.shape
        assert list(table["column_types"]) == [str(c) for c in frame.columns]
        for name in frame.columns:
            ours = column(table, str(name))
            assert ours["missing"] == frame[name].isna().sum()
            if pd.api.types.is_numeric_dtype(frame[name]) and frame[name].notna().any():
                assert_numeric_matches(ours, frame[name])


def test_json_records_streamed_in_small_reads_match_pandas(tmp_path, monkeypatch) -> None:
    rng = np.random.default_rng(2)
    records = [
        {
            "name": f"item {i}",
            "price": None if i % 9 == 0 else round(float(rng.uniform(1, 99)), 2),
            "tags": ["a", "b"] if i % 2 else [],
            "address": {"city": ["Graz", "Linz", "Wels"][i % 3], "zip": 8000 + i % 5},
            "ok": bool(i % 4),
        }
        for i in range(700)
    ]
    path = tmp_path / "items.json"
    path.write_text(json.dumps(records, indent=1), encoding="utf-8")
    monkeypatch.setattr(table_readers, "CHUNK_ROWS", 100)
    whole = data_profile.profile_file(str(path), ".json", Limits())
    monkeypatch.setattr(table_readers, "_JSON_READ", 64)  # every record crosses a buffer boundary
    streamed = data_profile.profile_file(str(path), ".json", Limits())
    assert streamed == whole
    [table] = streamed["tables"]
    reference = pd.json_normalize(records)
    assert table["row_count"] == len(reference)
    assert set(table["column_types"]) == set(reference.columns)
    assert table["column_types"]["address.city"] == "text" and table["column_types"]["address.zip"] == "integer"
    assert table["column_types"]["ok"] == "boolean"
    assert column(table, "price")["missing"] == reference["price"].isna().sum()
    assert column(table, "tags")["missing"] == sum(1 for r in records if not r["tags"])
    assert_numeric_matches(column(table, "price"), reference["price"])
    # the same records as JSON Lines, and inside an object
    lines = tmp_path / "items.jsonl"
    lines.write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    assert data_profile.profile_file(str(lines), ".jsonl", Limits())["tables"] == streamed["tables"]
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"meta": {"v": 1}, "items": records}), encoding="utf-8")
    [inner] = data_profile.profile_file(str(wrapped), ".json", Limits())["tables"]
    assert inner["name"] == "items" and inner["columns"] == table["columns"]


# -- stored with the document, failures as answers -------------------------------------


def test_analysis_is_stored_with_the_document(settings, store, docs_dir) -> None:
    path = docs_dir / "orders.csv"
    known_frame(400).to_csv(path, index=False)
    processed = pipeline.process_file(str(path), settings, store)
    result = analysis.analyze_data_path(str(path), settings, store)
    assert result["status"] == "success" and result["document_id"] == processed.document_id
    assert result["sha256"] == processed.sha256 and result["file_type"] == "csv"
    stored = analysis.get_analysis(processed.document_id, url=store.url)
    assert stored["data"] == result and stored["text"] is None
    # analysed before it was processed: found once the document exists
    early = docs_dir / "early.csv"
    known_frame(50, seed=1).to_csv(early, index=False)
    first = analysis.analyze_data_path(str(early), settings, store)
    assert first["status"] == "success" and first["document_id"] is None
    later = pipeline.process_file(str(early), settings, store)
    assert analysis.get_analysis(later.document_id, url=store.url)["data"]["tables"] == first["tables"]
    assert analysis.get_analysis(999_999, url=store.url) is None


def test_bad_data_files_get_clear_answers(settings, store, docs_dir, generated_corpus) -> None:
    def outcome(name: str, content: str) -> tuple[str, str]:
        path = docs_dir / name
        path.write_text(content, encoding="utf-8")
        result = analysis.analyze_data_path(str(path), settings, store)
        return result["status"], result.get("error_type")

    assert outcome("numbers.json", "[1, 2, 3]") == ("rejected", "unsupported")
    assert outcome("config.json", '{"debug": true, "level": 3}') == ("rejected", "unsupported")
    assert outcome("notes.txt", "plain words") == ("rejected", "unsupported")
    assert outcome("empty.json", "[]") == ("failed", "empty")
    assert outcome("broken.json", '[{"a": 1}, {"a": 2') == ("success", None)  # one complete record, with a note
    assert outcome("garbage.json", "[{nonsense") == ("failed", "corrupt")
    outside = analysis.analyze_data_path("/etc/hostname", settings, store)
    assert (outside["status"], outside["error_type"]) == ("rejected", "path_not_allowed")
    cut_off = corpus_file_or("json/dots_simple.json", generated_corpus / "records-cut-off.json")
    truncated = analysis.analyze_data_path(str(cut_off), settings, store)
    assert truncated["status"] == "success" and "not closed" in truncated["warnings"][0]


# -- text analytics --------------------------------------------------------------------

KNOWN_TEXT = """Quarterly report. Contact Jane at jane.doe@example.com or visit https://example.org/reports?id=7.

The invoice of 12.03.2024 for EUR 1.234,56 is due on 2024-04-01. Payment of $1,250.00 arrived on March 5, 2024!
Dr. Smith approved it, e.g. after review. Der Betrag von 99,90 € wurde am 5. Januar 2024 überwiesen.

See www.midas.dev for details"""


def test_counts_sentences_and_reading_time_of_known_text(store) -> None:
    ten_words = "Budget meeting moved to Friday. Bring the revised figures, please. "  # 10 words, 2 sentences
    result = analysis.analyze_text(ten_words * 46, store.url, language="en")
    assert (result["word_count"], result["sentence_count"]) == (460, 92)
    assert result["reading_time_minutes"] == 2.0  # 460 words at 230 per minute
    # abbreviations, ordinals, URLs and e-mail addresses do not end sentences; headings and lines do
    assert analysis.sentence_count(KNOWN_TEXT) == 7
    assert analysis.sentence_count("One. Two? Three!\n\nHeading\n\nlast words") == 5
    assert analysis.sentence_count("") == 0


def test_entities_in_known_text() -> None:
    found = analysis.find_entities(KNOWN_TEXT)
    assert found["emails"] == [{"value": "jane.doe@example.com", "count": 1}]
    assert [u["value"] for u in found["urls"]] == ["https://example.org/reports?id=7", "www.midas.dev"]
    assert {(d["text"], d["iso"]) for d in found["dates"]} == {
        ("12.03.2024", "2024-03-12"), ("2024-04-01", "2024-04-01"), ("March 5, 2024", "2024-03-05"),
        ("5. Januar 2024", "2024-01-05"),
    }  # fmt: skip
    assert {(a["currency"], a["value"]) for a in found["amounts"]} == {("EUR", 1234.56), ("USD", 1250.0), ("EUR", 99.9)}
    ambiguous = analysis.find_entities("on 03/04/2024 and 13/04/2024 and 31/02/2024")["dates"]
    assert [(d["text"], d["iso"]) for d in ambiguous] == [("03/04/2024", None), ("13/04/2024", "2024-04-13")]


def test_entity_patterns_stay_fast_on_hostile_text() -> None:
    hostile = (
        "a" * 400_000 + "@" + "b." * 200_000 + " " + "1." * 200_000 + " €" + "9" * 100_000 + " http://" + "x" * 300
    )
    started = time.monotonic()
    analysis.find_entities(hostile)
    analysis.sentence_count(hostile)
    assert time.monotonic() - started < 5


def test_text_of_chunks_gives_back_the_text(settings, store, docs_dir) -> None:
    text = "\n\n".join(f"Paragraph {i}: " + "words that repeat " * 40 for i in range(20))
    path = docs_dir / "long.txt"
    path.write_text(text)
    result = pipeline.process_file(str(path), settings, store)
    assert result.chunks_created > 5
    assert analysis.text_of_chunks(store.get_chunks(result.document_id)) == normalize_text(text)


def test_keywords_are_distinctive_against_the_whole_store(tmp_path, database_url, docs_dir) -> None:
    env = {k: v for k, v in os.environ.items() if k.startswith(("MIDAS_", "REDIS_"))}
    env.update({"MIDAS_DATA_DIR": str(tmp_path / "data"), "MIDAS_DATABASE_URL": database_url})
    settings = load_settings(env, env_file=Path(os.devnull))
    store = DocumentStore(database_url)
    store.create_schema()
    common = "The quarterly budget report covers revenue, costs and the budget plan. "
    topics = {
        "wombats.txt": "Wombats dig burrows. Wombat burrows protect wombats from heat. ",
        "glaciers.txt": "Glaciers retreat. Meltwater from glaciers feeds rivers. ",
        "bridges.txt": "Bridges need inspection. Steel bridges corrode. ",
    }
    ids = {}
    for name, topic in topics.items():
        (docs_dir / name).write_text((common + topic) * 6)
        ids[name] = pipeline.process_file(str(docs_dir / name), settings, store).document_id
    result = analysis.analyze_document_text(ids["wombats.txt"], store)
    assert result["status"] == "success" and result["language"] == "en"
    keywords = {k["term"]: k for k in result["keywords"]}
    assert keywords["budget"]["documents"] == 3 and keywords["wombats"]["documents"] == 1
    assert keywords["burrows"]["count"] == keywords["budget"]["count"] == 12
    assert keywords["burrows"]["score"] > keywords["budget"]["score"], "same count, rarer in the store: ranks higher"
    assert {k["term"] for k in result["keywords"][:2]} == {"wombats", "burrows"}, result["keywords"]
    assert "the" not in keywords and "and" not in keywords  # stopwords
    assert analysis.get_analysis(ids["wombats.txt"], url=store.url)["text"] == result
    missing = analysis.analyze_document_text(999_999, store)
    assert missing["status"] == "failed" and missing["error_type"] == "not_found"


def test_follow_ups_only_for_processed_tables_and_pending_scans() -> None:
    assert schedule_follow_ups({"status": "failed", "document_id": 3, "file_type": "csv"}) == []
    assert schedule_follow_ups({"status": "duplicate", "document_id": 3, "file_type": "csv"}) == []
    assert schedule_follow_ups({"status": "success", "document_id": 3, "file_type": "pdf", "metadata": {}}) == []
    config = {"status": "success", "document_id": 3, "file_type": "json", "metadata": {"json_type": "object"}}
    assert schedule_follow_ups(config) == []


# -- through real workers on the analysis queue ------------------------------------------


def test_tables_are_analysed_on_their_own_on_the_analysis_queue(isolated_stack, docs_dir) -> None:
    stack = isolated_stack()
    stack.start_worker(queues=["documents"], concurrency=1, name="docs-only")
    analyst = stack.start_worker(queues=["analysis"], concurrency=1, name="analysis-only")
    url = stack.settings.database_url_resolved
    path = docs_dir / "metrics.csv"
    frame = known_frame(800, seed=4)
    frame.to_csv(path, index=False)
    processed = stack.send("background_tasks.document_tasks.process_document_file", str(path)).get(timeout=60)
    assert processed["status"] == "success"
    stored = wait_until(
        lambda: (analysis.get_analysis(processed["document_id"], url=url) or {}).get("data"),
        timeout=60,
        interval=0.2,
        what="the chained data analysis",
    )
    assert stored["status"] == "success" and stored["document_id"] == processed["document_id"]
    [table] = stored["tables"]
    reference = pd.read_csv(path)
    assert table["row_count"] == len(reference)
    assert column(table, "price")["numeric"]["mean"] == pytest.approx(reference["price"].mean(), rel=1e-9)
    assert "background_tasks.analysis_tasks.analyze_data_file[" in analyst.log_text()

    text = stack.send("background_tasks.analysis_tasks.analyze_document", processed["document_id"]).get(timeout=60)
    assert text["status"] == "success" and text["word_count"] > 0
    assert analysis.get_analysis(processed["document_id"], url=url)["text"]["word_count"] == text["word_count"]

    records = docs_dir / "people.json"
    records.write_text(json.dumps([{"name": "Ann", "age": 31}, {"name": "Bob", "age": 45}]), encoding="utf-8")
    direct = stack.send("background_tasks.analysis_tasks.analyze_data_file", str(records)).get(timeout=60)
    assert direct["status"] == "success" and column(direct["tables"][0], "age")["numeric"]["mean"] == 38
    assert analyst.log_text().count("analyze_data_file[") >= 2


@pytest.mark.parametrize(
    ("lines", "header"),
    [
        # a title above the header
        (["Quarterly figures", "region,amount,units", "North,10,3", "South,7,4"], ["region", "amount", "units"]),
        # dates and times in the first row are data, not column names
        (["2024-01-05,2024-02-01,12:30", "2024-03-05,2024-04-01,13:45"], None),
        # numbers with thousands separators and percentages too
        (["1,234.5;12%;7", "2,000.0;15%;8"], None),
    ],
)
def test_the_text_and_the_profile_agree_on_the_header_row(tmp_path, lines, header) -> None:
    """Search results and the analysis must name a table's columns the same way."""
    from background_tasks.extraction.extractors.tabular import CsvExtractor

    path = tmp_path / "table.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    extraction = CsvExtractor().extract(path, Limits())
    [table] = data_profile.profile_file(str(path), ".csv", Limits())["tables"]
    info = extraction.metadata
    assert info["has_header"] is (header is not None)
    if header is None:
        assert [c["name"] for c in table["columns"]][:2] == ["column_1", "column_2"]
        assert table["row_count"] == info["row_count"] == len(lines)
    else:
        assert [c["name"] for c in table["columns"]] == header == info["columns"]
        assert table["row_count"] == info["row_count"] == len(lines) - 2
