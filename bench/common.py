"""Shared by the benchmarks: a private Redis and real workers, the corpus, tables."""

from __future__ import annotations

import os
import sys
import time
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from tests.support import RedisServer, WorkerProcess  # noqa: E402


def _corpus_path() -> Path:
    return Path(os.environ.get("MIDAS_TEST_CORPUS") or PROJECT_ROOT.parent / "shared" / "corpus")


def has_corpus() -> bool:
    """Whether the shared corpus is here (it is not part of a user's clone)."""
    return _corpus_path().is_dir()


def corpus_dir() -> Path:
    path = _corpus_path()
    if not path.is_dir():
        raise SystemExit(f"corpus not found at {path}; set MIDAS_TEST_CORPUS")
    return path


def corpus_files() -> list[Path]:
    return sorted(p for p in corpus_dir().glob("*/*") if p.is_file() and p.parent.name != "_expected")


TEXT_LIKE = {".txt", ".md", ".log", ".csv", ".eml"}
MARKUP = {".html", ".xml"}
ZIPPED = {".docx", ".xlsx", ".odt"}


def make_variant(source: Path, target: Path, index: int) -> bool:
    """Write a distinct copy of ``source``; False when the format cannot take a marker safely."""
    data = source.read_bytes()
    marker = f"midas-bench-{index}"
    if source.suffix in TEXT_LIKE:
        target.write_bytes(data + f"\n{marker}\n".encode())
    elif source.suffix in MARKUP:
        target.write_bytes(data + f"\n<!-- {marker} -->\n".encode())
    elif source.suffix == ".pdf":
        target.write_bytes(data + f"\n%{marker}\n".encode())
    elif source.suffix in ZIPPED:
        target.write_bytes(data)
        try:
            with zipfile.ZipFile(target, "a") as archive:
                archive.comment = marker.encode()
        except (zipfile.BadZipFile, OSError):
            target.unlink()
            return False
    else:
        return False
    return True


def build_documents(folder: Path, count: int, sources: Sequence[Path] | None = None) -> list[str]:
    """``count`` distinct documents: every source (the corpus by default) once as it is, then marked copies."""
    sources = list(sources) if sources is not None else corpus_files()
    paths = [str(p) for p in sources]
    index = 0
    while len(paths) < count:
        if index >= 2 * len(sources) and len(paths) == len(sources):
            raise ValueError("none of the sources can take a marker")
        source = sources[index % len(sources)]
        target = folder / f"{index:05d}-{source.name}"
        if make_variant(source, target, index):
            paths.append(str(target))
        index += 1
    return paths[:count]


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
                [
                    *([str(_corpus_path())] if has_corpus() else []),
                    str(data_dir),
                    str(PROJECT_ROOT / "samples"),
                    *map(str, extra_roots),
                ]
            ),
            "MIDAS_WATCH_DIRS": str(data_dir / "watch"),
            "MIDAS_STABILITY_SECONDS": "0",
            "REDIS_HOST": "127.0.0.1",
        }
    )
    env.update(extra)
    data_dir.mkdir(parents=True, exist_ok=True)
    return env


class ResultsDb:
    """Celery's result table (SQLite or PostgreSQL), read with one connection per call.

    One query per half second for all results: polling each AsyncResult (a new
    engine per call) would take CPU from the workers being measured.
    """

    def __init__(self, backend_url: str) -> None:
        self.url = backend_url.removeprefix("db+")

    @contextmanager
    def _connection(self) -> Iterator:
        from sqlalchemy import create_engine

        engine = create_engine(self.url, connect_args={"timeout": 30} if self.url.startswith("sqlite") else {})
        try:
            with engine.connect() as connection:
                yield connection
        finally:
            engine.dispose()

    def collect(self, results: Sequence, timeout: float = 1800) -> dict[str, tuple[str, object]]:
        """Task id -> (state, value) once every result has ended, or what has ended by ``timeout``."""
        import json

        from sqlalchemy import bindparam, text

        query = text("SELECT task_id, status, result FROM celery_taskmeta WHERE task_id IN :ids").bindparams(
            bindparam("ids", expanding=True)
        )
        ids = [r.id for r in results]
        deadline = time.monotonic() + timeout
        with self._connection() as db:
            while True:
                rows: dict[str, tuple[str, bytes]] = {}
                for start in range(0, len(ids), 500):
                    rows.update({t: (st, r) for t, st, r in db.execute(query, {"ids": ids[start : start + 500]})})
                db.commit()  # end the read transaction: the next poll sees new rows
                ended = {t: (st, r) for t, (st, r) in rows.items() if st in ("SUCCESS", "FAILURE")}
                if len(ended) == len(ids) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
        return {t: (st, json.loads(bytes(blob)) if blob else None) for t, (st, blob) in ended.items()}

    def wait(self, results: Sequence, timeout: float = 1800) -> dict[str, dict]:
        """Until every result is stored; task id -> its value. Raises unless each is a SUCCESS with a dict."""
        ended = self.collect(results, timeout)
        if len(ended) < len(results):
            raise TimeoutError(f"{len(results) - len(ended)} results missing after {timeout} s")
        for task_id, (status, value) in ended.items():
            if status != "SUCCESS" or not isinstance(value, dict):
                raise RuntimeError(f"task {task_id} ended {status}: {value!r}")
        return {task_id: value for task_id, (_, value) in ended.items()}

    def last_finished(self) -> float:
        """Wall-clock time (epoch s) at which the last task's result was stored."""
        from sqlalchemy import text

        with self._connection() as db:
            done = db.execute(text("SELECT max(date_done) FROM celery_taskmeta")).scalar_one()
        done = datetime.fromisoformat(done) if isinstance(done, str) else done
        return done.replace(tzinfo=UTC).timestamp()

    def per_worker(self) -> dict[str, int]:
        """How many results each worker stored (the app keeps extended results)."""
        from sqlalchemy import text

        with self._connection() as db:
            rows = db.execute(text("SELECT worker, count(*) FROM celery_taskmeta GROUP BY worker"))
            return {str(worker): int(n) for worker, n in rows}


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

    def results(self) -> ResultsDb:
        from background_tasks.settings import load_settings

        return ResultsDb(load_settings(self.env, env_file=Path(os.devnull)).result_backend_url)

    def last_finished(self) -> float:
        """Wall-clock time (epoch s) at which the last task's result was stored."""
        return self.results().last_finished()

    def wait_results(self, results: Sequence, timeout: float = 1800) -> None:
        """Until every result is stored; raises unless each is a SUCCESS with a dict."""
        self.results().wait(results, timeout)

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
