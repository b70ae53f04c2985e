"""Logging shared by every MIDAS process: named loggers, the task id on each line,
rotated files under the log dir, and values that cannot forge lines.

A logged value (a file name, a task id, an exception message) may contain a
newline, a carriage return, a terminal escape or an undecodable byte. The MIDAS
formatter escapes them (``\\n``, ``\\r``, ``\\x1b``, ``\\xff``), so each record is
one line that starts with its own timestamp; a traceback stays multi-line, but
each of its lines is indented and its exception messages are escaped, so no
line inside it can look like a record of its own. The watcher, every Celery
worker and Beat, and the launcher's log pump all write through it.
"""

from __future__ import annotations

import copy
import logging
import logging.handlers
import re
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(processName)s %(name)s [%(task_id)s] %(message)s"
MAX_BYTES = 10 * 1024 * 1024
BACKUP_COUNT = 5
#: Put before every line of a traceback or stack in a record, so none starts like a record.
CONTINUATION_INDENT = "  "

#: C0 and C1 controls, DEL, Unicode line/paragraph separators and lone surrogates.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
#: Record attributes that are not single-line fields: blocks indented instead, or recomputed by format.
_NOT_FIELDS = frozenset({"msg", "message", "asctime", "exc_text", "stack_info"})


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte of a file name (surrogateescape): show the byte
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_control(text: str) -> str:
    """``text`` on one line, readable: control characters and lone surrogates as backslash escapes.

    Why: a value containing a newline would otherwise start a forged log line, a
    terminal escape would rewrite the screen of whoever reads the log, and a lone
    surrogate (a non-UTF-8 file name) cannot be written to a UTF-8 file at all.
    """
    return _UNSAFE.sub(_escape_char, text) if _UNSAFE.search(text) else text


def escape_block(text: str) -> str:
    """A multi-line block (traceback, stack) kept multi-line, each line escaped and indented."""
    return "\n".join(CONTINUATION_INDENT + escape_control(line) for line in text.split("\n"))


def _escape_exception_values(te: traceback.TracebackException) -> None:
    """Escape the messages and notes of ``te`` and its chained and grouped exceptions in place."""
    todo, seen = [te], set()
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(getattr(current, "_str", None), str):  # the message format_exception_only prints
            current._str = escape_control(current._str)
        notes = getattr(current, "__notes__", None)
        if isinstance(notes, list):
            current.__notes__ = [escape_control(str(note)) for note in notes]
        todo.extend(t for t in (current.__cause__, current.__context__) if t is not None)
        todo.extend(getattr(current, "exceptions", None) or ())


class SafeFormatter(logging.Formatter):
    """The MIDAS formatter: every value escaped (message with its arguments, task id, names), each
    record one line, tracebacks indented below it with their exception messages escaped."""

    def format(self, record: logging.LogRecord) -> str:
        safe = copy.copy(record)  # other handlers of the same record keep the original
        fields = {k: v for k, v in vars(record).items() if isinstance(v, str) and k not in _NOT_FIELDS}
        if _UNSAFE.search(" ".join(fields.values())):  # one search for the common case: nothing to escape
            for key, value in fields.items():
                setattr(safe, key, escape_control(value))
        safe.msg, safe.args = escape_control(record.getMessage()), None
        if record.exc_info:
            safe.exc_text = None  # formatted again, escaped, by formatException
        elif record.exc_text:
            safe.exc_text = escape_block(record.exc_text)
        return super().format(safe)

    def formatException(self, ei: Any) -> str:
        try:
            te = traceback.TracebackException(*ei, compact=True)
            _escape_exception_values(te)
            text = "".join(te.format()).rstrip("\n")
        except Exception:  # logging must never fail the caller: the plain traceback, still indented
            text = super().formatException(ei)
        return escape_block(text)

    def formatStack(self, stack_info: str) -> str:
        return escape_block(super().formatStack(stack_info))


class TaskContextFilter(logging.Filter):
    """Adds ``task_id`` (or ``-``) to every record, from Celery's current task if any."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "task_id"):
            task_id = "-"
            try:
                from celery import current_task

                if current_task and current_task.request and current_task.request.id:
                    task_id = current_task.request.id
            except Exception:  # logging must never fail the caller
                pass
            record.task_id = task_id
        return True


class RoutineTaskFilter(logging.Filter):
    """Celery logs each task's arrival and its success, with the result (up to 1 KB), at INFO. For
    the checks Beat runs every minute that is a kilobyte a minute of the same news, burying what
    matters; for the tasks named here both lines go to DEBUG (shown with ``--loglevel DEBUG``).
    What such a check finds wrong it logs as a warning itself, and a failure stays an error."""

    def __init__(self, task_names: Iterable[str]) -> None:
        super().__init__()
        self.task_names = frozenset(task_names)

    def filter(self, record: logging.LogRecord) -> bool:
        data = getattr(record, "data", None)  # Celery's ``extra={'data': context}`` of those two lines
        if record.levelno != logging.INFO or not isinstance(data, dict) or data.get("name") not in self.task_names:
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


#: the Celery loggers of "Task … received" and "Task … succeeded in …: <result>"
CELERY_TASK_LINE_LOGGERS = ("celery.worker.strategy", "celery.app.trace")


def quiet_routine_tasks(task_names: Iterable[str]) -> None:
    """Log the arrival and success of ``task_names`` at DEBUG (``RoutineTaskFilter``); idempotent."""
    for name in CELERY_TASK_LINE_LOGGERS:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, RoutineTaskFilter)]:
            logger.removeFilter(old)
        logger.addFilter(RoutineTaskFilter(task_names))


def make_formatter(fmt: str = LOG_FORMAT) -> logging.Formatter:
    """The formatter of every MIDAS log line (see ``SafeFormatter``)."""
    return SafeFormatter(fmt)


def rotating_file_handler(path: Path) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUP_COUNT, encoding="utf-8")
    handler.setFormatter(make_formatter())
    handler.addFilter(TaskContextFilter())
    return handler


def install_task_context(logger: logging.Logger) -> None:
    """Give every handler of ``logger`` the task-id filter and the MIDAS format."""
    for handler in logger.handlers:
        if not any(isinstance(f, TaskContextFilter) for f in handler.filters):
            handler.addFilter(TaskContextFilter())
        handler.setFormatter(make_formatter())


def configure_logging(log_file: Path | None = None, level: int = logging.INFO) -> None:
    """For MIDAS's own entry points (watcher, launcher): console plus an optional rotated file."""
    root = logging.getLogger()
    root.setLevel(level)
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) for h in root.handlers):
        console = logging.StreamHandler()
        root.addHandler(console)
    if log_file is not None and not any(
        isinstance(h, logging.FileHandler) and Path(h.baseFilename) == log_file.resolve() for h in root.handlers
    ):
        root.addHandler(rotating_file_handler(log_file))
    install_task_context(root)
