"""`python -m bench` (or `make bench`): run every benchmark module in turn.

`python -m bench bench_extraction --rounds 1` runs one; options after the
names go to each named benchmark.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path


def main() -> int:
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name.startswith("bench_"))
    args = sys.argv[1:]
    first_option = next((i for i, a in enumerate(args) if a.startswith("-")), len(args))
    wanted, options = args[:first_option], args[first_option:]
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {', '.join(unknown)}; there are: {', '.join(names)}")
    failed = 0
    for name in names:
        if wanted and name not in wanted:
            continue
        print(f"\n===== {name} =====", flush=True)
        started = time.perf_counter()
        module = importlib.import_module(f"bench.{name}")
        code = module.main(options)
        failed += bool(code)
        print(f"({name} took {time.perf_counter() - started:.0f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
