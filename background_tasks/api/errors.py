"""Every answer of the API is JSON, errors included: ``{"error": <type>, "message": <words>, "status": <code>}``.

``error`` is a stable word a program can branch on (``unauthorized``, ``too_large``,
``not_found``, ``path_not_allowed``, ``unsupported``, ``invalid_argument``, ...: the
``ErrorType`` of MIDAS's own exceptions where one fits); ``message`` is for people.
Text from documents and file names can hold lone surrogates (names that are not
UTF-8) and numbers that are not finite; ``MidasJSON`` writes both as valid JSON.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from background_tasks.errors import MidasError

log = logging.getLogger(__name__)

#: HTTP status for each error type a MIDAS exception can carry into an answer
STATUS_BY_ERROR_TYPE: Mapping[str, int] = {
    "path_not_allowed": 403,
    "not_found": 404,
    "invalid_argument": 422,
    "invalid_query": 422,
    "too_large": 413,
    "unsupported": 415,
    "type_mismatch": 415,
    "empty": 422,
    # a task is processing the document right now: the same request succeeds once it is done
    "document_busy": 409,
    "content_changed": 409,
    # the document is known but no copy and no file holds its bytes any more: that will not change
    "original_unavailable": 410,
    "access_denied": 502,
    "storage_unavailable": 503,
    "transient": 503,
}

_WORD_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    410: "gone",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_argument",
    500: "internal_error",
    503: "unavailable",
}


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities as null (JSON has no word for them)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


class MidasJSON(JSONResponse):
    """JSON as ASCII (a lone surrogate becomes ``\\udcXX``, valid JSON) with no NaN."""

    def render(self, content: Any) -> bytes:
        try:
            text = json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":"), default=str)
        except ValueError:  # a NaN or infinity somewhere in a profile or a score
            text = json.dumps(_finite(content), ensure_ascii=True, allow_nan=False, separators=(",", ":"), default=str)
        return text.encode("ascii")


class ApiError(Exception):
    """An answer other than success: its status, its error word and a message for people."""

    def __init__(self, status: int, error: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.headers = dict(headers or {})

    @classmethod
    def from_midas(cls, exc: MidasError, default_status: int = 422) -> ApiError:
        """The answer for one of MIDAS's own errors: its ``error_type`` and message, a status that fits."""
        error_type = str(exc.error_type)
        return cls(STATUS_BY_ERROR_TYPE.get(error_type, default_status), error_type, exc.message)


def error_body(status: int, error: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": error, "message": message, "status": status, **extra}


def error_response(status: int, error: str, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return MidasJSON(error_body(status, error, message), status_code=status, headers=dict(headers or {}))


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.error, exc.message, exc.headers)


async def _midas_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MidasError)
    return await _api_error(request, ApiError.from_midas(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail, default=str)
    return error_response(status, _WORD_BY_STATUS.get(status, "error"), message, exc.headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {"where": ".".join(str(part) for part in err.get("loc", ())), "problem": str(err.get("msg", ""))}
        for err in exc.errors()
    ]
    first = problems[0] if problems else {"where": "request", "problem": "invalid"}
    body = error_body(422, "invalid_argument", f"{first['where']}: {first['problem']}", problems=problems)
    return MidasJSON(body, status_code=422)


async def _unexpected(request: Request, exc: Exception) -> Response:
    # the traceback goes to the log, never to the client
    log.exception("%s %s failed", request.method, request.url.path)
    return error_response(500, "internal_error", "the server could not answer this request; see logs/api.log")


def install_error_handlers(app: FastAPI) -> None:
    """JSON for every error: ours, MIDAS's, Starlette's (404 route, 405), validation, and anything unexpected."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(MidasError, _midas_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
