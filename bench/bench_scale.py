"""Scale: 1,000 mixed documents from the corpus through a worker with 1 and with 2 pool processes.

    python -m bench.bench_scale [--count 1000]

The corpus files are cycled into ``--count`` distinct documents (each copy gets
a unique marker in a way its format tolerates, so none is skipped as a
duplicate). Each run uses a fresh private Redis and store and lasts until
the last task, follow-up analyses included, has stored its result. Prints
the throughput of both runs and their ratio; target on 2 cores: >= 1.7x.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from bench.common import build_documents, print_table, private_stack


def run(root: Path, paths: list[str], concurrency: int, docs: Path) -> float:
    with private_stack(root, concurrency=concurrency, extra_roots=[docs]) as stack:
        stack.send("background_tasks.system_tasks.ping", "warm").get(timeout=60)
        started = time.time()
        results = [stack.send("background_tasks.document_tasks.process_document_file", p) for p in paths]
        return stack.makespan(results, started)  # until the last task, follow-ups included, had finished


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="midas-bench-scale-") as tmp:
        root = Path(tmp)
        docs = root / "docs"
        docs.mkdir()
        paths = build_documents(docs, args.count)
        mb = sum(Path(p).stat().st_size for p in paths) / 1024 / 1024
        one = run(root / "one", paths, 1, docs)
        two = run(root / "two", paths, 2, docs)
    print(f"{len(paths)} documents, {mb:.1f} MB")
    print_table(
        ("pool processes", "seconds", "docs/s", "MB/s"),
        [
            (1, f"{one:.1f}", f"{len(paths) / one:.1f}", f"{mb / one:.2f}"),
            (2, f"{two:.1f}", f"{len(paths) / two:.1f}", f"{mb / two:.2f}"),
        ],
    )
    print(f"\n2 processes / 1 process throughput ratio: {one / two:.2f}x (target >= 1.70x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
