"""Delete a document, process it again, read its original back: plain functions for the command
line, the dashboard and the HTTP API.

What MIDAS owns, and so may remove with a document: its rows (``storage.removal``) and the copies
it keeps of the document's file, that is the files in the data dir's inbox (dashboard and API
uploads, mail attachments, the live check's files) and the copies staged in MIDAS_OBJECT_STORE
(``<prefix>/<sha256>/<name>``). A user's file (a path in a watched or allowed folder, an object
under an S3 source prefix) is never removed, moved or changed; it is only ever read, through the
same vetted intake as a document (allowed folders, no links, size limit), and only used when its
SHA-256 is still the document's.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from background_tasks import keys
from background_tasks.errors import (
    DocumentBusy,
    DocumentNotFound,
    MidasError,
    OriginalUnavailable,
    StorageUnavailable,
    TransientError,
)
from background_tasks.processing.intake import default_watch_dirs, open_document, take_in
from background_tasks.settings import Settings
from background_tasks.sources.s3.staging import is_staged_copy, remove_staged, stage, staged_copies
from background_tasks.sources.s3.uri import is_s3_uri
from background_tasks.storage import removal
from background_tasks.storage.store import DocumentStore

log = logging.getLogger(__name__)

__all__ = ["DeleteReport", "delete_document", "open_original", "reprocess_document"]


@dataclass(frozen=True)
class DeleteReport:
    """What ``delete_document`` removed, and the user's files it left alone."""

    document_id: int
    path: str | None  # the most recent path it was seen at
    sha256: str | None
    status: str  # what it was before it was deleted
    chunks_deleted: int
    embeddings_deleted: int
    ocr_pages_deleted: int
    analyses_deleted: int
    paths_forgotten: int
    #: MIDAS's own copies removed: inbox files and s3:// URIs staged in MIDAS_OBJECT_STORE
    working_copies_removed: tuple[str, ...]
    #: recorded paths that are the user's files: never touched
    originals_kept: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["working_copies_removed"] = list(self.working_copies_removed)
        data["originals_kept"] = list(self.originals_kept)
        return data


# -- shared ----------------------------------------------------------------------------------


def _store(settings: Settings) -> DocumentStore:
    store = DocumentStore(settings.database_url_resolved, stale_after_s=settings.visibility_timeout)
    store.create_schema()
    return store


def _document(store: DocumentStore, document_id: int) -> dict[str, Any]:
    if isinstance(document_id, bool) or not isinstance(document_id, int) or document_id < 1:
        raise DocumentNotFound(f"no document {document_id!r:.40}: a document id is a positive whole number")
    doc = store.get_document(document_id)
    if doc is None:
        raise DocumentNotFound(f"no document {document_id} (deleted, or never there)")
    return doc


def _refuse_busy(doc: dict[str, Any], settings: Settings, doing: str) -> None:
    """A document some task is processing right now is left to it (an abandoned one is not)."""
    if doc["status"] != "processing":
        return
    updated = doc.get("updated_at") or datetime.now(UTC)
    if updated > datetime.now(UTC) - timedelta(seconds=settings.visibility_timeout):
        raise DocumentBusy(f"document {doc['id']} is being processed right now; {doing} it when that is done")


def _in_inbox(settings: Settings, path: str) -> Path | None:
    """The real path of ``path`` when it is a file in the data dir's inbox (MIDAS's own copy), else None.

    A watched folder is the user's even when it was put inside the inbox: nothing in one is MIDAS's.
    """
    if is_s3_uri(path):
        return None
    try:
        real = Path(os.path.realpath(path))
        inbox = Path(os.path.realpath(settings.inbox_dir))
        watched = [Path(os.path.realpath(folder)) for folder in default_watch_dirs(settings)]
    except (OSError, ValueError):
        return None
    if real == inbox or not real.is_relative_to(inbox):
        return None
    return None if any(real.is_relative_to(folder) for folder in watched) else real


def _local_sha256(settings: Settings, path: str, size: int | None) -> tuple[str | None, str]:
    """(SHA-256 of the file at ``path`` read through the vetted intake, or None; what was found)."""
    try:
        with open_document(path, settings) as opened:
            if size is not None and opened.stat.st_size != size:
                return None, "holds other content now (its size changed)"
            if opened.stat.st_size > settings.max_file_bytes:
                return None, "is over MIDAS_MAX_FILE_MB"
            with open(opened.fd, "rb", closefd=False) as handle:
                return hashlib.file_digest(handle, "sha256").hexdigest(), "readable"
    except MidasError as exc:
        return None, exc.message
    except OSError as exc:
        return None, exc.strerror or str(exc)


def _candidates(settings: Settings, doc: dict[str, Any]) -> list[str]:
    """Where the document's content may be, MIDAS's own copies first, then the user's files (most recent first)."""
    paths = [p["path"] for p in doc.get("paths") or []]
    kept = [p for p in paths if _in_inbox(settings, p) or is_staged_copy(settings, p, doc["sha256"])]
    staged: list[str] = []
    if settings.object_store:
        try:
            staged = staged_copies(settings, doc["sha256"])
        except MidasError as exc:  # the recorded paths may still do
            log.warning("document %s: cannot list its staged copies: %s", doc["id"], exc.message)
    return list(dict.fromkeys([*kept, *staged, *paths]))


# -- delete ----------------------------------------------------------------------------------


def delete_document(settings: Settings, document_id: int) -> DeleteReport:
    """Delete a document: its row, paths, chunks (and their search entries), embeddings, OCR pages,
    analyses, and the copies MIDAS keeps of it (inbox files, staged objects). Never the user's file.

    ``DocumentNotFound`` for an unknown id, ``DocumentBusy`` while a task processes it. The copies
    go first: when one cannot be removed (object store away: ``TransientError``) nothing else was
    deleted yet, and deleting again finishes the job.
    """
    store = _store(settings)
    doc = _document(store, document_id)
    _refuse_busy(doc, settings, "delete")
    sha256 = doc.get("sha256")
    paths = [p["path"] for p in doc.get("paths") or []]
    removed: list[str] = remove_staged(settings, sha256) if sha256 and settings.object_store else []
    shared = removal.paths_of_other_documents(store.url, document_id, paths)
    kept_originals: list[str] = []
    for path in paths:
        if is_staged_copy(settings, path, sha256 or ""):
            continue  # removed above (or already gone)
        inbox_file = _in_inbox(settings, path)
        if inbox_file is None:
            kept_originals.append(path)
            continue
        if not _ours_to_remove(settings, inbox_file, sha256, doc.get("size_bytes"), path in shared):
            continue
        try:
            inbox_file.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise StorageUnavailable(f"cannot remove MIDAS's copy {inbox_file}: {exc.strerror or exc}") from exc
        removed.append(str(inbox_file))
    rows = removal.delete_document(store.url, document_id)
    if rows is None:
        raise DocumentNotFound(f"no document {document_id} (deleted meanwhile)")
    log.info(
        "document %s deleted: %d chunks, %d embeddings, %d kept copies removed",
        document_id, rows.chunks, rows.embeddings, len(removed),
    )  # fmt: skip
    return DeleteReport(
        document_id=document_id,
        path=doc.get("path"),
        sha256=sha256,
        status=rows.status,
        chunks_deleted=rows.chunks,
        embeddings_deleted=rows.embeddings,
        ocr_pages_deleted=rows.ocr_pages,
        analyses_deleted=rows.analyses,
        paths_forgotten=len(rows.paths),
        working_copies_removed=tuple(removed),
        originals_kept=tuple(kept_originals),
    )


def _ours_to_remove(settings: Settings, inbox_file: Path, sha256: str | None, size: int | None, shared: bool) -> bool:
    """An inbox file goes with the document when it still holds the document's content.

    A document never read (no SHA-256) takes its inbox file along unless another document was seen there.
    """
    if inbox_file.is_symlink() or not inbox_file.is_file():
        return False
    if sha256 is None:
        return not shared
    found, _ = _local_sha256(settings, str(inbox_file), size)
    return found == sha256


# -- reprocess -------------------------------------------------------------------------------


def reprocess_document(settings: Settings, document_id: int, *, app: Any = None) -> str:
    """Process a document's content again, replacing its result; returns the Celery task id.

    The task is sent with ``reprocess=<sha256>``: the worker takes over the document's row
    even though it succeeded (normally known content is a ``duplicate``), drops its old
    chunks and embeddings and records the new run on the same row. The file read is the first
    of MIDAS's kept copies and the user's recorded paths that still holds the content (checked
    by SHA-256 here, and again by the worker: other content is ``rejected`` as ``content_changed``
    and changes nothing). A document never read (rejected before its content, so no SHA-256)
    has nothing to replace: its row is removed and its path sent again as a new submission.
    ``OriginalUnavailable`` when no file holds the content any more.
    """
    store = _store(settings)
    doc = _document(store, document_id)
    _refuse_busy(doc, settings, "process")
    sha256 = doc.get("sha256")
    if not sha256:
        return _send_again_unread(settings, store, doc, app)
    source = _source(settings, doc)
    origin = (doc.get("metadata") or {}).get("origin")
    kwargs: dict[str, Any] = {"reprocess": sha256}
    if isinstance(origin, dict):
        kwargs["origin"] = origin  # a mail's or an S3 object's origin stays with the document
    task_id = _app_for(settings, app).send_task(keys.PROCESS_DOCUMENT_FILE, args=[source], kwargs=kwargs).id
    log.info("document %s sent to be processed again from %s (task %s)", document_id, source, task_id)
    return task_id


def _source(settings: Settings, doc: dict[str, Any]) -> str:
    """A path or URI holding the document's content now (staged when MIDAS_OBJECT_STORE is set)."""
    sha256 = doc["sha256"]
    looked: list[str] = []
    objects: list[str] = []  # MIDAS's staged copies come first in the candidates
    for candidate in _candidates(settings, doc):
        if is_s3_uri(candidate):
            objects.append(candidate)
            continue
        found, said = _local_sha256(settings, candidate, doc.get("size_bytes"))
        if found == sha256:
            return stage(candidate, settings).target if settings.object_store else candidate
        looked.append(f"{candidate}: {said if found is None else 'holds other content now'}")
    if objects:
        return objects[0]  # the worker checks the object's content (content_changed when it is other)
    raise OriginalUnavailable(
        f"document {doc['id']} cannot be processed again: no file holds its content any more"
        + (f" ({'; '.join(looked)[:1000]})" if looked else " (no path was recorded)")
    )


def _send_again_unread(settings: Settings, store: DocumentStore, doc: dict[str, Any], app: Any) -> str:
    path = doc.get("path")
    if doc.get("error_type") == "invalid_argument" or not path:
        raise OriginalUnavailable(
            f"document {doc['id']} was not given a usable file path ({path!r:.200}); there is nothing to process again"
        )
    target = path
    if settings.object_store and not is_s3_uri(path) and Path(path).is_file():
        target = stage(path, settings).target
    removal.delete_document(store.url, doc["id"])  # the new run records its own row
    task_id = _app_for(settings, app).send_task(keys.PROCESS_DOCUMENT_FILE, args=[target]).id
    log.info("document %s (never read) removed; %s sent again (task %s)", doc["id"], path, task_id)
    return task_id


_APPS: dict[tuple[str, str], Any] = {}


def _app_for(settings: Settings, app: Any) -> Any:
    """The Celery app to send with: the one given, the process's own when it talks to the same broker, or one made."""
    if app is not None:
        return app
    import celery_config

    if celery_config.app.conf.broker_url == settings.broker_url:
        return celery_config.app
    key = (settings.broker_url, settings.result_backend_url)
    if key not in _APPS:
        _APPS[key] = celery_config.create_app(settings)
    return _APPS[key]


# -- the original ----------------------------------------------------------------------------


@contextmanager
def open_original(settings: Settings, document_id: int) -> Iterator[tuple[BinaryIO, str, str]]:
    """``(binary file, file name, MIME type)`` of a document's original bytes, for reading.

    Read from a copy MIDAS keeps (inbox file, object staged in MIDAS_OBJECT_STORE) or else from
    the user's file where it was seen, but only when its SHA-256 is still the document's: the
    bytes are exactly those processed. They are streamed into a private working copy through the
    vetted intake (allowed folders, no links, size limit), so the user's file is only read, and
    the copy is removed when the block ends. ``DocumentNotFound`` for an unknown id;
    ``OriginalUnavailable`` when no copy and no file holds the content (or it was never read);
    ``TransientError`` when the only place that may hold it cannot be reached now.
    """
    store = _store(settings)
    doc = _document(store, document_id)
    sha256 = doc.get("sha256")
    if not sha256:
        raise OriginalUnavailable(
            f"document {document_id} was {doc['status']} before its content was read; MIDAS has no copy of it"
        )
    looked: list[str] = []
    away: TransientError | None = None
    with ExitStack() as stack:
        for candidate in _candidates(settings, doc):
            attempt = ExitStack()
            try:
                intake = attempt.enter_context(take_in(candidate, settings, wait_until_complete=False))
            except TransientError as exc:
                away = exc
                looked.append(f"{candidate}: {exc.message}")
                continue
            except (MidasError, OSError) as exc:
                looked.append(f"{candidate}: {exc.message if isinstance(exc, MidasError) else exc}")
                continue
            if intake.sha256 != sha256:
                attempt.close()
                looked.append(f"{candidate}: holds other content now")
                continue
            stack.enter_context(attempt)
            handle = stack.enter_context(intake.copy.open("rb"))
            mime = doc.get("mime_type") or mimetypes.guess_type(intake.original.name)[0] or "application/octet-stream"
            yield handle, intake.original.name, mime
            return
        if away is not None:
            raise TransientError(f"document {document_id}: its original cannot be read now ({away.message})")
        raise OriginalUnavailable(
            f"MIDAS keeps no copy of document {document_id} and no file holds its content any more"
            + (f" ({'; '.join(looked)[:1000]})" if looked else " (no path was recorded)")
        )
