"""MIDAS against kreuzberg on the shared corpus: speed and recall per file type, in one run.

    python -m bench bench_peers [--quick] [--rounds 2] [--corpus DIR] [--extra DIR ...] [--json PATH]
    python -m bench bench_peers --profile [PATH] [--quick]

Three systems, each in a long-lived process of its own (imports paid once, as
in a worker): kreuzberg (``extract_file_sync``, result cache off, Tesseract
OCR in MIDAS's ``MIDAS_OCR_LANGUAGES``), MIDAS's extraction alone (detect,
extract in its isolated child, OCR, normalise: no copy, no store) and MIDAS's
whole pipeline (``pipeline.process_file``: intake, store, chunks, search index;
a fresh store per round). Files are taken in turns, each file by each system
before the next file, in two rounds in opposite orders (files and systems), so
a busy machine slows all of them alike; a file's time is its mean over the
rounds, measured inside the system's process around its call only. MIDAS OCRs
long scans inline here (``MIDAS_OCR_MAX_PAGES_PER_TASK`` raised), as kreuzberg
does. kreuzberg also OCRs pictures inside documents (82 in one corpus ODT):
files on which any system takes over ``--outlier-s`` are listed apart and left
out of the per-type rows.

Prints per type and overall: files/s, MB/s and mean word recall against the
corpus's ``_expected`` references, the time ratio MIDAS/kreuzberg (< 1: MIDAS
is faster); small files (<= 100 KB) against the rest with the median per file;
and issue 19's targets as PASS/MISS lines. ``--profile`` instead runs
``process_file`` over the small files under cProfile (after one warm pass) and
writes the statistics (``.pstats``) and their top entries (``.txt``).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import multiprocessing
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import PROJECT_ROOT, print_table
from bench.peers_systems import SYSTEMS, midas_settings, preload_midas

KZ, EXTRACT, PIPELINE = SYSTEMS
SMALL_BYTES = 100 * 1024
#: the round number of the untimed warm-up pass
WARM_UP = -1
#: extensions that name the same type of file
ALIASES = {"htm": "html", "markdown": "md", "jpeg": "jpg", "tiff": "tif", "xlsm": "xlsx", "jsonl": "json"}
#: small files of these types must go through the whole pipeline in <= 25 ms each
PLAIN_TYPES = frozenset({"txt", "log", "md", "csv", "json"})
RESULTS_DIR = PROJECT_ROOT / "bench" / "results"


@dataclass
class Item:
    """One file and what each system made of it (per system: one entry per round)."""

    path: Path
    family: str
    size: int
    refs: list[Path]
    extra: bool = False
    seconds: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    status: dict[str, str] = field(default_factory=dict)
    chars: dict[str, int] = field(default_factory=dict)
    recall: dict[str, list[float]] = field(default_factory=dict)
    ocr: bool = False

    def time(self, system: str) -> float:
        return statistics.fmean(self.seconds[system])

    @property
    def small(self) -> bool:
        return self.size <= SMALL_BYTES

    def ok(self, system: str) -> bool:
        return self.status.get(system) in {"success", "duplicate"}


# -- which files --------------------------------------------------------------


def family_of(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".") or "none"
    return ALIASES.get(suffix, suffix)


def folder_files(folder: Path) -> list[Path]:
    """The corpus layout (``<type>/<file>``, without ``_expected``), else the files of a flat folder."""
    nested = sorted(p for p in folder.glob("*/*") if p.is_file() and p.parent.name != "_expected")
    return nested or sorted(p for p in folder.iterdir() if p.is_file())


def references(corpus: Path, path: Path) -> list[Path]:
    """``_expected/<type>/<file>__<reference>`` of a corpus file."""
    folder = corpus / "_expected" / path.suffix.lower().lstrip(".")
    return sorted(folder.glob(f"{path.name}__*")) if folder.is_dir() else []


def select_files(corpus: Path, extras: Sequence[Path], quick: int) -> list[Item]:
    """Every file, or with ``quick`` that many per type (those with a reference first, then the smallest)."""
    items = [Item(p, family_of(p), p.stat().st_size, references(corpus, p)) for p in folder_files(corpus)]
    for extra in extras:
        found = sorted(p for p in extra.rglob("*") if p.is_file() and not p.name.startswith("."))
        items += [Item(p, family_of(p), p.stat().st_size, [], extra=True) for p in found]
    if quick:
        by_family: dict[str, list[Item]] = defaultdict(list)
        for item in sorted(items, key=lambda i: (not i.refs, i.size)):
            by_family[item.family].append(item)
        items = sorted((i for group in by_family.values() for i in group[:quick]), key=lambda i: str(i.path))
    return items


# -- the systems' processes ---------------------------------------------------


class Peer:
    """One system's long-lived process; a file that hangs it past ``timeout`` fails and the process is replaced."""

    def __init__(self, system: str, options: dict, timeout: float) -> None:
        self.system, self.options, self.timeout = system, options, timeout
        self.round = 0
        self.peak: dict[str, int] = {}
        self.restarts = 0
        self._start()

    @property
    def log(self) -> Path:
        """The process's own output (Tesseract's notes, tracebacks), kept off the report."""
        return Path(self.options["work_dir"]) / f"{self.system}.log"

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _start(self) -> None:
        from bench.peers_systems import serve

        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=serve, args=(self.system, self.options, child, str(self.log)))
        self.process.daemon = True
        self.process.start()
        child.close()
        try:
            if not self.conn.poll(300):
                raise EOFError("no answer within 300 s")
            self.conn.recv()
        except EOFError as exc:
            self.process.kill()
            raise RuntimeError(f"{self.system} did not start ({exc}); its output:\n{self.log_tail()}") from None
        if self.round:
            self.ask(("round", self.round))

    def _replace(self, why: str) -> None:
        print(f"{self.system} {why}; replacing it. Its last output:\n{self.log_tail()}", file=sys.stderr)
        self.process.kill()
        self.process.join()
        self.restarts += 1
        self._start()

    def ask(self, message: tuple, timeout: float | None = None) -> dict:
        self.conn.send(message)
        if not self.conn.poll(timeout or self.timeout):
            self._replace(f"did not answer {message[:2]} within {timeout or self.timeout:g} s")
            return {"status": "failed:timeout", "seconds": timeout or self.timeout}
        try:
            return self.conn.recv()
        except EOFError:
            self._replace(f"died on {message[:2]}")
            return {"status": "failed:crashed", "seconds": float("nan")}

    def run(self, item: Item) -> dict:
        started = time.perf_counter()
        reply = self.ask(("file", str(item.path), [str(r) for r in item.refs]))
        if reply["seconds"] != reply["seconds"]:  # crashed: the wall time is all there is
            reply["seconds"] = time.perf_counter() - started
        return reply

    def new_round(self, number: int) -> None:
        self.round = number
        self.ask(("round", number), timeout=60)

    def stop(self) -> None:
        self.peak = self.ask(("stop",), timeout=60)
        self.process.join(10)


def warm_up(items: list[Item], peers: dict[str, Peer]) -> None:
    """The smallest file of each type once per system, untimed (a store of its own): lazy set-ups
    (kreuzberg's PDFium and Tesseract, MIDAS's language profiles) are paid before any file is timed."""
    smallest: dict[str, Item] = {}
    for item in sorted(items, key=lambda i: i.size, reverse=True):
        smallest[item.family] = item
    started = time.perf_counter()
    for peer in peers.values():
        peer.new_round(WARM_UP)
        for item in smallest.values():
            peer.run(item)
    print(f"warm-up ({len(smallest)} files per system): {time.perf_counter() - started:.0f} s", flush=True)


def run_rounds(items: list[Item], peers: dict[str, Peer], rounds: int) -> None:
    """Each file by each system in turn; odd rounds go backwards through files and systems."""
    warm_up(items, peers)
    for number in range(rounds):
        forward = number % 2 == 0
        order = [peers[s] for s in (SYSTEMS if forward else reversed(SYSTEMS))]
        for peer in order:
            peer.new_round(number)
        started = time.perf_counter()
        for item in items if forward else reversed(items):
            for peer in order:
                reply = peer.run(item)
                item.seconds[peer.system].append(reply["seconds"])
                if number == 0:
                    item.status[peer.system] = reply["status"]
                    item.chars[peer.system] = reply.get("chars", 0)
                    item.recall[peer.system] = reply.get("recall") or [0.0] * len(item.refs)
                    item.ocr |= bool(reply.get("ocr"))
        print(f"round {number + 1}/{rounds}: {time.perf_counter() - started:.0f} s", flush=True)


# -- the report ---------------------------------------------------------------


def total(items: Sequence[Item], system: str) -> float:
    return sum(i.time(system) for i in items)


def ratio(items: Sequence[Item], system: str, baseline: str = KZ) -> float:
    """``system``'s time over ``baseline``'s on the same files (< 1: ``system`` is faster)."""
    base = total(items, baseline)
    return total(items, system) / base if base else float("inf")


def mean_recall(items: Sequence[Item], system: str) -> float | None:
    values = [r for i in items for r in i.recall.get(system, ())]
    return statistics.fmean(values) if values else None


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def figures(items: Sequence[Item], system: str) -> list[str]:
    """files/s, MB/s, mean recall."""
    seconds = total(items, system)
    mb = sum(i.size for i in items) / 1e6
    return [fmt(len(items) / seconds, 1), fmt(mb / seconds), fmt(mean_recall(items, system), 3)]


def family_rows(items: Sequence[Item], label: Callable[[Item], str]) -> list[list[str]]:
    groups: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        groups[label(item)].append(item)
    rows = []
    for name, group in sorted(groups.items()):
        mb = sum(i.size for i in group) / 1e6
        row = [name, str(len(group)), fmt(mb)]
        for system in SYSTEMS:
            row += figures(group, system)
        rows.append([*row, fmt(ratio(group, EXTRACT)), fmt(ratio(group, PIPELINE))])
    return rows


def median_ms(items: Sequence[Item], system: str) -> str:
    return fmt(statistics.median(i.time(system) for i in items) * 1000, 1) if items else "-"


def report(items: list[Item], peers: dict[str, Peer], outlier_s: float) -> list[str]:
    """Print the tables; return the target lines (PASS/MISS)."""
    outliers = [i for i in items if max(i.time(s) for s in SYSTEMS) > outlier_s]
    regular = [i for i in items if i not in outliers]
    header = ["type", "files", "MB"]
    for short in ("kz", "ext", "pipe"):
        header += [f"{short} f/s", f"{short} MB/s", f"{short} recall"]
    header += ["ext/kz", "pipe/kz"]
    print(
        "\nPer type (time ratios MIDAS/kreuzberg, < 1: MIDAS faster); kz = kreuzberg, ext = MIDAS extraction "
        f"alone, pipe = MIDAS whole pipeline; files over {outlier_s:g} s left out here, listed below"
    )
    rows = family_rows(regular, lambda i: i.family)
    rows += family_rows(regular, lambda i: f"ALL but >{outlier_s:g} s")
    rows += family_rows(items, lambda i: "ALL files")
    print_table(header, rows)

    print("\nSmall files (<= 100 KB) and the rest: files/s and median ms per file")
    split_header = ["files", "n", "MB"]
    for short in ("kz", "ext", "pipe"):
        split_header += [f"{short} f/s", f"{short} median ms"]
    split_rows = []
    for name, group in (("<= 100 KB", [i for i in items if i.small]), ("> 100 KB", [i for i in items if not i.small])):
        if not group:
            continue
        row = [name, str(len(group)), fmt(sum(i.size for i in group) / 1e6)]
        for system in SYSTEMS:
            row += [fmt(len(group) / total(group, system), 1), median_ms(group, system)]
        split_rows.append([*row, fmt(ratio(group, EXTRACT)), fmt(ratio(group, PIPELINE))])
    print_table([*split_header, "ext/kz", "pipe/kz"], split_rows)

    if outliers:
        print(f"\nFiles on which a system took over {outlier_s:g} s (seconds, mean of the rounds):")
        print_table(
            ["file", "MB", "kz s", "ext s", "pipe s", "kz", "MIDAS"],
            [
                [
                    f"{i.family}/{i.path.name}",
                    fmt(i.size / 1e6),
                    *(fmt(i.time(s), 1) for s in SYSTEMS),
                    i.status[KZ],
                    i.status[PIPELINE],
                ]
                for i in outliers
            ],
        )
    print()
    for system in SYSTEMS:
        peer = peers[system]
        failed = sorted(f"{i.family}/{i.path.name} ({i.status[system]})" for i in items if not i.ok(system))
        print(
            f"{system}: {sum(1 for i in items if i.chars.get(system))} files with text, {len(failed)} failed, "
            f"peak RSS {peer.peak.get('peak_rss_mb', '?')} MiB (its forked children: "
            f"{peer.peak.get('children_peak_rss_mb', '?')} MiB), {peer.restarts} restarts"
        )
        if failed:
            print("  failed: " + ", ".join(failed))
    print(f"MIDAS OCR'd {sum(i.ocr for i in items)} files; references: {sum(len(i.refs) for i in items)}")
    return targets(items)


def verdict(ok: bool, text: str) -> str:
    return f"{'PASS' if ok else 'MISS'}  {text}"


def targets(items: list[Item]) -> list[str]:
    """Issue 19's targets, measured in this run."""
    lines = []
    readable = [i for i in items if i.ok(KZ)]
    for family in sorted({i.family for i in readable}):
        group = [i for i in readable if i.family == family]
        r = ratio(group, EXTRACT)
        lines.append(verdict(r <= 1.0, f"extraction {family}: {r:.2f}x kreuzberg's time ({len(group)} files) <= 1.0x"))
    small = [i for i in readable if i.small]
    if small:
        r = ratio(small, PIPELINE)
        lines.append(verdict(r <= 2.0, f"pipeline, small files: {r:.2f}x kreuzberg's time ({len(small)} files) <= 2x"))
    plain = [i for i in items if i.small and i.family in PLAIN_TYPES]
    if plain:
        mean = total(plain, PIPELINE) / len(plain) * 1000
        lines.append(
            verdict(
                mean <= 25,
                f"pipeline, small txt/log/md/csv/json: {mean:.1f} ms per file "
                f"(median {median_ms(plain, PIPELINE)}, {len(plain)} files) <= 25 ms",
            )
        )
    corpus = [i for i in items if not i.extra]
    speed = 1 / ratio(corpus, PIPELINE)
    lines.append(verdict(speed >= 1.5, f"corpus overall: pipeline {speed:.2f}x kreuzberg's throughput >= 1.5x"))
    speed = 1 / ratio(items, PIPELINE)
    which = "corpus and --extra" if len(corpus) < len(items) else "no --extra: the corpus alone"
    lines.append(
        verdict(
            speed >= 3.0,
            f"all files with scans ({which}; {sum(i.ocr for i in items)} OCR'd): "
            f"pipeline {speed:.2f}x kreuzberg's throughput >= 3x",
        )
    )
    recall = mean_recall(corpus, PIPELINE)
    if recall is not None:
        refs = sum(len(i.refs) for i in corpus)
        lines.append(verdict(recall >= 0.955, f"pipeline recall {recall:.3f} on {refs} references >= 0.955"))
    return lines


def write_json(items: list[Item], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "file": str(i.path),
            "type": i.family,
            "bytes": i.size,
            "ocr": i.ocr,
            **{
                s: {"seconds": i.seconds[s], "status": i.status[s], "chars": i.chars[s], "recall": i.recall[s]}
                for s in SYSTEMS
            },
        }
        for i in items
    ]
    path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    print(f"per-file results written to {path}")


# -- profiling ----------------------------------------------------------------


def profile(items: list[Item], work: Path, out: Path, preload: bool, extra_roots: list[str]) -> None:
    """``process_file`` over the small files under cProfile, after one warm pass; forked children unseen."""
    from background_tasks.processing import pipeline
    from background_tasks.storage.store import DocumentStore

    preload_midas(preload)
    small = [i for i in items if i.small]
    profiler = cProfile.Profile()
    for number in range(2):
        settings = midas_settings(work / f"profile-{number}", extra_roots)
        store = DocumentStore(settings.database_url_resolved)
        store.create_schema()
        started = time.perf_counter()
        for item in small:
            if number:
                profiler.enable()
            pipeline.process_file(str(item.path), settings, store)
            profiler.disable()
        what = "profiled" if number else "warm-up"
        print(f"{what} pass: {len(small)} small files in {time.perf_counter() - started:.2f} s")
    out.parent.mkdir(parents=True, exist_ok=True)
    profiler.dump_stats(out.with_suffix(".pstats"))
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(25)
    out.with_suffix(".txt").write_text(text.getvalue(), encoding="utf-8")
    print(text.getvalue())
    print(f"written: {out.with_suffix('.pstats')} (python -m pstats) and {out.with_suffix('.txt')}")


# -- main -----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 files per type (a smoke test)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--corpus", type=Path, help="default: $MIDAS_TEST_CORPUS or ../shared/corpus")
    parser.add_argument("--extra", type=Path, action="append", default=[], help="more files (scans, images)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per file per system")
    parser.add_argument("--outlier-s", type=float, default=10.0)
    parser.add_argument("--kreuzberg-threads", type=int, help="cap kreuzberg's thread pools (default: its own)")
    parser.add_argument("--no-preload", action="store_true", help="MIDAS without preload_parsers()")
    parser.add_argument("--json", type=Path, help="write per-file results here")
    parser.add_argument("--profile", nargs="?", type=Path, const=RESULTS_DIR / "bench_peers_profile", metavar="PATH")
    args = parser.parse_args(argv)
    if args.corpus:
        os.environ["MIDAS_TEST_CORPUS"] = str(args.corpus.resolve())  # bench_env allows it; the children inherit it
    from bench.common import corpus_dir

    corpus = corpus_dir()
    items = select_files(corpus, args.extra, 2 if args.quick else 0)
    extra_roots = [str(p.resolve()) for p in args.extra]
    mb = sum(i.size for i in items) / 1e6
    print(f"{len(items)} files ({mb:.1f} MB) from {corpus}; {os.cpu_count()} CPU cores, load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="midas-bench-peers-") as tmp:
        if args.profile:
            profile(items, Path(tmp), args.profile, not args.no_preload, extra_roots)
            return 0
        import kreuzberg

        languages = midas_settings(Path(tmp) / "settings", extra_roots).ocr_languages
        print(f"kreuzberg {kreuzberg.__version__}, Tesseract OCR in {languages!r} for both")
        options = {
            "work_dir": tmp,
            "extra_roots": extra_roots,
            "preload": not args.no_preload,
            "ocr_languages": languages,
            "kreuzberg_threads": args.kreuzberg_threads,
        }
        peers = {s: Peer(s, options, args.timeout) for s in SYSTEMS}
        try:
            run_rounds(items, peers, args.rounds)
        finally:
            for peer in peers.values():
                peer.stop()
    print(f"load average after the run: {os.getloadavg()[0]:.1f}")
    lines = report(items, peers, args.outlier_s)
    print("\nTargets (issue 19):")
    for line in lines:
        print("  " + line)
    if args.json:
        write_json(items, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
