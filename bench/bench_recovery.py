"""Recovery from a dead worker, and what the intake ledger costs.

    python -m bench bench_recovery [--trials 10] [--count 300] [--rounds 2] [--skip-recovery]

1. Recovery: two workers and Beat on one private Redis with MIDAS's default ledger settings
   (lease 15 s, reaper every 10 s) and the default visibility timeout (1 hour). A worker is
   killed with ``kill -9`` (main process and pool) while it runs documents; the time until
   each of its tasks runs again on the other worker is read from the ledger. Target: p95 under
   30 s (without the ledger: the visibility timeout, 3,600 s).
2. Cost: tiny documents through one worker with the ledger off and on, taking turns, in the
   same run. Target: the ledger costs under 5 % of that throughput.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import bench_env, print_table, private_stack
from tests.support import BeatProcess, RedisServer, WorkerProcess

PROCESS = "background_tasks.document_tasks.process_document_file"
QUEUES = ("default", "documents", "analysis", "monitoring")


def _long_document(folder: Path, name: str, words: int) -> str:
    path = folder / name
    path.write_text(f"{name} unique {time.time_ns()} " + " ".join(f"word{i % 977} filler" for i in range(words)))
    return str(path)


def recovery(root: Path, trials: int) -> list[float]:
    import celery_config
    from background_tasks.settings import load_settings
    from background_tasks.storage import ledger

    redis = RedisServer(root / "redis")
    redis.start()
    docs = root / "docs"  # outside the data folder, which MIDAS never reads
    docs.mkdir(parents=True)
    env = bench_env(root / "data", [docs], REDIS_PORT=str(redis.port))
    settings = load_settings(env, env_file=Path(os.devnull))
    app = celery_config.create_app(settings)
    url = settings.database_url_resolved
    beat = BeatProcess(env, root / "beat")
    survivor = WorkerProcess(env=env, log_dir=root / "logs", queues=QUEUES, concurrency=2, name="survivor")
    victims: list[WorkerProcess] = []
    waits: list[float] = []
    try:
        survivor.wait_ready(app)
        for trial in range(trials):
            victim = WorkerProcess(env=env, log_dir=root / "logs", queues=QUEUES, concurrency=2, name=f"victim{trial}")
            victims.append(victim)
            victim.wait_ready(app)
            results = [
                app.send_task(PROCESS, args=[_long_document(docs, f"t{trial}-{i}.txt", 1_500_000)]) for i in range(6)
            ]
            ids = [r.id for r in results]
            deadline = time.monotonic() + 120
            held: list[str] = []
            while not held and time.monotonic() < deadline:
                entries = [ledger.get(url, t) or {} for t in ids]
                held = [
                    t
                    for t, e in zip(ids, entries, strict=True)
                    if e.get("worker") == victim.hostname and e.get("state") == "running"
                ]
                time.sleep(0.05)
            if not held:
                raise RuntimeError("the victim never ran a task")
            victim.kill()
            killed = time.monotonic()
            pending = set(held)
            while pending:
                if time.monotonic() - killed > 600:
                    raise RuntimeError(f"{len(pending)} tasks of the dead worker never ran again")
                for task_id in list(pending):
                    entry = ledger.get(url, task_id) or {}
                    if entry.get("state") in ("running", "done") and entry.get("worker") not in (None, victim.hostname):
                        waits.append(time.monotonic() - killed)
                        pending.discard(task_id)
                time.sleep(0.2)
            for result in results:
                result.get(timeout=600)
            back = ", ".join(f"{w:.1f}" for w in waits[-len(held) :])
            print(f"  trial {trial + 1}: {len(held)} tasks back after {back} s", flush=True)
    finally:
        beat.stop()
        for worker in [survivor, *victims]:
            worker.stop()
        redis.kill()
    return waits


def _cpu_seconds(pids: list[int]) -> float:
    """CPU time used so far by these processes, their children and their reaped children."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                t = proc.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            continue
    return total


def throughput(stack, paths: list[str]) -> tuple[float, float]:
    """Tasks per second (until the last result was stored), and CPU ms per task of worker, Redis and sender."""
    pids = [stack.worker.process.pid, stack.redis.process.pid]
    cpu_before, own_before = _cpu_seconds(pids), time.process_time()
    started = time.time()
    results = [stack.send(PROCESS, p) for p in paths]
    sent_cpu = time.process_time() - own_before
    stack.wait_results(results)
    elapsed = stack.last_finished() - started
    cpu = _cpu_seconds(pids) - cpu_before + sent_cpu
    return len(paths) / elapsed, cpu / len(paths) * 1000


def ledger_cost(root: Path, count: int, rounds: int = 2) -> dict[str, list[tuple[float, float]]]:
    """(tasks/s, CPU ms/task) per run, with the ledger off and on, taking turns."""
    rates: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
    # taking turns, each round in the other order, so neither mode always runs on a warmer machine
    order = [mode for r in range(rounds) for mode in (("off", "on") if r % 2 == 0 else ("on", "off"))]
    for turn, mode in enumerate(order):
        base = root / f"cost-{turn}-{mode}"
        docs = base / "docs"  # outside the data folder, which MIDAS never reads
        docs.mkdir(parents=True)
        with private_stack(base, 2, [docs], MIDAS_LEDGER="true" if mode == "on" else "false") as stack:
            paths = []
            for i in range(count):
                path = docs / f"tiny-{i}.txt"
                path.write_text(f"Tiny document {i} of round {turn} for the ledger cost benchmark.")
                paths.append(str(path))
            warm = docs / "warm.txt"
            warm.write_text("warm up")
            assert stack.send(PROCESS, str(warm)).get(timeout=60)["status"] == "success"
            rates[mode].append(throughput(stack, paths))
    return rates


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2, help="pairs of cost runs (off/on), taking turns")
    parser.add_argument("--skip-recovery", action="store_true")
    args = parser.parse_args(argv)
    code = 0
    with tempfile.TemporaryDirectory(prefix="midas-bench-recovery-") as tmp:
        root = Path(tmp)
        if not args.skip_recovery:
            print(
                f"recovery: {args.trials} kill -9s of a worker, default ledger settings ({datetime.now(UTC):%H:%M} UTC)"
            )
            waits = recovery(root / "recovery", args.trials)
            print_table(
                ("tasks", "min s", "p50 s", "p95 s", "max s", "without the ledger"),
                [(len(waits), f"{min(waits):.1f}", f"{statistics.median(waits):.1f}", f"{p95(waits):.1f}",
                  f"{max(waits):.1f}", "3600 s (visibility timeout)")],
            )  # fmt: skip
            print(f"\nrecovery p95: {p95(waits):.1f} s (target < 30 s)")
            code |= p95(waits) >= 30
        rates = ledger_cost(root / "cost", args.count, args.rounds)
        off, on = (statistics.median(r for r, _ in rates[m]) for m in ("off", "on"))
        cpu_off, cpu_on = (statistics.median(c for _, c in rates[m]) for m in ("off", "on"))
        print_table(
            ("ledger", "runs (tasks/s)", "median tasks/s", "vs off", "CPU ms/task", "vs off"),
            [
                (mode, ", ".join(f"{r:.1f}" for r, _ in rates[mode]), f"{rate:.1f}", f"{rate / off:.3f}",
                 f"{cpu:.2f}", f"{cpu / cpu_off:.3f}")
                for mode, rate, cpu in (("off", off, cpu_off), ("on", on, cpu_on))
            ],
        )  # fmt: skip
        cost_ms = (1 / on - 1 / off) * 1000
        print(f"\nledger cost: {(1 - on / off) * 100:.1f} % of throughput, {cost_ms:.2f} ms/task (target < 5 %)")
        print(f"ledger CPU: {cpu_on - cpu_off:.2f} ms/task, {(cpu_on / cpu_off - 1) * 100:.1f} % of the CPU per task")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
