"""Failure alerts by email (SMTP) and webhook (JSON POST), rate-limited per kind.

At most one alert of a kind (``task_failure``, ``health_critical`` ...) goes
out per ``MIDAS_ALERT_QUIET_MINUTES``. The quiet period is claimed atomically
in the database (``alert_state``), so several worker processes failing at
once send one alert, not one each; when the database is down Redis is asked
(SET NX EX), and when both are down a per-process memory stands in.

A burst of task failures sends one summary: the first failure claims the
period and reports every failure since the previous alert; failures inside
the quiet period are summarised by the next alert, which the periodic queue
check sends (``flush_failure_summary``) once the period is over.

Nothing here raises to its caller: an alert that cannot be delivered is
logged, and the task that triggered it carries on.
"""

from __future__ import annotations

import json
import logging
import smtplib
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any
from urllib.parse import urlsplit

from background_tasks.keys import alert_key
from background_tasks.ops.task_history import epoch, utc
from background_tasks.settings import Settings, get_settings
from background_tasks.storage import alert_state

log = logging.getLogger(__name__)

SEND_TIMEOUT = 10.0
TASK_FAILURE = "task_failure"
HEALTH_CRITICAL = "health_critical"
#: failures listed one by one in a summary; the rest are counted
SUMMARY_EXAMPLES = 10


@dataclass(frozen=True)
class Alert:
    """What to tell the operator."""

    kind: str
    subject: str
    text: str
    severity: str = "error"
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Delivery:
    """Outcome of one alert: sent, suppressed by the quiet period, or not configured; per channel."""

    kind: str
    sent: bool
    suppressed: bool = False
    channels: Mapping[str, str] = field(default_factory=dict)
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def configured(settings: Settings) -> bool:
    return bool((settings.smtp_host and settings.smtp_to) or settings.alert_webhook_url)


# --------------------------------------------------------------------------
# Channels
# --------------------------------------------------------------------------


def send_email(settings: Settings, alert: Alert) -> None:
    """Send ``alert`` over SMTP (STARTTLS unless turned off; implicit TLS on port 465). Raises on failure."""
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = ", ".join(settings.smtp_to)
    message["Subject"] = alert.subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=settings.smtp_from.rpartition("@")[2] or None)
    message["X-MIDAS-Alert"] = alert.kind
    message.set_content(alert.text)
    context = ssl.create_default_context()
    if settings.smtp_port == 465:
        client: smtplib.SMTP = smtplib.SMTP_SSL(
            settings.smtp_host, settings.smtp_port, timeout=SEND_TIMEOUT, context=context
        )
    else:
        client = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=SEND_TIMEOUT)
    with client:
        client.ehlo()
        if settings.smtp_starttls and settings.smtp_port != 465:
            # Never fall back to plain text: the password would travel in clear.
            client.starttls(context=context)
            client.ehlo()
        if settings.smtp_user:
            client.login(settings.smtp_user, settings.smtp_password or "")
        client.send_message(message)


def post_webhook(settings: Settings, alert: Alert) -> None:
    """POST ``alert`` as JSON to the webhook URL. Raises on failure or a non-2xx answer."""
    url = settings.alert_webhook_url
    if urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"MIDAS_ALERT_WEBHOOK_URL must be http(s), not {urlsplit(url).scheme or 'empty'}")
    payload = {
        "source": "midas",
        "kind": alert.kind,
        "severity": alert.severity,
        "subject": alert.subject,
        "text": alert.text,  # Slack/Mattermost-style incoming webhooks show this field
        "host": socket.gethostname(),
        "time": datetime.now(UTC).isoformat(),
        "details": alert.details,
    }
    body = json.dumps(payload, default=str).encode("utf-8")
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json", "User-Agent": "midas-alerts"}
    )
    with urllib.request.urlopen(request, timeout=SEND_TIMEOUT) as response:  # scheme checked above
        if not 200 <= response.status < 300:
            raise urllib.error.HTTPError(url, response.status, response.reason, response.headers, None)


def deliver(settings: Settings, alert: Alert) -> dict[str, str]:
    """Send on every configured channel, now (no quiet period). Per channel ``sent`` or the error; never raises."""
    outcome: dict[str, str] = {}
    if settings.smtp_host and settings.smtp_to:
        outcome["email"] = _attempt("email", alert, lambda: send_email(settings, alert))
    if settings.alert_webhook_url:
        outcome["webhook"] = _attempt("webhook", alert, lambda: post_webhook(settings, alert))
    return outcome


def _attempt(channel: str, alert: Alert, send: Any) -> str:
    try:
        send()
        log.info("alert %s sent by %s: %s", alert.kind, channel, alert.subject)
        return "sent"
    except Exception as exc:
        log.error(
            "alert %s could not be sent by %s (%s: %s): %s", alert.kind, channel, type(exc).__name__, exc, alert.subject
        )
        return f"error: {type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------
# Quiet period
# --------------------------------------------------------------------------

_memory_lock = threading.Lock()
_memory_claims: dict[str, float] = {}


def claim(settings: Settings, kind: str, now: float | None = None) -> tuple[bool, float | None]:
    """Take the quiet period of ``kind`` if it is free: (claimed, when the previous alert was sent)."""
    now = time.time() if now is None else now
    quiet = settings.alert_quiet_minutes * 60
    try:
        return _claim_db(settings.database_url_resolved, kind, now, quiet)
    except Exception as exc:
        log.warning("alert quiet period: database unavailable (%s); asking Redis", exc)
    try:
        return _claim_redis(settings, kind, now, quiet)
    except Exception as exc:
        log.warning("alert quiet period: Redis unavailable too (%s); using this process's memory", exc)
    with _memory_lock:
        previous = _memory_claims.get(kind)
        if previous is not None and now - previous < quiet:
            return False, previous
        _memory_claims[kind] = now
        return True, previous


def _claim_db(url: str, kind: str, now: float, quiet: float) -> tuple[bool, float | None]:
    claimed, previous = alert_state.claim(url, kind, utc(now), quiet)
    return claimed, epoch(previous)


def _claim_redis(settings: Settings, kind: str, now: float, quiet: float) -> tuple[bool, float | None]:
    import redis

    client = redis.Redis.from_url(settings.broker_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        key = alert_key(kind)
        if client.set(key, str(now), nx=True, ex=max(1, int(quiet))):
            return True, None
        previous = client.get(key)
        return False, float(previous) if previous else None
    finally:
        client.close()


def record_count(settings: Settings, kind: str, count: int) -> None:
    try:
        alert_state.record_count(settings.database_url_resolved, kind, count)
    except Exception as exc:
        log.debug("alert count not recorded: %s", exc)


def send_alert(alert: Alert, settings: Settings | None = None, now: float | None = None) -> Delivery:
    """Send ``alert`` unless an alert of its kind went out within the quiet period. Never raises."""
    try:
        settings = settings or get_settings()
        if not configured(settings):
            log.info(
                "alert %s not sent (no MIDAS_SMTP_HOST/MIDAS_SMTP_TO or webhook configured): %s",
                alert.kind,
                alert.subject,
            )
            return Delivery(alert.kind, False, reason="no alert channel configured")
        claimed, previous = claim(settings, alert.kind, now)
        if not claimed:
            log.info("alert %s suppressed (quiet period since %s): %s", alert.kind, _iso(previous), alert.subject)
            return Delivery(alert.kind, False, suppressed=True, reason=f"quiet period since {_iso(previous)}")
        channels = deliver(settings, alert)
        return Delivery(alert.kind, any(v == "sent" for v in channels.values()), channels=channels)
    except Exception as exc:  # an alert must never fail the caller
        log.error("alert %s failed: %s: %s", alert.kind, type(exc).__name__, exc)
        return Delivery(alert.kind, False, reason=f"{type(exc).__name__}: {exc}")


def _iso(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if ts else "never"


# --------------------------------------------------------------------------
# Task failures
# --------------------------------------------------------------------------


def _failures_since(settings: Settings, since: float, until: float) -> list[dict[str, Any]]:
    return alert_state.failures(settings.database_url_resolved, utc(since), utc(until))


def failure_summary(
    failures: list[Mapping[str, Any]], since: float | None, latest: Mapping[str, Any] | None = None
) -> Alert:
    """One alert describing ``failures`` (newest first); ``latest`` is shown in full with its traceback."""
    host = socket.gethostname()
    count = len(failures)
    by_name = Counter(str(f.get("name") or "unknown") for f in failures)
    by_error = Counter(f"{f.get('error_type') or 'unknown'}: {_first_line(f.get('error_message'))}" for f in failures)
    if count == 1:
        only = failures[0]
        subject = f"[MIDAS] task failed: {only.get('name')} ({only.get('error_type')}) on {host}"
    else:
        subject = f"[MIDAS] {count} tasks failed on {host} since {_iso(since)}"
    lines = [
        f"{count} task(s) failed for good on {host} since {_iso(since)}.",
        "",
        "By task:",
        *(f"  {n:5d}  {name}" for name, n in by_name.most_common()),
        "",
        "By error:",
        *(f"  {n:5d}  {error[:300]}" for error, n in by_error.most_common(10)),
        "",
        "Most recent:",
    ]
    for f in failures[:SUMMARY_EXAMPLES]:
        lines.append(
            f"  {_when(f.get('finished_at'))}  {f.get('name')}[{f.get('task_id')}] on {f.get('worker') or '?'}: "
            f"{f.get('error_type')}: {_first_line(f.get('error_message'))}"
        )
    if count > SUMMARY_EXAMPLES:
        lines.append(f"  … and {count - SUMMARY_EXAMPLES} more (see the dashboard's task history)")
    detail = latest or (failures[0] if failures else None)
    if detail and detail.get("traceback"):
        lines += ["", f"Traceback of {detail.get('name')}[{detail.get('task_id')}]:", str(detail["traceback"])]
    return Alert(
        kind=TASK_FAILURE,
        subject=subject,
        text="\n".join(lines) + "\n",
        details={
            "count": count,
            "since": since,
            "by_task": dict(by_name),
            "failures": [
                {
                    k: _plain(f.get(k))
                    for k in ("task_id", "name", "worker", "error_type", "error_message", "finished_at")
                }
                for f in failures[:SUMMARY_EXAMPLES]
            ],
        },
    )


def _first_line(text: Any) -> str:
    lines = str(text or "").strip().splitlines()
    return lines[0][:300] if lines else ""


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        value = epoch(value)
    return _iso(value) if isinstance(value, int | float) else "?"


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return datetime.fromtimestamp(epoch(value), UTC).isoformat()
    return value


def alert_failures(
    settings: Settings | None = None, latest: Mapping[str, Any] | None = None, now: float | None = None
) -> Delivery | None:
    """Send one summary of the failures since the last failure alert, if the quiet period allows.

    Called for each failure (``latest``) and periodically without one; None when
    there is nothing to report. Never raises.
    """
    try:
        settings = settings or get_settings()
        if not configured(settings):
            return None
        now = time.time() if now is None else now
        quiet = settings.alert_quiet_minutes * 60
        if latest is None and not _unreported(settings, now, quiet):
            return None
        claimed, previous = claim(settings, TASK_FAILURE, now)
        if not claimed:
            log.info(
                "failure alert suppressed (quiet period since %s); the next summary will include it", _iso(previous)
            )
            return Delivery(TASK_FAILURE, False, suppressed=True, reason=f"quiet period since {_iso(previous)}")
        since = previous if previous is not None else now - quiet
        try:
            failures = _failures_since(settings, since, now)
        except Exception as exc:
            log.warning("failure history unavailable for the alert: %s", exc)
            failures = []
        if latest is not None and not any(f.get("task_id") == latest.get("task_id") for f in failures):
            failures.insert(0, dict(latest))
        if not failures:
            return None
        channels = deliver(settings, failure_summary(failures, since, latest))
        record_count(settings, TASK_FAILURE, len(failures))
        return Delivery(TASK_FAILURE, any(v == "sent" for v in channels.values()), channels=channels)
    except Exception as exc:
        log.error("failure alert failed: %s: %s", type(exc).__name__, exc)
        return Delivery(TASK_FAILURE, False, reason=f"{type(exc).__name__}: {exc}")


def _unreported(settings: Settings, now: float, quiet: float) -> bool:
    """Failures after the last failure alert, with that alert's quiet period over."""
    url = settings.database_url_resolved
    last = epoch(alert_state.last_sent(url, TASK_FAILURE))
    if last is not None and now - last < quiet:
        return False
    since = last if last is not None else now - quiet
    return alert_state.any_failure(url, utc(since), utc(now))


def flush_failure_summary(settings: Settings | None = None, now: float | None = None) -> Delivery | None:
    """Send the summary of failures held back by the quiet period, once it is over (periodic)."""
    return alert_failures(settings, latest=None, now=now)


def on_task_failure(info: Mapping[str, Any]) -> None:
    """Hook of ``task_history`` (on its writer thread): a task failed for good."""
    alert_failures(latest=info)


def health_alert(report: Mapping[str, Any], settings: Settings | None = None) -> Delivery:
    """The ``health_critical`` alert for a health report whose (stored, judged) status is critical.

    The verdict counts CPU, memory and queue length only once they held for MIDAS_HEALTH_HOLD_CHECKS
    checks in a row (``ops.health_verdict``), so one busy moment sends no alert.
    """
    reasons = list(report.get("reasons") or [])
    host = (report.get("system") or {}).get("hostname") or socket.gethostname()
    lines = [f"MIDAS health is {report.get('status')} on {host}:", "", *(f"  - {r}" for r in reasons)]
    pending = list(report.get("pending") or [])
    if pending:  # findings that have not held long enough to count (ops.health_verdict)
        lines += ["", "Not counted yet:", *(f"  - {p}" for p in pending)]
    redis_info = report.get("redis") or {}
    celery_info = report.get("celery") or {}
    lines += [
        "",
        f"Redis: {'ok' if redis_info.get('ok') else 'DOWN'} {redis_info.get('error') or ''}".rstrip(),
        f"Workers answering: {celery_info.get('responding', 0)}",
    ]
    first = reasons[0].split(": ", 1)[-1] if reasons else "see details"  # without the "critical: " prefix
    alert = Alert(
        kind=HEALTH_CRITICAL,
        subject=f"[MIDAS] health critical on {host}: {first}"[:200],
        text="\n".join(lines) + "\n",
        severity="critical",
        details={"status": report.get("status"), "reasons": reasons},
    )
    return send_alert(alert, settings)
