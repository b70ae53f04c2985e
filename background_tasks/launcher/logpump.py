"""Copy a service's output from a pipe into a rotated log file.

The launcher starts every service with stdout/stderr going to a pipe and this
small detached process on the other end. Services therefore never hold the log
file open themselves, so the file can be rotated (10 MB x 5) whatever the
service is, Redis included. The pump exits at end of file, which is when the
service and all its children have exited.

Each line goes through the MIDAS formatter (``logging_setup.make_formatter``):
control characters inside a line (a carriage return, a terminal escape) and
undecodable bytes are written as backslash escapes, so a program that prints
raw values cannot rewrite what the log shows.

Usage: ``python -m background_tasks.launcher.logpump LOGFILE [--max-bytes N] [--backups N]``
(the data arrives on standard input).
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import signal
import sys
from pathlib import Path
from typing import BinaryIO

from background_tasks.logging_setup import make_formatter

MAX_BYTES = 10 * 1024 * 1024
BACKUP_COUNT = 5
#: Longest piece written as one line; a service printing without newlines cannot exhaust memory.
MAX_LINE = 64 * 1024


def make_handler(log_path: Path, max_bytes: int = MAX_BYTES, backups: int = BACKUP_COUNT) -> logging.Handler:
    """The rotating handler the pump writes through: the lines as they came (escaped), no extra prefix."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        log_path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=True
    )
    handler.setFormatter(make_formatter("%(message)s"))
    # A failing write (disk full, file locked on Windows) must not stop the pump: a pump
    # that exits would break the service's pipe. The line is dropped instead.
    handler.handleError = lambda record: None  # type: ignore[method-assign]
    return handler


def pump(stream: BinaryIO, handler: logging.Handler) -> int:
    """Copy ``stream`` line by line into ``handler`` until end of file; returns the number of lines."""
    count = 0
    while True:
        chunk = stream.readline(MAX_LINE)
        if not chunk:
            break
        # Undecodable bytes become surrogate escapes, which the formatter shows as \xNN.
        text = chunk.decode("utf-8", errors="surrogateescape").rstrip("\r\n")
        handler.handle(logging.makeLogRecord({"msg": text, "levelno": logging.INFO, "levelname": "INFO"}))
        count += 1
    handler.close()
    return count


def _ignore_stop_signals() -> None:
    """The pump outlives the service's shutdown so the last lines reach the file; EOF ends it."""
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None:
            try:
                signal.signal(sig, signal.SIG_IGN)
            except (OSError, ValueError):
                pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m background_tasks.launcher.logpump", description=__doc__.split("\n")[0]
    )
    parser.add_argument("logfile", type=Path)
    parser.add_argument("--max-bytes", type=int, default=MAX_BYTES)
    parser.add_argument("--backups", type=int, default=BACKUP_COUNT)
    args = parser.parse_args(argv)
    _ignore_stop_signals()
    pump(sys.stdin.buffer, make_handler(args.logfile, args.max_bytes, args.backups))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
