"""Logging shared by every MIDAS process: named loggers, the task id on each line,
rotated files under the log dir."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(processName)s %(name)s [%(task_id)s] %(message)s"
MAX_BYTES = 10 * 1024 * 1024
BACKUP_COUNT = 5


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


def make_formatter() -> logging.Formatter:
    return logging.Formatter(LOG_FORMAT)


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
