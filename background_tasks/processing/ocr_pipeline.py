"""OCR as a step of the document pipeline, and its continuation on the ``analysis`` queue.

Extractors list the pages that have no text layer but a picture
(``pages_without_text``). ``apply_ocr`` OCRs them in an isolated child right
after extraction when there are at most ``MIDAS_OCR_MAX_PAGES_PER_TASK`` of
them and they fit the time budget, and merges the recognised text into the
extraction in page order (pages with a text layer are never OCR'd). A longer
scan is recorded at once with its text layer and ``ocr_status: pending``; the
``analysis`` queue then OCRs it in page ranges, one task per range, each
re-queued behind whatever else is waiting (``continue_ocr``). Page results
are kept in ``ocr_pages`` until the last range, which rebuilds the text,
re-chunks it and replaces the document's chunks.

Without Tesseract, or with OCR turned off, nothing fails: the document keeps
its text layer and says why it was not OCR'd.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from background_tasks.errors import MidasError, MissingDependency, PermanentError
from background_tasks.extraction.extractors.base import Extraction, TextBuilder
from background_tasks.extraction.extractors.pdf import is_text_layer_warning
from background_tasks.extraction.isolation import run_isolated
from background_tasks.extraction.tesseract import OcrOptions, mean_confidence, ocr_document_pages, resolve_languages
from background_tasks.processing.chunking import Chunk
from background_tasks.processing.extract import extract
from background_tasks.processing.finish import finish, normalise
from background_tasks.processing.intake import take_in
from background_tasks.storage import ocr_pages

log = logging.getLogger(__name__)

#: seconds a child may run past its budget (rendering, Tesseract start-up) before it is killed
CHILD_GRACE_S = 30.0


def ocr_budget(settings: Any, elapsed_s: float = 0.0) -> float:
    """Seconds one task may spend on OCR: the per-file limit, within the task's soft time limit."""
    return max(0.0, min(settings.extract_timeout, settings.task_soft_time_limit * 0.9 - elapsed_s))


# --------------------------------------------------------------------------
# Merging OCR results into an extraction
# --------------------------------------------------------------------------


def _page_texts(extraction: Extraction) -> tuple[dict[int, str], str]:
    """Text-layer text per page, and text outside any page span (kept first)."""
    per_page: dict[int, str] = {}
    covered = 0
    outside = []
    for span in sorted(extraction.pages, key=lambda s: s.start):
        if span.start > covered:
            outside.append(extraction.text[covered : span.start])
        piece = extraction.text[span.start : span.end]
        per_page[span.number] = f"{per_page[span.number]}\n\n{piece}" if span.number in per_page else piece
        covered = max(covered, span.end)
    outside.append(extraction.text[covered:])
    return per_page, "".join(outside).strip()


def merge_ocr(
    extraction: Extraction,
    results: Sequence[dict[str, Any]],
    pending: Sequence[int] = (),
    languages: str | None = None,
    extra_warnings: Sequence[str] = (),
) -> Extraction:
    """The extraction with OCR text added on its pages, OCR metadata, and honest warnings."""
    layer, outside = _page_texts(extraction)
    ocr_text = {r["page"]: r.get("text") or "" for r in results if "error" not in r}
    builder = TextBuilder()
    if outside:
        builder.add(outside)
    for number in sorted(set(layer) | set(ocr_text)):
        parts = [p for p in (layer.get(number, ""), ocr_text.get(number, "")) if p.strip()]
        if parts:
            builder.add("\n\n".join(parts), page=number)

    done = sorted(ocr_text)
    failed = [r for r in results if "error" in r]
    confidence = mean_confidence([r for r in results if "error" not in r])
    metadata = dict(extraction.metadata)
    metadata.pop("pages_without_text", None)
    metadata.update(
        {
            "ocr_status": "pending" if pending else ("done" if done else "failed"),
            "ocr_pages": done,
            "ocr_mean_confidence": confidence,
            "ocr_page_confidence": {
                str(r["page"]): r.get("confidence") for r in results if "error" not in r and r.get("words")
            },
            "ocr_words": sum(int(r.get("words") or 0) for r in results if "error" not in r),
            "ocr_seconds": round(sum(float(r.get("seconds") or 0) for r in results), 3),
        }
    )
    if languages:
        metadata["ocr_languages"] = languages
    if failed:
        metadata["ocr_failed_pages"] = sorted(r["page"] for r in failed)
    if pending:
        metadata["ocr_pending_pages"] = sorted(pending)

    warnings = [w for w in extraction.warnings if not (done and is_text_layer_warning(w))]
    warnings.extend(extra_warnings)
    if done:
        words = metadata["ocr_words"]
        if words:
            warnings.append(
                f"OCR read {len(done)} page(s) without a text layer ({words} words, "
                f"mean confidence {confidence:g}%); recognised text may contain errors"
            )
        else:
            warnings.append(f"OCR found no text on {len(done)} page(s) without a text layer")
    for r in failed:
        warnings.append(f"page {r['page']}: OCR failed ({r['error']})")
    if pending:
        warnings.append(
            f"{len(pending)} page(s) without a text layer are queued for OCR on the analysis queue; "
            "their text is added when it is done"
        )
    return Extraction(text=builder.text(), metadata=metadata, pages=builder.pages(), warnings=tuple(warnings))


def _not_ocrd(extraction: Extraction, status: str, warning: str) -> Extraction:
    metadata = {**extraction.metadata, "ocr_status": status}
    return Extraction(extraction.text, metadata, extraction.pages, (*extraction.warnings, warning))


# --------------------------------------------------------------------------
# The pipeline step
# --------------------------------------------------------------------------


def apply_ocr(
    extraction: Extraction, path: Path, extension: str, settings: Any, label: str, elapsed_s: float = 0.0
) -> Extraction:
    """OCR the extraction's pages without a text layer (in an isolated child), or queue them.

    Never raises for OCR problems: a missing Tesseract, a crashed renderer or
    a page over its time limit become warnings on a successful document.
    """
    pages = [int(p) for p in extraction.metadata.get("pages_without_text") or ()]
    if not pages:
        return extraction
    if not settings.ocr_enabled:
        return _not_ocrd(extraction, "off", "OCR is turned off (MIDAS_OCR_ENABLED=false); pages without text skipped")
    options = OcrOptions.from_settings(settings)
    try:
        languages, warnings = resolve_languages(options.languages, options.command)
    except MissingDependency as exc:
        log.warning("%s: OCR skipped: %s", label, exc.message)
        return _not_ocrd(extraction, "skipped", f"OCR skipped: {exc.message}")
    budget = ocr_budget(settings, elapsed_s)
    if len(pages) > settings.ocr_max_pages_per_task or budget < options.page_timeout:
        log.info("%s: %d pages to OCR, continued on the analysis queue", label, len(pages))
        return merge_ocr(extraction, [], pending=pages, languages=languages, extra_warnings=warnings)
    try:
        payload = run_isolated(
            ocr_document_pages,
            (str(path), extension, pages, options, budget),
            timeout=max(budget, options.page_timeout) + CHILD_GRACE_S,
            label=label,
        )
    except MidasError as exc:  # the renderer crashed or hung: the text layer still stands
        log.warning("%s: OCR failed: %s", label, exc.message)
        results = [{"page": p, "error": exc.message, "error_type": exc.error_type} for p in pages]
        return merge_ocr(extraction, results, languages=languages, extra_warnings=warnings)
    return merge_ocr(
        extraction,
        payload["pages"],
        pending=payload["pending"],
        languages=payload["languages"],
        extra_warnings=[*warnings, *payload["warnings"]],
    )


def deferred_pages(metadata: dict[str, Any]) -> list[int]:
    """Pages the analysis queue must OCR for a document recorded with ``ocr_status: pending``.

    Pages already OCR'd inline are done again, so the final text can be rebuilt from stored results alone.
    """
    if metadata.get("ocr_status") != "pending":
        return []
    return sorted({*map(int, metadata.get("ocr_pages") or ()), *map(int, metadata.get("ocr_pending_pages") or ())})


# --------------------------------------------------------------------------
# Continuation on the analysis queue
# --------------------------------------------------------------------------


def _stored_chunks(store: Any, document_id: int) -> list[Chunk]:
    return [
        Chunk(c["chunk_index"], c["text"], c["start_char"], c["end_char"], c["page"])
        for c in store.get_chunks(document_id)
    ]


def _mark(store: Any, document: dict[str, Any], status: str, warning: str) -> None:
    """Change a recorded document's OCR status (its chunks stay as they are)."""
    metadata = {**(document.get("metadata") or {}), "ocr_status": status}
    metadata.pop("ocr_pending_pages", None)
    store.record_success(
        document["id"],
        metadata=metadata,
        chunks=_stored_chunks(store, document["id"]),
        text_chars=document.get("text_chars") or 0,
        page_count=document.get("page_count"),
        warnings=[*(w for w in document.get("warnings") or () if "queued for OCR" not in w), warning],
        duration_s=document.get("duration_s"),
    )
    ocr_pages.forget(store.url, document["id"])


def continue_ocr(document_id: int, raw_path: str, pages: list[int], settings: Any, store: Any) -> dict[str, Any]:
    """OCR the next range of ``pages`` of a recorded document; after the last range, rebuild its text.

    Returns ``{"status": "partial", "pending": [...]}`` while pages remain
    (the task queues the next range), ``success`` when the document was
    updated, ``skipped`` when there is nothing to do, or ``failed``.
    Raises TransientError only (database or file not ready).
    """
    started = time.monotonic()
    document = store.get_document(document_id)
    if not document or document["status"] != "success":
        return {"status": "skipped", "document_id": document_id, "reason": "document not processed successfully"}
    if (document.get("metadata") or {}).get("ocr_status") != "pending":
        return {"status": "skipped", "document_id": document_id, "reason": "no OCR pending"}
    label = Path(str(raw_path)).name
    try:
        with take_in(raw_path, settings, wait_until_complete=False) as copy:
            if copy.sha256 != document.get("sha256"):
                raise PermanentError(f"{label} changed since it was processed; OCR abandoned")
            kind = copy.identify()
            options = OcrOptions.from_settings(settings)
            todo = list(pages[: settings.ocr_max_pages_per_task])
            budget = max(ocr_budget(settings), options.page_timeout)
            try:
                payload = run_isolated(
                    ocr_document_pages,
                    (str(copy.copy), kind.extension, todo, options, budget),
                    timeout=budget + CHILD_GRACE_S,
                    label=label,
                )
                results, rest = payload["pages"], [*payload["pending"], *pages[len(todo) :]]
            except MissingDependency:
                raise
            except MidasError as exc:  # this range crashed or hung: record it as failed, go on with the rest
                results = [{"page": p, "error": exc.message, "error_type": exc.error_type} for p in todo]
                rest, payload = list(pages[len(todo) :]), {"languages": None, "warnings": []}
            ocr_pages.save(store.url, document_id, results)
            if rest:
                log.info("%s: OCR of %d page(s) done, %d to go", label, len(results), len(rest))
                return {"status": "partial", "document_id": document_id, "done": len(results), "pending": rest}
            extraction = extract(copy.copy, kind.extension, kind.mime_type, settings, label=label)
    except MissingDependency as exc:
        _mark(store, document, "skipped", f"OCR skipped: {exc.message}")
        return {"status": "skipped", "document_id": document_id, "reason": exc.message}
    except PermanentError as exc:
        _mark(store, document, "failed", f"OCR failed: {exc.message}")
        return {"status": "failed", "document_id": document_id, "error_type": exc.error_type, "error": exc.message}

    merged = merge_ocr(
        extraction, ocr_pages.load(store.url, document_id), languages=payload["languages"], extra_warnings=[]
    )
    del extraction
    metadata = {**(document.get("metadata") or {}), **merged.metadata}
    metadata.pop("ocr_pending_pages", None)
    body = normalise(merged, metadata, recount=True)  # the text changed: count it again
    del merged
    done = finish(
        store,
        document_id,
        body,
        settings,
        page_count=document.get("page_count"),
        elapsed=lambda: round((document.get("duration_s") or 0.0) + time.monotonic() - started, 4),
    )
    ocr_pages.forget(store.url, document_id)
    log.info("%s: OCR finished, %d chunks", label, done.chunks)
    return {
        "status": "success",
        "document_id": document_id,
        "ocr_pages": body.metadata["ocr_pages"],
        "ocr_mean_confidence": body.metadata["ocr_mean_confidence"],
        "chunks_created": done.chunks,
        "text_chars": done.text_chars,
    }
