"""The pipeline's fixed cost per file: ``pipeline.process_file`` on many small files, as a plain script calls it.

    python -m bench.bench_pipeline [--small 200] [--corpus] [--rounds 2] [--against TREE] [--preload]
                                   [--profile FILE]

Each round starts a fresh Python process with a fresh data folder (so nothing
is a duplicate) that processes the files one after another and reports each
file's time, status and text size. ``--against`` runs a second source tree
(another checkout of MIDAS, e.g. ``git worktree add /tmp/base main``) the same
way, the two taking turns per file, and prints the ratios per type: a change
is judged against its baseline measured in the same run. Without
``--preload`` nothing is imported ahead (what a script calling the pipeline
does); with it, ``preload_parsers()`` runs first (what a worker does).

The small files are ``.txt/.log/.md/.csv/.json`` of a few hundred bytes to a
few KB with distinct content, plus one of every generated type
(``tests/generated_corpus.py``); ``--corpus`` adds the shared corpus. Target
(issue 19): median <= 25 ms per small text file. Files whose status or text
size differ between the trees are listed.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from bench.common import PROJECT_ROOT, bench_env, corpus_files, print_table

SMALL_TYPES = ("txt", "log", "md", "csv", "json")
TARGET_MS = 25.0
_VOCABULARY = (
    "harbour crane container ship cargo manifest invoice customer delivery pallet warehouse report "
    "schedule morning evening shipment delayed arrived quarter budget approved board member team"
)
WORDS = _VOCABULARY.split()

#: Runs in the measured tree's own interpreter process: imports only what that tree has.
CHILD = r"""
import cProfile, json, os, sys, time
spec = json.loads(sys.stdin.readline())
sys.path.insert(0, spec["tree"])
import logging
logging.disable(logging.WARNING)
from pathlib import Path
from background_tasks.settings import load_settings
from background_tasks.storage.store import DocumentStore
from background_tasks.processing import pipeline
settings = load_settings(spec["env"], env_file=Path(os.devnull))
store = DocumentStore(settings.database_url_resolved)
store.create_schema()
if spec["preload"]:
    from background_tasks.processing import extract
    extract.preload_parsers()
for path in spec["warm"]:
    pipeline.process_file(path, settings, store)
profiler = cProfile.Profile() if spec["profile"] else None
print("ready", flush=True)
for line in sys.stdin:
    path = json.loads(line)
    if profiler:
        profiler.enable()
    started = time.perf_counter()
    result = pipeline.process_file(path, settings, store)
    took = time.perf_counter() - started
    if profiler:
        profiler.disable()
    print(json.dumps([path, took, result.status, result.text_chars, result.chunks_created]), flush=True)
if profiler:
    profiler.dump_stats(spec["profile"])
"""


def _words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(count))


def write_small_files(folder: Path, count: int, seed: int = 19) -> list[Path]:
    """``count`` small text files of the five plain types, each with distinct content."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        kind = SMALL_TYPES[i % len(SMALL_TYPES)]
        lines = [f"{_words(rng, rng.randint(6, 14))} number {i}." for _ in range(rng.randint(3, 40))]
        if kind == "txt":
            body = "\n\n".join(lines)
        elif kind == "log":
            stamps = (f"2024-05-0{n % 9 + 1} 12:00:{n % 60:02d}" for n in range(len(lines)))
            body = "\n".join(f"{stamp} INFO worker: {line}" for stamp, line in zip(stamps, lines, strict=True))
        elif kind == "md":
            body = f"# Report {i}\n\n" + "\n\n".join(f"## Part {n}\n\n{line}" for n, line in enumerate(lines))
        elif kind == "csv":
            rows = (
                f"{n},{rng.choice(WORDS)},{line.replace(',', ' ')},{rng.randint(1, 999)}"
                for n, line in enumerate(lines)
            )
            body = "id,item,note,amount\n" + "\n".join(rows)
        else:
            body = json.dumps([{"id": n, "note": line, "owner": rng.choice(WORDS)} for n, line in enumerate(lines)])
        path = folder / f"small-{i:04d}.{kind}"
        path.write_text(body + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def generated_files(folder: Path) -> list[Path]:
    """One file of every generated type (``tests/generated_corpus.py``)."""
    from tests import generated_corpus

    generated_corpus.build(folder)
    return sorted(p for p in folder.iterdir() if p.is_file())


class Runner:
    """One tree's long-lived measuring process with a fresh data folder: a file in, its row out."""

    def __init__(self, tree: Path, warm: list[Path], data_dir: Path, roots: list[Path], preload: bool,
                 profile: str | None) -> None:  # fmt: skip
        self.tree = tree
        env = bench_env(data_dir, extra_roots=roots)
        spec = {"tree": str(tree), "env": env, "warm": [str(p) for p in warm], "preload": preload, "profile": profile}
        self.process = subprocess.Popen(
            [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=tree
        )
        self._send(spec)
        if self._receive() != "ready":
            raise SystemExit(f"the measuring process of {tree} did not start")

    def _send(self, value: object) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(value) + "\n")
        self.process.stdin.flush()

    def _receive(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"the measuring process of {self.tree} ended (exit {self.process.wait()})")
        return line.strip()

    def run(self, path: Path) -> list:
        self._send(str(path))
        return json.loads(self._receive())

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=120)


def type_of(path: str) -> str:
    name = Path(path).name
    suffix = Path(path).suffix.lstrip(".").lower() or "none"
    return f"small {suffix}" if name.startswith("small-") else suffix


def summarise(runs: dict[str, list[list[list]]], labels: list[str]) -> None:
    """Median ms per type for each tree (the median over rounds of each file's time), ratios to the first."""
    per_file: dict[str, dict[str, list[float]]] = {label: defaultdict(list) for label in labels}
    outcome: dict[str, dict[str, tuple]] = {label: {} for label in labels}
    for label in labels:
        for rows in runs[label]:
            for path, took, status, chars, chunks in rows:
                per_file[label][path].append(took)
                outcome[label][path] = (status, chars, chunks)
    files = list(per_file[labels[0]])
    by_type: dict[str, list[str]] = defaultdict(list)
    for path in files:
        by_type[type_of(path)].append(path)
    header = ["type", "files", *(f"{label} ms" for label in labels)]
    if len(labels) > 1:
        header.append(f"{labels[1]}/{labels[0]}")
    table = []

    def row(name: str, paths: list[str]) -> list[str]:
        medians = [statistics.median(statistics.median(per_file[label][p]) for p in paths) for label in labels]
        cells = [name, str(len(paths)), *(f"{m * 1000:.1f}" for m in medians)]
        if len(labels) > 1:
            cells.append(f"{medians[1] / medians[0]:.2f}")
        return cells

    for name in sorted(by_type):
        table.append(row(name, by_type[name]))
    small = [p for p in files if Path(p).name.startswith("small-")]
    if small:
        table.append(row("all small text", small))
    table.append(row("all", files))
    print_table(header, table)
    totals = {label: sum(statistics.median(per_file[label][p]) for p in files) for label in labels}
    print("\ntotal s (sum of per-file medians): " + ", ".join(f"{k} {v:.2f}" for k, v in totals.items()))
    if small:
        median_small = statistics.median(statistics.median(per_file[labels[-1]][p]) for p in small) * 1000
        print(f"median per small text file ({labels[-1]}): {median_small:.1f} ms (target <= {TARGET_MS:g} ms)")
    if len(labels) > 1:
        changed = [
            (Path(p).name, outcome[labels[0]][p], outcome[labels[1]][p])
            for p in files
            if outcome[labels[0]][p][:2] != outcome[labels[1]][p][:2]
        ]
        print(f"files whose status or text size differ: {len(changed)}")
        for name, before, after in changed[:40]:
            print(f"  {name}: {before} -> {after}")


def print_profile(path: str, limit: int = 40) -> None:
    import pstats

    stats = pstats.Stats(path)
    stats.sort_stats("cumulative").print_stats(limit)
    stats.sort_stats("tottime").print_stats(limit)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=200, help="small text files (default 200)")
    parser.add_argument("--corpus", action="store_true", help="add the shared corpus")
    parser.add_argument("--no-generated", action="store_true", help="leave out the generated file of every type")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--against", type=Path, help="a baseline source tree, measured in turns with this one")
    parser.add_argument("--preload", action="store_true", help="call preload_parsers() first, as a worker does")
    parser.add_argument("--profile", help="write a cProfile of this tree's files to FILE and print its top")
    args = parser.parse_args(argv)
    trees = {"this": PROJECT_ROOT}
    if args.against:
        trees = {"base": args.against.resolve(), "this": PROJECT_ROOT}
    labels = list(trees)
    with tempfile.TemporaryDirectory(prefix="midas-bench-pipeline-") as tmp:
        root = Path(tmp)
        files = write_small_files(root / "small", args.small)
        warm = write_small_files(root / "warm", 2, seed=7)
        if not args.no_generated:
            files += generated_files(root / "generated")
        roots = [root]
        if args.corpus:
            files += corpus_files()
        runs: dict[str, list] = {label: [[] for _ in range(args.rounds)] for label in labels}
        for r in range(args.rounds):
            print(f"round {r + 1} of {args.rounds}", file=sys.stderr, flush=True)
            runners = {}
            for label in labels:
                profile = args.profile if args.profile and label == "this" and r == 0 else None
                runners[label] = Runner(trees[label], warm, root / f"data-{label}-{r}", roots, args.preload, profile)
            # taking turns per file, the first in turn alternating: load on the machine hits both alike
            for i, path in enumerate(files):
                order = labels if (i + r) % 2 == 0 else labels[::-1]
                for label in order:
                    runs[label][r].append(runners[label].run(path))
            for runner in runners.values():
                runner.close()
    print(f"{len(files)} files, {args.rounds} round(s), preload={'yes' if args.preload else 'no'}")
    summarise(runs, labels)
    if args.profile:
        print_profile(args.profile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
