"""Every real document of the shared corpus through the whole pipeline, and through a real worker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from background_tasks.document_tasks import process_document_batch
from background_tasks.processing import pipeline
from background_tasks.settings import load_settings
from background_tasks.storage.store import DocumentStore
from tests.corpus import corpus_dir, manifest_notes

FINAL = {"success", "duplicate", "failed", "rejected"}


def corpus_paths() -> list[Path]:
    base = corpus_dir()
    return sorted(p for p in base.glob("*/*") if p.is_file() and p.parent.name != "_expected")


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory) -> dict[str, pipeline.ProcessResult]:
    data = tmp_path_factory.mktemp("corpus-data")
    env = {k: v for k, v in os.environ.items() if k.startswith(("MIDAS_", "REDIS_"))}
    env.update({"MIDAS_DATA_DIR": str(data), "MIDAS_EXTRACT_TIMEOUT": "120"})
    settings = load_settings(env, env_file=Path(os.devnull))
    store = DocumentStore(settings.database_url_resolved)
    store.create_schema()
    results = {}
    for path in corpus_paths():
        key = f"{path.parent.name}/{path.name}"
        results[key] = pipeline.process_file(str(path), settings, store)
    results["__store__"] = store  # type: ignore[assignment]
    return results


def test_every_corpus_file_ends_in_a_definite_status(corpus_run) -> None:
    results = {k: v for k, v in corpus_run.items() if k != "__store__"}
    assert len(results) == len(manifest_notes()) == 148
    assert {r.status for r in results.values()} <= FINAL
    for key, result in results.items():
        if result.status in {"failed", "rejected"}:
            assert result.error and result.error_type, key


def test_most_of_the_corpus_yields_text(corpus_run) -> None:
    results = {k: v for k, v in corpus_run.items() if k != "__store__"}
    ok = [k for k, r in results.items() if r.status in {"success", "duplicate"}]
    assert len(ok) >= 120, sorted(set(results) - set(ok))
    for ext in {k.split("/")[0] for k in results}:
        assert any(k.startswith(ext + "/") for k in ok), f"no {ext} file was processed successfully"


@pytest.mark.parametrize(
    ("key", "expected_status", "error_type"),
    [
        ("doc/testWORD_protected_passtika.doc", "failed", "encrypted"),
        ("xls/password.xls", "failed", "encrypted"),
        ("xlsx/testEXCEL_protected_passtika.xlsx", "failed", "encrypted"),
        ("odt/testODTEncrypted.odt", "failed", "encrypted"),
        ("pdf/invalid_pdf.pdf", None, None),
        ("txt/empty.txt", "failed", "empty"),
    ],
)
def test_hard_cases_behave_as_the_corpus_readme_says(corpus_run, key, expected_status, error_type) -> None:
    result = corpus_run[key]
    if expected_status is None:
        assert result.status in FINAL and (result.status == "success" or result.error)
    else:
        assert (result.status, result.error_type) == (expected_status, error_type), result.error


def test_image_only_pdf_succeeds_with_a_warning(corpus_run) -> None:
    for key in ("pdf/imagemagick-images.pdf", "pdf/testOCR.pdf"):
        result = corpus_run[key]
        assert result.status == "success", (key, result.error)
        assert any("text layer" in w for w in result.warnings), (key, result.warnings)


def test_xxe_never_leaks_a_local_file(corpus_run) -> None:
    store = corpus_run["__store__"]
    for key, result in corpus_run.items():
        if key == "__store__" or not result.document_id:
            continue
        for chunk in store.get_chunks(result.document_id):
            assert "root:x:0:0" not in chunk["text"], key


def test_the_whole_corpus_through_a_real_worker(session_worker) -> None:
    paths = [str(p) for p in corpus_paths()]
    summary = process_document_batch.delay(paths).get(timeout=600)
    assert summary["total"] == len(paths)
    assert summary["succeeded"] + summary["duplicates"] + summary["failed"] + summary["rejected"] == len(paths)
    assert summary["succeeded"] + summary["duplicates"] >= 120
    # the worker is still healthy afterwards
    assert session_worker.process.poll() is None
