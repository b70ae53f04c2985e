"""Peak worker memory on big documents, and whether it comes back down afterwards.

    python -m bench.bench_memory [--mb 90]

A real worker (1 pool process) processes, one at a time, a generated text file
and a generated CSV of ``--mb`` MB each and the largest PDF of the corpus. The
proportional set size (PSS: shared pages counted once) of the worker's whole
process tree (main process, pool process, parser children) is sampled every
50 ms until the worker is idle again, so a document's follow-up work (the CSV's
data profile) counts as its own. Target: peak under 1 GB per document;
afterwards the tree returns to its warm idle level (measured after three small
documents), within 10 %.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import psutil

from bench.common import PROJECT_ROOT, corpus_files, print_table, private_stack

MB = 1024 * 1024


def tree_rss(pid: int) -> int:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in procs:
        try:
            # PSS: pages shared between the pool process and its forked parser child count once
            total += getattr(proc.memory_full_info(), "pss", 0) or proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


class Sampler:
    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            time.sleep(0.05)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def settle(pid: int, seconds: float = 4.0) -> int:
    time.sleep(seconds)
    return tree_rss(pid)


def make_text(path: Path, mb: int) -> None:
    line = "The quick brown fox jumps over the lazy dog while the worker keeps its memory in check.\n"
    with path.open("w") as handle:
        for i in range(mb * MB // len(line)):
            handle.write(f"{i} {line}" if i % 40 else "\n")


def make_csv(path: Path, mb: int) -> None:
    with path.open("w") as handle:
        handle.write("id,name,city,amount,comment\n")
        row = 0
        while handle.tell() < mb * MB:
            handle.write(f"{row},customer {row},Berlin,{row * 3 % 1000}.50,regular order number {row}\n")
            row += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=90)
    args = parser.parse_args(argv)
    largest_pdf = max((p for p in corpus_files() if p.suffix == ".pdf"), key=lambda p: p.stat().st_size)
    rows = []
    with tempfile.TemporaryDirectory(prefix="midas-bench-mem-") as tmp:
        root = Path(tmp)
        docs = root / "docs"  # outside the data folder, which MIDAS never reads
        docs.mkdir(parents=True)
        text, csv = docs / "big.txt", docs / "big.csv"
        make_text(text, args.mb)
        make_csv(csv, args.mb)
        with private_stack(root, 1, [docs], MIDAS_TASK_SOFT_TIME_LIMIT="1200", MIDAS_TASK_TIME_LIMIT="1300") as stack:
            pid = stack.worker.process.pid
            # Idle = warm idle: after small documents have run, the pool process has touched (and so
            # privately copied) the code paths it shares with the main process; that is its steady size.
            for sample in ("notes.txt", "report.pdf", "sales.csv"):
                stack.send(
                    "background_tasks.document_tasks.process_document_file", str(PROJECT_ROOT / "samples" / sample)
                ).get(timeout=120)
            idle = settle(pid, 2)
            for path in (text, csv, largest_pdf):
                before = tree_rss(pid)
                started = time.perf_counter()
                with Sampler(pid) as sampler:
                    result = stack.send("background_tasks.document_tasks.process_document_file", str(path)).get(
                        timeout=1200
                    )
                    # the document's follow-up work (a table's data profile) belongs to it too
                    stack.wait_idle(timeout=1200)
                seconds = time.perf_counter() - started
                after = settle(pid)
                rows.append(
                    (
                        path.name,
                        f"{path.stat().st_size / MB:.1f}",
                        result["status"],
                        f"{seconds:.1f}",
                        f"{before / MB:.0f}",
                        f"{sampler.peak / MB:.0f}",
                        f"{after / MB:.0f}",
                        f"{after / idle:.2f}",
                    )
                )
    print(f"idle worker tree: {idle / MB:.0f} MB")
    print_table(("file", "MB", "status", "seconds", "before MB", "peak MB", "after MB", "after/idle"), rows)
    worst = max(float(r[5]) for r in rows)
    print(f"\nworst peak: {worst:.0f} MB (target < 1024 MB); worst after/idle: {max(float(r[7]) for r in rows):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
