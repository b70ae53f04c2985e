"""The app factory: routes by resource, JSON errors, and the two gates every request passes first.

``create_app(settings)`` builds one FastAPI app. Requests go through, in order:
``TokenGate`` (``api.auth``: no valid bearer token, 401, except ``/health`` and the docs),
then ``BodyLimit`` (``api.limits``: 413 for a body over its limit, by Content-Length before
anything is read, or as it streams in), then the routes. Every answer, errors included, is
JSON (``/metrics`` is Prometheus text). ``background_tasks.api_app`` serves it with uvicorn
on 127.0.0.1.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from background_tasks.api import document_admin, documents, health, jobs, metrics, search
from background_tasks.api.auth import PUBLIC_PATHS, TokenGate
from background_tasks.api.context import ApiContext
from background_tasks.api.errors import MidasJSON, install_error_handlers
from background_tasks.api.limits import BodyLimit
from background_tasks.settings import Settings

TITLE = "MIDAS"
VERSION = "1"
DESCRIPTION = """Submit documents, follow their tasks, read and search what was processed, watch MIDAS's health.

Every endpoint but `/health` (and this page) needs `Authorization: Bearer <token>`; make a token with
`.venv/bin/midas api hash-token` and put its digest in `MIDAS_API_TOKENS`. Errors are JSON:
`{"error": <type>, "message": <words>, "status": <code>}`.
"""


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The schema with the bearer scheme on every operation but the public ones (so /docs can send a token)."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        for path, operations in schema.get("paths", {}).items():
            if path in PUBLIC_PATHS:
                continue
            for operation in operations.values():
                operation["security"] = [{"bearer": []}]
                operation.setdefault("responses", {}).setdefault(
                    "401", {"description": "`unauthorized`: no token, or not a valid one"}
                )
        app.openapi_schema = schema
    return app.openapi_schema


def create_app(settings: Settings, celery_app: Any = None) -> FastAPI:
    """The API for ``settings``; tasks are sent with ``celery_app`` (default: one made from the settings)."""
    app = FastAPI(
        title=TITLE,
        version=VERSION,
        description=DESCRIPTION,
        default_response_class=MidasJSON,
        redoc_url=None,
    )
    app.state.midas = ApiContext(settings, celery_app)
    install_error_handlers(app)
    for module in (documents, document_admin, jobs, search, health, metrics):
        app.include_router(module.router)
    # added last runs first: the token is checked before the body's size, and both before any route
    app.add_middleware(BodyLimit, max_file_bytes=settings.max_file_bytes)
    app.add_middleware(TokenGate, digests=settings.api_tokens)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app
