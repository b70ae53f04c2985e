"""MIDAS monitoring dashboard.

``python -m background_tasks.dashboard_app`` serves it behind the password gate
(the launcher's ``dashboard`` service at http://localhost:8501, bound to
127.0.0.1); ``streamlit run Streamlit_Task_Monitoring.py`` still works, with only
the page's own password form. Sections:
overview, live tasks, system health, task history, performance, documents and
actions. The figures come from ``background_tasks.ops.dashboard_data``; this file
only lays them out (System health, Performance, the upload panel and the Overview's
Sources panel are drawn by ``ops.dashboard.health_view``, ``performance_view``,
``upload_view`` and ``sources_view``). Each
section is drawn inside ``guarded`` so a database, Redis or worker problem shows
one plain sentence instead of a traceback, and the rest of the page keeps
showing what is still known.

Tests (and a second MIDAS) can point the page at other settings by putting a
``Settings`` object in ``st.session_state["midas_settings"]`` before the run.
"""

from __future__ import annotations

import hmac
import logging
import math
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import streamlit as st

from background_tasks.errors import MidasError
from background_tasks.ops import dashboard_data as dd
from background_tasks.ops import dashboard_gate
from background_tasks.ops.dashboard.health_view import section_health, verdict_panel
from background_tasks.ops.dashboard.performance_view import section_performance
from background_tasks.ops.dashboard.search_view import related_panel, search_panel
from background_tasks.ops.dashboard.sources_view import sources_panel
from background_tasks.ops.dashboard.upload_view import upload_panel
from background_tasks.ops.dashboard.view import (
    code,
    coloured,
    fmt_rate,
    fmt_seconds,
    fmt_time,
    guarded,
    md,
    open_selected_document,
    show_health,
)
from background_tasks.settings import Settings, SettingsError, get_settings
from background_tasks.storage.schema import create_schema

log = logging.getLogger("midas.dashboard")

#: The sidebar's sections; ``?section=Documents`` in the URL opens one directly.
SECTIONS = ("Overview", "Live tasks", "System health", "Task history", "Performance", "Documents", "Actions")
WINDOWS = ("last hour", "last 24 hours", "last 7 days", "all", "custom")


# --------------------------------------------------------------------------
# Plumbing
# --------------------------------------------------------------------------


def load_settings() -> Settings:
    injected = st.session_state.get("midas_settings")
    if isinstance(injected, Settings):
        return injected
    try:
        return get_settings()
    except SettingsError as exc:
        st.error(f"MIDAS configuration error: {md(exc)}")
        st.stop()
        raise  # unreachable; st.stop() ends the run


@st.cache_resource(show_spinner=False)
def _celery_app(broker_url: str, backend_url: str, _settings: Settings) -> Any:
    import celery_config

    default = celery_config.app
    if default.conf.broker_url == broker_url and default.conf.result_backend == backend_url:
        return default
    return celery_config.create_app(_settings)


def celery_app(settings: Settings) -> Any:
    return _celery_app(settings.broker_url, settings.result_backend_url, settings)


def require_password(settings: Settings) -> None:
    """When MIDAS_DASHBOARD_PASSWORD is set, nothing is shown until it is entered.

    Behind the launcher's gate (``background_tasks.dashboard_app``) the password was already
    given before any request reached Streamlit, so it is not asked twice. Run with plain
    ``streamlit run``, this form is all that stands between a visitor and the page.
    """
    expected = settings.dashboard_password
    if not expected or st.session_state.get("midas_authenticated") or dashboard_gate.guards_this_process():
        return
    st.title("MIDAS monitoring")
    with st.form("login"):
        entered = st.text_input("Dashboard password", type="password")
        submitted = st.form_submit_button("Sign in")
    if submitted:
        if hmac.compare_digest(entered.encode("utf-8"), expected.encode("utf-8")):
            st.session_state["midas_authenticated"] = True
            st.rerun()
        time.sleep(1.0)  # slows guessing
        st.error("Wrong password.")
    st.stop()


def service_notes(settings: Settings, snap: dict[str, Any]) -> None:
    """Say plainly what is down, and that the figures below come from the database."""
    redis_info = snap.get("redis") or {}
    if not redis_info.get("ok"):
        st.warning(
            f"Redis is not reachable at {settings.redis_host}:{settings.redis_port} "
            f"({md(redis_info.get('error', 'no answer'))}). Workers, queues and live tasks cannot be shown; "
            "the task and document figures come from the database. "
            "Start it with: python -m background_tasks.services start redis"
        )
    elif not snap.get("workers"):
        st.warning(
            f"No Celery worker answered within {dd.LIVE_TIMEOUT:g} s ({md(snap.get('workers_error') or 'no reply')}). "
            "Tasks wait in their queues until a worker runs. "
            "Start them with: python -m background_tasks.services start worker"
        )


# --------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------


def section_overview(settings: Settings, app: Any) -> None:
    url = settings.database_url_resolved
    st.header("Overview")
    snap: dict[str, Any] | None = None
    with guarded("The live status"):
        snap = dd.live_snapshot(settings, app)
        service_notes(settings, snap)
    figures: dict[str, Any] | None = None
    with guarded("The task and document figures"):
        figures = dd.overview(url)

    cols = [*st.columns(3), *st.columns(3)]
    redis_up = bool(snap and snap["redis"].get("ok"))
    cols[0].metric("Workers online", len(snap["workers"]) if redis_up and snap else "–")
    running = snap["active"] if redis_up and snap else (figures["running"] if figures else "–")
    cols[1].metric("Tasks running", running)
    cols[2].metric("Waiting in queues", snap["waiting"] if redis_up and snap else "–")
    cols[3].metric("Success rate, last hour", fmt_rate(figures["success_rate_1h"]) if figures else "–")
    cols[4].metric("Success rate, 24 h", fmt_rate(figures["success_rate_24h"]) if figures else "–")
    if figures:
        docs = figures["documents"]
        cols[5].metric(
            "Documents processed",
            docs["by_status"].get("success", 0),
            help=f"{docs['documents']} documents in the store, {docs['chunks']} chunks",
        )
    else:
        cols[5].metric("Documents processed", "–")

    with guarded("The stored health verdict"):
        verdict_panel(settings)

    if figures:
        hour, day = figures["last_hour"], figures["last_day"]
        st.caption(
            f"Finished in the last hour: {hour.get('success', 0)} succeeded, {hour.get('failure', 0)} failed; "
            f"last 24 h: {day.get('success', 0)} succeeded, {day.get('failure', 0)} failed. "
            f"Running according to the task history: {figures['running']}."
        )
        if not sum(day.values()) and not figures["documents"]["documents"]:
            st.info("Nothing recorded yet: no task has finished in the last 24 hours and no document was processed.")

    if redis_up and snap:
        st.subheader("Queues")
        st.dataframe(dd.queue_table(snap), hide_index=True)

    with guarded("The intake ledger"):
        section_ledger(settings)
    with guarded("The sources"):
        sources_panel(settings)

    st.subheader("Links")
    flower = dd.flower_url(settings)
    left, right = st.columns(2)
    left.link_button("Open Flower (Celery workers and tasks)", flower)
    left.caption(f"Flower: {flower}" + (" — asks for FLOWER_BASIC_AUTH" if settings.flower_basic_auth else ""))
    with right, guarded("The logs"):
        st.markdown(f"**Logs** in {code(settings.log_dir)}")
        files = dd.log_files(settings)
        if files.empty:
            st.caption("No log files yet.")
        else:
            with st.expander("Show a log file"):
                name = st.selectbox("Log file", files["file"].tolist(), key="log_file")
                st.code(dd.log_tail(settings, name), language=None)


def section_ledger(settings: Settings) -> None:
    """Every submission from publish to done: what the reaper watches."""
    st.subheader("Intake ledger")
    ledger = dd.ledger_summary(settings)
    if not ledger.get("enabled"):
        st.caption("The intake ledger is off (MIDAS_LEDGER=false): a task the broker loses is not sent again.")
        return
    if not ledger.get("ok"):
        st.warning(f"The ledger cannot be read: {ledger.get('error')}")
        return
    cols = st.columns(5)
    cols[0].metric("Queued", ledger["queued"], help="published, not started yet")
    cols[1].metric("Running", ledger["running"])
    cols[2].metric("Re-sent, last hour", ledger["resent_last_hour"], help="sent again by the reaper")
    cols[3].metric("Done", ledger["done"])
    cols[4].metric("Failed", ledger["failed"], help="could not be sent again: unknown task, file gone, …")
    oldest = ledger["oldest_queued_s"]
    st.caption("Oldest queued entry: " + ("none" if oldest is None else fmt_seconds(oldest)))
    for finding in ledger["findings"]:
        st.warning(finding)


def section_live(settings: Settings, app: Any) -> None:
    st.header("Live tasks")
    left, right = st.columns([1, 3])
    auto = left.toggle("Refresh automatically", value=True, key="live_auto")
    interval = right.slider("Refresh every (seconds)", 2, 30, value=5, key="live_interval", disabled=not auto)

    @st.fragment(run_every=timedelta(seconds=interval) if auto else None)
    def live_panel() -> None:
        with guarded("The live tasks"):
            snap = dd.live_snapshot(settings, app)
            st.caption(f"As of {fmt_time(snap['checked_at'])}")
            service_notes(settings, snap)
            if not snap["redis"].get("ok"):
                return
            cols = st.columns(4)
            cols[0].metric("Active", snap["active"])
            cols[1].metric("Reserved", snap["reserved"])
            cols[2].metric("Scheduled", snap["scheduled"])
            cols[3].metric("Waiting in queues", snap["waiting"])
            st.subheader("Queues")
            st.dataframe(dd.queue_table(snap), hide_index=True)
            if snap["stuck"]:
                names = ", ".join(f"{md(t['name'])} on {md(t['worker'])}" for t in snap["stuck"])
                st.warning(f"Running longer than {settings.stuck_task_seconds:g} s: {names}")
            for host, tables in dd.worker_tables(snap).items():
                st.subheader(f"Worker {md(host)}")
                for kind in ("active", "reserved", "scheduled"):
                    frame = tables[kind]
                    if frame.empty:
                        st.caption(f"{kind.capitalize()}: none")
                    else:
                        st.markdown(f"**{kind.capitalize()}** ({len(frame)})")
                        st.dataframe(frame, hide_index=True)

    live_panel()


def _history_filter(url: str) -> tuple[dd.HistoryFilter, int]:
    names = dd.distinct_values(url, "name")
    queues = dd.distinct_values(url, "queue")
    c1, c2, c3 = st.columns(3)
    chosen_names = c1.multiselect("Task name", names, key="hist_names")
    chosen_states = c2.multiselect("State", list(dd.STATES), key="hist_states")
    chosen_queues = c3.multiselect("Queue", queues, key="hist_queues")
    c4, c5, c6 = st.columns([1, 2, 1])
    window = c4.selectbox("Sent", WINDOWS, index=1, key="hist_window")
    text = c5.text_input("Search (task id, name, arguments, result, error, worker)", key="hist_text")
    page_size = c6.selectbox("Rows per page", (25, 50, 100), index=1, key="hist_page_size")
    since, until = dd.window_start(window), None
    if window == "custom":
        today = datetime.now(UTC).date()
        picked = st.date_input("From – to (UTC)", (today - timedelta(days=7), today), key="hist_dates")
        if isinstance(picked, tuple | list) and len(picked) == 2:
            start = datetime.combine(picked[0], datetime.min.time(), UTC)
            end = datetime.combine(picked[1], datetime.max.time(), UTC)
            since, until = start.timestamp(), end.timestamp()
    flt = dd.HistoryFilter(
        names=tuple(chosen_names),
        states=tuple(chosen_states),
        queues=tuple(chosen_queues),
        since=since,
        until=until,
        text=text,
    )
    return flt, int(page_size)


def section_history(settings: Settings, app: Any) -> None:
    url = settings.database_url_resolved
    st.header("Task history")
    with guarded("The task history"):
        flt, page_size = _history_filter(url)
        signature = (flt.names, flt.states, flt.queues, flt.text, st.session_state.get("hist_window"), page_size)
        if st.session_state.get("hist_signature") != signature:
            st.session_state["hist_signature"] = signature
            st.session_state.pop("hist_page", None)  # new filter: back to the first page
        page = int(st.session_state.get("hist_page", 1))
        frame, total, capped = dd.history_page(url, flt, page=page, page_size=page_size)
        pages = max(1, math.ceil(total / page_size))
        if page > pages:  # fewer rows than when the page was chosen
            st.session_state.pop("hist_page", None)
            page = 1
            frame, total, capped = dd.history_page(url, flt, page=page, page_size=page_size)
        if total == 0:
            st.info("No task matches." if any(dataclass_values(flt)) else "No task recorded yet.")
            return
        first = (page - 1) * page_size + 1
        st.caption(f"Tasks {first}–{first + len(frame) - 1} of {total:,}{'+' if capped else ''}, newest first")
        st.dataframe(coloured(frame, ["state"]), hide_index=True)
        st.pagination(pages, key="hist_page")

        st.subheader("Task details")
        labels = {
            row.task_id: f"{row.name} · {row.state} · {fmt_time(row.sent_at)} · {row.task_id}"
            for row in frame.itertuples()
        }
        chosen = st.selectbox("Task", list(labels), format_func=labels.get, key="hist_task")
        typed = st.text_input("…or a task id", key="hist_task_id").strip()
        task_id = typed or chosen
        if task_id:
            show_task(settings, task_id)


def dataclass_values(flt: dd.HistoryFilter) -> list[Any]:
    return [flt.names, flt.states, flt.queues, flt.text.strip()]


def show_task(settings: Settings, task_id: str) -> None:
    detail = dd.task_detail(settings.database_url_resolved, task_id)
    if detail is None:
        st.warning(f"No task {code(task_id)} in the history.")
        return
    cols = st.columns(4)
    cols[0].metric("State", detail["state"])
    cols[1].metric("Wait", fmt_seconds(detail.get("wait_s")))
    cols[2].metric("Run time", fmt_seconds(detail.get("runtime_s")))
    cols[3].metric("Retries", detail.get("retries") or 0)
    st.markdown(
        "\n".join(
            [
                f"- **Task**: {code(detail['name'])} — id {code(detail['task_id'])}",
                f"- **Queue / worker**: {md(detail.get('queue') or '–')} / {md(detail.get('worker') or '–')}",
                f"- **Sent**: {fmt_time(detail.get('sent_at'))}",
                f"- **Received**: {fmt_time(detail.get('received_at'))}",
                f"- **Started**: {fmt_time(detail.get('started_at'))}",
                f"- **Finished**: {fmt_time(detail.get('finished_at'))}",
            ]
        )
    )
    st.markdown("**Arguments**")
    st.code(detail.get("args_summary") or "(none)", language=None)
    if detail.get("result_summary"):
        st.markdown("**Result**")
        st.code(detail["result_summary"], language=None)
    if detail.get("error_type") or detail.get("error_message"):
        st.markdown(f"**Error**: {md(detail.get('error_type') or '')}")
        st.code(detail.get("error_message") or "", language=None)
    if detail.get("traceback"):
        with st.expander("Traceback (recorded by the worker)"):
            st.code(detail["traceback"], language=None)
    st.caption(f"In Flower: {dd.flower_url(settings)}task/{detail['task_id']}")


def section_documents(settings: Settings, app: Any) -> None:
    url = settings.database_url_resolved
    st.header("Documents")
    stats: dict[str, Any] = {}
    with guarded("The documents"):
        stats = dd.document_stats(url)
        cols = st.columns(5)
        cols[0].metric("Documents", stats["documents"])
        for col, status in zip(cols[1:], ("success", "failed", "rejected", "processing"), strict=True):
            col.metric(status.capitalize(), stats["by_status"].get(status, 0))
        c1, c2, c3 = st.columns(3)
        status = c1.selectbox("Status", ("any", "success", "failed", "rejected", "processing"), key="doc_status")
        ftype = c2.selectbox("Type", ("any", *sorted(stats["by_file_type"])), key="doc_type")
        page_size = int(c3.selectbox("Rows per page", (25, 50, 100), index=1, key="doc_page_size"))
        status_arg = None if status == "any" else status
        type_arg = None if ftype == "any" else ftype
        signature = (status_arg, type_arg, page_size)
        if st.session_state.get("doc_signature") != signature:
            st.session_state["doc_signature"] = signature
            st.session_state.pop("doc_page", None)
        page = int(st.session_state.get("doc_page", 1))
        frame, total = dd.documents_page(url, page, page_size, status_arg, type_arg)
        pages = max(1, math.ceil(total / page_size))
        if page > pages:
            st.session_state.pop("doc_page", None)
            page = 1
            frame, total = dd.documents_page(url, page, page_size, status_arg, type_arg)
        if total == 0:
            st.info("No document processed yet." if status_arg is None and type_arg is None else "No document matches.")
        else:
            first = (page - 1) * page_size + 1
            st.caption(f"Documents {first}–{first + len(frame) - 1} of {total:,}, newest first")
            st.session_state["doc_table_ids"] = [int(i) for i in frame["id"]]
            st.dataframe(frame.drop(columns=["path"]), hide_index=True, key="doc_table",
                         on_select=open_selected_document, selection_mode="single-row")  # fmt: skip
            st.caption("Click a row to open it in One document.")
            st.pagination(pages, key="doc_page")

    st.subheader("Search")
    with guarded("The search"):
        search_panel(url, sorted(stats.get("by_file_type", {})))

    st.subheader("One document")
    with guarded("The document"):
        # a click on a row or a search hit filled it (Session State), so no default value competes
        start = {} if "doc_id" in st.session_state else {"value": None}
        doc_id = st.number_input("Document id", min_value=1, step=1, key="doc_id", **start)
        if doc_id:
            document_actions(settings, app, int(doc_id))
            show_document(url, int(doc_id))


def document_actions(settings: Settings, app: Any, document_id: int) -> None:
    """Process again, delete (after a confirmation), get the original: above the document they act on."""
    if dd.document_detail(settings.database_url_resolved, document_id) is None:
        return
    held = st.session_state.get("doc_original")
    if held and held[0] != document_id:
        st.session_state.pop("doc_original", None)  # bytes of another document: not kept around
    again, remove, original = st.columns(3)
    with again:
        if st.button("Process again", key="doc_reprocess", help="Run its content through processing again; "
                     "the new result replaces the old one"):  # fmt: skip
            try:
                task_id = dd.reprocess_document(settings, document_id, app)
                st.success(f"Document {document_id} sent to be processed again (task {code(task_id)})")
            except MidasError as exc:
                st.error(md(exc.message))
    with remove:
        sure = st.checkbox("Yes, delete this document", key="doc_delete_sure")
        if st.button("Delete", key="doc_delete", disabled=not sure, type="primary",
                     help="Its record, chunks and embeddings, and MIDAS's copies; never your file"):  # fmt: skip
            try:
                report = dd.delete_document(settings, document_id)
                st.session_state.pop("doc_original", None)
                kept = f"; your file {code(report.originals_kept[0])} was not touched" if report.originals_kept else ""
                st.success(
                    f"Document {document_id} deleted: {report.chunks_deleted} chunks, "
                    f"{len(report.working_copies_removed)} copies MIDAS kept{kept}"
                )
            except MidasError as exc:
                st.error(md(exc.message))
    with original:
        if st.button("Get the original", key="doc_original_get"):
            try:
                st.session_state["doc_original"] = (document_id, *dd.original_bytes(settings, document_id))
            except MidasError as exc:
                st.error(md(exc.message))
        held = st.session_state.get("doc_original")
        if held and held[0] == document_id:
            _, data, name, mime = held
            st.download_button(f"Download {md(name)}", data, file_name=name, mime=mime, key="doc_download")


def show_document(url: str, document_id: int) -> None:
    doc = dd.document_detail(url, document_id)
    if doc is None:
        st.warning(f"No document {document_id}.")
        return
    cols = st.columns(4)
    cols[0].metric("Status", doc["status"])
    cols[1].metric("Type", doc.get("file_type") or "–")
    cols[2].metric("Size", dd.human_size(doc.get("size_bytes")) or "–")
    cols[3].metric("Chunks", doc.get("chunk_count") or 0)
    st.markdown(f"**Path**: {code(doc.get('path') or '–')}")
    if doc.get("error"):
        st.error(f"{md(doc.get('error_type') or 'error')}: {md(doc['error'])}")
    for warning in doc.get("warnings") or []:
        st.warning(md(warning))
    with st.expander("Metadata"):
        st.json(
            {
                **doc.get("metadata", {}),
                "sha256": doc.get("sha256"),
                "pages": doc.get("page_count"),
                "characters": doc.get("text_chars"),
                "attempts": doc.get("attempts"),
                "duration_s": doc.get("duration_s"),
                "task_id": doc.get("task_id"),
                "paths": [p["path"] for p in doc.get("paths", [])],
            }
        )
    if doc["status"] == "success":
        with guarded("The related documents"):
            related_panel(url, document_id)
    count = int(doc.get("chunk_count") or 0)
    if count:
        per_page = 20
        pages = max(1, math.ceil(count / per_page))
        if st.session_state.get("chunk_document") != document_id:
            st.session_state["chunk_document"] = document_id
            st.session_state.pop("chunk_page", None)
        page = int(st.session_state.get("chunk_page", 1))
        if page > pages:
            st.session_state.pop("chunk_page", None)
            page = 1
        chunks = dd.document_chunks(url, document_id, offset=(page - 1) * per_page, limit=per_page)
        st.markdown(f"**Chunks** ({count})")
        for row in chunks.itertuples():
            where = f", page {row.page}" if row.page is not None and not pd.isna(row.page) else ""
            with st.expander(f"Chunk {row.chunk} (characters {row.start}–{row.end}{where})", expanded=row.chunk == 0):
                st.text(row.text)
        if pages > 1:
            st.pagination(pages, key="chunk_page")


def section_actions(settings: Settings, app: Any) -> None:
    url = settings.database_url_resolved
    st.header("Actions")
    redis_problem: str | None = None
    with guarded("The broker check"):
        redis_problem = dd.redis_problem(settings)
        if redis_problem:
            st.warning(
                f"Redis is not reachable at {settings.redis_host}:{settings.redis_port} ({redis_problem}); "
                "nothing can be sent to the workers until it is back."
            )
    blocked = redis_problem is not None

    st.subheader("Upload files to be processed")
    upload_panel(settings, app, blocked)

    st.subheader("Retry a failed document")
    with guarded("The failed documents"):
        failed = dd.failed_documents(url)
        if failed.empty:
            st.caption("No failed document.")
        else:
            labels = {int(r.id): f"{r.id} · {r.name} · {r.error[:80]}" for r in failed.itertuples()}
            chosen = st.selectbox("Failed document", list(labels), format_func=labels.get, key="retry_doc")
            if st.button("Process it again", disabled=blocked, key="retry_go"):
                try:
                    task_id, path = dd.retry_document(url, app, int(chosen))
                    st.success(f"Document {chosen} sent again ({code(path)}, task {task_id})")
                except (LookupError, ValueError, OSError) as exc:
                    st.error(md(exc))

    left, right = st.columns(2)
    with left:
        st.subheader("Health check")
        with guarded("The health check"):
            if st.button("Run a health check now", disabled=blocked, key="health_go"):
                with st.spinner("Waiting for a worker to run the check…"):
                    outcome = dd.run_health_check(app)
                if outcome.error:
                    st.error(f"Health check (task {outcome.task_id}): {md(outcome.error)}")
                else:
                    result = outcome.result
                    show_health(
                        result.get("status", "unknown"), result.get("reasons", []), pending=result.get("pending", [])
                    )
                    st.caption(f"Stored as a sample; task {outcome.task_id}")
    with right:
        st.subheader("Task report")
        with guarded("The report"):
            hours = st.number_input("Hours covered", min_value=1, max_value=24 * 90, value=24, key="report_hours")
            if st.button("Generate a report now", disabled=blocked, key="report_go"):
                with st.spinner("Waiting for a worker to write the report…"):
                    outcome = dd.generate_report(app, float(hours))
                if outcome.error:
                    st.error(f"Report (task {outcome.task_id}): {md(outcome.error)}")
                else:
                    totals = outcome.result.get("totals") or {}
                    st.success(
                        f"Report written: {totals.get('count', 0)} tasks, success rate "
                        f"{fmt_rate(totals.get('success_rate'))}"
                    )
                    for kind, path in (outcome.result.get("files") or {}).items():
                        st.caption(f"{kind}: {code(path)}")
                    markdown = dd.report_markdown(outcome.result)
                    if markdown:
                        with st.expander("Report", expanded=True):
                            st.markdown(markdown)


RENDER = {
    "Overview": section_overview,
    "Live tasks": section_live,
    "System health": section_health,
    "Task history": section_history,
    "Performance": section_performance,
    "Documents": section_documents,
    "Actions": section_actions,
}


def main() -> None:
    st.set_page_config(page_title="MIDAS monitoring", page_icon=":material/monitoring:", layout="wide")
    st.set_option("client.showErrorDetails", "none")
    st.set_option("client.toolbarMode", "viewer")
    settings = load_settings()
    require_password(settings)
    with st.sidebar:
        st.title("MIDAS")
        section = st.radio("Section", SECTIONS, key="section", bind="query-params")
        st.caption(f"Redis {settings.redis_host}:{settings.redis_port}")
        st.caption("Database: " + ("PostgreSQL" if settings.uses_postgres else "SQLite"))
        st.markdown(f"[Flower]({dd.flower_url(settings)})")
    with guarded("The database"):
        try:
            create_schema(settings.database_url_resolved)
        except Exception as exc:
            st.error(
                f"The database is not reachable: {md(dd.plain_error(exc))}. "
                "Task history, documents and health history cannot be shown until it is back."
            )
    app = None
    with guarded("The Celery connection"):
        app = celery_app(settings)
    RENDER[section](settings, app)


main()
