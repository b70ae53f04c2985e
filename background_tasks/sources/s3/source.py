"""An S3 source: list a bucket prefix, remember every object, submit only what is new or changed.

``list_source`` is what the Beat task runs for each prefix of MIDAS_S3_SOURCES. The listing
(ListObjectsV2, paginated) is recorded page by page in ``storage.s3_objects``; objects pass the
watcher's filter (supported types, temporary and hidden names, MIDAS_WATCH_IGNORE) first. At
most MIDAS_S3_MAX_PER_RUN objects are submitted per run, the rest wait for the next one; each
task id comes from the object's URI and ETag, so a submission repeated after a crash is the
same task. Only a complete listing marks what it did not see as deleted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from background_tasks import keys
from background_tasks.errors import InvalidArgument, MidasError
from background_tasks.settings import Settings
from background_tasks.sources.s3.client import as_midas_error, s3_client
from background_tasks.sources.s3.uri import S3Location, check_key, parse_prefix
from background_tasks.storage import s3_objects
from background_tasks.watcher.core import PathFilter

log = logging.getLogger(__name__)

#: publishes one document task: (s3:// URI, task id)
Send = Callable[[str, str], Any]


@dataclass(frozen=True)
class SourceRun:
    """What one listing of one prefix did."""

    source: str
    started_at: datetime
    duration_s: float
    listed: int
    submitted: int
    failed: int
    deleted: int
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "started_at": self.started_at.isoformat()}


def object_filter(settings: Settings) -> PathFilter:
    """The watcher's filter, judging keys as paths below their prefix."""
    return PathFilter(roots=[Path("/")], extra_patterns=settings.watch_ignore)


def _accepted(key: str, root: str, path_filter: PathFilter, label: str) -> bool:
    if key.endswith("/"):
        return False  # a folder marker
    try:
        check_key(key, label)
    except InvalidArgument:
        return False
    return path_filter.accepts("/" + key[len(root) :].lstrip("/"))


def _list(prefix: S3Location, source: str, settings: Settings, started: datetime) -> int:
    """Record every accepted object under ``prefix``; the number of objects listed."""
    url = settings.database_url_resolved
    path_filter = object_filter(settings)
    root = prefix.key.rpartition("/")[0]
    listed = 0
    pages = s3_client(settings).get_paginator("list_objects_v2").paginate(Bucket=prefix.bucket, Prefix=prefix.key)
    for page in pages:
        batch: list[s3_objects.ListedObject] = []
        for item in page.get("Contents", ()):
            listed += 1
            key = item["Key"]
            if _accepted(key, root, path_filter, source):
                uri = S3Location(prefix.bucket, key).uri
                etag = str(item.get("ETag", "")).strip('"')
                batch.append(s3_objects.ListedObject(uri, etag, int(item.get("Size", 0)), item.get("LastModified")))
        s3_objects.record_listed(url, source, batch, started)
    return listed


def _submit(source: str, settings: Settings, send: Send) -> tuple[int, int]:
    """Publish up to MIDAS_S3_MAX_PER_RUN pending objects; (submitted, failed). A broker error stops the run."""
    url = settings.database_url_resolved
    done: list[tuple[s3_objects.PendingObject, str]] = []
    failed = 0
    try:
        for obj in s3_objects.pending(url, source, settings.s3_max_per_run):
            task_id = keys.s3_object_task_id(obj.uri, obj.etag)
            try:
                send(obj.uri, task_id)
            except Exception as exc:  # the broker is away: the rest stays pending for the next run
                log.warning("s3 source %s: could not submit %s: %s", source, obj.uri, exc)
                failed += 1
                break
            done.append((obj, task_id))
    finally:
        s3_objects.mark_submitted(url, done, datetime.now(UTC))
    return len(done), failed


def list_source(source: str, settings: Settings, send: Send) -> SourceRun:
    """List one prefix, record it, mark what is gone, submit what is new or changed; never raises for S3 errors."""
    started = datetime.now(UTC)
    clock = time.monotonic()
    listed = deleted = 0
    error: str | None = None
    try:
        listed = _list(parse_prefix(source), source, settings, started)
        deleted = s3_objects.mark_deleted(settings.database_url_resolved, source, started, datetime.now(UTC))
    except MidasError as exc:
        error = exc.message
    except Exception as exc:
        from botocore.exceptions import BotoCoreError, ClientError

        if not isinstance(exc, BotoCoreError | ClientError):
            raise
        error = as_midas_error(exc, source).message
    if error:
        log.warning("s3 source %s: listing stopped: %s", source, error)
    submitted, failed = _submit(source, settings, send)
    run = SourceRun(source, started, round(time.monotonic() - clock, 3), listed, submitted, failed, deleted, error)
    s3_objects.record_run(
        settings.database_url_resolved, source, started, run.duration_s, listed, submitted, failed, error
    )
    log.info(
        "s3 source %s: %d listed, %d submitted, %d deleted in %.2f s",
        source,
        listed,
        submitted,
        deleted,
        run.duration_s,
    )
    return run
