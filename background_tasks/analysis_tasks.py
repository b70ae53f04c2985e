"""Analysis tasks (queue ``analysis``): data profiles, text analytics, and long OCR jobs.

from background_tasks.analysis_tasks import analyze_data_file, analyze_document
analyze_data_file.delay("path/to/table.csv").get(timeout=120)
analyze_document.delay(document_id).get(timeout=60)

``schedule_follow_ups`` is called by ``process_document_file`` with its
result: a processed table gets its data profile, a scan with more pages to
OCR gets its OCR continued here, both on this queue so document processing
never waits for them. ``get_analysis(document_id)`` returns what is stored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from background_tasks import keys
from background_tasks.analysis import analyze as analysis
from background_tasks.analysis import embeddings_index
from background_tasks.analysis.analyze import get_analysis
from background_tasks.processing import ocr_pipeline
from background_tasks.settings import get_settings
from background_tasks.storage import vectors
from background_tasks.storage.process_store import process_store
from celery_config import app

log = logging.getLogger(__name__)

#: processed file types whose data profile runs on its own after processing
TABULAR_TYPES = frozenset({"csv", "xlsx", "xlsm", "xls", "jsonl", "ndjson"})
#: JSON documents are profiled when the extractor saw records in them
_JSON_RECORD_SHAPES = frozenset({"array", "json-lines"})

__all__ = [
    "analyze_data_file",
    "analyze_document",
    "embed_document",
    "embed_or_schedule",
    "follow_ups",
    "get_analysis",
    "ocr_document_pages",
    "schedule_embedding",
    "schedule_follow_ups",
]


#: the worker process's store (shared with the document tasks); its schema includes the analyses tables
analysis_store = process_store


@app.task(bind=True, name=keys.ANALYZE_DATA_FILE)
def analyze_data_file(self, file_path: str, document_id: int | None = None) -> dict[str, Any]:
    """Profile the tables of a CSV, XLSX, XLS or JSON-records file; stored with its document and returned."""
    return analysis.analyze_data_path(file_path, get_settings(), analysis_store(), document_id)


@app.task(bind=True, name=keys.ANALYZE_DOCUMENT)
def analyze_document(self, document_id: int) -> dict[str, Any]:
    """Language, counts, reading time, distinctive keywords and entities of a processed document."""
    return analysis.analyze_document_text(int(document_id), analysis_store())


@app.task(bind=True, name=keys.OCR_DOCUMENT_PAGES)
def ocr_document_pages(self, document_id: int, file_path: str, pages: list[int]) -> dict[str, Any]:
    """OCR the next range of a long scan; queue the range after it behind the work already waiting."""
    result = ocr_pipeline.continue_ocr(int(document_id), file_path, [int(p) for p in pages], get_settings(),
                                       analysis_store())  # fmt: skip
    if result["status"] == "partial":
        rest = result["pending"]
        ocr_document_pages.apply_async(
            args=[document_id, file_path, rest], task_id=keys.ocr_pages_task_id(document_id, rest)
        )
    else:  # the text (or only the OCR status) was recorded again, and its chunks with it
        schedule_embedding({**result, "status": "success"}, f"ocr:{result['status']}:{result.get('chunks_created')}")
    return result


@app.task(bind=True, name=keys.EMBED_DOCUMENT)
def embed_document(self, document_id: int) -> dict[str, Any]:
    """Embed a processed document's chunks that the configured model has not embedded (semantic search)."""
    return embeddings_index.embed_document(int(document_id), get_settings(), analysis_store().url).as_dict()


@dataclass(frozen=True)
class FollowUp:
    """One piece of analysis-queue work a processing result calls for."""

    task: str  # name of a task of this module
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    task_id: str  # derived from the content, so a redelivered processing task does not queue it twice


def follow_ups(result: dict[str, Any]) -> list[FollowUp]:
    """The follow-up work for a ``process_document_file`` result: tables get profiled, long scans OCR'd."""
    if result.get("status") != "success" or not result.get("document_id"):
        return []
    document_id = int(result["document_id"])
    metadata = result.get("metadata") or {}
    file_type = (result.get("file_type") or "").lower()
    work: list[FollowUp] = []
    if file_type in TABULAR_TYPES or (file_type == "json" and metadata.get("json_type") in _JSON_RECORD_SHAPES):
        task_id = keys.data_analysis_task_id(result.get("sha256"))
        work.append(FollowUp("analyze_data_file", (result["path"],), {"document_id": document_id}, task_id))
    pages = ocr_pipeline.deferred_pages(metadata)
    if pages:
        task_id = keys.ocr_pages_task_id(document_id, pages)
        work.append(FollowUp("ocr_document_pages", (document_id, result["path"], pages), {}, task_id))
    return work


_FOLLOW_UP_TASKS = {"analyze_data_file": analyze_data_file, "ocr_document_pages": ocr_document_pages}


def schedule_follow_ups(result: dict[str, Any]) -> list[str]:
    """Queue the follow-up work of a processing result on the analysis queue; returns the task ids.

    Never raises: a broker hiccup here must not turn a processed document into a failed task.
    """
    queued: list[str] = []
    try:
        for work in follow_ups(result):
            task = _FOLLOW_UP_TASKS[work.task]
            task.apply_async(args=list(work.args), kwargs=work.kwargs, task_id=work.task_id)
            queued.append(work.task_id)
    except Exception as exc:  # the document is processed; a lost follow-up is logged, not fatal
        log.warning("document %s: could not queue follow-up analysis: %s", result.get("document_id"), exc)
    return queued


def schedule_embedding(result: dict[str, Any], version: str | None = None) -> str | None:
    """Queue the embedding of a recorded document's chunks; returns the task id. Never raises.

    ``version`` tells recordings of one document apart (default: its content and chunk count).
    """
    if result.get("status") != "success" or not result.get("document_id") or not get_settings().embeddings_enabled:
        return None
    document_id = int(result["document_id"])
    task_id = keys.embedding_task_id(document_id, version or f"{result.get('sha256')}:{result.get('chunks_created')}")
    try:
        embed_document.apply_async(args=[document_id], task_id=task_id)
    except Exception as exc:  # the document is stored and keyword-searchable; `embeddings rebuild` catches up
        log.warning("document %s: could not queue its embedding: %s", document_id, exc)
        return None
    return task_id


def embed_or_schedule(result: dict[str, Any], version: str | None = None) -> str | None:
    """Queue the embedding of a recorded document unless it was embedded as it was recorded (a small one:
    ``processing.finish.embed_now``); returns the task id. Never raises."""
    if (result.get("metadata") or {}).get(vectors.METADATA_KEY):
        return None
    return schedule_embedding(result, version)
