"""``/documents``: submit one (upload, path or URI) and read what the store knows.

Deleting one, processing it again and reading its original back are ``api.document_admin``'s.
"""

from __future__ import annotations

import dataclasses
import json
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from background_tasks.analysis.analyze import get_analysis
from background_tasks.api.context import ApiContext, get_context
from background_tasks.api.errors import ApiError, MidasJSON
from background_tasks.api.intake import accept_json, accept_upload
from background_tasks.statuses import DocumentStatus

router = APIRouter(tags=["documents"])

Context = Annotated[ApiContext, Depends(get_context)]
DocumentId = Annotated[int, Path(ge=1, le=2**63 - 1, description="the document's id")]

#: most chunks one ``GET /documents/{id}`` returns (page with ``chunk_offset``)
MAX_CHUNKS = 1000

_SUBMIT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary", "description": "the document"}},
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "path": {"type": "string", "description": "an absolute path inside the allowed folders"},
                        "uri": {"type": "string", "description": "s3://bucket/key"},
                    },
                    "minProperties": 1,
                    "maxProperties": 1,
                },
                "examples": {
                    "path": {"value": {"path": "/home/me/Documents/MIDAS_Uploads/report.pdf"}},
                    "uri": {"value": {"uri": "s3://bucket/invoices/2026-01.pdf"}},
                },
            },
        },
    }
}

_SUBMIT_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"description": "Accepted: `id` is the task's (and its ledger entry's); poll `job`"},
    403: {"description": "`path_not_allowed`: outside the allowed folders, MIDAS's own files, hidden, a link"},
    404: {"description": "`not_found`: no file at that path"},
    413: {"description": "`too_large`: over MIDAS_MAX_FILE_MB"},
    415: {"description": "`unsupported` or `type_mismatch` (uploads), or neither multipart nor JSON"},
    422: {"description": "`invalid_argument`, `empty`"},
    503: {"description": "`broker_unavailable`: neither the broker nor the ledger took it"},
}


class StatusFilter(StrEnum):
    """The document statuses a list can be limited to."""

    PROCESSING = DocumentStatus.PROCESSING.value
    SUCCESS = DocumentStatus.SUCCESS.value
    FAILED = DocumentStatus.FAILED.value
    REJECTED = DocumentStatus.REJECTED.value


async def _upload(ctx: ApiContext, request: Request) -> dict[str, Any]:
    form = await request.form(max_files=1, max_fields=16)
    try:
        part = form.get("file")
        if not isinstance(part, UploadFile):
            raise ApiError(422, "invalid_argument", "send the document as the multipart field 'file' (with a filename)")
        filename = part.filename or "upload"
        accepted = await run_in_threadpool(accept_upload, ctx, filename, part.file)
    finally:
        await form.close()
    return accepted.as_answer()


async def _json(ctx: ApiContext, request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(422, "invalid_argument", "the body is not valid JSON") from None
    accepted = await run_in_threadpool(accept_json, ctx, body)
    return accepted.as_answer()


@router.post(
    "/documents",
    status_code=202,
    summary="Submit a document: a multipart upload (field `file`), or JSON {path} / {uri}",
    openapi_extra=_SUBMIT_BODY,
    responses=_SUBMIT_RESPONSES,
)
async def submit_document(request: Request, ctx: Context) -> MidasJSON:
    """Queue one document for processing; answers at once with the task id to poll at ``/jobs/{id}``."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type == "multipart/form-data":
        answer = await _upload(ctx, request)
    elif content_type == "application/json":
        answer = await _json(ctx, request)
    else:
        raise ApiError(
            415, "unsupported_media_type", "send multipart/form-data (field 'file') or application/json ({path}/{uri})"
        )
    return MidasJSON(answer, status_code=202, headers={"Location": answer["job"]})


@router.get("/documents", summary="Processed, failed and rejected documents, newest first")
def list_documents(
    ctx: Context,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
    status: StatusFilter | None = None,
    type: Annotated[str | None, Query(max_length=20, description="a file type, e.g. pdf")] = None,
) -> dict[str, Any]:
    """A page of documents with their paths; ``total`` counts every document the filters match."""
    status_value = status.value if status else None
    documents = ctx.store.list_documents(limit=limit, offset=offset, status=status_value, file_type=type)
    total = ctx.store.count_documents(status=status_value, file_type=type)
    return {"total": total, "limit": limit, "offset": offset, "documents": documents}


@router.get(
    "/documents/{document_id}",
    summary="One document: metadata, chunks, analysis",
    responses={404: {"description": "`not_found`: no such document"}},
)
def get_document(
    ctx: Context,
    document_id: DocumentId,
    chunk_offset: Annotated[int, Query(ge=0)] = 0,
    chunk_limit: Annotated[int, Query(ge=0, le=MAX_CHUNKS)] = 100,
) -> dict[str, Any]:
    """Everything the store knows about the document, a page of its chunks, and its analyses (or null)."""
    document = ctx.store.get_document(document_id)
    if document is None:
        raise ApiError(404, "not_found", f"document {document_id} does not exist")
    chunks = ctx.store.get_chunks(document_id, offset=chunk_offset, limit=chunk_limit) if chunk_limit else []
    return {
        "document": document,
        "chunks": {
            "total": document.get("chunk_count") or 0,
            "offset": chunk_offset,
            "limit": chunk_limit,
            "items": chunks,
        },
        "analysis": get_analysis(document_id, ctx.url),
    }


@router.get(
    "/documents/{document_id}/related",
    summary="The documents nearest in meaning to one, near-duplicates flagged",
    responses={404: {"description": "`not_found`: no such document"}},
)
def related_documents(
    ctx: Context, document_id: DocumentId, limit: Annotated[int, Query(ge=1, le=100)] = 5
) -> dict[str, Any]:
    """Nearest first by the cosine similarity of document vectors (the mean of each one's chunk embeddings).

    ``embedded`` is false (and ``related`` empty) while the document has no embeddings yet, or when
    embeddings are off.
    """
    found = ctx.store.related(document_id, limit=limit)
    return {
        "document_id": document_id,
        "embedded": found is not None,
        "related": [dataclasses.asdict(r) for r in found or []],
    }
