"""Task history cost on a task's own path: the signal hooks against bare signal dispatch.

    python -m bench bench_history [--count 2000]

The hooks for publish, prerun and postrun only queue an event; a background
thread writes them. This measures, in one process and one run: the three
signals with MIDAS's receivers connected, the same three with the history
receivers disconnected (baseline), and the time until the writer thread has
stored every row in SQLite. Target: the hooks add well under 1 ms per task.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

from bench.common import print_table
from tests.support import fire_task_signals

PING = "background_tasks.system_tasks.ping"


def run(count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        fire_task_signals(f"bench-{uuid.uuid4().hex}", PING, args=("x",), retval={"ok": 1})
    return (time.perf_counter() - started) * 1000 / count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000)
    args = parser.parse_args(argv)
    from celery import signals

    import celery_config  # noqa: F401  (registers the tasks and connects the hooks)
    from background_tasks.ops import history_signals
    from background_tasks.ops.history_recorder import Recorder

    with tempfile.TemporaryDirectory(prefix="midas-bench-history-") as tmp:
        local = Recorder(f"sqlite:///{Path(tmp) / 'history.sqlite3'}")
        original = history_signals.recorder
        history_signals.recorder = local
        try:
            run(50)  # warm up: imports, writer thread, schema
            local.flush(60)
            written_before = local.written
            started = time.perf_counter()
            hooked = run(args.count)
            local.flush(600)  # the writer thread works while the hooks run; this waits for the rest
            stored = (time.perf_counter() - started) * 1000 / args.count
            rows = local.written - written_before
            hooks = [
                (signals.before_task_publish, history_signals._on_publish),
                (signals.task_prerun, history_signals._on_prerun),
                (signals.task_postrun, history_signals._on_postrun),
            ]
            for signal, receiver in hooks:
                signal.disconnect(receiver)
            try:
                bare = run(args.count)
            finally:
                for signal, receiver in hooks:
                    signal.connect(receiver, weak=False)
        finally:
            history_signals.recorder = original
    print_table(
        ("path", "count", "ms/task"),
        [
            ("signals without history hooks (baseline)", args.count, f"{bare:.3f}"),
            ("signals with history hooks", args.count, f"{hooked:.3f}"),
            ("hooks until every row is stored (writer thread)", rows // 3, f"{stored:.3f}"),
        ],
    )
    added = hooked - bare
    print(f"\nhooks add {added:.3f} ms/task ({hooked / bare:.1f}x bare dispatch); target < 1 ms; rows written {rows}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
