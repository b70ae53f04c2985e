"""Flower with its monitoring endpoints behind its own authentication.

``python -m background_tasks.flower_app [flower options]`` is
``celery -A celery_config flower --url_prefix=flower [flower options]`` with two
changes. Flower 2.2 serves ``/metrics`` (Prometheus: task names, counts,
worker names) and ``/healthcheck`` to anyone, even with ``FLOWER_BASIC_AUTH``
set, because those two handlers lack the ``tornado.web.authenticated`` that
every other Flower page has. Flower has no option for it, so they get it here,
before Flower starts. Without any Flower auth configured nothing changes.
And with a URL prefix Flower answers only ``/flower/``: ``/flower``, the address
people type, was a 404; it redirects to ``/flower/`` here.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from tornado import web

#: Flower's URL prefix: its pages are under ``/flower/``.
URL_PREFIX = "flower"


def protect_monitoring_endpoints() -> None:
    """Make Flower's metrics and health check ask for the same credentials as its pages."""
    from flower.views import monitor

    for handler in (monitor.Metrics, monitor.Healthcheck):
        if not getattr(handler.get, "midas_authenticated", False):
            guarded = web.authenticated(handler.get)
            guarded.midas_authenticated = True  # type: ignore[attr-defined]
            handler.get = guarded  # type: ignore[method-assign]


def redirect_bare_prefix() -> None:
    """Send ``/flower`` to ``/flower/`` (a 302, keeping the query) instead of Flower's 404.

    Flower puts the prefix in front of every handler's pattern, so the empty pattern becomes ``/flower``.
    """
    from flower import urls

    if not any(getattr(h, "midas_redirect", False) for h in urls.handlers):
        redirect = web.url(r"", web.RedirectHandler, {"url": f"/{URL_PREFIX}/", "permanent": False})
        redirect.midas_redirect = True  # type: ignore[attr-defined]
        urls.handlers.insert(0, redirect)


def main(argv: Sequence[str] | None = None) -> None:
    """Run Celery's ``flower`` command for the MIDAS app, protected and redirected as above."""
    protect_monitoring_endpoints()
    redirect_bare_prefix()
    from celery.__main__ import main as celery_main

    extra = list(sys.argv[1:] if argv is None else argv)
    sys.argv = ["celery", "-A", "celery_config", "flower", f"--url_prefix={URL_PREFIX}", *extra]
    celery_main()


if __name__ == "__main__":
    main()
