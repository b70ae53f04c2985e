"""The Streamlit dashboard, section by section, with ``streamlit.testing`` against real databases.

Each test builds its own settings (a throwaway data dir; Redis on a closed port
unless the test runs a private one) and hands them to the page through
``st.session_state["midas_settings"]``. Task history rows are written through
the ``TaskRecord`` model, documents through the real pipeline and store,
health samples through ``monitoring.store_health_sample``; expected figures
are computed from the seed, not copied from the page.
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import event
from streamlit.testing.v1 import AppTest

from background_tasks.ops import dashboard_data as dd
from background_tasks.ops import monitoring
from background_tasks.ops.dashboard import history as dashboard_history
from background_tasks.ops.dashboard.common import AMBER, GREEN, GREY, RED
from background_tasks.ops.dashboard.view import md
from background_tasks.ops.task_history import TaskRecord, utc
from background_tasks.processing import pipeline
from background_tasks.processing.chunking import Chunk
from background_tasks.settings import PROJECT_ROOT, Settings, load_settings
from background_tasks.storage.db import get_engine, session_scope
from background_tasks.storage.schema import create_schema
from background_tasks.storage.store import DocumentStore
from tests.db_fixtures import throwaway_postgres
from tests.support import free_port, wait_until

PAGE = str(PROJECT_ROOT / "Streamlit_Task_Monitoring.py")
DOC_TASK = "background_tasks.document_tasks.process_document_file"
PING = "background_tasks.system_tasks.ping"
SLEEP = "background_tasks.system_tasks.sleep"
HEALTH = "background_tasks.monitoring_tasks.system_health_check"
SECTIONS = ("Overview", "Live tasks", "System health", "Task history", "Performance", "Documents", "Actions")


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def make_settings(root: Path, **overrides: str) -> Settings:
    """Settings for one test: data, logs and watched folder under ``root``; Redis on a closed port by default."""
    (root / "watch").mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "MIDAS_DATA_DIR": str(root / "data"),
        "MIDAS_LOG_DIR": str(root / "logs"),
        "MIDAS_WATCH_DIRS": str(root / "watch"),
        "REDIS_PORT": str(free_port()),  # nothing listens there
        **overrides,
    }
    if "MIDAS_DASHBOARD_PASSWORD" not in overrides:
        env.pop("MIDAS_DASHBOARD_PASSWORD", None)
    return load_settings(env, env_file=Path(os.devnull))


def page(settings: Settings, section: str = "Overview", timeout: float = 30) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=timeout)
    at.session_state["midas_settings"] = settings
    at.query_params["section"] = section
    return at.run()


def visible_text(at: AppTest, code_blocks: bool = True) -> str:
    """Everything a person could read on the page."""
    parts: list[str] = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "info", "warning", "error", "success"):
        parts += [str(e.value) for e in getattr(at, kind)]
    if code_blocks:
        parts += [str(e.value) for e in at.code]
    parts += [str(e.value) for e in at.text]
    parts += [f"{m.label}: {m.value}" for m in at.metric]
    parts += [e.value.to_string() for e in at.dataframe]
    parts += [e.value for e in at.html]
    parts += [str(e.value) for e in at.json]
    return "\n".join(parts)


def assert_no_traceback(at: AppTest) -> None:
    """The page itself never fails with a traceback.

    Code blocks are left out: they show what MIDAS recorded on purpose (log tails, a failed
    task's stored traceback), and the session's shared logs hold the tracebacks of tasks that
    other tests fail deliberately.
    """
    assert not at.exception, [e.value for e in at.exception]
    text = visible_text(at, code_blocks=False)
    assert "Traceback (most recent call last)" not in text
    assert not re.search(r'File ".*", line \d+', text)


def chart_specs(at: AppTest) -> list[dict[str, Any]]:
    """The Vega-Lite specs of the page's charts, in page order."""
    return [json.loads(chart.proto.spec) for chart in at.get("vega_lite_chart")]


def colour_of(spec: dict[str, Any]) -> dict[str, str]:
    """Series name -> colour, from a chart's colour scale."""
    scale = spec["encoding"]["color"]["scale"]
    return dict(zip(scale["domain"], scale["range"], strict=True))


def time_axis_of(spec: dict[str, Any]) -> tuple[str, str]:
    """(scale type, the strftime format its labels are written with) of a chart's time axis."""
    x = spec["encoding"]["x"]
    written = re.fullmatch(r"utcFormat\(datum\.value, '([^']+)'\)", x["axis"]["labelExpr"])
    return x["scale"]["type"], written.group(1) if written else x["axis"]["labelExpr"]


def status_cell_colours(table: Any, column: str = "status") -> dict[str, str]:
    """Word -> the text colour its cells in ``column`` are styled with (a table drawn from a Styler)."""
    frame = table.value
    found: dict[str, str] = {}
    for selectors, colour in re.findall(r"([^{}]+)\{ *color: (#[0-9a-f]{6})", table.proto.arrow_data.styler.styles):
        for row, col in re.findall(r"_row(\d+)_col(\d+)", selectors):
            if frame.columns[int(col)] == column:
                word = frame.iloc[int(row)][column]
                assert found.setdefault(word, colour) == colour, f"{word} in two colours"
    return found


def metric(at: AppTest, label: str) -> str:
    found = [m.value for m in at.metric if m.label == label]
    assert found, f"no metric {label!r} among {[m.label for m in at.metric]}"
    return found[0]


# --------------------------------------------------------------------------
# Seed
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Seed:
    rows: list[dict[str, Any]]
    now: float

    def finished_within(self, seconds: float) -> list[dict[str, Any]]:
        lo = self.now - seconds
        return [r for r in self.rows if r["finished_at"] is not None and lo <= r["finished_at"].timestamp()]

    def rate(self, seconds: float) -> float:
        done = self.finished_within(seconds)
        ok = sum(r["state"] == "success" for r in done)
        bad = sum(r["state"] == "failure" for r in done)
        return ok / (ok + bad)

    def sent_within(self, seconds: float) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["sent_at"].timestamp() >= self.now - seconds]


def newest_first(row: dict[str, Any]) -> tuple[Any, str]:
    """The history's order (sent time, then task id, both descending)."""
    return row["sent_at"], row["task_id"]


def task_row(
    name: str,
    queue: str,
    state: str,
    sent_ago: float,
    now: float,
    wait: float = 0.05,
    run: float | None = 0.2,
    **extra: Any,
) -> dict[str, Any]:
    sent = now - sent_ago
    started = sent + wait if state != "pending" else None
    finished = started + run if state in ("success", "failure", "revoked") and started and run is not None else None
    return {
        "task_id": str(uuid.uuid4()),
        "name": name,
        "queue": queue,
        "worker": f"worker-{queue}@testhost",
        "state": state,
        "seq": 5,
        "retries": 0,
        "args_summary": extra.pop("args_summary", "'x'"),
        "sent_at": utc(sent),
        "received_at": utc(sent + wait / 2),
        "started_at": utc(started) if started else None,
        "finished_at": utc(finished) if finished else None,
        "wait_s": wait if started else None,
        "runtime_s": run if finished else None,
        **extra,
    }


def build_seed(now: float) -> Seed:
    rows = []
    # last hour: documents, six succeeded and two failed with a traceback, one still running
    for i in range(6):
        rows.append(
            task_row(DOC_TASK, "documents", "success", 600 + 300 * i, now, wait=0.01 * (i + 1), run=0.1 * (i + 1))
        )
    for i in range(2):
        rows.append(
            task_row(
                DOC_TASK,
                "documents",
                "failure",
                900 + 120 * i,
                now,
                wait=0.3,
                run=1.5 + i,
                args_summary=f"'/inbox/report-{i}.pdf'",
                error_type="CorruptDocument (corrupt)",
                error_message=f"report-{i}.pdf: page tree broken",
                traceback=(
                    'Traceback (most recent call last):\n  File "pipeline.py", line 1, in process_file\n'
                    f"CorruptDocument: report-{i}.pdf: page tree broken"
                ),
            )
        )
    rows.append(task_row(DOC_TASK, "documents", "started", 10, now, run=None))
    # 2-20 hours ago: pings, one failed
    for i in range(10):
        rows.append(task_row(PING, "default", "success", 7200 + 6480 * i, now, wait=0.02, run=0.01 * (i + 1)))
    rows.append(
        task_row(PING, "default", "failure", 5 * 3600, now, error_type="ConnectionError", error_message="no route")
    )
    # 1.5 to 22 hours ago: many sleeps, for pagination
    for i in range(120):
        rows.append(task_row(SLEEP, "default", "success", 5400 + 615 * i, now, wait=0.1, run=1.0 + (i % 7) * 0.1))
    # three days ago: outside every 24 h figure
    for i in range(5):
        rows.append(task_row(HEALTH, "monitoring", "success", 3 * 86400 + 60 * i, now))
    return Seed(rows, now)


def seed_history(settings: Settings, seed: Seed) -> None:
    url = settings.database_url_resolved
    create_schema(url)
    with session_scope(url) as session:
        session.add_all(TaskRecord(**row) for row in seed.rows)


AURORA = "The aurora borealis lit the northern sky over Tromsø while the <script>alert(1)</script> crew watched."


def seed_documents(settings: Settings) -> dict[str, Path]:
    """Real files through the real pipeline: two succeed, a broken PDF fails, an unknown type is rejected."""
    watch = settings.watch_dirs[0]
    files = {
        "aurora.txt": (AURORA + "\n\n") * 3,
        "minutes.html": "<html><body><h1>Minutes</h1><p>The committee approved the budget.</p></body></html>",
        "broken.pdf": "%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 9 0 R >> endobj\ntrailer << /Root 1 0 R >>\n",
        "mystery.bin": bytes(range(256)) * 4,
    }
    paths = {}
    store = DocumentStore(settings.database_url_resolved)
    store.create_schema()
    for name, content in files.items():
        path = watch / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        origin = (
            {"source": "mail", "account": "shop", "subject": "Northern <b>lights</b>"} if name == "aurora.txt" else None
        )
        result = pipeline.process_file(str(path), settings, store, origin=origin)
        assert result.status in ("success", "failed", "rejected"), result
        paths[name] = path
    return paths


def seed_health(settings: Settings, now: float, cpus: list[float]) -> None:
    url = settings.database_url_resolved
    create_schema(url)
    for i, cpu in enumerate(cpus):
        status = monitoring.WARNING if cpu >= settings.cpu_warn_percent else monitoring.OK
        report = monitoring.HealthReport(
            checked_at=now - 600 * (len(cpus) - i),
            status=status,
            reasons=(f"warning: CPU at {cpu}%",) if status != monitoring.OK else (),
            system={"cpu_percent": cpu, "memory_percent": 40.0 + i, "swap_percent": 0.0, "load_1": 0.5},
            disks={"data_dir": {"path": str(settings.data_dir), "percent": 50.0}},
            redis={"ok": True, "latency_ms": 0.3, "used_memory": (1 + i) * 1024 * 1024},
            celery={"ok": True, "responding": 1, "active_tasks": i},
            queues={"default": {"waiting": i}},
            watcher={},
            duration_s=0.5,
        )
        monitoring.store_health_sample(url, report)


@pytest.fixture
def seeded(tmp_path: Path) -> tuple[Settings, Seed]:
    settings = make_settings(tmp_path)
    seed = build_seed(time.time())
    seed_history(settings, seed)
    return settings, seed


# --------------------------------------------------------------------------
# Empty database, Redis down
# --------------------------------------------------------------------------


@pytest.mark.parametrize("section", SECTIONS)
def test_every_section_renders_on_an_empty_database_with_redis_down(tmp_path: Path, section: str) -> None:
    settings = make_settings(tmp_path)
    at = page(settings, section)
    assert_no_traceback(at)
    assert [h.value for h in at.header] == [section]
    text = visible_text(at)
    expected = {
        "Overview": "Nothing recorded yet",
        "Live tasks": "Redis is not reachable",
        "System health": "No health samples",
        "Task history": "No task recorded yet",
        "Performance": "No task finished",
        "Documents": "No document processed yet",
        "Actions": "nothing can be sent to the workers",
    }[section]
    assert expected in text
    if section == "Overview":
        assert f"Redis is not reachable at {settings.redis_host}:{settings.redis_port}" in text
        assert metric(at, "Workers online") == "–"
        assert metric(at, "Success rate, last hour") == "–"
        # no stored check yet: the page says so instead of judging a verdict of its own
        assert "No health check stored yet" in text and "Health:" not in text
    if section == "Actions":
        assert all(b.disabled for b in at.button), "actions that need Redis must be disabled while it is down"


# --------------------------------------------------------------------------
# Seeded database
# --------------------------------------------------------------------------


def test_overview_figures_come_from_the_history_and_the_store(seeded, tmp_path: Path) -> None:
    settings, seed = seeded
    seed_documents(settings)
    at = page(settings, "Overview")
    assert_no_traceback(at)
    assert metric(at, "Success rate, last hour") == f"{seed.rate(3600):.1%}"
    assert metric(at, "Success rate, 24 h") == f"{seed.rate(86400):.1%}"
    assert metric(at, "Documents processed") == "2"
    # Redis is down: the running count comes from the history (one row 'started')
    running = sum(r["state"] == "started" for r in seed.rows)
    assert metric(at, "Tasks running") == str(running)
    assert "Redis is not reachable" in visible_text(at)
    # links: Flower and the logs folder
    assert [b.value for b in at.link_button] == ["Open Flower (Celery workers and tasks)"]
    assert at.link_button[0].proto.url == f"http://localhost:{settings.flower_port}/flower/"
    assert str(settings.log_dir) in visible_text(at)


def test_overview_shows_the_intake_ledger_and_its_warnings(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from background_tasks.statuses import LedgerState
    from background_tasks.storage import ledger
    from background_tasks.storage.ledger import Submission

    settings = make_settings(tmp_path, MIDAS_LEDGER_WARN_AGE="600")
    url = settings.database_url_resolved
    now = datetime.now(UTC)
    name = "background_tasks.document_tasks.process_document_file"
    ledger.record_sent(url, [Submission(f"q{i}", name, ["/x"]) for i in range(3)], now - timedelta(hours=1), 60)
    ledger.record_sent(url, [Submission("d1", name, ["/y"])], now, 60)
    ledger.finish(url, "d1", LedgerState.DONE, now)
    at = page(settings, "Overview")
    assert_no_traceback(at)
    assert "Intake ledger" in [s.value for s in at.subheader]
    assert (metric(at, "Queued"), metric(at, "Done"), metric(at, "Failed")) == ("3", "1", "0")
    warnings = [w.value for w in at.warning]
    assert any("3 submitted tasks wait in the ledger, the oldest for 36" in w for w in warnings)  # ~3600 s
    assert any("overdue for the reaper" in w for w in warnings)


def test_overview_shows_each_source_as_sources_status_does(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from background_tasks.sources.status import all_statuses
    from background_tasks.storage import mail_messages, s3_objects

    secret = tmp_path / "imap-secret"
    secret.write_text("not-shown-anywhere\n")
    config = tmp_path / "mail.toml"
    config.write_text(
        '[[account]]\nname = "shop"\nhost = "127.0.0.1"\nport = 1143\ntls = "plain"\nuser = "alice"\n'
        f'password_file = "{secret}"\n'
        '[[account]]\nname = "quiet"\nhost = "127.0.0.1"\nport = 1144\ntls = "plain"\nuser = "bob"\n'
        f'password_file = "{secret}"\n'
    )
    settings = make_settings(tmp_path, MIDAS_S3_SOURCES="s3://bills/in,s3://empty/none", MIDAS_MAIL_CONFIG=str(config))
    url = settings.database_url_resolved
    listed = datetime(2026, 12, 6, 9, 30, 5, tzinfo=UTC)
    objects = [s3_objects.ListedObject(f"s3://bills/in/{i}.txt", f"e{i}", 10, listed) for i in range(5)]
    s3_objects.record_listed(url, "s3://bills/in", objects, listed)
    waiting = s3_objects.pending(url, "s3://bills/in", 3)
    s3_objects.mark_submitted(url, [(obj, f"task-{obj.id}") for obj in waiting], listed)
    s3_objects.record_run(url, "s3://bills/in", listed, 2.25, 5, 3, 0, None)
    mail_messages.record_run(url, "shop", listed, 0.5, 7, 4, 2, "login refused")

    at = page(settings, "Overview")
    assert_no_traceback(at)
    assert "Sources" in [s.value for s in at.subheader]
    frame = next(df.value for df in at.dataframe if "submitted" in df.value.columns)
    rows = {r["source"]: r for r in frame.to_dict("records")}
    expected = {row.name: row for row in all_statuses(settings)}  # what `sources status` prints
    assert set(rows) == set(expected) and len(rows) == 4
    for name, row in expected.items():
        assert (rows[name]["seen"], rows[name]["submitted"], rows[name]["failed"]) == (
            row.seen,
            row.submitted,
            row.failed,
        )
    bills = rows["s3://bills/in"]
    assert (bills["kind"], bills["seen"], bills["submitted"], bills["failed"]) == ("s3", 5, 3, 0)
    assert bills["last run (UTC)"] == "2026-12-06 09:30:05 UTC" and bills["took"] == "2.250 s"
    assert bills["last success (UTC)"] == "2026-12-06 09:30:05 UTC"  # that listing had no error
    assert rows["s3://empty/none"]["last run (UTC)"] == "never"
    shop = next(r for name, r in rows.items() if name.startswith("shop "))
    assert (shop["kind"], shop["seen"], shop["submitted"], shop["failed"], shop["took"]) == ("mail", 7, 4, 2, "0.500 s")
    assert "login refused" in shop["error"]
    assert shop["last success (UTC)"] == "never"  # its only run failed
    assert any("login refused" in w.value for w in at.warning)
    quiet = next(r for name, r in rows.items() if name.startswith("quiet "))
    assert (quiet["seen"], quiet["last run (UTC)"]) == (0, "never")
    assert "not-shown-anywhere" not in frame.to_string()


def test_overview_says_when_no_source_is_configured(tmp_path: Path) -> None:
    at = page(make_settings(tmp_path), "Overview")
    assert_no_traceback(at)
    assert any("No sources configured" in c.value for c in at.caption)


def test_overview_shows_a_log_file_tail(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    settings.log_dir.mkdir(parents=True)
    lines = [f"2024-01-01 worker line {i}" for i in range(500)]
    (settings.log_dir / "worker-1.log").write_text("\n".join(lines) + "\n", encoding="utf-8")
    at = page(settings, "Overview")
    assert_no_traceback(at)
    assert at.selectbox(key="log_file").value == "worker-1.log"
    tail = [c.value for c in at.code if "worker line" in c.value]
    assert tail and tail[0].splitlines() == lines[-200:]
    with pytest.raises(ValueError):
        dd.log_tail(settings, "../secrets.log")


def test_task_history_filters_search_pages_and_details(seeded) -> None:
    settings, seed = seeded
    at = page(settings, "Task history")
    assert_no_traceback(at)
    in_day = seed.sent_within(86400)
    assert f"of {len(in_day):,}, newest first" in visible_text(at)
    first_page = at.dataframe[0].value
    assert len(first_page) == 50
    newest = sorted(in_day, key=newest_first, reverse=True)[:50]
    assert list(first_page["task_id"]) == [r["task_id"] for r in newest]

    # page 2: the next 50, no overlap
    at.pagination(key="hist_page").set_value(2).run()
    second = at.dataframe[0].value
    assert list(second["task_id"]) == [r["task_id"] for r in sorted(in_day, key=newest_first, reverse=True)[50:100]]

    # state filter goes back to page 1
    at.multiselect(key="hist_states").set_value(["failure"]).run()
    failed = [r for r in in_day if r["state"] == "failure"]
    assert sorted(at.dataframe[0].value["task_id"]) == sorted(r["task_id"] for r in failed)
    assert status_cell_colours(at.dataframe[0], "state") == {"failure": RED}  # failed is red, as on the charts
    assert "hist_page" not in at.session_state or at.session_state["hist_page"] == 1

    # name filter, all time
    at.multiselect(key="hist_states").set_value([]).run()
    at.multiselect(key="hist_names").set_value([HEALTH]).run()
    assert "No task matches." in visible_text(at)  # three days old: outside the default 24 hours
    at.selectbox(key="hist_window").set_value("all").run()
    assert len(at.dataframe[0].value) == sum(r["name"] == HEALTH for r in seed.rows)
    assert set(at.multiselect(key="hist_names").options) == {DOC_TASK, PING, SLEEP, HEALTH}

    # text search finds the error message; the detail shows error, traceback and timings
    at.multiselect(key="hist_names").set_value([]).run()
    at.text_input(key="hist_text").input("page tree").run()
    found = at.dataframe[0].value
    expected = [r for r in seed.rows if "page tree" in (r.get("error_message") or "")]
    assert sorted(found["task_id"]) == sorted(r["task_id"] for r in expected)
    chosen = at.selectbox(key="hist_task").value
    row = next(r for r in expected if r["task_id"] == chosen)
    text = visible_text(at)
    assert row["error_message"] in text and row["args_summary"] in text
    assert any(row["traceback"] == c.value for c in at.code)
    assert metric(at, "Run time") == f"{row['runtime_s']:.3f} s"
    assert metric(at, "Wait") == f"{row['wait_s']:.3f} s"

    # a task id typed in is looked up directly
    at.text_input(key="hist_task_id").input(seed.rows[-1]["task_id"]).run()
    assert f"id `{seed.rows[-1]['task_id']}`" in visible_text(at)
    # search text that SQL would misread is taken literally
    at.text_input(key="hist_task_id").input("").run()
    at.text_input(key="hist_text").input("%_\\'; DROP TABLE task_history; --").run()
    assert_no_traceback(at)
    assert "No task matches." in visible_text(at)


def test_performance_percentiles_failure_rate_and_throughput(seeded) -> None:
    settings, seed = seeded
    at = page(settings, "Performance")
    assert_no_traceback(at)
    day = seed.finished_within(86400)
    assert metric(at, "Finished") == f"{len(day):,}"
    table = at.dataframe[0].value.set_index("task")
    docs = [r for r in day if r["name"] == DOC_TASK]
    runs = pd.Series([r["runtime_s"] for r in docs])
    waits = pd.Series([r["wait_s"] for r in docs])
    assert table.loc[DOC_TASK, "finished"] == len(docs)
    assert table.loc[DOC_TASK, "run p50 (s)"] == pytest.approx(monitoring.percentile(list(runs), 50))
    assert table.loc[DOC_TASK, "run p95 (s)"] == pytest.approx(monitoring.percentile(list(runs), 95))
    assert table.loc[DOC_TASK, "wait p95 (s)"] == pytest.approx(monitoring.percentile(list(waits), 95))
    failed = sum(r["state"] == "failure" for r in docs)
    assert table.loc[DOC_TASK, "failure rate"] == pytest.approx(failed / len(docs))
    assert HEALTH not in table.index  # three days old
    # throughput: every success in the window is in one hourly bucket
    frame, unit = dd.throughput(settings.database_url_resolved, 24)
    assert unit == "hour"
    assert frame["succeeded"].sum() == sum(r["state"] == "success" for r in day)
    minute, unit = dd.throughput(settings.database_url_resolved, 1)
    assert unit == "minute" and minute["failed"].sum() == 2
    # tasks finished per hour: succeeded green, failed red, stacked on a 24-hour UTC axis
    (spec,) = chart_specs(at)
    assert colour_of(spec) == {"succeeded": GREEN, "failed": RED, "other": GREY}
    assert time_axis_of(spec) == ("utc", "%H:%M")


def test_documents_list_search_with_escaped_highlights_and_chunks(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    seed_documents(settings)
    at = page(settings, "Documents")
    assert_no_traceback(at)
    listing = at.dataframe[0].value.set_index("name")
    assert set(listing.index) == {"aurora.txt", "minutes.html", "broken.pdf", "mystery.bin"}
    assert listing.loc["aurora.txt", "status"] == "success" and listing.loc["aurora.txt", "chunks"] >= 1
    assert listing.loc["broken.pdf", "status"] == "failed"
    assert listing.loc["mystery.bin", "status"] == "rejected"
    assert listing.loc["aurora.txt", "type"] == "txt"
    assert metric(at, "Failed") == "1" and metric(at, "Rejected") == "1"

    at.selectbox(key="doc_status").set_value("success").run()
    assert set(at.dataframe[0].value["name"]) == {"aurora.txt", "minutes.html"}

    at.text_input(key="doc_query").input("borealis").run()
    snippets = [h.value for h in at.html]
    assert snippets and all("<mark>borealis</mark>" in s for s in snippets)
    # the document's own markup is shown as text, never run
    assert all("<script>" not in s for s in snippets)
    assert any("&lt;script&gt;" in s for s in snippets)
    assert "aurora.txt" in visible_text(at)
    # where a mail's document came from, as text (the subject's markup shown, never run)
    assert md("mail: account shop, subject Northern <b>lights</b>") in [c.value for c in at.caption]

    doc_id = int(listing.loc["aurora.txt", "id"])
    # a search hit opens its document by click: no id to type
    opens = [b for b in at.button if b.key.startswith(f"open_hit_{doc_id}_")]
    assert opens, [b.key for b in at.button]
    opens[0].click().run()
    assert at.number_input(key="doc_id").value == doc_id
    assert metric(at, "Status") == "success"
    at.number_input(key="doc_id").set_value(doc_id).run()
    assert metric(at, "Status") == "success"
    chunks = dd.document_chunks(settings.database_url_resolved, doc_id)
    assert [t.value for t in at.text][: len(chunks)] == list(chunks["text"])
    assert str(settings.watch_dirs[0] / "aurora.txt") in visible_text(at)

    at.number_input(key="doc_id").set_value(9999).run()
    assert "No document 9999." in visible_text(at)


def test_chunks_are_read_a_page_at_a_time_through_the_store(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    url = settings.database_url_resolved
    store = DocumentStore(url)
    store.create_schema()
    claim = store.claim("ab" * 32, tmp_path / "long.txt", file_type="txt")
    texts = [f"part {i} " for i in range(12)]
    starts = [sum(len(t) for t in texts[:i]) for i in range(len(texts))]
    chunks = [Chunk(i, t, starts[i], starts[i] + len(t), i // 5 + 1) for i, t in enumerate(texts)]
    store.record_success(claim.document_id, {}, chunks, text_chars=starts[-1] + len(texts[-1]))

    page_two = dd.document_chunks(url, claim.document_id, offset=5, limit=5)
    assert list(page_two["chunk"]) == [5, 6, 7, 8, 9]
    assert list(page_two["text"]) == texts[5:10]
    assert list(page_two["page"]) == [2, 2, 2, 2, 2]
    assert list(page_two["start"]) == starts[5:10]
    assert list(dd.document_chunks(url, claim.document_id, offset=10, limit=5)["chunk"]) == [10, 11]
    assert len(store.get_chunks(claim.document_id)) == 12  # no limit: every chunk, as before


def test_the_dashboard_modules_leave_sql_to_the_storage_wing() -> None:
    """Issue 13: the figures call the store; no SQLAlchemy, engine or session in the dashboard's own code."""
    ops = PROJECT_ROOT / "background_tasks" / "ops"
    sources = [ops / "dashboard_data.py", *sorted((ops / "dashboard").glob("*.py"))]
    assert len(sources) > 5
    offending = []
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            offending += [(path.name, n) for n in names if n.split(".")[0] == "sqlalchemy" or n.endswith("storage.db")]
    assert not offending, offending


def test_names_from_outside_are_shown_literally_not_as_markdown(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    name = "*bold* [click](javascript:alert(1)) $x$.txt"
    path = settings.watch_dirs[0] / name
    path.write_text("The quokka smiled for the camera.", encoding="utf-8")
    store = DocumentStore(settings.database_url_resolved)
    store.create_schema()
    assert pipeline.process_file(str(path), settings, store).status == "success"
    at = page(settings, "Documents")
    at.text_input(key="doc_query").input("quokka").run()
    assert_no_traceback(at)
    titles = [m.value for m in at.markdown if "(document " in m.value]
    assert titles == [r"**\*bold\* \[click\](javascript:alert(1)) \$x\$.txt** (document 1, chunk 0)"]


def test_system_health_charts_and_thresholds(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, MIDAS_CPU_WARN_PERCENT="70", MIDAS_CPU_CRIT_PERCENT="90")
    cpus = [10.0, 20.0, 75.0, 30.0, 40.0]
    seed_health(settings, time.time(), cpus)
    at = page(settings, "System health")
    assert_no_traceback(at)
    specs = chart_specs(at)
    assert len(specs) == 5  # CPU, memory, disk, Redis memory, workers/tasks
    for spec in specs[:3]:  # the thresholds: warning amber, critical red, whatever the chart
        colours = colour_of(spec)
        assert (colours["warning"], colours["critical"]) == (AMBER, RED), colours
    assert colour_of(specs[0])["CPU % (judged mean)"] not in (GREEN, AMBER, RED)  # a measure, not a verdict
    for spec in specs:  # 24-hour UTC time axes, like the tables
        assert time_axis_of(spec) == ("utc", "%H:%M")
    thresholds = at.dataframe[0].value.set_index("measure")
    assert thresholds.loc["CPU %", "warning at"] == 70 and thresholds.loc["CPU %", "critical at"] == 90
    recent = at.dataframe[1].value
    assert list(recent["cpu_percent"]) == list(reversed(cpus))
    assert list(recent["status"]) == ["warning" if c >= 70 else "ok" for c in reversed(cpus)]
    assert status_cell_colours(at.dataframe[1]) == {"warning": AMBER, "ok": GREEN}
    series = dd.health_series(settings.database_url_resolved, 24)
    assert list(series["redis_used_mib"]) == [1.0, 2.0, 3.0, 4.0, 5.0]
    # the verdict is the newest stored one (green: 40 % is under 70), the same on the Overview;
    # it is 10 minutes old while a check is due every 5: said, not hidden
    for section in ("System health", "Overview"):
        shown = page(settings, section)
        assert [s.value.split("\n")[0] for s in shown.success if "Health:" in s.value] == [
            "**Health: OK** — every measure is within its thresholds."
        ]
        assert any("This verdict is 10 min old" in w.value for w in shown.warning)
    # the period selector narrows the window: only the newest sample is within the last hour... and the one before
    at.selectbox(key="health_period").set_value("last hour").run()
    assert len(at.dataframe[1].value) == sum(600 * (len(cpus) - i) <= 3600 for i in range(len(cpus)))
    at.selectbox(key="health_period").set_value("last 7 days").run()
    assert {time_axis_of(spec)[1] for spec in chart_specs(at)} == {"%m-%d %H:%M"}  # the date too


# --------------------------------------------------------------------------
# Broken states
# --------------------------------------------------------------------------


@pytest.mark.parametrize("section", SECTIONS)
def test_unreachable_database_is_said_plainly(tmp_path: Path, section: str) -> None:
    url = f"postgresql+psycopg://midas@127.0.0.1:{free_port()}/midas"
    settings = make_settings(tmp_path, MIDAS_DATABASE_URL=url)
    at = page(settings, section)
    assert_no_traceback(at)
    errors = " ".join(e.value for e in at.error)
    assert "The database is not reachable" in errors
    assert "database temporarily unavailable" in errors or "could not be reached" in errors
    assert [h.value for h in at.header] == [section]


def test_password_is_asked_first(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, MIDAS_DASHBOARD_PASSWORD="correct horse")
    at = page(settings)
    assert_no_traceback(at)
    assert not at.header and not at.metric and not at.radio  # nothing but the sign-in form
    at.text_input[0].input("wrong")
    at.button[0].click().run()
    assert [e.value for e in at.error] == ["Wrong password."]
    assert not at.header
    at.text_input[0].input("correct horse")
    at.button[0].click().run()
    assert [h.value for h in at.header] == ["Overview"]
    assert at.session_state["midas_authenticated"] is True


# --------------------------------------------------------------------------
# Queries use indexes
# --------------------------------------------------------------------------


def test_every_dashboard_query_is_served_by_an_index(seeded) -> None:
    settings, _seed = seeded
    seed_documents(settings)
    seed_health(settings, time.time(), [10.0, 20.0])
    url = settings.database_url_resolved
    captured: list[tuple[str, Any]] = []

    def capture(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "sqlite_master" not in statement:
            captured.append((statement, parameters))

    engine = get_engine(url)
    event.listen(engine, "before_cursor_execute", capture)
    try:
        for section in SECTIONS:
            at = page(settings, section)
            assert_no_traceback(at)
        at = page(settings, "Task history")
        at.multiselect(key="hist_states").set_value(["failure"]).run()
        at.multiselect(key="hist_queues").set_value(["documents"]).run()
        at.selectbox(key="hist_window").set_value("last 7 days").run()
        at.text_input(key="hist_text").input("tree").run()
        at = page(settings, "Documents")
        at.text_input(key="doc_query").input("committee").run()
        at.number_input(key="doc_id").set_value(1).run()
        at.selectbox(key="doc_status").set_value("failed").run()
    finally:
        event.remove(engine, "before_cursor_execute", capture)

    assert len(captured) > 20
    scans = []
    with engine.connect() as conn:
        for statement, parameters in captured:
            plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
            for _id, _parent, _unused, detail in plan:
                # "SCAN t" alone reads every row; "SCAN t USING (COVERING) INDEX" walks an index in order
                table = re.fullmatch(r"SCAN (\w+)( AS \w+)?", detail)
                if table and table.group(1) in ("task_history", "documents", "chunks", "health_samples"):
                    scans.append((detail, statement))
    assert not scans, scans


# --------------------------------------------------------------------------
# Live: a private Redis and a real worker
# --------------------------------------------------------------------------


def test_live_tasks_actions_upload_and_retry_with_a_real_worker(isolated_stack, tmp_path: Path) -> None:
    stack = isolated_stack(MIDAS_WATCH_DIRS=str(tmp_path / "watch"), MIDAS_LOG_DIR=str(tmp_path / "logs"))
    (tmp_path / "watch").mkdir()
    settings = stack.settings
    worker = stack.start_worker(queues=("default", "documents", "monitoring"), concurrency=2)

    # Overview: one worker online, queues listed
    at = page(settings, "Overview")
    assert_no_traceback(at)
    assert metric(at, "Workers online") == "1"
    assert set(at.dataframe[0].value["queue"]) == {"default", "documents", "analysis", "monitoring"}

    # Live tasks: a running task shows under its worker
    running = stack.send(SLEEP, 6)
    live = page(settings, "Live tasks")

    def active_shown():
        live.run()
        tables = [d.value for d in live.dataframe if "running_s" in d.value.columns]
        return any(running.id in set(t["id"]) for t in tables)

    wait_until(active_shown, 15, interval=0.3, what="the sleeping task among the active tasks")
    assert_no_traceback(live)
    assert f"Worker {worker.hostname}" in [s.value for s in live.subheader]
    assert live.slider(key="live_interval").min == 2 and live.slider(key="live_interval").max == 30
    live.toggle(key="live_auto").set_value(False).run()
    assert live.slider(key="live_interval").disabled

    # Actions: upload three files (one breaks, one is of no type MIDAS reads), then retry the broken one
    at = page(settings, "Actions", timeout=60)
    assert "No failed document." in visible_text(at)
    assert at.file_uploader(key="uploads").proto.max_upload_size_mb == dd.upload_limit_mb(settings)
    at.file_uploader(key="uploads").set_value(
        [
            ("field notes.txt", AURORA.encode(), "text/plain"),
            ("../../broken.pdf", b"%PDF-1.4\n%%EOF garbage", ""),
            ("mystery.bin", bytes(range(256)) * 4, ""),
        ]
    ).run()
    at.button(key="upload_go").click().run()
    assert_no_traceback(at)
    # one box per upload; sent is not done: "queued" is neutral blue, never the green of a success
    names = ("field notes.txt", "../../broken.pdf", "mystery.bin")
    boxes = [b.value for b in (*at.info, *at.success, *at.warning, *at.error)]
    assert [sum(b.startswith(f"{name}: ") for b in boxes) for name in names] == [1, 1, 1], boxes
    assert any("queued (task" in i.value for i in at.info)
    assert not [s.value for s in at.success if "queued" in s.value]
    inbox = sorted(p.name for p in settings.inbox_dir.iterdir())
    assert inbox == ["broken.pdf", "field notes.txt", "mystery.bin"]  # no folder part survives
    store = DocumentStore(settings.database_url_resolved)

    def all_results_shown():
        at.run()
        texts = {"success": at.success, "warning": at.warning, "error": at.error}
        shown = {kind: [e.value for e in elements if ": " in e.value] for kind, elements in texts.items()}
        return None if any("the result shows here" in i.value for i in at.info) else shown

    # each upload's result appears on the page when it arrives: green, amber (rejected), red (failed)
    shown = wait_until(all_results_shown, 45, interval=0.5, what="the three upload results on the page")
    assert_no_traceback(at)
    docs = {Path(d["path"]).name: d for d in store.list_documents()}
    assert docs["field notes.txt"]["status"] == "success" and docs["broken.pdf"]["status"] == "failed"
    assert docs["mystery.bin"]["status"] == "rejected"
    notes = docs["field notes.txt"]
    (processed,) = [m for m in shown["success"] if m.startswith("field notes.txt: ")]
    assert processed.startswith(f"field notes.txt: processed: document {notes['id']} (txt, {notes['chunk_count']} ")
    (rejected,) = [m for m in shown["warning"] if m.startswith("mystery.bin: ")]
    assert f"rejected — {md(docs['mystery.bin']['error_type'])}: " in rejected
    (failed,) = [m for m in shown["error"] if m.startswith("../../broken.pdf: ")]
    assert f"failed — {md(docs['broken.pdf']['error_type'])}: " in failed

    at.run()
    failed_id = docs["broken.pdf"]["id"]
    assert at.selectbox(key="retry_doc").value == failed_id
    at.button(key="retry_go").click().run()
    assert any(f"Document {failed_id} sent again" in s.value for s in at.success)
    wait_until(lambda: (store.get_document(failed_id) or {}).get("attempts") == 2, 30, what="the retry to run")

    # Health check now: a worker runs it and a sample is stored
    at.button(key="health_go").click().run()
    assert_no_traceback(at)
    shown = [a.value for a in (*at.success, *at.warning, *at.error) if "Health:" in a.value]
    assert shown, visible_text(at)
    latest = dd.latest_health(settings.database_url_resolved)
    assert latest is not None and latest["workers"] == 1
    assert latest["status"].upper() in shown[0]

    # Report now: files written, Markdown shown
    at.button(key="report_go").click().run()
    assert_no_traceback(at)
    assert any(s.value.startswith("Report written:") for s in at.success)
    reports = sorted(settings.reports_dir.glob("task-report-*.md"))
    assert reports and any("# MIDAS task report" in m.value for m in at.markdown)
    assert running.get(timeout=30)["slept"] >= 6


def test_workers_down_but_redis_up_is_said_plainly(isolated_stack, tmp_path: Path) -> None:
    stack = isolated_stack()
    settings = stack.settings
    stack.send(PING)  # waits in the queue: nobody consumes it
    at = page(settings, "Overview")
    assert_no_traceback(at)
    text = visible_text(at)
    assert "No Celery worker answered" in text
    assert metric(at, "Workers online") == "0"
    assert metric(at, "Waiting in queues") == "1"
    assert "no Celery worker answered a ping" in text  # the health reason


# --------------------------------------------------------------------------
# Plain functions
# --------------------------------------------------------------------------


def test_upload_names_are_made_safe_and_never_overwrite(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, MIDAS_MAX_FILE_MB="0.001")
    assert dd.safe_upload_name("../../etc/passwd") == "passwd"
    assert dd.safe_upload_name("C:\\Users\\x\\report.pdf") == "report.pdf"
    assert dd.safe_upload_name("...") == "upload"
    assert dd.safe_upload_name("a\x00b\nc.txt") == "a_b_c.txt"
    first = dd.save_upload(settings, "notes.txt", b"one")
    second = dd.save_upload(settings, "notes.txt", b"two")
    assert (first.name, second.name) == ("notes.txt", "notes-1.txt")
    assert first.read_bytes() == b"one" and second.read_bytes() == b"two"
    from background_tasks.errors import FileTooLarge

    with pytest.raises(FileTooLarge, match="MIDAS_MAX_FILE_MB"):
        dd.save_upload(settings, "big.bin", b"x" * 2000)


def test_history_count_is_capped(tmp_path: Path, monkeypatch) -> None:
    settings = make_settings(tmp_path)
    now = time.time()
    seed = Seed([task_row(PING, "default", "success", 60 + i, now) for i in range(30)], now)
    seed_history(settings, seed)
    monkeypatch.setattr(dashboard_history, "COUNT_CAP", 25)  # read where history_page reads it
    frame, total, capped = dd.history_page(settings.database_url_resolved, dd.HistoryFilter(), page=1, page_size=10)
    assert (len(frame), total, capped) == (10, 25, True)
    frame, total, capped = dd.history_page(
        settings.database_url_resolved, dd.HistoryFilter(text="nothing like this"), page=1
    )
    assert (len(frame), total, capped) == (0, 0, False)
    assert math.isclose(dd.success_rate({"success": 3, "failure": 1, "retry": 5}), 0.75)
    assert dd.success_rate({"retry": 2}) is None


def test_cpu_use_is_measured_since_the_previous_reading() -> None:
    dd.cpu_percent_now()  # starts a window
    deadline = time.monotonic() + 1.3
    spins = 0
    while time.monotonic() < deadline:  # keep one core busy for the whole window
        spins += 1
    busy = dd.cpu_percent_now()
    share = 100.0 / (os.cpu_count() or 1)
    assert spins > 0 and 0.7 * share <= busy <= 100.0
    quick = dd.cpu_percent_now()  # right after a reading: a short sample instead of an empty window
    assert 0.0 <= quick <= 100.0


# --------------------------------------------------------------------------
# The same figures on PostgreSQL
# --------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_db_settings(request, tmp_path: Path) -> Iterator[Settings]:
    """Settings on a fresh SQLite file, or on a throwaway database of the local PostgreSQL server."""
    if request.param == "sqlite":
        yield make_settings(tmp_path)
        return
    with throwaway_postgres("midas_dash") as url:
        yield make_settings(tmp_path, MIDAS_DATABASE_URL=url)


def test_figures_agree_on_sqlite_and_postgresql(any_db_settings: Settings) -> None:
    settings = any_db_settings
    url = settings.database_url_resolved
    seed = build_seed(time.time())
    # a row whose client never wrote its send time: listed after every dated row, on both databases
    undated = {**task_row(PING, "default", "success", 30, seed.now), "sent_at": None}
    everything = Seed([*seed.rows, undated], seed.now)
    seed_history(settings, everything)
    seed_documents(settings)

    frame, total, capped = dd.history_page(url, dd.HistoryFilter(), page=1, page_size=500)
    assert (total, capped) == (len(seed.rows) + 1, False)
    dated = sorted(seed.rows, key=newest_first, reverse=True)
    assert list(frame["task_id"]) == [r["task_id"] for r in dated] + [undated["task_id"]]
    found, total, _ = dd.history_page(url, dd.HistoryFilter(text="PAGE TREE"), page=1)
    assert total == 2 and set(found["state"]) == {"failure"}  # case-insensitive on both

    figures = dd.overview(url, now=seed.now + 1)
    assert figures["success_rate_1h"] == pytest.approx(everything.rate(3600))
    assert figures["success_rate_24h"] == pytest.approx(everything.rate(86400))
    assert figures["documents"]["by_status"] == {"processing": 0, "success": 2, "failed": 1, "rejected": 1}

    per_minute, unit = dd.throughput(url, 1, now=seed.now + 1)
    hour_ok = [r for r in everything.finished_within(3600) if r["state"] == "success"]
    assert unit == "minute" and per_minute["succeeded"].sum() == len(hour_ok)
    assert all(ts.second == 0 for ts in per_minute.index)  # whole minutes

    table = dd.performance_by_name(url, 24, now=seed.now + 1).set_index("task")
    runs = [r["runtime_s"] for r in seed.finished_within(86400) if r["name"] == SLEEP]
    assert table.loc[SLEEP, "run p95 (s)"] == pytest.approx(monitoring.percentile(runs, 95))

    hits = dd.search_documents(url, "borealis")
    assert hits and hits[0]["name"] == "aurora.txt" and "<mark>" in hits[0]["snippet_html"].lower()
    for section in SECTIONS:
        assert_no_traceback(page(settings, section))


def test_a_clicked_row_of_the_document_table_names_its_document() -> None:
    from background_tasks.ops.dashboard.view import selected_id

    ids = [42, 7, 19]
    assert selected_id(ids, [1]) == 7
    assert selected_id(ids, []) is None
    assert selected_id(ids, [3]) is None  # a stale selection after the page changed
