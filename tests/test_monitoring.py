"""Monitoring: health, queue check, report and cleanup against real workers, the private Redis and the database."""

from __future__ import annotations

import csv
import json
import os
import time
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text

from background_tasks.ops import monitoring
from background_tasks.ops.monitoring import WATCHER_HEARTBEAT_KEY, HealthSample, percentile
from background_tasks.ops.task_history import Recorder, TaskRecord, _Event, epoch, recorder, utc
from background_tasks.settings import QUEUES, Settings, get_settings, load_settings
from background_tasks.storage import health_samples
from background_tasks.storage.db import get_engine, session_scope
from background_tasks.storage.schema import create_schema
from tests import db_fixtures
from tests.support import WorkerProcess, free_port, wait_until

HEALTH = "background_tasks.monitoring_tasks.system_health_check"
QUEUE_CHECK = "background_tasks.monitoring_tasks.check_task_queue"
REPORT = "background_tasks.monitoring_tasks.generate_task_report"
CLEANUP = "background_tasks.monitoring_tasks.cleanup_old_tasks"
SLEEP = "background_tasks.system_tasks.sleep"
FAIL = "background_tasks.system_tasks.fail"
PING = "background_tasks.system_tasks.ping"

database_url = db_fixtures.database_url  # the SQLite + PostgreSQL fixture


def settings_with(**overrides: str) -> Settings:
    return load_settings({**os.environ, **overrides}, env_file=Path(os.devnull))


@contextmanager
def app_for(settings: Settings):
    """A Celery app for other settings (another Redis database); the project app stays current."""
    import celery_config

    other = celery_config.create_app(settings)
    try:
        yield other
    finally:
        other.close()
        celery_config.app.set_current()


def final_row(task_id: str, timeout: float = 30) -> TaskRecord:
    url = get_settings().database_url_resolved

    def fetch():
        recorder.flush(5)
        with session_scope(url) as session:
            row = session.scalar(select(TaskRecord).where(TaskRecord.task_id == task_id))
        return row if row is not None and row.state in ("success", "failure", "revoked") else None

    return wait_until(fetch, timeout, interval=0.2, what=f"final history row of {task_id}")


def expected_status(reasons: list[str]) -> str:
    levels = {r.split(":", 1)[0] for r in reasons}
    return "critical" if "critical" in levels else "warning" if "warning" in levels else "ok"


# --------------------------------------------------------------------------
# Health
# --------------------------------------------------------------------------


def test_health_check_through_a_worker_is_measured_and_stored(app, session_worker) -> None:
    result = app.send_task(HEALTH).get(timeout=60)
    assert result["status"] == expected_status(result["reasons"])
    assert 0 <= result["system"]["cpu_percent"] <= 100 and 0 < result["system"]["memory_percent"] < 100
    assert 0 < result["disks"]["data_dir"]["percent"] < 100 and result["disks"]["data_dir"]["exists"]
    redis_info = result["redis"]
    assert redis_info["ok"] and redis_info["latency_ms"] > 0 and redis_info["version"].count(".") == 2
    assert redis_info["used_memory"] > 0 and redis_info["connected_clients"] >= 1
    assert redis_info["persistence"]["aof"] is True  # the private Redis runs with --appendonly yes
    worker = result["celery"]["workers"][session_worker.hostname]
    assert worker["pool"] == "prefork" and worker["concurrency"] == 2
    assert worker["active"] >= 1  # the health check itself
    assert set(result["queues"]) == set(QUEUES)
    assert all(isinstance(q["waiting"], int) and isinstance(q["unacked"], int) for q in result["queues"].values())
    assert result["queues"]["monitoring"]["unacked"] >= 1  # acks late: the running check's own message
    assert result["stored"] is True
    with session_scope(get_settings().database_url_resolved) as session:
        sample = session.scalars(select(HealthSample).order_by(HealthSample.id.desc()).limit(1)).one()
    assert epoch(sample.taken_at) == pytest.approx(result["checked_at"], abs=0.001)
    assert sample.status == result["status"] and sample.reasons == result["reasons"]
    assert sample.redis_ok and sample.workers == result["celery"]["responding"]
    assert sample.details["redis"]["version"] == redis_info["version"]


def test_health_thresholds_watcher_heartbeat_and_missing_workers(redis_server, tmp_path) -> None:
    """Redis database 3 has no workers; thresholds set so memory warns and the data disk is critical."""
    settings = settings_with(
        REDIS_DB="3",
        MIDAS_MEMORY_WARN_PERCENT="0.001",
        MIDAS_MEMORY_CRIT_PERCENT="100",
        MIDAS_DISK_WARN_PERCENT="0.001",
        MIDAS_DISK_CRIT_PERCENT="0.002",
        MIDAS_CPU_WARN_PERCENT="1000",
        MIDAS_CPU_CRIT_PERCENT="1001",
        MIDAS_WATCHER_HEARTBEAT_MAX_AGE="60",
        MIDAS_WATCH_DIRS=str(tmp_path / "missing-folder"),
    )
    client = redis_server.client()
    client.select(3)
    try:
        client.set(WATCHER_HEARTBEAT_KEY, json.dumps({"time": time.time() - 600, "seen": 5, "enqueued": 4}))
        with app_for(settings) as other:
            report = monitoring.system_health(settings, other, store=False, cpu_interval=0.1)
        reasons = list(report.reasons)
        assert report.status == "critical"
        assert any(r.startswith("critical: no Celery worker answered") for r in reasons)
        assert any(r.startswith("warning: memory at") for r in reasons)
        assert any(r.startswith("critical: disk of data_dir") for r in reasons)
        assert any(r.startswith("warning: file watcher silent for 6") for r in reasons)
        assert any("missing-folder does not exist" in r for r in reasons)
        assert not any("CPU" in r for r in reasons)
        assert reasons == sorted(reasons, key=lambda r: not r.startswith("critical"))  # worst first
        assert report.watcher["heartbeat"]["enqueued"] == 4 and 599 < report.watcher["age_s"] < 700

        # a fresh heartbeat (as a hash, the other accepted form) and relaxed thresholds: no such reasons
        client.delete(WATCHER_HEARTBEAT_KEY)
        watched = tmp_path / "watched-by-the-running-watcher"
        watched.mkdir()
        client.hset(
            WATCHER_HEARTBEAT_KEY,
            mapping={"time": str(time.time()), "pending": "0", "watch_dirs": json.dumps([str(watched)])},
        )
        relaxed = settings_with(REDIS_DB="3", MIDAS_DISK_CRIT_PERCENT="100", MIDAS_DISK_WARN_PERCENT="100")
        with app_for(relaxed) as other:
            report = monitoring.system_health(relaxed, other, store=False, cpu_interval=0.1)
        assert report.watcher["present"] and report.watcher["age_s"] < 5
        assert not any("watcher" in r or "disk" in r for r in report.reasons)
        # the folders the watcher reports are measured too
        assert report.disks[f"watch:{watched}"]["exists"] and 0 < report.disks[f"watch:{watched}"]["percent"] < 100

        # a watcher that stopped cleanly says so in its last heartbeat
        client.delete(WATCHER_HEARTBEAT_KEY)
        client.set(WATCHER_HEARTBEAT_KEY, json.dumps({"time": time.time() - 3, "state": "stopped"}))
        with app_for(relaxed) as other:
            report = monitoring.system_health(relaxed, other, store=False, cpu_interval=0.1)
        assert any(r.startswith("warning: file watcher stopped 3 s ago") for r in report.reasons)
    finally:
        client.delete(WATCHER_HEARTBEAT_KEY)


def test_a_missing_watcher_heartbeat_warns_only_when_redis_was_asked(tmp_path) -> None:
    settings = settings_with(MIDAS_DATA_DIR=str(tmp_path / "data"), MIDAS_LEDGER="false")
    redis_ok = {"ok": True}
    warning = "warning: no file watcher heartbeat (is the watcher running?)"
    assert monitoring.evaluate(settings, {}, {}, redis_ok, None, {}, {"present": False}) == ("warning", (warning,))
    assert monitoring.evaluate(settings, {}, {}, redis_ok, None, {}, {}) == ("ok", ())  # not measured
    beat = {"present": True, "age_s": 1.0, "heartbeat": {"time": time.time()}}
    assert monitoring.evaluate(settings, {}, {}, redis_ok, None, {}, beat) == ("ok", ())


def test_health_with_redis_down_is_critical_and_does_not_crash(app, redis_server, session_worker) -> None:
    settings = get_settings()
    redis_server.stop()
    try:
        started = time.monotonic()
        report = monitoring.system_health(settings, app, store=True, cpu_interval=0.1)
        elapsed = time.monotonic() - started
        queues = monitoring.check_queues(settings, app)
    finally:
        redis_server.start()
    assert elapsed < 10
    assert report.status == "critical"
    assert report.reasons[0].startswith(f"critical: Redis unreachable at 127.0.0.1:{redis_server.port}")
    assert report.redis["ok"] is False and "Connection" in report.redis["error"]
    assert report.queues == {} and report.celery["responding"] == 0
    assert report.stored  # the database is independent of Redis
    assert queues.ok is False and queues.error.startswith("Redis unreachable")
    # the shared worker finds its way back to the restarted Redis
    wait_until(
        lambda: app.control.ping(destination=[session_worker.hostname], timeout=1),
        60,
        what="session worker reconnecting to Redis",
    )


# --------------------------------------------------------------------------
# Queue check
# --------------------------------------------------------------------------


def test_queue_check_sees_waiting_unacked_scheduled_and_stuck(redis_server, session_dir) -> None:
    """Redis database 1: one worker (default + monitoring), nothing consuming ``analysis``."""
    settings = settings_with(REDIS_DB="1")
    client = redis_server.client()
    client.select(1)
    with app_for(settings) as other:
        worker = WorkerProcess(
            env={**os.environ, "REDIS_DB": "1"},
            log_dir=session_dir / "logs",
            queues=("default", "monitoring"),
            concurrency=2,
            name=f"queues-{uuid.uuid4().hex[:6]}",
        )
        try:
            worker.wait_ready(other)
            stuck = other.send_task(SLEEP, args=[60])
            waiting = [other.send_task(PING, args=[f"w{i}"], queue="analysis") for i in range(3)]
            waiting += [other.send_task(PING, args=[f"p{i}"], queue="analysis", priority=5) for i in range(2)]
            later = other.send_task(SLEEP, args=[1], countdown=120)
            wait_until(lambda: final_row_state(stuck.id) == "started", 20, what="sleep task started")
            time.sleep(1.2)
            result = other.send_task(QUEUE_CHECK, kwargs={"stuck_after": 1.0}).get(timeout=30)

            analysis = result["queues"]["analysis"]
            assert analysis["waiting"] == 5 and analysis["by_priority"] == {"0": 3, "3": 2}
            assert analysis["unacked"] == 0 and analysis["oldest_waiting_s"] >= 1.0
            sep = "\x06\x16"
            assert client.llen("analysis") == 3 and client.llen(f"analysis{sep}3") == 2  # kombu's own naming
            assert result["queues"]["default"]["waiting"] == 0
            assert result["queues"]["default"]["unacked"] >= 1  # the sleeping task (acks late)
            assert result["queues"]["monitoring"]["unacked"] >= 1  # the check itself

            tasks = result["workers"][worker.hostname]
            active = {t["id"]: t for t in tasks["active"]}
            assert active[stuck.id]["name"] == SLEEP and active[stuck.id]["running_s"] > 1.0
            assert active[stuck.id]["stuck"] is True
            checker = [t for t in tasks["active"] if t["name"] == QUEUE_CHECK]
            assert checker and checker[0]["stuck"] is False
            assert [t["id"] for t in result["stuck"]] == [stuck.id]
            assert result["stuck"][0]["worker"] == worker.hostname
            scheduled = {t["id"]: t for t in tasks["scheduled"]}
            assert 100 < scheduled[later.id]["due_in_s"] <= 120 and scheduled[later.id]["age_s"] >= 1.0
            assert result["ok"] and result["stuck_after_s"] == 1.0

            # with the default threshold (MIDAS_STUCK_TASK_SECONDS=900) nothing is stuck
            relaxed = monitoring.check_queues(settings, other)
            assert relaxed.stuck == () and relaxed.stuck_after_s == 900

            # health in the same database warns about the queue past MIDAS_QUEUE_WARN_LENGTH
            health = monitoring.system_health(
                settings_with(REDIS_DB="1", MIDAS_QUEUE_WARN_LENGTH="5"), other, store=False, cpu_interval=0.1
            )
            assert "warning: queue analysis has 5 waiting tasks" in health.reasons
            assert health.celery["responding"] == 1

            other.control.revoke(stuck.id, terminate=True)
            other.control.revoke(later.id)
            wait_until(lambda: final_row_state(stuck.id) == "revoked", 20, what="stuck task revoked")
        finally:
            worker.stop()
            client.delete(*monitoring.priority_queue_names("analysis", "\x06\x16", [0, 3, 6, 9]).values())
            client.delete(*[f"{q}{s}" for q in QUEUES for s in ("", "\x06\x163", "\x06\x166", "\x06\x169")])


def final_row_state(task_id: str) -> str | None:
    recorder.flush(5)
    with session_scope(get_settings().database_url_resolved) as session:
        return session.scalar(select(TaskRecord.state).where(TaskRecord.task_id == task_id))


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def test_percentile_interpolates() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10, 0, 20], 100) == 20 and percentile([10, 0, 20], 0) == 0
    assert percentile(list(range(101)), 95) == 95


def test_report_figures_match_the_tasks_that_ran(app, session_worker, tmp_path) -> None:
    settings = get_settings()
    settings.inbox_dir.mkdir(parents=True, exist_ok=True)
    marker = uuid.uuid4().hex
    documents = []
    for name, body in (("a.txt", "alpha words " * 300), ("b.txt", "beta words " * 20), ("c.md", "# Title\n\ngamma")):
        path = settings.inbox_dir / f"{marker}-{name}"
        path.write_text(f"{marker} {name}\n{body}\n", encoding="utf-8")
        os.utime(path, (time.time() - 60, time.time() - 60))  # already stable
        documents.append(path)

    t0 = time.time()
    sleeps = [app.send_task(SLEEP, args=[s]) for s in (0.1, 0.2, 0.3)]
    fails = [app.send_task(FAIL, args=[f"report-A {marker}"]) for _ in range(2)]
    fails.append(app.send_task(FAIL, args=[f"report-B {marker}"], kwargs={"retries": 1, "retry_delay": 0.2}))
    docs = [app.send_task("background_tasks.document_tasks.process_document_file", args=[str(p)]) for p in documents]
    doc_results = [d.get(timeout=60) for d in docs]
    rows = {r.task_id: r for r in (final_row(t.id) for t in [*sleeps, *fails])}
    t1 = time.time()
    hours = (t1 - t0) / 3600
    report = monitoring.task_report(settings, hours=hours, now=t1, write=False)

    sleep_fig = report.tasks[SLEEP]
    sleep_runtimes = [rows[t.id].runtime_s for t in sleeps]
    assert (sleep_fig["count"], sleep_fig["succeeded"], sleep_fig["failed"], sleep_fig["retried"]) == (3, 3, 0, 0)
    assert sleep_fig["success_rate"] == 1.0
    assert sleep_fig["runtime_p50_s"] == round(sorted(sleep_runtimes)[1], 3)
    assert sleep_fig["runtime_max_s"] == round(max(sleep_runtimes), 3) and sleep_fig["runtime_max_s"] >= 0.3
    assert sleep_fig["runtime_p95_s"] == round(percentile(sleep_runtimes, 95), 3)
    assert sleep_fig["wait_p50_s"] == round(percentile([rows[t.id].wait_s for t in sleeps], 50), 3)
    assert sleep_fig["throughput_per_hour"] == pytest.approx(3 / hours, rel=1e-3)

    fail_fig = report.tasks[FAIL]
    assert (fail_fig["count"], fail_fig["succeeded"], fail_fig["failed"]) == (3, 0, 3)
    assert fail_fig["retried"] == 1 and fail_fig["retries"] == 1 and fail_fig["success_rate"] == 0.0
    errors = [(e["error_type"], e["message"], e["count"]) for e in report.top_errors]
    assert errors[:2] == [
        ("DiagnosticFailure", f"report-A {marker}", 2),
        ("DiagnosticFailure", f"report-B {marker}", 1),
    ]

    by_type: dict[str, dict[str, int]] = {}
    for result in doc_results:
        entry = by_type.setdefault(result["file_type"], {"documents": 0, "chunks": 0})
        entry["documents"] += 1
        entry["chunks"] += result["chunks_created"]
    assert all(r["status"] == "success" for r in doc_results), doc_results
    got = {k: {"documents": v["documents"], "chunks": v["chunks"]} for k, v in report.documents["by_file_type"].items()}
    assert got == by_type and report.documents["chunks"] == sum(r["chunks_created"] for r in doc_results)

    # the task writes the same figures as JSON, Markdown and CSV under the data dir's reports/
    written = app.send_task(REPORT, kwargs={"hours": (time.time() - t0 + 1) / 3600}).get(timeout=30)
    files = written["files"]
    assert set(files) == {"json", "markdown", "csv"}
    for path in files.values():
        assert Path(path).parent == settings.reports_dir and Path(path).stat().st_size > 0
    saved = json.loads(Path(files["json"]).read_text())
    assert saved["tasks"][FAIL]["failed"] == 3 and saved["tasks"][SLEEP]["succeeded"] == 3
    with open(files["csv"], newline="") as handle:
        table = {row["task"]: row for row in csv.DictReader(handle)}
    assert table[FAIL]["failed"] == "3" and table[SLEEP]["count"] == "3" and "TOTAL" in table
    markdown = Path(files["markdown"]).read_text()
    assert f"| {SLEEP} | 3 | 3 | 0 |" in markdown and f"report-A {marker}" in markdown
    assert "## Documents" in markdown and "| txt |" in markdown


# --------------------------------------------------------------------------
# Cleanup
# --------------------------------------------------------------------------


def test_cleanup_removes_only_old_rows(app, session_worker) -> None:
    settings = get_settings()
    url = settings.database_url_resolved
    create_schema(url)
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=40), now - timedelta(days=20)
    tag = uuid.uuid4().hex[:8]
    with session_scope(url) as session:
        for i, when in enumerate([old, old, old, recent, now]):
            session.add(TaskRecord(task_id=f"cleanup-{tag}-{i}", name="x", state="success", seq=5, finished_at=when))
        # a task that never finished counts by its last sign of life
        session.add(TaskRecord(task_id=f"cleanup-{tag}-pending", name="x", state="pending", seq=0, sent_at=old))
        for when in (old, old, recent):
            session.add(HealthSample(taken_at=when, status="ok", redis_ok=True, reasons=[tag], details={}))
    result_ids = [f"result-{tag}-{i}" for i in range(3)]
    for task_id in result_ids:
        app.backend.store_result(task_id, {"n": 1}, "SUCCESS")
    backend = get_engine(settings.result_backend_url.removeprefix("db+"))
    with backend.begin() as conn:
        conn.execute(
            text("UPDATE celery_taskmeta SET date_done = :d WHERE task_id IN (:a, :b)"),
            {"d": old.replace(tzinfo=None), "a": result_ids[0], "b": result_ids[1]},
        )

    removed = app.send_task(CLEANUP, kwargs={"days": 30}).get(timeout=30)["removed"]
    assert removed["task_history"] >= 4 and removed["health_samples"] >= 2 and removed["results"] >= 2
    with session_scope(url) as session:
        left = set(session.scalars(select(TaskRecord.task_id).where(TaskRecord.task_id.like(f"cleanup-{tag}-%"))))
        samples = session.scalars(select(HealthSample.taken_at).where(HealthSample.reasons == [tag])).all()
    assert left == {f"cleanup-{tag}-3", f"cleanup-{tag}-4"}
    assert len(samples) == 1
    with backend.connect() as conn:
        kept = {
            r[0]
            for r in conn.execute(
                text("SELECT task_id FROM celery_taskmeta WHERE task_id LIKE :p"), {"p": f"result-{tag}-%"}
            )
        }
    assert kept == {result_ids[2]}


def test_cleanup_compacts_sqlite_only_when_worthwhile(tmp_path) -> None:
    settings = settings_with(MIDAS_DATA_DIR=str(tmp_path / "data"))
    url = settings.database_url_resolved
    create_schema(url)
    old = datetime.now(UTC) - timedelta(days=100)
    with session_scope(url) as session:
        for i in range(1500):
            session.add(
                TaskRecord(
                    task_id=f"bulk-{i}", name="bulk", state="failure", seq=5, finished_at=old, traceback="x" * 2000
                )
            )
        session.add(TaskRecord(task_id="keep", name="bulk", state="success", seq=5, finished_at=datetime.now(UTC)))
    first = monitoring.cleanup(settings, days=30)
    assert first.removed["task_history"] == 1500 and first.removed["results"] == 0 and not first.errors
    (compacted,) = [c for c in first.compacted if c["path"].endswith("midas.sqlite3")]
    assert compacted["bytes_after"] < compacted["bytes_before"] / 3
    second = monitoring.cleanup(settings, days=30)
    assert second.removed["task_history"] == 0 and second.compacted == ()
    with session_scope(url) as session:
        assert session.scalars(select(TaskRecord.task_id)).all() == ["keep"]
    with pytest.raises(ValueError):
        monitoring.cleanup(settings, days=-1)


def test_cleanup_removes_old_analyses_only_of_content_that_is_no_document(tmp_path) -> None:
    from background_tasks.analysis.analyze import AnalysisRow, save_analysis
    from background_tasks.storage.store import DocumentStore

    settings = settings_with(MIDAS_DATA_DIR=str(tmp_path / "data"))
    url = settings.database_url_resolved
    store = DocumentStore(url)
    store.create_schema()
    kept_doc = store.claim("d" * 64, "/in/kept.csv", "csv", task_id="t").document_id
    save_analysis(url, "a" * 64, "data", {"tables": []}, None)  # old, analysed directly: removed
    save_analysis(url, "b" * 64, "data", {"tables": []}, None)  # recent, analysed directly: kept
    save_analysis(url, "c" * 64, "data", {"tables": []}, kept_doc)  # old, linked to a document: kept
    save_analysis(url, "d" * 64, "text", {"words": 1}, None)  # old, its content is a document: kept
    old = datetime.now(UTC) - timedelta(days=100)
    with session_scope(url) as session:
        session.execute(
            text("UPDATE analyses SET updated_at = :old WHERE sha256 != :recent"), {"old": old, "recent": "b" * 64}
        )
    result = monitoring.cleanup(settings, days=30, compact=False)
    assert result.removed["orphan_analyses"] == 1 and not result.errors
    with session_scope(url) as session:
        left = sorted(s[0] for s in session.scalars(select(AnalysisRow.sha256)).all())
    assert left == ["b", "c", "d"]
    assert monitoring.cleanup(settings, days=30, compact=False).removed["orphan_analyses"] == 0


def test_report_cleanup_and_samples_on_each_database(database_url, tmp_path) -> None:
    """The same figures from SQLite and PostgreSQL, with rows written the way workers write them."""
    settings = settings_with(
        MIDAS_DATABASE_URL=database_url, MIDAS_DATA_DIR=str(tmp_path / "data"), REDIS_PORT=str(free_port())
    )
    now = time.time()
    name = "background_tasks.document_tasks.process_document_file"
    rows = [  # (id, state, runtime, wait, finished seconds ago, retries, error)
        ("s1", "success", 1.0, 0.5, 60, 0, None),
        ("s2", "success", 3.0, 1.5, 30, 1, None),
        ("f1", "failure", 2.0, 1.0, 10, 0, "CorruptDocument"),
        ("old", "success", 9.0, 9.0, 40 * 86400, 0, None),
    ]
    Recorder(database_url).write(
        [
            _Event(
                task_id,
                5,
                {
                    "name": name,
                    "state": state,
                    "runtime_s": runtime,
                    "wait_s": wait,
                    "retries": retries,
                    "finished_at": utc(now - ago),
                    "error_type": error,
                    "error_message": "xref table broken" if error else None,
                },
            )
            for task_id, state, runtime, wait, ago, retries, error in rows
        ]
    )
    report = monitoring.task_report(settings, hours=1, now=now)
    figures = report.tasks[name]
    assert (figures["count"], figures["succeeded"], figures["failed"], figures["retried"]) == (3, 2, 1, 1)
    assert figures["success_rate"] == round(2 / 3, 4) and figures["throughput_per_hour"] == 3
    assert (figures["runtime_p50_s"], figures["runtime_p95_s"], figures["runtime_max_s"]) == (2.0, 2.9, 3.0)
    assert (figures["wait_p50_s"], figures["wait_p95_s"]) == (1.0, 1.45)
    assert report.top_errors == (
        {"error_type": "CorruptDocument", "message": "xref table broken", "count": 1, "tasks": [name]},
    )
    assert report.documents == {"documents": 0, "chunks": 0, "by_file_type": {}}
    assert Path(report.files["csv"]).read_text().splitlines()[1].startswith(f"{name},3,2,1,1,0,0.6667,2.0,2.9,3.0,")

    health = monitoring.system_health(settings, store=True, cpu_interval=0.1)
    assert health.status == "critical" and health.stored
    (sample,) = monitoring.recent_health(settings, hours=1)
    assert sample["status"] == "critical" and sample["redis_ok"] is False
    assert sample["reasons"] == list(health.reasons)
    newest = health_samples.latest(database_url, ("status", "reasons"))
    assert newest == {"status": "critical", "reasons": list(health.reasons)}

    result = monitoring.cleanup(settings, days=30, now=now)
    assert result.removed == {
        "task_history": 1,
        "health_samples": 0,
        "ledger": 0,
        "orphan_analyses": 0,
        "results": 0,
        "result_groups": 0,
    }
    assert result.errors == () and result.compacted == ()
    with session_scope(database_url) as session:
        assert sorted(session.scalars(select(TaskRecord.task_id))) == ["f1", "s1", "s2"]
    assert len(monitoring.recent_health(settings, hours=1)) == 1
