"""Mail task (queue ``default``): Beat runs ``fetch_mail`` every ``MIDAS_MAIL_INTERVAL`` seconds.

The work is in ``background_tasks.sources.mail``; this module only gives it a task name and
the app to submit through, so every file taken from mail lands in the intake ledger.
"""

from __future__ import annotations

import contextlib
import logging
from functools import lru_cache
from typing import Any

from kombu.exceptions import OperationalError
from redis.exceptions import LockError, RedisError

from background_tasks import keys
from background_tasks.errors import TransientError
from background_tasks.settings import get_settings
from background_tasks.sources.mail.fetch import fetch_all
from celery_config import app

log = logging.getLogger(__name__)


def _submit(path: str, origin: dict[str, str], task_id: str) -> None:
    """Send one file; a broker that does not take it is a ``TransientError``: the run stops, the mail is
    taken again next run (same task id), and it never counts against the mail as a poison attempt."""
    try:
        app.send_task(keys.PROCESS_DOCUMENT_FILE, args=[path], kwargs={"origin": origin}, task_id=task_id)
    except (OperationalError, RedisError) as exc:
        raise TransientError(f"the broker did not take the task ({type(exc).__name__}: {exc})") from exc


@lru_cache(maxsize=1)
def _broker() -> Any:
    import redis

    return redis.Redis.from_url(app.conf.broker_url, socket_timeout=10)


@app.task(name=keys.FETCH_MAIL)
def fetch_mail(account: str | None = None) -> dict[str, Any]:
    """Fetch every configured account (or one) once; at most ``MIDAS_MAIL_MAX_PER_RUN`` mails each.

    One run at a time: a run still going when Beat fires again makes the new one return at once.
    """
    settings = get_settings()
    lock = _broker().lock(keys.MAIL_FETCH_LOCK, timeout=settings.task_time_limit + 5)
    if not lock.acquire(blocking=False):
        log.info("mail: a fetch is still running; this run is skipped")
        return {"skipped": "a fetch is still running", "accounts": []}
    try:
        runs = fetch_all(settings, _submit, only=account)
    finally:
        with contextlib.suppress(LockError):  # held past its timeout: another run may have it now
            lock.release()
    return {"accounts": [run.__dict__ for run in runs]}
