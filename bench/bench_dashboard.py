"""Dashboard speed with 100,000 task history rows, against the 2-second page budget.

    python -m bench.bench_dashboard [--rows 100000] [--runs 3]

Builds a temporary SQLite database, times every dashboard query and every
section's full render (``streamlit.testing`` AppTest run of
``Streamlit_Task_Monitoring.py``) on it empty, then seeds ``--rows`` task
history rows spread over the last 7 days (plus documents with chunks and a
week of health samples) and times the same again. Prints each figure against
the 2 s budget and its ratio to the empty database, both measured in this run.
Redis is left unreachable on purpose, so the figures are the database's; with
Redis up, the live parts add the worker ping (0.5 s).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from background_tasks.storage.schema import create_schema
from bench.common import PROJECT_ROOT, print_table
from tests.support import free_port

BUDGET_S = 2.0
PAGE = PROJECT_ROOT / "Streamlit_Task_Monitoring.py"
SECTIONS = ("Overview", "Live tasks", "System health", "Task history", "Performance", "Documents", "Actions")
TASK_NAMES = {
    "background_tasks.document_tasks.process_document_file": ("documents", 0.6),
    "background_tasks.document_tasks.extract_document_metadata": ("documents", 0.1),
    "background_tasks.document_tasks.process_document_batch": ("documents", 0.05),
    "background_tasks.monitoring_tasks.system_health_check": ("monitoring", 0.03),
    "background_tasks.monitoring_tasks.check_task_queue": ("monitoring", 0.1),
    "background_tasks.system_tasks.ping": ("default", 0.05),
    "background_tasks.system_tasks.sleep": ("default", 0.02),
    "background_tasks.analysis_tasks.analyze_document": ("analysis", 0.05),
}


def bench_settings(root: Path) -> Any:
    from background_tasks.settings import load_settings

    (root / "watch").mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIDAS_", "REDIS_", "POSTGRES_", "FLOWER_"))}
    env.update(
        {
            "MIDAS_DATA_DIR": str(root / "data"),
            "MIDAS_LOG_DIR": str(root / "logs"),
            "MIDAS_WATCH_DIRS": str(root / "watch"),
            "MIDAS_ENV_FILE": os.devnull,
            "MIDAS_LAUNCH_FILE": os.devnull,
            "REDIS_HOST": "127.0.0.1",
            "REDIS_PORT": str(free_port()),  # nothing listens: the database is what is measured
        }
    )
    return load_settings(env, env_file=Path(os.devnull))


# --------------------------------------------------------------------------
# Seeding
# --------------------------------------------------------------------------


def synthetic_rows(count: int, now: float, rng: random.Random) -> list[dict[str, Any]]:
    """Task history rows over the last 7 days: mostly successes, a few failures, retries and running tasks."""
    names = list(TASK_NAMES)
    weights = [40, 5, 2, 10, 10, 20, 8, 5]
    rows = []
    for i in range(count):
        name = rng.choices(names, weights)[0]
        queue, median_run = TASK_NAMES[name]
        sent = now - rng.uniform(0, 7 * 86400)
        wait = rng.expovariate(1 / 0.2)
        run = rng.lognormvariate(0, 0.8) * median_run
        roll = rng.random()
        state = "success" if roll < 0.95 else "failure" if roll < 0.985 else "retry" if roll < 0.995 else "started"
        finished = sent + wait + run if state in ("success", "failure") else None
        failed = state == "failure"
        rows.append(
            {
                "task_id": str(uuid.UUID(int=rng.getrandbits(128))),
                "name": name,
                "queue": queue,
                "worker": f"worker-{1 + i % 2}@benchhost",
                "state": state,
                "seq": 5,
                "retries": 1 if state == "retry" else 0,
                "args_summary": f"'/srv/inbox/file-{i}.pdf'" if queue == "documents" else "",
                "sent_at": datetime.fromtimestamp(sent, UTC),
                "received_at": datetime.fromtimestamp(sent + wait / 2, UTC),
                "started_at": datetime.fromtimestamp(sent + wait, UTC),
                "finished_at": datetime.fromtimestamp(finished, UTC) if finished else None,
                "wait_s": wait,
                "runtime_s": run if finished else None,
                "result_summary": "status='success', chunks_created=3" if state == "success" else None,
                "error_type": "CorruptDocument (corrupt)" if failed else None,
                "error_message": f"file-{i}.pdf: PDF is damaged (page tree {i % 97})" if failed else None,
                "traceback": "Traceback (most recent call last):\n  ...\nCorruptDocument: damaged" if failed else None,
            }
        )
    return rows


def seed(settings: Any, rows: int, documents: int, rng: random.Random) -> dict[str, float]:
    """Write the rows, documents and health samples; returns the seconds each took."""
    from background_tasks.ops import monitoring
    from background_tasks.ops.task_history import TaskRecord
    from background_tasks.processing.chunking import chunk_text
    from background_tasks.storage.db import get_engine
    from background_tasks.storage.store import DocumentStore

    url = settings.database_url_resolved
    create_schema(url)
    now = time.time()
    took = {}
    started = time.perf_counter()
    data = synthetic_rows(rows, now, rng)
    engine = get_engine(url)
    with engine.begin() as conn:
        for i in range(0, len(data), 5000):
            conn.execute(TaskRecord.__table__.insert(), data[i : i + 5000])
    took["task rows"] = time.perf_counter() - started

    started = time.perf_counter()
    store = DocumentStore(url)
    words = ["aurora", "glacier", "budget", "committee", "fjord", "invoice", "contract", "minutes", "report", "survey"]
    for i in range(documents):
        text = " ".join(rng.choice(words) for _ in range(400)) + f" document{i}"
        sha = uuid.UUID(int=rng.getrandbits(128)).hex * 2
        path = f"/srv/inbox/doc-{i}.txt"
        claim = store.claim(sha, path, "txt", "text/plain", len(text))
        if i % 20 == 0:
            store.record_failure(path, "failed", "corrupt", "damaged file", sha256=sha, document_id=claim.document_id)
        else:
            store.record_success(claim.document_id, {"words": 400}, chunk_text(text, 1000, 200), len(text))
    took["documents"] = time.perf_counter() - started

    started = time.perf_counter()
    for i in range(7 * 288):  # one sample every 5 minutes for a week
        report = monitoring.HealthReport(
            checked_at=now - 300 * i,
            status="ok",
            reasons=(),
            system={"cpu_percent": rng.uniform(5, 60), "memory_percent": rng.uniform(30, 50)},
            disks={"data_dir": {"percent": 40.0}},
            redis={"ok": True, "used_memory": 2_000_000 + i * 100},
            celery={"responding": 2, "active_tasks": rng.randint(0, 4)},
            queues={"default": {"waiting": rng.randint(0, 10)}},
            watcher={},
            duration_s=0.6,
        )
        monitoring.store_health_sample(url, report)
    took["health samples"] = time.perf_counter() - started
    return took


# --------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------


def median_time(fn: Callable[[], Any], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def queries(settings: Any) -> dict[str, Callable[[], Any]]:
    """Every data function a section calls, with the arguments the page passes by default."""
    from background_tasks.ops import dashboard_data as dd

    url = settings.database_url_resolved
    now = time.time()
    day = dd.HistoryFilter(since=now - 86400)
    return {
        "overview figures": lambda: dd.overview(url),
        "stored health verdict": lambda: dd.stored_verdict(settings),
        "CPU over the window": lambda: dd.cpu_over_window(settings, 50.0),
        "health series, 7 days": lambda: dd.health_series(url, 168),
        "history page 1 (24 h)": lambda: dd.history_page(url, day, 1, 50),
        "history page 200 (all)": lambda: dd.history_page(url, dd.HistoryFilter(), 200, 50),
        "history failures, 7 days": lambda: dd.history_page(
            url, dd.HistoryFilter(states=("failure",), since=now - 7 * 86400), 1, 50
        ),
        "history text search (24 h)": lambda: dd.history_page(
            url, dd.HistoryFilter(since=now - 86400, text="page tree 42"), 1, 50
        ),
        "history text search (all)": lambda: dd.history_page(url, dd.HistoryFilter(text="page tree 42"), 1, 50),
        "task names": lambda: dd.distinct_values(url, "name"),
        "task detail": lambda: dd.task_detail(url, "no-such-task"),
        "throughput, 24 h": lambda: dd.throughput(url, 24),
        "throughput, 1 h (per minute)": lambda: dd.throughput(url, 1),
        "per-task p50/p95, 24 h": lambda: dd.performance_by_name(url, 24),
        "per-task p50/p95, 7 days": lambda: dd.performance_by_name(url, 168),
        "documents page": lambda: dd.documents_page(url, 1, 50),
        "document search": lambda: dd.search_documents(url, "aurora glacier", 20),
        "document stats": lambda: dd.document_stats(url),
    }


def render(settings: Any, section: str) -> float:
    """One full AppTest run of a section; fails loudly if the page shows an exception."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(PAGE), default_timeout=60)
    at.session_state["midas_settings"] = settings
    at.query_params["section"] = section
    started = time.perf_counter()
    at.run()
    took = time.perf_counter() - started
    if at.exception:
        raise RuntimeError(f"{section}: {[e.value for e in at.exception]}")
    return took


def measure(settings: Any, runs: int) -> tuple[dict[str, float], dict[str, float]]:

    create_schema(settings.database_url_resolved)
    q = {name: median_time(fn, runs) for name, fn in queries(settings).items()}
    render(settings, "Overview")  # warm-up: imports, schema check, Celery app
    pages = {section: statistics.median(render(settings, section) for _ in range(runs)) for section in SECTIONS}
    return q, pages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_dashboard", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="task history rows to seed")
    parser.add_argument("--documents", type=int, default=500, help="documents (with chunks) to seed")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per item (median)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    # Every call outside a running page logs "missing ScriptRunContext", which is expected here;
    # Streamlit resets its loggers' levels when a page runs, so the message is filtered instead.
    logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").addFilter(
        lambda record: "missing ScriptRunContext" not in record.getMessage()
    )

    with tempfile.TemporaryDirectory(prefix="midas-bench-dashboard-") as tmp:
        empty_settings = bench_settings(Path(tmp) / "empty")
        full_settings = bench_settings(Path(tmp) / "full")
        empty_q, empty_pages = measure(empty_settings, args.runs)
        seeded = seed(full_settings, args.rows, args.documents, random.Random(42))
        print("seeded: " + ", ".join(f"{k} {v:.1f} s" for k, v in seeded.items()))
        full_q, full_pages = measure(full_settings, args.runs)
        db_size = sum(p.stat().st_size for p in (Path(tmp) / "full" / "data").glob("midas.sqlite3*"))

    print(f"\nQueries (median of {args.runs}; SQLite, {args.rows:,} task rows, {db_size / 1e6:.0f} MB)")
    rows = [
        (name, f"{empty_q[name] * 1000:.1f}", f"{full_q[name] * 1000:.1f}", _ratio(full_q[name], empty_q[name]))
        for name in full_q
    ]
    print_table(("query", "empty ms", f"{args.rows:,} rows ms", "ratio"), rows)

    print(f"\nPage renders (AppTest run, median of {args.runs}; budget {BUDGET_S:g} s)")
    over = [s for s, t in full_pages.items() if t >= BUDGET_S]
    rows = [
        (
            section,
            f"{empty_pages[section]:.3f}",
            f"{full_pages[section]:.3f}",
            _ratio(full_pages[section], empty_pages[section]),
            "ok" if full_pages[section] < BUDGET_S else "OVER",
        )
        for section in SECTIONS
    ]
    print_table(("section", "empty s", f"{args.rows:,} rows s", "ratio", f"< {BUDGET_S:g} s"), rows)
    print("\nAll sections within budget." if not over else f"\nOver budget: {', '.join(over)}")
    return 1 if over else 0


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base > 0 else "–"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
