"""What ``POST /documents`` does with what it was given: an upload, a path or an ``s3://`` URI, then one task.

Every way ends in one ``process_document_file`` task sent through the app's publish, so
it is in the intake ledger under the id the answer names (``GET /jobs/{id}``):

- An **upload** is saved into the inbox like the dashboard's (``processing.uploads``:
  safe name, fresh 0600 file, at most ``MIDAS_MAX_FILE_MB``), and its content type is
  checked at once: a format MIDAS does not read (``unsupported``) or content that
  contradicts its name (``type_mismatch``) is answered 415 and the file removed, so a
  mistake never becomes a document row. An empty file is answered 422 the same way.
- A **path** must be absolute and is vetted as the worker will vet it (allowed folders,
  MIDAS's own files, hidden files, links, not found), so the answer says at once what
  the worker would record; the worker checks again when it opens the file.
- A **URI** must name an object (``s3://bucket/key``); the worker reads it.

When the broker cannot take the message but the ledger recorded it, the submission is
still accepted: the reaper sends it once the broker is back.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

from background_tasks import keys
from background_tasks.api.context import ApiContext
from background_tasks.api.errors import ApiError
from background_tasks.errors import EmptyDocument, InvalidArgument, MidasError, RejectedError
from background_tasks.extraction.detect import resolve_extension
from background_tasks.processing.intake import check_path
from background_tasks.processing.uploads import save_upload_stream
from background_tasks.sources.s3.uri import is_s3_uri, parse_object
from background_tasks.storage import ledger as ledger_store
from background_tasks.submit import submit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Accepted:
    """A submission that became a task: its id (also its ledger entry's), what was sent, and a note."""

    id: str
    source: str
    target: str
    name: str | None = None
    note: str | None = None

    def as_answer(self) -> dict[str, Any]:
        answer = {"id": self.id, "job": f"/jobs/{self.id}", "state": "queued", **asdict(self)}
        return {k: v for k, v in answer.items() if v is not None}


def _in_ledger(ctx: ApiContext, task_id: str) -> bool:
    try:
        return ledger_store.get(ctx.url, task_id) is not None
    except Exception:  # the store is down too: then it was not recorded
        return False


def _send(ctx: ApiContext, target: str, source: str, name: str | None = None) -> Accepted:
    """One ``process_document_file`` for ``target`` under a fresh id; 503 when neither broker nor ledger took it."""
    task_id = str(uuid.uuid4())
    try:
        if is_s3_uri(target):
            ctx.app.send_task(keys.PROCESS_DOCUMENT_FILE, args=[target], task_id=task_id)
        else:
            submit(target, settings=ctx.settings, app=ctx.app, task_id=task_id)
    except Exception as exc:
        if isinstance(exc, MidasError):  # staging into MIDAS_OBJECT_STORE refused it: say why
            raise
        recorded = ctx.settings.ledger_enabled and _in_ledger(ctx, task_id)
        log.warning("sending %s failed (%s: %s); in the ledger: %s", task_id, type(exc).__name__, exc, recorded)
        if not recorded:
            message = f"the broker did not take the task ({type(exc).__name__}); try again shortly"
            raise ApiError(503, "broker_unavailable", message) from None
        note = "the broker is unreachable; the intake ledger sends it again once it is back"
        return Accepted(task_id, source, target, name, note)
    return Accepted(task_id, source, target, name)


def accept_upload(ctx: ApiContext, filename: str, data: BinaryIO) -> Accepted:
    """Save an upload into the inbox, refuse what MIDAS would not read, send the rest.

    The inbox file is removed again whenever the answer is not 202: nothing is left for nobody.
    """
    path = save_upload_stream(ctx.settings, filename, data)
    try:
        resolve_extension(path, path.suffix)
        return _send(ctx, str(path), "upload", path.name)
    except (RejectedError, EmptyDocument) as exc:
        path.unlink(missing_ok=True)  # our own inbox copy: the sender's file is elsewhere
        raise ApiError.from_midas(exc) from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def accept_path(ctx: ApiContext, raw: object) -> Accepted:
    """Vet an absolute path as the worker will, then send it."""
    if not isinstance(raw, str):
        raise ApiError.from_midas(InvalidArgument(f"path must be a string, not {type(raw).__name__}"))
    if is_s3_uri(raw):
        return accept_uri(ctx, raw)
    if "\x00" not in raw and not os.path.isabs(os.path.expanduser(raw)):
        raise ApiError(
            422, "invalid_argument", f"{raw!r:.200} is relative; give an absolute path (the API's folder means nothing)"
        )
    real = check_path(raw, ctx.settings)
    return _send(ctx, str(real), "path", Path(real).name)


def accept_uri(ctx: ApiContext, raw: object) -> Accepted:
    """Check that an ``s3://`` URI names an object, then send it."""
    if not isinstance(raw, str):
        raise ApiError.from_midas(InvalidArgument(f"uri must be a string, not {type(raw).__name__}"))
    location = parse_object(raw)
    return _send(ctx, raw, "uri", location.file_name)


def accept_json(ctx: ApiContext, body: object) -> Accepted:
    """``{"path": "/abs/file.pdf"}`` or ``{"uri": "s3://bucket/key"}``."""
    if not isinstance(body, dict) or len(body.keys() & {"path", "uri"}) != 1:
        raise ApiError(422, "invalid_argument", 'send {"path": "/absolute/file"} or {"uri": "s3://bucket/key"}')
    unknown = sorted(set(body) - {"path", "uri"})
    if unknown:
        raise ApiError(422, "invalid_argument", f"unknown field {unknown[0]!r:.80}")
    if "uri" in body:
        return accept_uri(ctx, body["uri"])
    return accept_path(ctx, body["path"])
