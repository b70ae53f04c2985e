"""The systems ``bench_peers`` compares, each run in a long-lived process of its own.

A process imports and warms its system once (as a worker does), then reads one
file at a time from a pipe, times only the system's own call, and answers with
the time, an outcome, the text's length and its word recall against the file's
reference texts (measured after the timed call). Kept apart from the driver so
that a peer that hangs, crashes or blows up costs one file and one restart.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from pathlib import Path
from typing import Any

#: what the benchmark compares; the driver starts one process per name
SYSTEMS = ("kreuzberg", "midas-extract", "midas-pipeline")


def midas_settings(data_dir: Path, extra_roots: list[str]) -> Any:
    """MIDAS's settings for a benchmark data dir; long scans OCR'd inline, as kreuzberg does them."""
    from background_tasks.settings import load_settings
    from bench.common import bench_env

    env = bench_env(data_dir, [Path(r) for r in extra_roots], MIDAS_OCR_MAX_PAGES_PER_TASK="100000")
    return load_settings(env, env_file=Path(os.devnull))


def preload_midas(preload: bool) -> None:
    """What a worker does at start-up (``worker_process.preload_worker`` without the gc freeze)."""
    logging.disable(logging.WARNING)  # MIDAS logs every refused corpus file; not what is measured
    if preload:
        from background_tasks.processing import extract, worker_process

        extract.preload_parsers()
        worker_process.preload_modules(with_pandas=False)


class Runner:
    """One system: ``run`` a file (timed by the caller), then its ``text``; a fresh state per round."""

    def __init__(self) -> None:
        self.last_text = ""

    def run(self, path: Path) -> tuple[str, bool]:
        """(outcome: ``success``, ``duplicate`` or ``failed:<why>``; whether text was recognised by OCR)."""
        raise NotImplementedError

    def text(self) -> str:
        return self.last_text

    def new_round(self, number: int) -> None:
        """Called before each round."""


class Kreuzberg(Runner):
    """kreuzberg without its result cache, OCR by Tesseract in MIDAS's languages."""

    def __init__(self, languages: str, threads: int | None) -> None:
        super().__init__()
        import kreuzberg

        self.extract_file = kreuzberg.extract_file_sync
        self.config = kreuzberg.ExtractionConfig(
            use_cache=False,  # its default caches results by content: the second round would read the cache
            ocr=kreuzberg.OcrConfig(backend="tesseract", language=languages),
            concurrency=kreuzberg.ConcurrencyConfig(max_threads=threads) if threads else None,
        )

    def run(self, path: Path) -> tuple[str, bool]:
        try:
            self.last_text = self.extract_file(str(path), config=self.config).content
        except Exception as exc:  # what kreuzberg raises for a file it cannot read
            self.last_text = ""
            return f"failed:{type(exc).__name__}", False
        return "success", False


class MidasExtract(Runner):
    """Detect, extract (isolated as the pipeline does it), OCR and normalise: no copy, no store."""

    def __init__(self, base: Path, extra_roots: list[str]) -> None:
        super().__init__()
        self.settings = midas_settings(base, extra_roots)

    def run(self, path: Path) -> tuple[str, bool]:
        from background_tasks.errors import MidasError
        from background_tasks.extraction import detect
        from background_tasks.processing.extract import extract
        from background_tasks.processing.finish import normalise
        from background_tasks.processing.ocr_pipeline import apply_ocr

        self.last_text = ""
        try:
            extension, mime_type = detect.resolve_extension(path, path.suffix.lower())
            extraction = extract(path, extension, mime_type, self.settings, label=path.name)
            extraction = apply_ocr(extraction, path, extension, self.settings, path.name)
            body = normalise(extraction, extraction.metadata)
        except MidasError as exc:
            return f"failed:{exc.error_type}", False
        self.last_text = body.text
        return "success", bool(body.metadata.get("ocr_pages"))


class MidasPipeline(Runner):
    """``pipeline.process_file`` with its store in a data dir of its own per round (nothing is a duplicate)."""

    def __init__(self, base: Path, extra_roots: list[str]) -> None:
        super().__init__()
        self.base, self.extra_roots, self.round = base, extra_roots, -1
        self.settings: Any = None
        self.store: Any = None
        self.result: dict[str, Any] = {}
        self.new_round(0)

    def new_round(self, number: int) -> None:
        from background_tasks.storage.store import DocumentStore

        if number == self.round:
            return
        self.round = number
        self.settings = midas_settings(self.base / (f"round-{number}" if number >= 0 else "warm-up"), self.extra_roots)
        self.store = DocumentStore(self.settings.database_url_resolved)
        self.store.create_schema()

    def run(self, path: Path) -> tuple[str, bool]:
        from background_tasks.processing import pipeline

        self.result = pipeline.process_file(str(path), self.settings, self.store).as_dict()
        return self.result["status"], bool(self.result.get("metadata", {}).get("ocr_pages"))

    def text(self) -> str:
        """The stored text (its chunks, overlaps and all: recall counts each word once)."""
        if self.result.get("document_id") is None or self.result["status"] not in {"success", "duplicate"}:
            return ""
        return "\n".join(c["text"] for c in self.store.get_chunks(self.result["document_id"]))


def make_runner(system: str, options: dict[str, Any]) -> Runner:
    """``system``'s runner, its imports and set-up paid here (as in a worker, before any file)."""
    if system == "kreuzberg":
        return Kreuzberg(options["ocr_languages"], options.get("kreuzberg_threads"))
    preload_midas(options["preload"])
    base = Path(options["work_dir"]) / system
    if system == "midas-extract":
        return MidasExtract(base, options["extra_roots"])
    return MidasPipeline(base, options["extra_roots"])


def serve(system: str, options: dict[str, Any], conn: Any, log_file: str) -> None:
    """The long-lived process of one system: ``("file", path, refs)``, ``("round", n)``, ``("stop",)``.

    Its output (and its children's: Tesseract's "Empty page!!") goes to ``log_file``, not into the report.
    """
    with open(log_file, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    from tests.corpus import word_recall

    started = time.perf_counter()
    runner = make_runner(system, options)
    conn.send({"ready": round(time.perf_counter() - started, 3)})
    while True:
        message = conn.recv()
        if message[0] == "stop":
            own, children = (
                resource.getrusage(w).ru_maxrss // 1024 for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
            )
            conn.send({"peak_rss_mb": own, "children_peak_rss_mb": children})
            return
        if message[0] == "round":
            runner.new_round(message[1])
            conn.send({})
            continue
        _, path, refs = message
        t0 = time.perf_counter()
        status, ocr = runner.run(Path(path))
        seconds = time.perf_counter() - t0
        text = runner.text()
        recall = [word_recall(text, Path(ref)) for ref in refs]
        conn.send({"seconds": seconds, "status": status, "chars": len(text), "recall": recall, "ocr": ocr})
