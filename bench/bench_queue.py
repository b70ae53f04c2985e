"""Queue overhead: tiny text documents through process_document_file against a no-op task.

    python -m bench.bench_queue [--count 400]

Both run on the same private broker and the same real worker (2 pool
processes, MIDAS's own settings: late ack, prefetch 1, task history, result
backend). Target (issue 19): documents reach 0.8 of the no-op throughput.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.common import print_table, private_stack


def throughput(stack, name: str, args_list: list[list]) -> float:
    started = time.perf_counter()
    results = [stack.app.send_task(name, args=args) for args in args_list]
    for result in results:
        result.get(timeout=600)
    return len(args_list) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=400)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="midas-bench-queue-") as tmp:
        root = Path(tmp)
        docs = root / "docs"  # outside the data folder, which MIDAS never reads
        docs.mkdir(parents=True)
        with private_stack(root, concurrency=2, extra_roots=[docs]) as stack:
            paths = []
            for i in range(args.count):
                path = docs / f"tiny-{i}.txt"
                path.write_text(f"Tiny document number {i} for the queue overhead benchmark.")
                paths.append([str(path)])
            # warm both code paths once (imports, database schema)
            stack.send("background_tasks.system_tasks.ping", "warm").get(timeout=60)
            warm = docs / "warm.txt"
            warm.write_text("warm up")
            warmed = stack.send("background_tasks.document_tasks.process_document_file", str(warm)).get(timeout=60)
            if warmed["status"] != "success":
                raise SystemExit(f"the warm-up document was not processed: {warmed}")
            noop = throughput(stack, "background_tasks.system_tasks.ping", [["x"]] * args.count)
            documents = throughput(stack, "background_tasks.document_tasks.process_document_file", paths)
    print_table(
        ("task", "count", "tasks/s", "vs no-op"),
        [
            ("no-op (ping)", args.count, f"{noop:.1f}", "1.00"),
            ("process_document_file (tiny .txt)", args.count, f"{documents:.1f}", f"{documents / noop:.2f}"),
        ],
    )
    print(f"\ndocument/no-op throughput ratio: {documents / noop:.2f} (target >= 0.80)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
