"""Benchmark of the file watcher (not a test): latency, burst throughput, CPU and memory.

    .venv/bin/python bench/bench_watcher.py [--idle-seconds 60] [--burst 2000] [--latency-files 20]

Everything runs against a private redis-server on a free port and a throwaway
data dir; nothing touches the user's Redis, data or folders. Figures:

* latency from a file's last write to its task starting on a real, idle worker
  (Celery's task-started event), p50/p95, next to the stability window;
* time for a burst of files (default 2,000) written at once to be all enqueued
  (the worker is stopped, so the queue length counts exactly what was sent);
* the watcher's CPU and memory while idle (default one minute) and while ingesting;
* a restart with the burst in the history: how long the initial scan takes and
  that it enqueues nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

import psutil  # noqa: E402

from tests.support import RedisServer, WorkerProcess, free_port, wait_until  # noqa: E402


class BenchRedis(RedisServer):
    """A private redis-server configured like the launcher's (append-only, fsync every second by default)."""

    def __init__(self, data_dir: Path, fsync: str) -> None:
        super().__init__(data_dir, port=free_port())
        self.fsync = fsync

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
             "--appendonly", "yes", "--appendfsync", self.fsync, "--save", "", "--maxmemory-policy", "noeviction",
             "--logfile", str(self.data_dir / "redis.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(lambda: self.client().ping(), 15, what=f"redis on port {self.port}")


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * pct / 100
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


class Sampler:
    """CPU time and resident memory of one process over a phase."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.rss: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.rss.append(self.proc.memory_info().rss)
            except psutil.NoSuchProcess:
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        times = self.proc.cpu_times()
        self._cpu0 = times.user + times.system
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        times = self.proc.cpu_times()
        self.cpu_s = times.user + times.system - self._cpu0
        self.wall_s = time.monotonic() - self._t0
        self._stop.set()
        self._thread.join()

    def figures(self) -> dict[str, float]:
        return {
            "wall_s": round(self.wall_s, 2),
            "cpu_s": round(self.cpu_s, 3),
            "cpu_percent": round(100 * self.cpu_s / self.wall_s, 2) if self.wall_s else 0.0,
            "rss_mb_max": round(max(self.rss) / 2**20, 1) if self.rss else 0.0,
            "rss_mb_end": round(self.rss[-1] / 2**20, 1) if self.rss else 0.0,
        }


class Watcher:
    def __init__(self, env: dict[str, str], folder: Path, log_path: Path) -> None:
        self.log_path = log_path
        self._out = log_path.open("ab")
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "background_tasks.file_watcher", "--only", "-d", str(folder)],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_line(self, text: str, occurrence: int = 1, timeout: float = 120) -> float:
        def seen() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"watcher exited with {self.process.returncode}:\n{self.output()[-2000:]}")
            return self.output().count(text) >= occurrence

        wait_until(seen, timeout, interval=0.02, what=f"watcher log line {text!r}")
        return time.monotonic()

    def stop(self) -> float:
        start = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(60)
        self._out.close()
        return time.monotonic() - start


def capture_events(app: Any, started: dict[str, float], stop: threading.Event) -> None:
    """Record the timestamp of every task-started event (sent by the worker)."""

    def on_started(event: dict[str, Any]) -> None:
        started[event["uuid"]] = event["timestamp"]

    try:
        with app.connection() as conn:
            receiver = app.events.Receiver(conn, handlers={"task-started": on_started})
            for _ in receiver.itercapture(limit=None, timeout=None, wakeup=True):
                if stop.is_set():
                    break
    except Exception:  # Redis is stopped at the end of the run
        if not stop.is_set():
            raise


def task_ids_by_path(db: Path) -> dict[str, str]:
    import sqlite3

    with sqlite3.connect(db, timeout=30) as conn:
        return {p: t for p, t in conn.execute("SELECT path, task_id FROM watcher_history WHERE task_id IS NOT NULL")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stability", type=float, default=2.0, help="MIDAS_STABILITY_SECONDS (default 2, as shipped)")
    parser.add_argument("--latency-files", type=int, default=20, help="files for the latency figure (default 20)")
    parser.add_argument("--latency-gap", type=float, default=0.5, help="seconds between those files (default 0.5)")
    parser.add_argument("--burst", type=int, default=2000, help="files written at once (default 2000)")
    parser.add_argument("--idle-seconds", type=float, default=60.0, help="idle measurement (default 60)")
    parser.add_argument(
        "--fsync",
        choices=["everysec", "always"],
        default="everysec",
        help="Redis appendfsync: everysec as the launcher runs it (default), always as the test suite does",
    )
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="midas-bench-watcher-"))
    watch = work / "watch"
    watch.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIDAS_", "REDIS_", "POSTGRES_"))}
    redis_server = BenchRedis(work / "redis", args.fsync)
    env.update(
        {
            "REDIS_HOST": "127.0.0.1",
            "REDIS_PORT": str(redis_server.port),
            "MIDAS_DATA_DIR": str(work / "data"),
            "MIDAS_LOG_DIR": str(work / "logs"),
            "MIDAS_ENV_FILE": os.devnull,
            "MIDAS_LAUNCH_FILE": os.devnull,
            "MIDAS_WATCH_DIRS": str(watch),
            "MIDAS_STABILITY_SECONDS": str(args.stability),
            "MIDAS_WORKER_CONCURRENCY": "2",
        }
    )
    os.environ.clear()
    os.environ.update(env)  # before any MIDAS module reads its settings

    from background_tasks.settings import load_settings
    from celery_config import create_app

    app = create_app(load_settings())
    figures: dict[str, Any] = {"stability_window_s": args.stability, "cpus": os.cpu_count(), "fsync": args.fsync}
    redis_server.start()
    worker: WorkerProcess | None = None
    watcher: Watcher | None = None
    stop_events = threading.Event()
    try:
        worker = WorkerProcess(env=env, log_dir=work / "logs", queues=("documents",), concurrency=2, name="bench")
        worker.wait_ready(app)
        started: dict[str, float] = {}
        threading.Thread(target=capture_events, args=(app, started, stop_events), daemon=True).start()
        watcher = Watcher(env, watch, work / "logs" / "watcher-1.out")
        watcher.wait_for_line("initial scan")
        figures["watcher_start_s"] = round(time.monotonic() - watcher.started, 2)

        # 1. Latency: one file at a time onto an idle worker.
        print(f"latency: {args.latency_files} files, one every {args.latency_gap} s ...", flush=True)
        last_write: dict[str, float] = {}
        for i in range(args.latency_files):
            path = watch / f"latency {i:03}.txt"
            with path.open("w") as handle:
                handle.write(f"latency probe {i} {uuid.uuid4().hex}\n" * 50)
            last_write[str(path)] = time.time()
            time.sleep(args.latency_gap)
        db = work / "data" / "midas.sqlite3"

        def all_enqueued() -> dict[str, str] | None:
            known = task_ids_by_path(db)
            return known if all(p in known for p in last_write) else None

        ids = wait_until(all_enqueued, 60, what="latency files enqueued")
        wait_until(lambda: all(ids[p] in started for p in last_write), 60, what="task-started events")
        latencies = [started[ids[p]] - t for p, t in last_write.items()]
        figures["latency_s"] = {
            "p50": round(percentile(latencies, 50), 3),
            "p95": round(percentile(latencies, 95), 3),
            "min": round(min(latencies), 3),
            "max": round(max(latencies), 3),
            "over_window_p50": round(percentile(latencies, 50) - args.stability, 3),
        }
        worker.stop()
        worker = None
        client = redis_server.client()
        client.delete("documents")

        # 2. Idle.
        print(f"idle: {args.idle_seconds:g} s ...", flush=True)
        with Sampler(watcher.process.pid, interval=0.5) as idle:
            time.sleep(args.idle_seconds)
        figures["idle"] = idle.figures()

        # 3. A burst written at once; the worker is stopped, so the queue counts what was sent.
        print(f"burst: {args.burst} files ...", flush=True)
        with Sampler(watcher.process.pid) as ingest:
            t0 = time.monotonic()
            for i in range(args.burst):
                (watch / f"burst{i // 500}").mkdir(exist_ok=True)
                (watch / f"burst{i // 500}" / f"file {i:05}.txt").write_text(f"burst file {i} {uuid.uuid4().hex}\n")
            written = time.monotonic()
            wait_until(lambda: client.llen("documents") >= args.burst, 300, interval=0.02, what="burst enqueued")
            done = time.monotonic()
        figures["burst"] = {
            "files": args.burst,
            "write_s": round(written - t0, 2),
            "all_enqueued_after_last_write_s": round(done - written, 2),
            "all_enqueued_after_first_write_s": round(done - t0, 2),
            "files_per_s_beyond_window": round(args.burst / max(1e-9, done - written - args.stability), 1),
            **{f"watcher_{k}": v for k, v in ingest.figures().items()},
        }
        time.sleep(args.stability + 1.0)
        figures["burst"]["queued_messages_after_settling"] = client.llen("documents")

        # 4. Restart with everything in the history.
        figures["stop_s"] = round(watcher.stop(), 2)
        before = client.llen("documents")
        watcher = Watcher(env, watch, work / "logs" / "watcher-2.out")
        scan_done = watcher.wait_for_line("initial scan") - watcher.started
        scan_line = [ln for ln in watcher.output().splitlines() if "initial scan" in ln][-1]
        time.sleep(args.stability + 1.0)
        figures["restart"] = {
            "known_files": args.burst + args.latency_files,
            "start_to_scan_done_s": round(scan_done, 2),
            "scan_log": scan_line.split("] ", 1)[-1],
            "enqueued_again": client.llen("documents") - before,
        }
    finally:
        stop_events.set()
        if watcher is not None:
            watcher.stop()
        if worker is not None:
            worker.stop()
        redis_server.kill()
        shutil.rmtree(work, ignore_errors=True)

    lat, burst, idle, restart = figures["latency_s"], figures["burst"], figures["idle"], figures["restart"]
    lines = [
        f"File watcher benchmark ({figures['cpus']} CPUs, stability window {args.stability:g} s, "
        f"Redis appendfsync {args.fsync})",
        f"  last write -> task started: p50 {lat['p50']:.2f} s, p95 {lat['p95']:.2f} s "
        f"(min {lat['min']:.2f}, max {lat['max']:.2f}; p50 = window + {lat['over_window_p50']:.2f} s)",
        f"  {burst['files']} files at once: written in {burst['write_s']:.2f} s, all enqueued "
        f"{burst['all_enqueued_after_last_write_s']:.2f} s after the last write "
        f"({burst['all_enqueued_after_first_write_s']:.2f} s after the first)",
        f"  watcher while ingesting: CPU {burst['watcher_cpu_percent']:.1f} % of one core "
        f"({burst['watcher_cpu_s']:.2f} s CPU), RSS max {burst['watcher_rss_mb_max']:.1f} MB",
        f"  watcher idle {idle['wall_s']:.0f} s: CPU {idle['cpu_percent']:.2f} % ({idle['cpu_s']:.2f} s CPU), "
        f"RSS {idle['rss_mb_end']:.1f} MB",
        f"  restart with {restart['known_files']} known files: scan done {restart['start_to_scan_done_s']:.2f} s "
        f"after start ({restart['scan_log']}); enqueued again: {restart['enqueued_again']}",
        f"  watcher start-up {figures['watcher_start_s']:.2f} s; stop on SIGTERM {figures['stop_s']:.2f} s",
    ]
    print("\n" + "\n".join(lines))
    if args.json:
        print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
