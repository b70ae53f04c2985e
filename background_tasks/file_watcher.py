"""Watch folders and turn complete new documents into tasks, exactly once.

    python -m background_tasks.file_watcher                      # the default folders
    python -m background_tasks.file_watcher -d /scans /shared    # defaults plus these
    python -m background_tasks.file_watcher -d /scans --only     # only these
    python -m background_tasks.file_watcher --batch --batch-size 20 --batch-timeout 30

This module is the wiring: command line, watchdog observer (its handler only
queues paths), Celery sending, heartbeat, signals. What is enqueued and when is
decided in ``background_tasks.watcher.core``. Nothing in a watched folder is
ever written, moved or deleted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from background_tasks import keys
from background_tasks.errors import TransientError
from background_tasks.logging_setup import configure_logging
from background_tasks.processing.intake import allowed_roots, default_watch_dirs
from background_tasks.settings import Settings, settings_or_exit
from background_tasks.watcher.core import (
    Batcher,
    FileJob,
    History,
    Outgoing,
    PathFilter,
    PendingQueue,
    StabilityTracker,
    Watcher,
)

log = logging.getLogger("background_tasks.file_watcher")

TICK_SECONDS = 0.1

HELP_EPILOG = f"""\
Folders: without options the watcher watches MIDAS_WATCH_DIRS or, when that is
empty, ~/Documents/MIDAS_Uploads (created if missing), ~/Downloads and
~/Desktop (those that exist). -d adds folders; --only watches just those.

The workers read the files themselves and accept only paths inside their own
allowed folders (MIDAS_WATCH_DIRS, MIDAS_ALLOWED_ROOTS, the inbox). A folder
given with -d must therefore also be allowed in the workers' environment: put
it in MIDAS_WATCH_DIRS (then no -d is needed) or MIDAS_ALLOWED_ROOTS. The
watcher warns at start-up about -d folders its own settings do not allow.

Stability window: MIDAS_STABILITY_SECONDS. Heartbeat: Redis key
{keys.WATCHER_HEARTBEAT_KEY}. Log: MIDAS_LOG_DIR/file_watcher.log.
"""


# --------------------------------------------------------------------------
# Folders
# --------------------------------------------------------------------------


def _absolute(path: str | Path) -> Path:
    return Path(os.path.abspath(Path(path).expanduser()))


def worker_allowed_roots(settings: Settings) -> tuple[Path, ...]:
    """The folders a worker with these settings reads from."""
    return allowed_roots(settings)


def is_allowed(folder: Path, roots: Sequence[Path]) -> bool:
    real = Path(os.path.realpath(folder))
    return any(real == root or real.is_relative_to(root) for root in roots)


def choose_folders(settings: Settings, custom: Sequence[str], only: bool) -> tuple[list[Path], list[Path], list[str]]:
    """(folders to watch now, configured folders missing for now, fatal problems)."""
    problems: list[str] = []
    watch: list[Path] = []
    missing: list[Path] = []
    if not only:
        for folder in default_watch_dirs(settings):
            folder = _absolute(folder)
            uploads = _absolute(Path.home() / "Documents" / "MIDAS_Uploads")
            if not settings.watch_dirs and folder == uploads:
                folder.mkdir(parents=True, exist_ok=True)
            if folder.is_dir():
                watch.append(folder)
            elif settings.watch_dirs:
                missing.append(folder)  # configured: may be a share that is not mounted yet
    for raw in custom:
        folder = _absolute(raw)
        if not folder.is_dir():
            problems.append(f"{raw}: not an existing folder")
        else:
            watch.append(folder)
    return _without_nested(list(dict.fromkeys(watch))), missing, problems


def _without_nested(folders: list[Path]) -> list[Path]:
    """A folder inside another watched folder is already covered (recursive mode)."""
    kept = []
    for folder in folders:
        if any(other != folder and folder.is_relative_to(other) for other in folders):
            log.info("%s is inside another watched folder; watched through it", folder)
            continue
        kept.append(folder)
    return kept


# --------------------------------------------------------------------------
# Sending and heartbeat
# --------------------------------------------------------------------------


def make_sender(settings: Settings) -> Callable[[Outgoing], None]:
    """A function that publishes one message, raising TransientError quickly while the broker is down."""
    import kombu.exceptions
    import redis.exceptions

    from celery_config import create_app

    app = create_app(settings)
    # Fail fast instead of retrying a connection inside send_task: the pending queue does the retrying,
    # and the loop must keep handling events and heartbeats meanwhile.
    app.conf.broker_transport_options = {
        **app.conf.broker_transport_options,
        "max_retries": 1,
        "interval_start": 0,
        "interval_step": 0.2,
        "interval_max": 0.5,
    }
    app.conf.broker_connection_timeout = 3
    broker_errors = (kombu.exceptions.OperationalError, redis.exceptions.RedisError, OSError)

    def send(item: Outgoing) -> None:
        args = staged_args(item, settings)  # MIDAS_OBJECT_STORE: workers on other hosts read the s3:// copies
        try:
            app.send_task(item.task_name, args=args, task_id=item.task_id, retry=False)
        except broker_errors as exc:
            raise TransientError(str(exc) or type(exc).__name__) from exc

    return send


def staged_args(item: Outgoing, settings: Settings) -> list[Any]:
    """The message's arguments with each path staged in MIDAS_OBJECT_STORE (unchanged when it is not set).

    An object store that cannot be reached is a TransientError: the message waits in the pending queue.
    """
    if not settings.object_store:
        return item.args
    from background_tasks.errors import MidasError
    from background_tasks.sources.s3.staging import stage

    def target(path: str) -> str:
        try:
            return stage(path, settings).target
        except FileNotFoundError:
            return path  # gone meanwhile: the worker records it as missing
        except MidasError as exc:
            raise TransientError(exc.message) from exc

    if item.task_name == keys.PROCESS_DOCUMENT_BATCH:
        return [[target(p) for p in item.args[0]]]
    return [target(item.args[0])]


class Heartbeat:
    """Publishes the watcher's figures to Redis for the health check and the dashboard."""

    def __init__(self, settings: Settings, folders: Sequence[Path], interval: float, extra: dict[str, Any]) -> None:
        import redis

        self.client = redis.Redis.from_url(settings.broker_url, socket_timeout=2, socket_connect_timeout=2)
        self.folders = [str(f) for f in folders]
        self.interval = interval
        self.ttl = int(max(settings.watcher_heartbeat_max_age, 3 * interval) + interval)
        self.extra = extra
        self._failing = False

    def beat(self, stats: dict[str, Any], state: str = "running") -> bool:
        payload = {
            "time": time.time(),
            **stats,
            "watch_dirs": self.folders,
            "pid": os.getpid(),
            "state": state,
            **self.extra,
        }
        try:
            self.client.set(keys.WATCHER_HEARTBEAT_KEY, json.dumps(payload), ex=self.ttl)
        except Exception as exc:  # Redis down: the pending queue reports that; do not stop watching
            if not self._failing:
                log.debug("heartbeat not written: %s", exc)
            self._failing = True
            return False
        self._failing = False
        return True


# --------------------------------------------------------------------------
# watchdog
# --------------------------------------------------------------------------


def make_handler(watcher: Watcher) -> Any:
    """The watchdog handler: it only hands paths to the watcher's queue."""
    from watchdog.events import FileSystemEventHandler

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event: Any) -> None:
            kind = event.event_type
            if kind in ("opened", "closed_no_write") or (event.is_directory and kind in ("modified", "closed")):
                return
            if kind == "deleted":
                watcher.notify(os.fsdecode(event.src_path), event.is_directory, gone=True)
            elif kind == "moved":
                watcher.notify(os.fsdecode(event.src_path), event.is_directory, gone=True)
                watcher.notify(os.fsdecode(event.dest_path), event.is_directory)
            else:  # created, modified, closed (after writing)
                watcher.notify(os.fsdecode(event.src_path), event.is_directory)

    return Handler()


class Observers:
    """Native events where possible, polling where asked for or where native watching fails."""

    def __init__(self, handler: Any, recursive: bool, polling: bool, poll_interval: float) -> None:
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        self._polling_cls = PollingObserver
        self.handler = handler
        self.recursive = recursive
        self.poll_interval = poll_interval
        self.primary = PollingObserver(timeout=poll_interval) if polling else Observer()
        self.fallback: Any = None
        self.primary.start()

    def watch(self, folder: Path) -> None:
        try:
            self.primary.schedule(self.handler, str(folder), recursive=self.recursive)
            return
        except OSError as exc:
            if isinstance(self.primary, self._polling_cls):
                raise
            log.warning("cannot watch %s with native events (%s); polling it instead", folder, exc)
        if self.fallback is None:
            self.fallback = self._polling_cls(timeout=self.poll_interval)
            self.fallback.start()
        self.fallback.schedule(self.handler, str(folder), recursive=self.recursive)

    def stop(self) -> None:
        for observer in (self.primary, self.fallback):
            if observer is not None:
                observer.stop()
        for observer in (self.primary, self.fallback):
            if observer is not None:
                observer.join(10)


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m background_tasks.file_watcher",
        description="Watch folders and enqueue new or changed documents once they are complete.",
        epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-d",
        "--dir",
        dest="dirs",
        nargs="+",
        action="extend",
        default=[],
        metavar="DIR",
        help="extra folder(s) to watch (see below: the workers must allow them too)",
    )
    parser.add_argument("--only", action="store_true", help="watch only the -d folders")
    parser.add_argument("--batch", action="store_true", help="send stable files as process_document_batch tasks")
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        metavar="N",
        help="files per batch (default MIDAS_WATCH_BATCH_SIZE, 10)",
    )
    parser.add_argument(
        "--batch-timeout",
        type=_positive_float,
        default=None,
        metavar="S",
        help="a partial batch is sent when its oldest file waited S seconds (default MIDAS_WATCH_BATCH_TIMEOUT, 60)",
    )
    parser.add_argument(
        "--no-initial-scan",
        action="store_true",
        help="do not look for files that arrived while the watcher was not running",
    )
    parser.add_argument(
        "--polling",
        action="store_true",
        default=None,
        help="poll instead of native events, for SMB/NFS shares (default MIDAS_WATCH_POLLING)",
    )
    parser.add_argument("--no-recursive", action="store_true", help="watch only the top level of each folder")
    parser.add_argument(
        "--ignore",
        nargs="+",
        action="extend",
        default=[],
        metavar="PATTERN",
        help="extra glob patterns to ignore (added to MIDAS_WATCH_IGNORE)",
    )
    parser.add_argument(
        "--rescan-interval",
        type=_positive_float,
        default=None,
        metavar="S",
        help="full rescan every S seconds (default MIDAS_WATCH_RESCAN_SECONDS, 300)",
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=_positive_float,
        default=10.0,
        metavar="S",
        help="seconds between heartbeats (default 10)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=_positive_float,
        default=10.0,
        metavar="S",
        help="on stop, keep trying to send waiting files this long (default 10)",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError("must be a positive whole number")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be a positive number")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings_or_exit()
    configure_logging(settings.log_dir / "file_watcher.log", getattr(logging, args.log_level))
    if args.only and not args.dirs:
        log.error("--only needs at least one folder given with -d")
        return 2

    folders, missing, problems = choose_folders(settings, args.dirs, args.only)
    for problem in problems:
        log.error("cannot watch %s", problem)
    if problems:
        return 2
    for folder in missing:
        log.warning("configured folder %s does not exist; will look again at each rescan", folder)
    if not folders and not missing:
        log.error("no folder to watch (none of the defaults exist); give one with -d or MIDAS_WATCH_DIRS")
        return 2
    allowed = worker_allowed_roots(settings)
    for raw in args.dirs:
        if not is_allowed(_absolute(raw), allowed):
            log.warning(
                "%s is not an allowed folder in these settings: workers will refuse its files unless their "
                "MIDAS_WATCH_DIRS or MIDAS_ALLOWED_ROOTS include it",
                _absolute(raw),
            )

    polling = settings.watch_polling if args.polling is None else True
    recursive = not args.no_recursive
    window = settings.stability_seconds
    batch_size = args.batch_size or settings.watch_batch_size
    batch_timeout = args.batch_timeout or settings.watch_batch_timeout
    rescan = args.rescan_interval or settings.watch_rescan_seconds

    path_filter = PathFilter(
        roots=[*folders, *missing],
        extra_patterns=[*settings.watch_ignore, *args.ignore],
        exclude_dirs=[settings.data_dir, settings.log_dir],
    )
    history = History(settings.database_url_resolved, max_hash_bytes=settings.max_file_bytes)
    watcher = Watcher(
        folders,
        path_filter,
        StabilityTracker(window),
        history,
        PendingQueue(make_sender(settings)),
        batcher=Batcher[FileJob](batch_size, batch_timeout) if args.batch else None,
        recursive=recursive,
    )
    mode = f"batch (size {batch_size}, timeout {batch_timeout:g} s)" if args.batch else "single"
    heartbeat = Heartbeat(
        settings,
        [*folders, *missing],
        args.heartbeat_interval,
        {"mode": "batch" if args.batch else "single", "stability_seconds": window, "polling": polling},
    )

    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if stop.is_set():
            log.warning("second stop signal: exiting without sending waiting files")
            os._exit(1)
        log.info("received %s; sending what is waiting and stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    observers = Observers(make_handler(watcher), recursive, polling, poll_interval=max(1.0, min(window, 5.0)))
    for folder in folders:
        observers.watch(folder)
    log.info(
        "watching %s (%s, %s, %s); stability window %g s; rescan every %g s; %d files in history",
        ", ".join(str(f) for f in folders) or "nothing yet",
        "polling" if polling else "native events",
        "recursive" if recursive else "top level only",
        mode,
        window,
        rescan,
        len(history),
    )
    if not args.no_initial_scan:
        watcher.scan(initial=True)

    next_beat = 0.0
    next_rescan = time.monotonic() + rescan
    try:
        while not stop.is_set():
            watcher.tick()
            now = time.monotonic()
            if now >= next_beat:
                heartbeat.beat(watcher.stats())
                next_beat = now + args.heartbeat_interval
            if now >= next_rescan:
                for folder in [m for m in missing if m.is_dir()]:
                    log.info("configured folder %s appeared; watching it", folder)
                    missing.remove(folder)
                    folders.append(folder)
                    watcher.roots.append(folder)
                    observers.watch(folder)
                watcher.scan()
                next_rescan = time.monotonic() + rescan
            stop.wait(TICK_SECONDS)
    finally:
        observers.stop()
        unsent = watcher.shutdown(args.shutdown_timeout)
        heartbeat.beat(watcher.stats(), state="stopped")
        stats = watcher.stats()
        log.info(
            "stopped: %d seen, %d enqueued, %d skipped, %d not sent",
            stats["seen"],
            stats["enqueued"],
            stats["skipped"],
            unsent,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
