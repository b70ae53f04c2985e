"""The dashboard server: Streamlit's ASGI app for the page, behind the password gate.

``python -m background_tasks.dashboard_app`` (the launcher's ``dashboard``
service) serves ``Streamlit_Task_Monitoring.py`` on 127.0.0.1:``STREAMLIT_PORT``.
With ``MIDAS_DASHBOARD_PASSWORD`` set, ``PasswordGate`` stands in front of
every route Streamlit has, in this very process, so there is no second port or
socket through which the page, its WebSocket or its upload endpoint could be
reached without the password. Uploads are capped at ``MIDAS_MAX_FILE_MB``
(Streamlit's ``server.maxUploadSize``): a larger file would be rejected by the
workers anyway.
"""

from __future__ import annotations

import streamlit as st
from starlette.middleware import Middleware

from background_tasks.ops.dashboard.actions import upload_limit_mb
from background_tasks.ops.dashboard_gate import PasswordGate, mark_process_gated
from background_tasks.settings import PROJECT_ROOT, Settings, settings_or_exit

PAGE = PROJECT_ROOT / "Streamlit_Task_Monitoring.py"


def server_config(settings: Settings) -> dict[str, object]:
    """Streamlit options for the launcher's dashboard: loopback only, the MIDAS port and upload cap, no Deploy."""
    return {
        "server.address": "127.0.0.1",
        "server.port": settings.streamlit_port,
        "server.headless": True,
        "server.maxUploadSize": upload_limit_mb(settings),
        "browser.gatherUsageStats": False,
        "client.toolbarMode": "minimal",  # no "Deploy" button or developer menu: this is a monitor, not an editor
    }


def build_app(settings: Settings) -> st.App:
    """Streamlit's app for the page, gated when a dashboard password is set."""
    middleware = [Middleware(PasswordGate, password=settings.dashboard_password)] if settings.dashboard_password else []
    return st.App(PAGE, middleware=middleware)


SETTINGS = settings_or_exit()
app = build_app(SETTINGS)

if __name__ == "__main__":
    if SETTINGS.dashboard_password:
        mark_process_gated()  # every request to this process passes the gate: the page need not ask again
    app.run(config=server_config(SETTINGS))
