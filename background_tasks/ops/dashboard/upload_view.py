"""The upload panel of the Actions section: files into the inbox, and each one's result once a worker has it.

Sending a file only queues it, so "queued" is said in neutral blue; the panel then asks for each
upload's task result every few seconds until all are in, and shows it in the palette's colours:
green processed (or already known), amber rejected (e.g. an unsupported type), red failed, with
the error type and message. The uploads of the session are kept in ``st.session_state``, so the
results appear on this page whatever else is clicked in between.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

import streamlit as st

from background_tasks.ops.dashboard import actions
from background_tasks.ops.dashboard.common import plain_error
from background_tasks.ops.dashboard.view import code, guarded, md
from background_tasks.settings import Settings

log = logging.getLogger("midas.dashboard")

#: the session's uploads (the newest batch first) and their results, in ``st.session_state``
STATE_KEY = "upload_results"
#: uploads remembered per session
KEPT = 20
#: seconds between two looks at the results still missing
POLL_SECONDS = 2.0


def upload_panel(settings: Settings, app: Any, blocked: bool) -> None:
    """The file uploader (capped at MIDAS_MAX_FILE_MB), its button, and the results of this session's uploads."""
    with guarded("The upload"):
        files = st.file_uploader(
            "Documents", accept_multiple_files=True, key="uploads", max_upload_size=actions.upload_limit_mb(settings)
        )
        if st.button("Process the uploaded files", disabled=blocked or not files, key="upload_go"):
            sent = [send_one(settings, app, upload.name, upload.getvalue()) for upload in files or []]
            kept = st.session_state.get(STATE_KEY, [])
            st.session_state[STATE_KEY] = [*sent, *kept][:KEPT]  # the newest batch first, in its order
        st.caption(f"Saved into {code(settings.inbox_dir)}; at most {settings.max_file_mb:g} MB per file.")
    if st.session_state.get(STATE_KEY):
        results_panel(app)


def send_one(settings: Settings, app: Any, name: str, data: bytes) -> dict[str, Any]:
    """Save one upload into the inbox and queue it; what happened, as an entry of the session's list."""
    entry: dict[str, Any] = {"name": name, "sent_at": time.time(), "task_id": None, "saved_as": None}
    try:
        path = actions.save_upload(settings, name, data)
        entry["saved_as"] = path.name
        entry["task_id"] = actions.send_document(app, path, settings)
    except Exception as exc:
        log.warning("upload of %s failed: %s", name, exc)
        entry.update(done=True, error=plain_error(exc))
    return entry


def refresh(app: Any, entries: list[dict[str, Any]]) -> bool:
    """Ask for the results still missing; True while any is."""
    waiting = False
    for entry in entries:
        if entry.get("done") or not entry.get("task_id"):
            continue
        outcome = actions.task_outcome(app, entry["task_id"])
        if outcome.finished:
            entry.update(done=True, result=outcome.result, error=outcome.error)
        else:
            entry["state"] = outcome.result.get("state", "pending")
            waiting = True
    return waiting


def results_panel(app: Any) -> None:
    entries: list[dict[str, Any]] = st.session_state[STATE_KEY]
    waiting = any(not e.get("done") for e in entries)

    @st.fragment(run_every=timedelta(seconds=POLL_SECONDS) if waiting else None)
    def panel() -> None:
        with guarded("The upload results"):
            still = refresh(app, entries)
            st.markdown("**Uploads of this session**")
            for entry in entries:
                show_entry(entry)
            if waiting and not still:
                st.rerun()  # all in: draw the panel again without its timer

    panel()


def show_entry(entry: dict[str, Any]) -> None:
    """One upload in the palette's colour: blue while waiting, then green, amber or red with the error."""
    name = md(entry["name"])
    task = f" (task {code(entry['task_id'])})" if entry.get("task_id") else ""
    if not entry.get("done"):
        saved = f"saved as {md(entry['saved_as'])}, " if entry.get("saved_as") else ""
        state = {"started": "being processed", "retry": "to be tried again"}.get(entry.get("state", ""), "queued")
        st.info(f"{name}: {saved}{state}{task}; the result shows here when it arrives.", icon=":material/schedule:")
        return
    if entry.get("error"):
        st.error(f"{name}: {md(entry['error'])}{task}", icon=":material/error:")
        return
    result = entry.get("result") or {}
    status = result.get("status")
    if status in ("success", "duplicate"):
        known = "already known as" if status == "duplicate" else "processed:"
        pages = f", {result['pages']} page(s)" if result.get("pages") else ""
        st.success(
            f"{name}: {known} document {result.get('document_id')} ({md(result.get('file_type') or '?')}, "
            f"{result.get('chunks_created', 0)} chunk(s){pages}){task}",
            icon=":material/check_circle:",
        )
        return
    error = f"{md(result.get('error_type') or 'error')}: {md(result.get('error') or 'no message')}"
    if status == "rejected":
        st.warning(f"{name}: rejected — {error}{task}", icon=":material/block:")
    else:
        st.error(f"{name}: {md(status or 'unknown result')} — {error}{task}", icon=":material/error:")
