"""Shared by the benchmarks: a private Redis and real workers, the corpus, tables."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from tests.support import RedisServer, WorkerProcess  # noqa: E402


def corpus_dir() -> Path:
    path = Path(os.environ.get("MIDAS_TEST_CORPUS") or PROJECT_ROOT.parent / "shared" / "corpus")
    if not path.is_dir():
        raise SystemExit(f"corpus not found at {path}; set MIDAS_TEST_CORPUS")
    return path


def corpus_files() -> list[Path]:
    return sorted(p for p in corpus_dir().glob("*/*") if p.is_file() and p.parent.name != "_expected")


def bench_env(data_dir: Path, extra_roots: Sequence[Path] = (), **extra: str) -> dict[str, str]:
    """Environment for a benchmark run: private data dir, the corpus allowed, no stability wait."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIDAS_", "REDIS_", "POSTGRES_"))}
    env.update(
        {
            "MIDAS_DATA_DIR": str(data_dir),
            "MIDAS_LOG_DIR": str(data_dir / "logs"),
            "MIDAS_ENV_FILE": os.devnull,
            "MIDAS_LAUNCH_FILE": os.devnull,
            "MIDAS_ALLOWED_ROOTS": os.pathsep.join(
                [str(corpus_dir()), str(data_dir), str(PROJECT_ROOT / "samples"), *map(str, extra_roots)]
            ),
            "MIDAS_WATCH_DIRS": str(data_dir / "watch"),
            "MIDAS_STABILITY_SECONDS": "0",
            "REDIS_HOST": "127.0.0.1",
        }
    )
    env.update(extra)
    data_dir.mkdir(parents=True, exist_ok=True)
    return env


class Stack:
    def __init__(self, app, redis: RedisServer, worker: WorkerProcess, env: dict[str, str]) -> None:
        self.app, self.redis, self.worker, self.env = app, redis, worker, env

    def send(self, name: str, *args):
        return self.app.send_task(name, args=list(args))

    def wait_idle(self, timeout: float = 1800) -> None:
        """Until nothing waits in a queue and the worker runs or holds nothing (follow-up work included)."""
        from background_tasks.settings import QUEUES

        client = self.redis.client()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            inspect = self.app.control.inspect(timeout=1.0, destination=[self.worker.hostname])
            busy = [*(inspect.active() or {}).values(), *(inspect.reserved() or {}).values()]
            if not any(busy) and not any(client.llen(q) for q in QUEUES):
                return
            time.sleep(0.3)
        raise TimeoutError("the worker did not become idle")

    def _results_db(self) -> str:
        from background_tasks.settings import load_settings

        url = load_settings(self.env, env_file=Path(os.devnull)).result_backend_url
        return url.removeprefix("db+sqlite:///")

    def last_finished(self) -> float:
        """Wall-clock time (epoch s) at which the last task's result was stored."""
        import sqlite3

        with closing(sqlite3.connect(self._results_db())) as db:
            (done,) = db.execute("SELECT max(date_done) FROM celery_taskmeta").fetchone()
        return datetime.fromisoformat(done).replace(tzinfo=UTC).timestamp()

    def wait_results(self, results: Sequence, timeout: float = 1800) -> None:
        """Until every result is stored; raises unless each is a SUCCESS with a dict.

        One connection and one query per half second: polling each AsyncResult
        (a new engine per call) would take CPU from the worker being measured.
        """
        import json
        import sqlite3

        ids = [r.id for r in results]
        deadline = time.monotonic() + timeout
        with closing(sqlite3.connect(self._results_db(), timeout=30)) as db:
            while True:
                rows: dict[str, tuple[str, bytes]] = {}
                for start in range(0, len(ids), 500):
                    part = ids[start : start + 500]
                    marks = ",".join("?" * len(part))
                    query = f"SELECT task_id, status, result FROM celery_taskmeta WHERE task_id IN ({marks})"
                    rows.update({t: (st, r) for t, st, r in db.execute(query, part)})
                if sum(1 for st, _ in rows.values() if st in ("SUCCESS", "FAILURE")) == len(ids):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(ids) - len(rows)} results missing after {timeout} s")
                time.sleep(0.5)
        for task_id, (status, blob) in rows.items():
            value = json.loads(blob) if blob else None
            if status != "SUCCESS" or not isinstance(value, dict):
                raise RuntimeError(f"task {task_id} ended {status}: {value!r}")

    def makespan(self, results: Sequence, started: float) -> float:
        """Seconds from ``started`` (time.time()) until every task, follow-ups included, had finished."""
        self.wait_results(results)
        self.wait_idle()
        return self.last_finished() - started


@contextmanager
def private_stack(
    root: Path, concurrency: int = 2, extra_roots: Sequence[Path] = (), **extra_env: str
) -> Iterator[Stack]:
    """A private redis-server and one real worker on all queues."""
    import celery_config
    from background_tasks.settings import load_settings

    redis = RedisServer(root / "redis")
    redis.start()
    env = bench_env(root / "data", extra_roots, REDIS_PORT=str(redis.port), **extra_env)
    app = celery_config.create_app(load_settings(env, env_file=Path(os.devnull)))
    worker = WorkerProcess(env=env, log_dir=root / "logs", concurrency=concurrency)
    try:
        worker.wait_ready(app)
        yield Stack(app, redis, worker, env)
    finally:
        worker.stop()
        redis.kill()


def print_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
