"""The Celery app: routing, schedule, safety settings, and real workers honouring them."""

from __future__ import annotations

import sqlite3
import time
from datetime import timedelta

import pytest
from kombu import Connection

import celery_config
from background_tasks.settings import PROJECT_ROOT, QUEUES, load_settings
from background_tasks.storage.store import DocumentStore
from tests.db_fixtures import throwaway_postgres


def test_routing_is_configuration_not_caller_choice(app) -> None:
    router = app.amqp.router
    expected = {
        "background_tasks.document_tasks.process_document_file": "documents",
        "background_tasks.analysis_tasks.analyze_data_file": "analysis",
        "background_tasks.monitoring_tasks.system_health_check": "monitoring",
        "background_tasks.system_tasks.ping": "default",
    }
    for name, queue in expected.items():
        route = router.route({}, name, args=(), kwargs={})
        assert route["queue"].name == queue, name
    assert {q.name for q in app.conf.task_queues} == set(QUEUES)


def test_safety_defaults(app) -> None:
    conf = app.conf
    assert conf.accept_content == ["json"] and conf.task_serializer == "json" and conf.result_serializer == "json"
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_soft_time_limit < conf.task_time_limit < conf.broker_transport_options["visibility_timeout"]
    assert conf.result_expires == timedelta(hours=24)
    assert conf.worker_max_tasks_per_child == 1000
    assert conf.worker_cancel_long_running_tasks_on_connection_loss
    assert conf.worker_send_task_events and conf.task_send_sent_event
    assert conf.midas_max_redeliveries >= 1


def test_beat_schedule_intervals_expiry_and_overrides(tmp_path) -> None:
    schedule = celery_config.beat_schedule(load_settings({}, env_file=tmp_path / "none"))
    intervals = {name: entry["schedule"].total_seconds() for name, entry in schedule.items()}
    assert intervals == {
        "system-health-check": 300,
        "queue-check": 60,
        "task-report": 86400,
        "task-cleanup": 86400,
        "processed-file-cleanup": 86400,
        "ledger-reaper": 10,
    }
    for entry in schedule.values():
        assert 0 < entry["options"]["expires"] < entry["schedule"].total_seconds()
        queue = celery_config.app.amqp.router.route({}, entry["task"], args=(), kwargs={})["queue"].name
        assert queue in {"monitoring", "documents"}
    custom = celery_config.beat_schedule(
        load_settings({"MIDAS_QUEUE_CHECK_INTERVAL": "15"}, env_file=tmp_path / "none")
    )
    assert custom["queue-check"]["schedule"].total_seconds() == 15


def test_windows_gets_a_pool_that_works_there(monkeypatch, tmp_path) -> None:
    import platform

    monkeypatch.setattr(platform, "system", lambda: "Windows")
    assert load_settings({}, env_file=tmp_path / "none").pool == "threads"
    monkeypatch.setattr(platform, "system", lambda: "Linux")
    assert load_settings({}, env_file=tmp_path / "none").pool == "prefork"
    assert load_settings({"MIDAS_WORKER_POOL": "gevent"}, env_file=tmp_path / "none").pool == "gevent"


def test_result_backend_file_is_private_and_in_wal_mode(app) -> None:
    import os
    import sqlite3
    from pathlib import Path

    path = Path(app.conf.result_backend.removeprefix("db+sqlite:///"))
    assert path.exists()
    assert os.stat(path).st_mode & 0o077 == 0
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_result_backend_connections_get_the_store_tuning(app) -> None:
    """Celery's own engine for the results file: busy timeout, no fsync per commit, writers queue."""
    backend = app.backend
    session = backend.ResultSession()
    try:
        connection = session.connection()
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == 30000
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar_one() == 1  # NORMAL
        # the transaction was opened with BEGIN IMMEDIATE: it already holds the write lock
        path = app.conf.result_backend.removeprefix("db+sqlite:///")
        with sqlite3.connect(path, timeout=0) as other, pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    finally:
        session.close()


#: One real task per queue, with arguments that make it cheap, and a check of its result.
QUEUE_PROBES = {
    "default": ("background_tasks.system_tasks.ping", ["hello"], lambda r: r["message"] == "hello"),
    "documents": (
        "background_tasks.document_tasks.extract_document_metadata",
        [str(PROJECT_ROOT / "samples" / "notes.txt")],
        lambda r: r["status"] == "success" and r["file_type"] == "txt",
    ),
    "analysis": (
        "background_tasks.analysis_tasks.analyze_data_file",
        [str(PROJECT_ROOT / "samples" / "sales.csv")],
        lambda r: r["status"] == "success" and r["tables"][0]["row_count"] == 4,
    ),
    "monitoring": (
        "background_tasks.monitoring_tasks.check_task_queue",
        [],
        lambda r: set(r["queues"]) == set(QUEUES),
    ),
}


@pytest.mark.parametrize("queue", sorted(QUEUE_PROBES))
def test_each_task_runs_on_a_worker_that_consumes_only_its_queue(isolated_stack, queue) -> None:
    stack = isolated_stack()
    worker = stack.start_worker(queues=[queue], concurrency=1)
    name, args, check = QUEUE_PROBES[queue]
    assert stack.app.amqp.router.route({}, name, args=(), kwargs={})["queue"].name == queue
    result = stack.send(name, *args)
    assert check(result.get(timeout=60))
    # the result names the worker that ran it (the log may not: routine monitoring lines are DEBUG)
    assert result.worker == worker.hostname, (result.worker, worker.hostname)
    inspected = stack.app.control.inspect(destination=[worker.hostname], timeout=2).active_queues()
    assert [q["name"] for q in inspected[worker.hostname]] == [queue]


def test_every_registered_task_is_routed_by_its_module(app) -> None:
    import importlib

    for module in celery_config.available_task_modules():
        importlib.import_module(module)
    own = [name for name in app.tasks if name.startswith("background_tasks.")]
    assert len(own) >= 5
    for name in own:
        queue = app.amqp.router.route({}, name, args=(), kwargs={})["queue"].name
        module = name.split(".")[1]
        expected = {"document_tasks": "documents", "analysis_tasks": "analysis", "monitoring_tasks": "monitoring"}
        assert queue == expected.get(module, "default"), name


def test_ping_round_trip_records_the_result(app, session_worker) -> None:
    result = app.send_task("background_tasks.system_tasks.ping", args=["round-trip"])
    value = result.get(timeout=30)
    assert value["message"] == "round-trip"
    assert result.state == "SUCCESS"
    # the result is persisted in the database backend, readable by a fresh app
    fresh = celery_config.create_app(app.midas_settings)
    assert fresh.AsyncResult(result.id).get(timeout=5)["message"] == "round-trip"


def test_pickle_messages_are_refused(app, session_worker, redis_server) -> None:
    with Connection(app.conf.broker_url) as conn:
        producer = conn.Producer(serializer="pickle")
        producer.publish(
            {"task": "background_tasks.system_tasks.ping", "id": "pickle-test", "args": ["evil"], "kwargs": {}},
            exchange="midas",
            routing_key="default",
            serializer="pickle",
            headers={"task": "background_tasks.system_tasks.ping", "id": "pickle-test", "lang": "py"},
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "untrusted content" not in session_worker.log_text():
        time.sleep(0.2)
    assert "Refusing to deserialize untrusted content of type pickle" in session_worker.log_text()
    assert app.AsyncResult("pickle-test").state == "PENDING"
    # the worker is still alive and serving
    assert app.send_task("background_tasks.system_tasks.ping", args=["after"]).get(timeout=30)["message"] == "after"


@pytest.mark.postgres
def test_results_and_documents_live_in_postgresql_when_configured(isolated_stack, docs_dir) -> None:
    import psycopg

    with throwaway_postgres() as url:
        stack = isolated_stack(MIDAS_DATABASE_URL=url)
        try:
            assert stack.app.conf.result_backend == "db+" + url
            stack.start_worker(queues=["default", "documents"], concurrency=1)
            ping = stack.send("background_tasks.system_tasks.ping", "on postgres")
            assert ping.get(timeout=60)["message"] == "on postgres"
            path = docs_dir / "pg.txt"
            path.write_text("Stored in PostgreSQL, found with its full-text search.")
            doc = stack.send("background_tasks.document_tasks.process_document_file", str(path)).get(timeout=60)
            assert doc["status"] == "success"
            with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as conn:
                status = conn.execute("SELECT status FROM celery_taskmeta WHERE task_id = %s", (ping.id,)).fetchone()
                assert status == ("SUCCESS",)
                count = conn.execute("SELECT count(*) FROM documents WHERE status = 'success'").fetchone()
                assert count == (1,)
            hits = DocumentStore(url).search("postgresql full-text", mode="keyword")
            assert hits and hits[0].path == str(path)
        finally:
            stack.close()
