"""``DELETE /documents/{id}``, ``POST /documents/{id}/reprocess``, ``GET /documents/{id}/original``.

The HTTP face of ``processing.manage`` (the same functions the command line and the
dashboard call): a delete removes the document's rows and MIDAS's own copies of its file,
never the user's file; a reprocess sends one task (in the intake ledger, so ``/jobs/{id}``
follows it) that replaces the document's result on the same row; the original is streamed
from MIDAS's private working copy, which is removed once the answer is sent or the client
went away. Errors come from ``processing.manage`` as MIDAS errors and are answered by
``api.errors``: 404 ``not_found``, 409 ``document_busy``, 410 ``original_unavailable``.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import AsyncIterator
from contextlib import ExitStack
from typing import Annotated, Any, BinaryIO
from urllib.parse import quote

import anyio
from fastapi import APIRouter, Depends, Path
from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from background_tasks.api.context import ApiContext, get_context
from background_tasks.api.errors import MidasJSON
from background_tasks.processing import manage

router = APIRouter(tags=["documents"])

Context = Annotated[ApiContext, Depends(get_context)]
DocumentId = Annotated[int, Path(ge=1, le=2**63 - 1, description="the document's id")]

#: bytes read from the working copy per piece of the answer
CHUNK_BYTES = 64 * 1024

_NOT_FOUND = {"description": "`not_found`: no such document"}
_BUSY = {"description": "`document_busy`: a task is processing it right now; try again when it is done"}
_GONE = {"description": "`original_unavailable`: no copy MIDAS keeps and no file holds its content any more"}

#: a MIME type as RFC 6838 names them; anything else recorded is served as application/octet-stream
_MIME = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")
#: what may not stand in the quoted ASCII ``filename=``: beyond ASCII, controls, quote, backslash, percent,
#: the separators a naive parser splits on (``;``, ``,``, ``=``) and what Windows refuses in a name
_FALLBACK_UNSAFE = re.compile(r"[^A-Za-z0-9 !#$&'()+\-.@\[\]^_`{}~]")
#: Unicode categories written as ``_`` in any name: controls, format characters, line and paragraph separators
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})


def _plain_name(name: str) -> str:
    """A file name as text: valid Unicode (undecodable bytes as U+FFFD), separators and controls as ``_``."""
    try:  # a name that is not UTF-8 carries its bytes as lone surrogates
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = name.encode("utf-8", "surrogatepass")
    text = raw.decode("utf-8", "replace")
    text = "".join("_" if ch in "/\\" or unicodedata.category(ch) in _UNSAFE_CATEGORIES else ch for ch in text)
    return text.strip().lstrip(".") or "original"


def content_disposition(name: str) -> str:
    """``attachment`` with a safe file name (RFC 6266): a quoted ASCII ``filename``, plus the exact
    name as RFC 5987 ``filename*=UTF-8''...`` whenever the ASCII form had to change it.

    The header is pure ASCII with no CR, LF, quote or backslash from the name: a name cannot
    end the header, add another one, or break out of its quotes.
    """
    text = _plain_name(name)
    fallback = _FALLBACK_UNSAFE.sub("_", text)
    if fallback == text:
        return f'attachment; filename="{text}"'
    encoded = quote(text.encode("utf-8"), safe="!#$&+^`|")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


def _size(handle: BinaryIO) -> int | None:
    try:
        return os.fstat(handle.fileno()).st_size
    except (AttributeError, OSError, ValueError):
        return None


class OriginalResponse(StreamingResponse):
    """The bytes of an open original; ``opened`` (the working copy) is closed however the answer ends."""

    def __init__(self, opened: ExitStack, handle: BinaryIO, name: str, mime: str) -> None:
        self.opened = opened
        headers = {
            # set directly, not as media_type: Starlette would add a charset the bytes may not have
            "Content-Type": mime if _MIME.fullmatch(mime or "") else "application/octet-stream",
            "Content-Disposition": content_disposition(name),
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
        }
        size = _size(handle)
        if size is not None:
            headers["Content-Length"] = str(size)
        super().__init__(self._pieces(handle), headers=headers)

    @staticmethod
    async def _pieces(handle: BinaryIO) -> AsyncIterator[bytes]:
        while piece := await run_in_threadpool(handle.read, CHUNK_BYTES):
            yield piece

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):  # also when the client went away mid-answer
                await run_in_threadpool(self.opened.close)


@router.delete(
    "/documents/{document_id}",
    summary="Delete a document: rows, chunks, embeddings, MIDAS's own copies; never your file",
    responses={404: _NOT_FOUND, 409: _BUSY},
)
def delete_document(ctx: Context, document_id: DocumentId) -> dict[str, Any]:
    """What was removed: row counts, ``working_copies_removed`` (MIDAS's copies) and ``originals_kept``."""
    return manage.delete_document(ctx.settings, document_id).as_dict()


@router.post(
    "/documents/{document_id}/reprocess",
    status_code=202,
    summary="Process a document's content again, replacing its result on the same document",
    responses={
        202: {"description": "Accepted: `id` is the task's; poll `job`"},
        404: _NOT_FOUND,
        409: _BUSY,
        410: _GONE,
    },
)
def reprocess_document(ctx: Context, document_id: DocumentId) -> MidasJSON:
    """Send one task for the document's content, like ``POST /documents``: follow it at ``/jobs/{id}``."""
    task_id = manage.reprocess_document(ctx.settings, document_id, app=ctx.app)
    job = f"/jobs/{task_id}"
    answer = {"id": task_id, "job": job, "state": "queued", "source": "reprocess", "document_id": document_id}
    return MidasJSON(answer, status_code=202, headers={"Location": job})


@router.get(
    "/documents/{document_id}/original",
    summary="The document's original bytes, exactly those processed",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The bytes, with the recorded Content-Type and an attachment file name",
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        },
        404: _NOT_FOUND,
        410: _GONE,
        503: {"description": "`transient`: the only place that may hold it cannot be reached now"},
    },
)
def get_original(ctx: Context, document_id: DocumentId) -> OriginalResponse:
    """From a copy MIDAS keeps, or the user's file while its SHA-256 is still the document's; only ever read."""
    opened = ExitStack()
    try:
        handle, name, mime = opened.enter_context(manage.open_original(ctx.settings, document_id))
        return OriginalResponse(opened, handle, name, mime)
    except BaseException:
        opened.close()
        raise
