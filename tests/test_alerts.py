"""Failure alerts delivered to a real SMTP server (aiosmtpd) and a real HTTP server, rate-limited per kind."""

from __future__ import annotations

import email
import email.policy
import json
import logging
import os
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from background_tasks.ops import alerts, monitoring
from background_tasks.ops.task_history import TaskRecord
from background_tasks.settings import Settings, load_settings
from background_tasks.storage.db import session_scope
from background_tasks.storage.schema import create_schema
from tests import db_fixtures
from tests.support import WorkerProcess, free_port, wait_until

FAIL = "background_tasks.system_tasks.fail"
HEALTH = "background_tasks.monitoring_tasks.system_health_check"

database_url = db_fixtures.database_url  # the SQLite + PostgreSQL fixture


class MailBox:
    """aiosmtpd handler keeping every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[dict] = []

    async def handle_DATA(self, server, session, envelope):
        parsed = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        self.messages.append(
            {
                "from": envelope.mail_from,
                "to": list(envelope.rcpt_tos),
                "subject": parsed["Subject"],
                "headers": dict(parsed.items()),
                "body": parsed.get_content().replace("\r\n", "\n"),  # SMTP line ends
                "authenticated": bool(getattr(session, "authenticated", False)),
            }
        )
        return "250 OK"


@pytest.fixture
def smtp_server():
    box = MailBox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    box.port = controller.port
    yield box
    controller.stop()


class _Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.received.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
        self.send_response(self.server.status)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def webhook_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    server.received = []
    server.status = 200
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/midas"
    yield server
    server.shutdown()
    server.server_close()


def settings_with(tmp_path: Path, **overrides: str) -> Settings:
    env = {**os.environ, "MIDAS_DATA_DIR": str(tmp_path / "data"), "MIDAS_ALERT_QUIET_MINUTES": "30", **overrides}
    return load_settings(env, env_file=Path(os.devnull))


def channels(tmp_path: Path, smtp_server, webhook_server, **overrides: str) -> Settings:
    return settings_with(
        tmp_path,
        MIDAS_SMTP_HOST="127.0.0.1",
        MIDAS_SMTP_PORT=str(smtp_server.port),
        MIDAS_SMTP_STARTTLS="false",
        MIDAS_SMTP_FROM="midas@example.org",
        MIDAS_SMTP_TO="ops@example.org, dev@example.org",
        MIDAS_ALERT_WEBHOOK_URL=webhook_server.url,
        **overrides,
    )


def test_alert_is_delivered_by_email_and_webhook(tmp_path, smtp_server, webhook_server) -> None:
    settings = channels(tmp_path, smtp_server, webhook_server)
    alert = alerts.Alert("unit", "[MIDAS] something broke", "line one\nline two\n", details={"answer": 42})
    delivery = alerts.send_alert(alert, settings)
    assert delivery.sent and delivery.channels == {"email": "sent", "webhook": "sent"}
    (mail,) = smtp_server.messages
    assert mail["from"] == "midas@example.org" and mail["to"] == ["ops@example.org", "dev@example.org"]
    assert mail["subject"] == "[MIDAS] something broke" and mail["headers"]["X-MIDAS-Alert"] == "unit"
    assert mail["body"] == "line one\nline two\n"
    (hook,) = webhook_server.received
    assert hook["path"] == "/hooks/midas" and hook["headers"]["Content-Type"] == "application/json"
    body = hook["body"]
    assert (body["source"], body["kind"], body["subject"], body["details"]) == (
        "midas",
        "unit",
        "[MIDAS] something broke",
        {"answer": 42},
    )
    assert body["text"] == "line one\nline two\n" and datetime.fromisoformat(body["time"]).tzinfo is not None


def test_one_alert_per_kind_per_quiet_period(tmp_path, smtp_server, webhook_server) -> None:
    settings = channels(tmp_path, smtp_server, webhook_server)
    now = time.time()
    first = alerts.send_alert(alerts.Alert("disk", "disk full", "x"), settings, now=now)
    again = alerts.send_alert(alerts.Alert("disk", "disk still full", "x"), settings, now=now + 60)
    other = alerts.send_alert(alerts.Alert("redis", "redis down", "x"), settings, now=now + 60)
    assert first.sent and not again.sent and again.suppressed and other.sent
    assert [m["subject"] for m in smtp_server.messages] == ["disk full", "redis down"]
    assert len(webhook_server.received) == 2
    later = alerts.send_alert(alerts.Alert("disk", "disk full again", "x"), settings, now=now + 30 * 60 + 1)
    assert later.sent and smtp_server.messages[-1]["subject"] == "disk full again"


def test_quiet_period_is_claimed_once_under_concurrency(tmp_path, database_url) -> None:
    settings = settings_with(tmp_path, MIDAS_DATABASE_URL=database_url)
    outcomes: list[bool] = []
    barrier = threading.Barrier(8)

    def contender() -> None:
        barrier.wait()
        outcomes.append(alerts.claim(settings, "race")[0])

    threads = [threading.Thread(target=contender) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == [False] * 7 + [True]
    # the claim is in the database, not in this process: a later claim sees it
    claimed, previous = alerts.claim(settings, "race", now=time.time() + 60)
    assert not claimed and time.time() - 60 < previous <= time.time()


def test_smtp_login_and_bad_password(tmp_path, webhook_server) -> None:
    box = MailBox()

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (auth_data.login, auth_data.password) == (b"midas", b"s3cret")
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself

    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=authenticator,
        auth_require_tls=False,
    )
    controller.start()
    try:
        good = settings_with(
            tmp_path,
            MIDAS_SMTP_HOST="127.0.0.1",
            MIDAS_SMTP_PORT=str(controller.port),
            MIDAS_SMTP_STARTTLS="false",
            MIDAS_SMTP_USER="midas",
            MIDAS_SMTP_PASSWORD="s3cret",
            MIDAS_SMTP_TO="ops@example.org",
        )
        assert alerts.deliver(good, alerts.Alert("auth", "with login", "x")) == {"email": "sent"}
        assert [(m["subject"], m["authenticated"]) for m in box.messages] == [("with login", True)]
        bad = settings_with(
            tmp_path,
            MIDAS_SMTP_HOST="127.0.0.1",
            MIDAS_SMTP_PORT=str(controller.port),
            MIDAS_SMTP_STARTTLS="false",
            MIDAS_SMTP_USER="midas",
            MIDAS_SMTP_PASSWORD="wrong",
            MIDAS_SMTP_TO="ops@example.org",
        )
        outcome = alerts.deliver(bad, alerts.Alert("auth", "bad login", "x"))
        assert outcome["email"].startswith("error: SMTPAuthenticationError")
        assert len(box.messages) == 1
    finally:
        controller.stop()


def test_starttls_is_never_skipped(tmp_path, smtp_server, caplog) -> None:
    """STARTTLS on (the default) against a server without it: not sent in clear, logged, no exception."""
    settings = settings_with(
        tmp_path,
        MIDAS_SMTP_HOST="127.0.0.1",
        MIDAS_SMTP_PORT=str(smtp_server.port),
        MIDAS_SMTP_TO="ops@example.org",
    )
    assert settings.smtp_starttls
    with caplog.at_level(logging.ERROR, logger="background_tasks.ops.alerts"):
        outcome = alerts.deliver(settings, alerts.Alert("tls", "needs tls", "x"))
    assert outcome["email"].startswith("error: SMTPNotSupportedError")
    assert smtp_server.messages == []
    assert any("could not be sent by email" in r.getMessage() for r in caplog.records)


def test_undeliverable_alerts_are_logged_never_raised(tmp_path, webhook_server, caplog) -> None:
    webhook_server.status = 500
    settings = settings_with(
        tmp_path,
        MIDAS_SMTP_HOST="127.0.0.1",
        MIDAS_SMTP_PORT=str(free_port()),  # nothing listens there
        MIDAS_SMTP_STARTTLS="false",
        MIDAS_SMTP_TO="ops@example.org",
        MIDAS_ALERT_WEBHOOK_URL=webhook_server.url,
    )
    with caplog.at_level(logging.ERROR, logger="background_tasks.ops.alerts"):
        delivery = alerts.send_alert(alerts.Alert("down", "nobody listens", "x"), settings)
    assert not delivery.sent and not delivery.suppressed
    assert delivery.channels["email"].startswith("error: ConnectionRefusedError")
    assert delivery.channels["webhook"].startswith("error: HTTPError") and "500" in delivery.channels["webhook"]
    assert len(webhook_server.received) == 1  # it was tried
    assert sum("could not be sent" in r.getMessage() for r in caplog.records) == 2
    not_http = settings_with(tmp_path, MIDAS_ALERT_WEBHOOK_URL=f"file://{tmp_path}/x")
    assert alerts.deliver(not_http, alerts.Alert("x", "x", "x"))["webhook"].startswith("error: ValueError")
    unset = settings_with(tmp_path)
    assert alerts.send_alert(alerts.Alert("x", "x", "x"), unset).reason == "no alert channel configured"


def _write_failures(settings: Settings, count: int, finished: datetime, tag: str) -> list[str]:
    create_schema(settings.database_url_resolved)
    ids = []
    with session_scope(settings.database_url_resolved) as session:
        for i in range(count):
            task_id = f"{tag}-{i}"
            ids.append(task_id)
            session.add(
                TaskRecord(
                    task_id=task_id,
                    name="background_tasks.document_tasks.process_document_file",
                    state="failure",
                    seq=5,
                    worker="w1@host",
                    finished_at=finished + timedelta(milliseconds=i),
                    error_type="DatabaseGone",
                    error_message=f"connection refused ({tag})",
                    traceback="Traceback (most recent call last):\n  ...\nDatabaseGone: connection refused",
                )
            )
    return ids


def test_a_burst_of_failures_sends_one_summary(tmp_path, smtp_server, webhook_server) -> None:
    settings = channels(tmp_path, smtp_server, webhook_server)
    now = time.time()
    ids = _write_failures(settings, 25, datetime.fromtimestamp(now - 5, UTC), "burst")
    latest = {"task_id": ids[-1], "name": "background_tasks.document_tasks.process_document_file"}
    deliveries = [alerts.alert_failures(settings, latest=latest, now=now + i * 0.01) for i in range(25)]
    assert [d.sent for d in deliveries].count(True) == 1 and all(d.suppressed for d in deliveries[1:])
    (mail,) = smtp_server.messages
    assert mail["subject"].startswith("[MIDAS] 25 tasks failed on ")
    assert "   25  background_tasks.document_tasks.process_document_file" in mail["body"]
    assert "DatabaseGone: connection refused (burst)" in mail["body"] and "… and 15 more" in mail["body"]
    (hook,) = webhook_server.received
    assert hook["body"]["details"]["count"] == 25 and len(hook["body"]["details"]["failures"]) == 10

    # nothing new: the periodic flush stays quiet, also after the quiet period
    assert alerts.flush_failure_summary(settings, now=now + 60) is None
    assert alerts.flush_failure_summary(settings, now=now + 31 * 60) is None
    # three failures inside the quiet period are held back, then summarised once it is over
    _write_failures(settings, 3, datetime.fromtimestamp(now + 120, UTC), "later")
    assert alerts.flush_failure_summary(settings, now=now + 10 * 60) is None
    summary = alerts.flush_failure_summary(settings, now=now + 31 * 60)
    assert summary.sent and len(smtp_server.messages) == 2
    assert smtp_server.messages[1]["subject"].startswith("[MIDAS] 3 tasks failed")
    assert "(later)" in smtp_server.messages[1]["body"] and "(burst)" not in smtp_server.messages[1]["body"]


def test_failed_task_and_critical_health_alert_through_a_worker(
    app, redis_server, session_dir, tmp_path, smtp_server, webhook_server
) -> None:
    """A worker (Redis database 2) configured for alerts: a task failing for good mails once per quiet period."""
    import celery_config

    env = {
        **os.environ,
        "REDIS_DB": "2",
        "MIDAS_DATA_DIR": str(tmp_path / "data"),
        "MIDAS_SMTP_HOST": "127.0.0.1",
        "MIDAS_SMTP_PORT": str(smtp_server.port),
        "MIDAS_SMTP_STARTTLS": "false",
        "MIDAS_SMTP_TO": "ops@example.org",
        "MIDAS_ALERT_WEBHOOK_URL": webhook_server.url,
        "MIDAS_ALERT_QUIET_MINUTES": "30",
        # a data disk "full" beyond any real use: health is critical
        "MIDAS_DISK_WARN_PERCENT": "0.001",
        "MIDAS_DISK_CRIT_PERCENT": "0.002",
        # and nothing else can be: the machine may be busy running tests
        "MIDAS_CPU_WARN_PERCENT": "1000",
        "MIDAS_CPU_CRIT_PERCENT": "1001",
        "MIDAS_MEMORY_WARN_PERCENT": "1000",
        "MIDAS_MEMORY_CRIT_PERCENT": "1001",
    }
    settings = load_settings(env, env_file=Path(os.devnull))
    other = celery_config.create_app(settings)
    worker = WorkerProcess(
        env=env, log_dir=session_dir / "logs", queues=("default", "monitoring"), concurrency=1, name="alerts-worker"
    )
    try:
        worker.wait_ready(other)
        marker = uuid.uuid4().hex[:8]
        results = [other.send_task(FAIL, args=[f"end-to-end {marker} #{i}"]) for i in range(3)]
        for result in results:
            with pytest.raises(Exception, match=marker):
                result.get(timeout=30)
        wait_until(lambda: smtp_server.messages, 20, what="failure email")
        time.sleep(1.5)  # would-be further alerts have had time to arrive
        (mail,) = smtp_server.messages
        assert mail["subject"].startswith(f"[MIDAS] task failed: {FAIL} (DiagnosticFailure)")
        assert f"end-to-end {marker} #0" in mail["body"] and "Traceback" in mail["body"]
        assert len(webhook_server.received) == 1 and webhook_server.received[0]["body"]["kind"] == "task_failure"
        # the two held back go out as one summary once the quiet period is over
        summary = alerts.flush_failure_summary(settings, now=time.time() + 31 * 60)
        assert summary.sent and smtp_server.messages[1]["subject"].startswith("[MIDAS] 2 tasks failed")
        assert "#1" in smtp_server.messages[1]["body"] and "#2" in smtp_server.messages[1]["body"]

        health = other.send_task(HEALTH).get(timeout=60)
        assert health["status"] == "critical" and health["alert"]["sent"]
        critical = [m for m in smtp_server.messages if m["headers"]["X-MIDAS-Alert"] == "health_critical"]
        assert len(critical) == 1 and ": disk of data_dir" in critical[0]["subject"]
        again = other.send_task(HEALTH).get(timeout=60)
        assert again["status"] == "critical" and again["alert"]["suppressed"]
        assert sum(m["headers"]["X-MIDAS-Alert"] == "health_critical" for m in smtp_server.messages) == 1
    finally:
        worker.stop()
        other.close()
        celery_config.app.set_current()


def test_redis_down_health_alert(tmp_path, smtp_server, webhook_server) -> None:
    """Health against a Redis that is not there (a closed port) is critical and says why in the alert."""
    settings = channels(tmp_path, smtp_server, webhook_server, REDIS_PORT=str(free_port()))
    report = monitoring.system_health(settings, store=False, cpu_interval=0.1)
    assert report.status == "critical"
    delivery = alerts.health_alert(report.as_dict(), settings)
    assert delivery.sent
    (mail,) = smtp_server.messages
    assert (
        mail["subject"].startswith("[MIDAS] health critical on ")
        and ": Redis unreachable at 127.0.0.1:" in mail["subject"]
    )
    assert "Redis: DOWN" in mail["body"] and "Workers answering: 0" in mail["body"]
    assert webhook_server.received[0]["body"]["severity"] == "critical"
