"""Request bodies are bounded before they are read: by Content-Length first, then by counting what arrives.

An upload may be as large as ``MIDAS_MAX_FILE_MB`` plus its multipart framing; a JSON
body at most ``JSON_MAX_BYTES``. A request that says it is larger is answered 413 at
once, before the app sees it; one without a length (chunked) or lying about it is
counted as it streams in and cut off with the same 413 the moment it passes the limit.
Nothing over the limit is ever held in memory or written to disk.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException

from background_tasks.api.errors import error_response

#: the multipart framing around an upload (boundaries, part headers, a long file name)
MULTIPART_OVERHEAD = 64 * 1024
#: the largest JSON body (a path or a URI)
JSON_MAX_BYTES = 64 * 1024


class BodyTooLarge(HTTPException):
    """The body passed its limit while it was read (raised from ``receive``, answered 413 in JSON)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit:,} bytes (MIDAS_MAX_FILE_MB)")
        self.limit = limit


def _header(scope: dict[str, Any], wanted: bytes) -> str | None:
    for name, value in scope.get("headers") or ():
        if name.lower() == wanted:
            return value.decode("latin-1")
    return None


def body_limit(scope: dict[str, Any], max_file_bytes: int) -> int:
    """The largest body this request may have: a JSON body is small, anything else may carry a file."""
    content_type = (_header(scope, b"content-type") or "").split(";", 1)[0].strip().lower()
    if content_type == "application/json":
        return JSON_MAX_BYTES
    return max_file_bytes + MULTIPART_OVERHEAD


class BodyLimit:
    """ASGI middleware: 413 (JSON) for a body over its limit, declared or counted."""

    def __init__(self, app: Any, max_file_bytes: int) -> None:
        self.app = app
        self.max_file_bytes = max_file_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = body_limit(scope, self.max_file_bytes)
        declared = _header(scope, b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                length = -1
            if length < 0:
                await error_response(400, "bad_request", "Content-Length is not a number")(scope, receive, send)
                return
            if length > limit:
                message = f"the request body ({length:,} bytes) is larger than {limit:,} bytes (MIDAS_MAX_FILE_MB)"
                response = error_response(413, "too_large", message, {"Connection": "close"})
                await response(scope, receive, send)
                return
        received = 0
        started = False

        async def counted_receive() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched_send(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge as exc:  # raised where no handler of the app caught it
            if started:
                raise
            response = error_response(413, "too_large", str(exc.detail), {"Connection": "close"})
            await response(scope, receive, send)
