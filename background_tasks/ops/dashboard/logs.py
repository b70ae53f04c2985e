"""The log folder as the dashboard shows it: the files, newest first, and the tail of one."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from background_tasks.ops.dashboard.common import human_size
from background_tasks.settings import Settings

LOG_TAIL_BYTES = 64 * 1024


def log_files(settings: Settings) -> pd.DataFrame:
    """The log files in the log folder, newest first."""
    rows = []
    folder = settings.log_dir
    if folder.is_dir():
        for path in folder.glob("*.log*"):
            try:
                stat = path.stat()
            except OSError:
                continue
            if path.is_file():
                modified = datetime.fromtimestamp(stat.st_mtime, UTC)
                rows.append({"file": path.name, "size": human_size(stat.st_size), "modified": modified})
    frame = pd.DataFrame(rows, columns=["file", "size", "modified"])
    return frame.sort_values("modified", ascending=False).reset_index(drop=True) if rows else frame


def log_tail(settings: Settings, name: str, lines: int = 200) -> str:
    """The last ``lines`` lines of one log file in the log folder (only a plain name is accepted)."""
    if Path(name).name != name or name.startswith("."):
        raise ValueError(f"not a log file name: {name!r}")
    path = settings.log_dir / name
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - LOG_TAIL_BYTES))
        data = handle.read()
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])
