"""Extraction throughput over the shared corpus: one process, then a real 2-process worker pool.

    python -m bench.bench_extraction [--rounds 3]

Prints documents/s and MB/s per file type for one process doing the whole
job (copy, detect, extract in an isolated child, chunk, store, and the
follow-up work a worker queues: data profiles of tables, OCR of long scans),
then the same corpus through a real Celery worker with 1 and with 2 pool
processes, and the ratios measured in this run. A worker run lasts until its
last task (follow-ups included) has stored its result. Target on a 2-core
machine: pool(2) >= 1.7x the single process. Each round uses a fresh store,
so nothing is skipped as a duplicate.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from bench.common import bench_env, corpus_files, print_table, private_stack


def single_process(paths: list[Path], rounds: int, base: Path) -> tuple[float, dict[str, list[float]]]:
    """Seconds for the whole corpus in this process (median of rounds) and per-type times."""
    from background_tasks.analysis_tasks import follow_ups
    from background_tasks.processing import pipeline
    from background_tasks.settings import load_settings
    from background_tasks.storage.store import DocumentStore

    totals = []
    per_type: dict[str, list[float]] = defaultdict(list)
    for r in range(rounds):
        env = bench_env(base / f"single-{r}")
        settings = load_settings(env, env_file=Path(os.devnull))
        store = DocumentStore(settings.database_url_resolved)
        store.create_schema()
        started = time.perf_counter()
        for path in paths:
            t0 = time.perf_counter()
            result = pipeline.process_file(str(path), settings, store).as_dict()
            for work in follow_ups(result):
                run_follow_up(work, settings, store)
            if r == 0:
                per_type[path.parent.name].append(time.perf_counter() - t0)
        totals.append(time.perf_counter() - started)
    return statistics.median(totals), per_type


def run_follow_up(work, settings, store) -> None:
    """What the analysis task named in ``work`` does, in this process."""
    from background_tasks.analysis import analyze as analysis
    from background_tasks.processing import ocr_pipeline

    if work.task == "analyze_data_file":
        analysis.analyze_data_path(work.args[0], settings, store, work.kwargs.get("document_id"))
    elif work.task == "ocr_document_pages":
        document_id, path, pages = work.args
        while pages:
            outcome = ocr_pipeline.continue_ocr(document_id, path, pages, settings, store)
            pages = outcome.get("pending") if outcome["status"] == "partial" else None
    else:
        raise ValueError(f"unknown follow-up {work.task}")


def worker_pool(paths: list[Path], rounds: int, base: Path, concurrency: int) -> float:
    """Seconds for the whole corpus through a real worker with ``concurrency`` pool processes."""
    times = []
    for r in range(rounds):
        with private_stack(base / f"pool{concurrency}-{r}", concurrency=concurrency) as stack:
            files = [str(p) for p in paths]
            # one task per file, sent at once (a batch task would add its polling delay)
            started = time.time()
            results = [stack.send("background_tasks.document_tasks.process_document_file", f) for f in files]
            times.append(stack.makespan(results, started))
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger().setLevel(logging.ERROR)
    from background_tasks.processing import extract, worker_process

    extract.preload_parsers()  # the worker does the same at start-up
    worker_process.preload_modules()
    paths = corpus_files()
    total_mb = sum(p.stat().st_size for p in paths) / 1024 / 1024
    with tempfile.TemporaryDirectory(prefix="midas-bench-") as tmp:
        base = Path(tmp)
        single_s, per_type = single_process(paths, args.rounds, base)
        rows = []
        for ftype, durations in sorted(per_type.items()):
            mb = sum(p.stat().st_size for p in paths if p.parent.name == ftype) / 1024 / 1024
            seconds = sum(durations)
            rows.append((ftype, len(durations), f"{len(durations) / seconds:.1f}", f"{mb / seconds:.2f}"))
        print(f"Corpus: {len(paths)} files, {total_mb:.1f} MB, {os.cpu_count()} CPU cores\n")
        print("One process (whole pipeline), per type:")
        print_table(("type", "files", "docs/s", "MB/s"), rows)
        pool1_s = worker_pool(paths, args.rounds, base, concurrency=1)
        pool2_s = worker_pool(paths, args.rounds, base, concurrency=2)
    print()
    print_table(
        ("run", "seconds", "docs/s", "MB/s", "vs single"),
        [
            ("single process", f"{single_s:.2f}", f"{len(paths) / single_s:.1f}", f"{total_mb / single_s:.2f}", "1.00"),
            (
                "worker, 1 process",
                f"{pool1_s:.2f}",
                f"{len(paths) / pool1_s:.1f}",
                f"{total_mb / pool1_s:.2f}",
                f"{single_s / pool1_s:.2f}",
            ),
            (
                "worker, 2 processes",
                f"{pool2_s:.2f}",
                f"{len(paths) / pool2_s:.1f}",
                f"{total_mb / pool2_s:.2f}",
                f"{single_s / pool2_s:.2f}",
            ),
        ],
    )
    ratio = single_s / pool2_s
    print(f"\npool(2)/single throughput ratio: {ratio:.2f}x (target >= 1.70x)")
    print(f"pool(2)/pool(1) throughput ratio: {pool1_s / pool2_s:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
