"""Scale out: 1,000 corpus documents through the object store with 1 and with 2 worker hosts.

    python -m bench bench_scale_out [--count 1000] [--quick] [--generated] [--rounds 1]

The deployment the README describes for several hosts, on this machine: one
private Redis, one throwaway PostgreSQL database per run, one private SeaweedFS
(``weed mini``), and workers that behave like separate hosts (each its own
HOME, data dir and allowed roots, ``-Q documents``, 1 pool process). The
producer calls ``submit()`` for every document, which stages it in the object
store under its SHA-256 and sends its ``s3://`` URI; the hosts cannot read the
producer's folder. Three runs, each with a fresh database and Redis:

1. local paths, 1 host that can read the documents' folder (no object store);
2. object store, 1 host;
3. object store, 2 hosts.

During ``submit()`` the hosts consume nothing (their consumers are cancelled,
then added back), so a run's time is the hosts' processing only: from adding
the consumers until the last result was stored. Follow-up analyses go to the
``analysis`` queue, which these hosts do not serve; they are not part of it.

Documents: the corpus files that end ``success`` when processed here first
(an encrypted or empty file would rightly fail), cycled into ``--count``
distinct contents with a marker each (as bench_scale does). The shared corpus
(``../shared/corpus``) when present, else the generated corpus of the tests
(``--generated`` forces it). ``--quick``: 60 documents from files under 100 KB.

After each run the store must hold every document once, ``success``, with its
chunks once; otherwise the bench says what went wrong and exits 1. Targets:
2 hosts >= 1.7x one host; the object store within 15 % of local paths.
``--rounds N`` repeats the three runs, every other round in reverse order,
and judges the medians (the machine's other work drifts).

Beside the wall-clock figures it prints the CPU the hosts, Redis and SeaweedFS
used per document, and how busy the whole machine was: on a shared machine a
2-host run that finds only one core free cannot scale, and says so.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench.common import ResultsDb, bench_env, build_documents, corpus_files, has_corpus, print_table
from tests.hosts import exactly_once_problems, host_env
from tests.support import RedisServer, WorkerProcess

QUICK_COUNT = 60
QUICK_MAX_BYTES = 100 * 1024
BUCKET = "midas-bench"
OBJECT_STORE = f"s3://{BUCKET}/staged"
SCALE_TARGET = 1.7
OBJECT_STORE_TARGET = 0.85  # within 15 % of local paths


@dataclass
class Run:
    label: str
    hosts: int
    object_store: bool
    round: int = 1
    seconds: float = 0.0
    submit_seconds: float = 0.0
    split: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    host_cpu: float = 0.0  # CPU seconds of the hosts' process trees during the run
    service_cpu: float = 0.0  # of the run's Redis and SeaweedFS
    machine_busy: float = 0.0  # cores busy on the whole machine, on average


class CpuMeter:
    """CPU seconds of this run's processes, and how busy the whole machine was, between start() and stop().

    On a shared machine the wall-clock figures depend on what else runs; these say what the
    run itself needed and what was left for it. A process that ends during the run counts
    only when its parent reaps it (a pool's parser children do). PostgreSQL's server is shared
    with whatever else runs here and its backends come and go, so its work counts as "others".
    """

    def __init__(self, host_pids: Sequence[int], service_pids: Sequence[int]) -> None:
        self.host_pids, self.service_pids = host_pids, service_pids
        self._start: tuple[dict, dict, float, float] | None = None

    @staticmethod
    def _trees(pids: Sequence[int]) -> list[psutil.Process]:
        found = []
        for pid in pids:
            try:
                root = psutil.Process(pid)
                found += [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        return found

    @staticmethod
    def _sample(procs: list[psutil.Process]) -> dict[tuple[int, float], float]:
        seconds = {}
        for proc in procs:
            try:
                t = proc.cpu_times()
                seconds[(proc.pid, proc.create_time())] = t.user + t.system + t.children_user + t.children_system
            except psutil.Error:
                pass
        return seconds

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        return sum(t) - t.idle - getattr(t, "iowait", 0.0)

    def _samples(self) -> tuple[dict, dict]:
        return self._sample(self._trees(self.host_pids)), self._sample(self._trees(self.service_pids))

    def start(self) -> None:
        self._start = (*self._samples(), self._busy(), time.monotonic())

    def stop(self, run: Run) -> None:
        assert self._start is not None
        hosts0, services0, busy0, t0 = self._start
        hosts, services = self._samples()
        run.host_cpu = sum(v - hosts0.get(k, 0.0) for k, v in hosts.items())
        run.service_cpu = sum(v - services0.get(k, 0.0) for k, v in services.items())
        run.machine_busy = (self._busy() - busy0) / (time.monotonic() - t0)


def sources(root: Path, generated: bool, quick: bool) -> tuple[list[Path], str]:
    """The files to cycle (not yet checked) and which corpus they come from."""
    if generated or not has_corpus():
        from tests.generated_corpus import build

        files, name = sorted(p for p in build(root / "generated").iterdir() if p.is_file()), "generated corpus"
    else:
        files, name = corpus_files(), "shared corpus"
    if quick:
        files = [p for p in files if p.stat().st_size <= QUICK_MAX_BYTES]
    return files, name


def succeeding(files: Sequence[Path], root: Path, enough: int) -> list[Path]:
    """The first ``enough`` of ``files`` that end ``success`` when processed in this process."""
    from background_tasks.processing import pipeline
    from background_tasks.settings import load_settings
    from background_tasks.storage.store import DocumentStore

    settings = load_settings(bench_env(root, sorted({p.parent for p in files})), env_file=Path(os.devnull))
    store = DocumentStore(settings.database_url_resolved)
    store.create_schema()
    kept: list[Path] = []
    for path in files:
        if len(kept) >= enough:
            break
        if pipeline.process_file(str(path), settings, store).status == "success":
            kept.append(path)
    return kept


@contextmanager
def object_store_server(root: Path) -> Iterator:
    """The private SeaweedFS, its bucket made, and its credentials in this process's environment (boto3's chain)."""
    from tests.s3_server import S3Server

    server = S3Server(root)
    saved = {name: os.environ.get(name) for name in server.aws_env()}
    server.start()
    try:
        server.make_bucket(BUCKET)
        os.environ.update(server.aws_env())
        yield server
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.kill()


@contextmanager
def throwaway_database() -> Iterator[str]:
    """A new PostgreSQL database on 127.0.0.1:5432 for one run (tests/db_fixtures.py), dropped afterwards."""
    import pytest

    from tests.db_fixtures import throwaway_postgres

    try:
        with throwaway_postgres("midas_bench") as url:
            yield url
    except pytest.skip.Exception as exc:  # the fixture's way of saying the server is missing
        raise SystemExit(str(exc)) from None


def _consumers(app, hosts: Sequence[WorkerProcess], add: bool) -> None:
    """Pause (or resume) the hosts' ``documents`` consumers, and wait until each has answered."""
    destination = [h.hostname for h in hosts]
    if add:
        kwargs = {"exchange": "midas", "exchange_type": "direct", "routing_key": "documents"}
        replies = app.control.add_consumer("documents", destination=destination, reply=True, **kwargs)
    else:
        replies = app.control.cancel_consumer("documents", destination=destination, reply=True)
    answered = {name for reply in replies or [] for name in reply}
    if answered != set(destination):
        raise RuntimeError(f"{sorted(set(destination) - answered)} did not answer the consumer change")


def measure(run: Run, root: Path, paths: Sequence[str], readable: Sequence[Path], s3_server, timeout: float) -> None:
    """One run: fresh Redis and database, ``run.hosts`` hosts, every document submitted, then processed."""
    import celery_config
    from background_tasks.settings import load_settings
    from background_tasks.submit import submit

    redis = RedisServer(root / "redis")
    redis.start()
    hosts: list[WorkerProcess] = []
    try:
        with throwaway_database() as url:
            store_env = {**s3_server.env(), "MIDAS_OBJECT_STORE": OBJECT_STORE} if run.object_store else {}
            env = bench_env(root / "producer", REDIS_PORT=str(redis.port), MIDAS_DATABASE_URL=url, **store_env)
            settings = load_settings(env, env_file=Path(os.devnull))
            app = celery_config.create_app(settings)
            for n in range(run.hosts):
                name = f"host{n + 1}"
                # a host reads the producer's folder only in the local-path run
                host = host_env(root / name, *([] if run.object_store else readable))
                hosts.append(WorkerProcess({**env, **host}, root / "logs", ("documents",), concurrency=1, name=name))
            for host in hosts:
                host.wait_ready(app)
            _consumers(app, hosts, add=False)
            t0 = time.perf_counter()
            results = [submit(p, settings=settings, app=app) for p in paths]
            run.submit_seconds = time.perf_counter() - t0
            services = [redis.process.pid, s3_server.process.pid]
            meter = CpuMeter([h.process.pid for h in hosts], services)
            meter.start()
            started = time.time()
            _consumers(app, hosts, add=True)
            db = ResultsDb(settings.result_backend_url)
            ended = db.collect(results, timeout)
            run.seconds = db.last_finished() - started
            meter.stop(run)
            by_worker = db.per_worker()
            run.split = [by_worker.get(h.hostname, 0) for h in hosts]
            run.problems = check(run, ended, len(paths), url)
    finally:
        for host in hosts:
            host.stop()
        redis.kill()


def check(run: Run, ended: dict[str, tuple[str, object]], count: int, database_url: str) -> list[str]:
    """What went wrong: a result missing or not ``success``, a path twice, a local path read in an
    object-store run, the store not holding every document once, a host that took nothing."""
    problems = [f"{count - len(ended)} results missing"] if len(ended) < count else []
    values = [
        v if state == "SUCCESS" and isinstance(v, dict) else {"status": state, "error": v}
        for state, v in ended.values()
    ]
    problems += [f"{v.get('path')} ended {v['status']}: {v.get('error')}" for v in values if v["status"] != "success"]
    targets = [str(v.get("path")) for v in values]
    if len(set(targets)) != len(targets):
        problems.append(f"{len(targets) - len(set(targets))} results name a path another result names")
    if run.object_store:
        problems += [f"{t} was not read from the object store" for t in targets if not t.startswith(OBJECT_STORE)]
    problems += exactly_once_problems(database_url, count, targets)
    if run.hosts > 1 and 0 in run.split:
        problems.append(f"a host took no document (split {run.split})")
    return problems


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


CONFIGS = (("local paths", 1, False), ("object store", 1, True), ("object store", 2, True))


def median_of(runs: list[Run], hosts: int, object_store: bool, value: str) -> float:
    return statistics.median(getattr(r, value) for r in runs if (r.hosts, r.object_store) == (hosts, object_store))


def report(runs: list[Run], count: int, mb: float) -> int:
    print_table(
        ("round", "run", "hosts", "submit s", "seconds", "docs/s", "MB/s", "documents per host"),
        [
            (r.round, r.label, r.hosts, f"{r.submit_seconds:.1f}", f"{r.seconds:.1f}", f"{count / r.seconds:.1f}",
             f"{mb / r.seconds:.2f}", " / ".join(map(str, r.split)))
            for r in runs
        ],
    )  # fmt: skip
    cores = psutil.cpu_count() or 1
    print(f"\nCPU of the hosts' process trees and of the run's Redis and SeaweedFS; cores busy on average, of "
          f"{cores} (others: everything else, PostgreSQL included)")  # fmt: skip
    print_table(
        ("round", "run", "hosts", "host CPU ms/doc", "Redis+S3 CPU ms/doc", "cores busy: run", "others", "machine"),
        [
            (r.round, r.label, r.hosts, f"{1000 * r.host_cpu / count:.0f}", f"{1000 * r.service_cpu / count:.0f}",
             f"{(r.host_cpu + r.service_cpu) / r.seconds:.2f}",
             f"{max(0.0, r.machine_busy - (r.host_cpu + r.service_cpu) / r.seconds):.2f}", f"{r.machine_busy:.2f}")
            for r in runs
        ],
    )  # fmt: skip
    local, one, two = (median_of(runs, hosts, store, "seconds") for _, hosts, store in CONFIGS)
    cpu = median_of(runs, 1, True, "host_cpu") / median_of(runs, 1, False, "host_cpu")
    print(f"object store / local paths, host CPU per document: {cpu:.2f}x")
    rounds = len(runs) // len(CONFIGS)
    of = f" (medians of {rounds} rounds)" if rounds > 1 else ""
    scale, store = one / two, local / one
    print(f"\n2 hosts / 1 host throughput (object store): {scale:.2f}x (target >= {SCALE_TARGET:.2f}x){of}")
    print(f"object store / local paths throughput (1 host): {store:.2f}x (target >= {OBJECT_STORE_TARGET:.2f}x){of}")
    print(f"{verdict(scale >= SCALE_TARGET)}: 2 hosts scale {scale:.2f}x")
    print(f"{verdict(store >= OBJECT_STORE_TARGET)}: the object store is {abs(1 - store):.0%} "
          f"{'slower' if store < 1 else 'faster'} than local paths")  # fmt: skip
    failed = [r for r in runs if r.problems]
    for r in failed:
        print(f"FAIL: round {r.round}, {r.label}, {r.hosts} host(s): {len(r.problems)} problems; the first:")
        for problem in r.problems[:10]:
            print(f"  {problem}")
    if not failed:
        print(f"PASS: every document ended success exactly once in every run ({count} x {len(runs)})")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_COUNT} documents from files under 100 KB")
    parser.add_argument("--generated", action="store_true", help="the tests' generated corpus, not ../shared")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of the three runs, every other one reversed")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds a run may take before it fails")
    args = parser.parse_args(argv)
    count = QUICK_COUNT if args.quick else args.count
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="midas-bench-scale-out-") as tmp:
        root = Path(tmp)
        files, corpus = sources(root, args.generated, args.quick)
        chosen = succeeding(files, root / "check", count)
        if not chosen:
            raise SystemExit(f"no file of the {corpus} ends success")
        docs = root / "docs"
        docs.mkdir()
        paths = build_documents(docs, count, chosen)
        mb = sum(Path(p).stat().st_size for p in paths) / 1024 / 1024
        print(f"{len(paths)} documents, {mb:.1f} MB: {len(chosen)} files of the {corpus} that end success, "
              f"and {len(paths) - len(chosen)} marked copies of them", flush=True)  # fmt: skip
        readable = [docs, *{Path(p).parent for p in chosen}]
        runs = []
        with object_store_server(root / "s3") as server:
            for n in range(1, args.rounds + 1):
                for label, hosts, store in CONFIGS if n % 2 else reversed(CONFIGS):  # drift cancels out
                    run = Run(label, hosts, store, round=n)
                    measure(run, root / f"run{len(runs)}", paths, readable, server, args.timeout)
                    runs.append(run)
                    print(f"  round {n}, {run.label}, {run.hosts} host(s): {run.seconds:.1f} s", flush=True)
    print()
    return report(runs, len(paths), mb)


if __name__ == "__main__":
    raise SystemExit(main())
