"""The task report: per-task figures over a window, the most frequent errors, documents per type.

Written as JSON, Markdown and CSV under the reports folder, so it can be read, mailed or
loaded into a spreadsheet without MIDAS running.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import exc as sa_exc

from background_tasks.ops.reach import error_text
from background_tasks.ops.task_history import utc
from background_tasks.settings import Settings
from background_tasks.storage import task_figures

log = logging.getLogger(__name__)


def percentile(values: Sequence[float], p: float) -> float | None:
    """Linear-interpolated percentile (p in 0..100) of ``values``; None when empty."""
    data = sorted(v for v in values if v is not None and not math.isnan(v))
    if not data:
        return None
    if len(data) == 1:
        return data[0]
    rank = (len(data) - 1) * p / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return data[low] + (data[high] - data[low]) * (rank - low)


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


@dataclass(frozen=True)
class TaskReport:
    """Per-task-name figures over a window, the most frequent errors, documents per file type."""

    generated_at: float
    since: float
    hours: float
    tasks: dict[str, dict[str, Any]]
    totals: dict[str, Any]
    top_errors: tuple[dict[str, Any], ...]
    documents: dict[str, Any] | None
    files: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["top_errors"] = list(self.top_errors)
        data["generated_at_iso"] = datetime.fromtimestamp(self.generated_at, UTC).isoformat()
        data["since_iso"] = datetime.fromtimestamp(self.since, UTC).isoformat()
        return data


def _figures(rows: Sequence[Any], hours: float) -> dict[str, Any]:
    states = Counter(r.state for r in rows)
    succeeded, failed = states.get("success", 0), states.get("failure", 0)
    finished = [r for r in rows if r.state in ("success", "failure")]
    runtimes = [r.runtime_s for r in finished if r.runtime_s is not None]
    waits = [r.wait_s for r in rows if r.wait_s is not None]
    return {
        "count": len(rows),
        "succeeded": succeeded,
        "failed": failed,
        "retried": sum(1 for r in rows if (r.retries or 0) > 0),
        "retries": sum(r.retries or 0 for r in rows),
        "revoked": states.get("revoked", 0),
        "unfinished": sum(states.get(s, 0) for s in ("pending", "received", "started", "retry")),
        "success_rate": _r(succeeded / (succeeded + failed), 4) if succeeded + failed else None,
        "runtime_p50_s": _r(percentile(runtimes, 50)),
        "runtime_p95_s": _r(percentile(runtimes, 95)),
        "runtime_max_s": _r(max(runtimes) if runtimes else None),
        "wait_p50_s": _r(percentile(waits, 50)),
        "wait_p95_s": _r(percentile(waits, 95)),
        "throughput_per_hour": _r(len(finished) / hours, 3) if hours > 0 else None,
    }


def _document_figures(url: str, since: datetime) -> dict[str, Any]:
    """Documents finished in the window, per file type and status, with their chunks."""
    try:
        counts = task_figures.document_counts(url, since)
    except sa_exc.SQLAlchemyError as exc:
        log.warning("report: document figures unavailable: %s", error_text(exc))
        return {"error": error_text(exc)}
    by_type: dict[str, dict[str, int]] = {}
    for count in counts:
        entry = by_type.setdefault(count.file_type or "unknown", {"documents": 0, "chunks": 0})
        entry["documents"] += count.documents
        entry["chunks"] += count.chunks
        entry[count.status] = entry.get(count.status, 0) + count.documents
    return {
        "documents": sum(e["documents"] for e in by_type.values()),
        "chunks": sum(e["chunks"] for e in by_type.values()),
        "by_file_type": dict(sorted(by_type.items())),
    }


def task_report(settings: Settings, hours: float = 24.0, now: float | None = None, write: bool = True) -> TaskReport:
    """Figures of the tasks that were active in the last ``hours``; written as JSON, Markdown and CSV."""
    if not hours > 0 or not math.isfinite(hours):
        raise ValueError(f"hours must be a positive number, got {hours!r}")
    now = time.time() if now is None else now
    since = now - hours * 3600
    url = settings.database_url_resolved
    rows = task_figures.report_rows(url, utc(since), utc(now))
    per_name: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        per_name[row.name or "unknown"].append(row)
    tasks = {name: _figures(group, hours) for name, group in sorted(per_name.items())}
    errors: Counter[tuple[str, str]] = Counter()
    error_tasks: dict[tuple[str, str], set[str]] = defaultdict(set)
    for row in rows:
        if row.state == "failure":
            message = (row.error_message or "").strip().splitlines()
            key = (row.error_type or "unknown", (message[0] if message else "")[:200])
            errors[key] += 1
            error_tasks[key].add(row.name or "unknown")
    top_errors = tuple(
        {"error_type": etype, "message": message, "count": count, "tasks": sorted(error_tasks[(etype, message)])}
        for (etype, message), count in errors.most_common(10)
    )
    report = TaskReport(
        generated_at=now,
        since=since,
        hours=hours,
        tasks=tasks,
        totals=_figures(rows, hours),
        top_errors=top_errors,
        documents=_document_figures(url, utc(since)),
    )
    if write:
        report = TaskReport(**{**report.__dict__, "files": write_report(report, settings.reports_dir)})
    return report


def write_report(report: TaskReport, directory: Path) -> dict[str, str]:
    """Write ``task-report-<UTC time>.{json,md,csv}``; returns the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromtimestamp(report.generated_at, UTC).strftime("%Y%m%dT%H%M%SZ")
    base = directory / f"task-report-{stamp}"
    paths = {"json": base.with_suffix(".json"), "markdown": base.with_suffix(".md"), "csv": base.with_suffix(".csv")}
    data = report.as_dict()
    data.pop("files", None)
    _atomic_write(paths["json"], json.dumps(data, indent=2, default=str))
    _atomic_write(paths["markdown"], render_markdown(report))
    _atomic_write(paths["csv"], render_csv(report))
    return {kind: str(path) for kind, path in paths.items()}


def _atomic_write(path: Path, content: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(content, encoding="utf-8", newline="")
    os.replace(tmp, path)


CSV_COLUMNS = (
    "count",
    "succeeded",
    "failed",
    "retried",
    "revoked",
    "success_rate",
    "runtime_p50_s",
    "runtime_p95_s",
    "runtime_max_s",
    "wait_p50_s",
    "wait_p95_s",
    "throughput_per_hour",
)


def render_csv(report: TaskReport) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("task", *CSV_COLUMNS))
    for name, figures in report.tasks.items():
        writer.writerow((name, *("" if figures[c] is None else figures[c] for c in CSV_COLUMNS)))
    writer.writerow(("TOTAL", *("" if report.totals[c] is None else report.totals[c] for c in CSV_COLUMNS)))
    return out.getvalue()


def _md(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))
    return str(value).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: TaskReport) -> str:
    since = datetime.fromtimestamp(report.since, UTC).strftime("%Y-%m-%d %H:%M UTC")
    until = datetime.fromtimestamp(report.generated_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# MIDAS task report", "", f"{since} – {until} ({_md(report.hours)} h)", "", "## Tasks", ""]
    header = ("task", *CSV_COLUMNS)
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for name, figures in [*report.tasks.items(), ("**total**", report.totals)]:
        lines.append("| " + " | ".join([_md(name), *(_md(figures[c]) for c in CSV_COLUMNS)]) + " |")
    lines += ["", "## Most frequent errors", ""]
    if report.top_errors:
        lines += ["| count | error | message | tasks |", "|---|---|---|---|"]
        for err in report.top_errors:
            names = ", ".join(err["tasks"])
            lines.append(f"| {err['count']} | {_md(err['error_type'])} | {_md(err['message'])} | {_md(names)} |")
    else:
        lines.append("No failures.")
    lines += ["", "## Documents", ""]
    docs = report.documents
    if not docs or "by_file_type" not in docs:
        lines.append("Document store not available." if not docs else f"Unavailable: {docs.get('error')}")
    else:
        lines += ["| file type | documents | chunks | success | failed | rejected |", "|---|---|---|---|---|---|"]
        for ftype, entry in docs["by_file_type"].items():
            lines.append(
                f"| {_md(ftype)} | {entry['documents']} | {entry['chunks']} | {entry.get('success', 0)} "
                f"| {entry.get('failed', 0)} | {entry.get('rejected', 0)} |"
            )
        lines.append(f"| **total** | {docs['documents']} | {docs['chunks']} | | | |")
    return "\n".join(lines) + "\n"
