"""The HTTP API server: ``python -m background_tasks.api_app`` (the launcher's ``api`` service).

Serves ``api.create_app`` with uvicorn on 127.0.0.1:``MIDAS_API_PORT`` only; the OpenAPI
page is ``/docs``. The Celery app and the store's schema are made before the port opens,
so the first request is not the one that waits for them, and a store that cannot be
opened stops the start with its reason.
"""

from __future__ import annotations

import logging

import uvicorn

from background_tasks.api.app import create_app
from background_tasks.logging_setup import configure_logging
from background_tasks.settings import settings_or_exit

log = logging.getLogger("background_tasks.api")

HOST = "127.0.0.1"


def main() -> None:
    """Run the API until SIGTERM or Ctrl+C (uvicorn lets running requests finish)."""
    settings = settings_or_exit()
    configure_logging()
    app = create_app(settings)
    context = app.state.midas
    _ = context.app, context.store  # made now, not by the first request
    if not settings.api_tokens:
        log.warning("MIDAS_API_TOKENS is empty: every endpoint but /health answers 401 (midas api hash-token)")
    log.info("MIDAS API on http://%s:%d (docs: /docs)", HOST, settings.api_port)
    uvicorn.run(
        app,
        host=HOST,
        port=settings.api_port,
        log_config=None,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=max(1, int(settings.stop_timeout) - 5),
    )


if __name__ == "__main__":
    main()
