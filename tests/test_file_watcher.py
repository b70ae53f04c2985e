"""The file watcher end to end: a real watchdog observer in a real watcher process, a Redis of its own, a real worker.

The watcher and its worker run on a stack of their own (a module-wide
IsolatedStack: its own redis-server and data dir), so the session worker, which
also consumes the ``documents`` queue, cannot take the watcher's tasks, and the
watcher's worker cannot take other tests' tasks.

What was processed is read from the worker's own records: the Celery result
table (one row per task, with the task's arguments and its JSON result) and
the watcher's history table. A file sent twice would show up as two rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from background_tasks.keys import WATCHER_HEARTBEAT_KEY as HEARTBEAT_KEY
from background_tasks.watcher.history import path_from_db
from tests.support import PROJECT_ROOT, RedisServer, WorkerProcess, wait_until

#: real launcher stacks, workers or servers: deselected by -m "not integration"
pytestmark = pytest.mark.integration

if TYPE_CHECKING:
    from tests.conftest import IsolatedStack

FILE_TASK = "background_tasks.document_tasks.process_document_file"
BATCH_TASK = "background_tasks.document_tasks.process_document_batch"
STABILITY = "0.3"
READY = ("SUCCESS", "FAILURE")  # final states: a failed batch task is reported at once, not after the timeout


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("watcher-e2e")


@pytest.fixture(scope="module")
def stack(module_isolated_stack, base: Path) -> IsolatedStack:
    """Watcher and worker share a Redis and a data dir of their own; the worker allows everything under watch/."""
    (base / "watch").mkdir(exist_ok=True)
    return module_isolated_stack(
        MIDAS_DATA_DIR=str(base / "data"),
        MIDAS_LOG_DIR=str(base / "logs"),
        MIDAS_WATCH_DIRS=str(base / "watch"),
        MIDAS_STABILITY_SECONDS=STABILITY,
    )


@pytest.fixture(scope="module")
def env(stack: IsolatedStack) -> dict[str, str]:
    """The stack's environment: the watcher sends to the stack's Redis and records in its data dir."""
    return stack.env


@pytest.fixture(scope="module")
def broker(stack: IsolatedStack) -> RedisServer:
    """The stack's Redis (not the session's): the one the watcher sends to and the outage test stops."""
    return stack.redis


@pytest.fixture(scope="module")
def worker(stack: IsolatedStack) -> WorkerProcess:
    """The only consumer of the stack's ``documents`` queue (stopped with the stack after the module)."""
    return stack.start_worker(queues=("documents",), concurrency=2, name="watcher-e2e")


@pytest.fixture
def folder(base: Path, request) -> Path:
    path = base / "watch" / f"{request.node.name}-{uuid.uuid4().hex[:6]}"
    path.mkdir()
    return path


class WatcherProcess:
    """``python -m background_tasks.file_watcher`` as the launcher runs it."""

    def __init__(self, env: dict[str, str], redis: RedisServer, log_path: Path, *args: str, **extra_env: str) -> None:
        self.redis = redis
        self.log_path = log_path
        self._out = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "background_tasks.file_watcher", "--heartbeat-interval", "0.3", *args],
            cwd=PROJECT_ROOT,
            env={**env, **extra_env},
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        self.wait_for(lambda hb: hb["state"] == "running", "first heartbeat")

    def heartbeat(self) -> dict[str, Any] | None:
        raw = self.redis.client().get(HEARTBEAT_KEY)
        hb = json.loads(raw) if raw else None
        return hb if hb and hb["pid"] == self.process.pid else None

    def wait_for(self, predicate, what: str, timeout: float = 30) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            if self.process.poll() is not None:
                raise AssertionError(f"watcher exited with {self.process.returncode}:\n{self.output()[-3000:]}")
            hb = self.heartbeat()
            return hb if hb and predicate(hb) else None

        return wait_until(check, timeout, interval=0.1, what=f"watcher heartbeat: {what}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._out.close()
        return self.process.returncode


@pytest.fixture
def start_watcher(env, broker, worker, folder) -> Iterator:
    started: list[WatcherProcess] = []

    def start(*args: str, directory: Path | None = None, **extra_env: str) -> WatcherProcess:
        target = directory or folder
        log_path = folder.parent.parent / "logs" / f"watcher-{folder.name}-{len(started)}.out"
        log_path.parent.mkdir(exist_ok=True)
        watcher = WatcherProcess(env, broker, log_path, "--only", "-d", str(target), *args, **extra_env)
        started.append(watcher)
        return watcher

    yield start
    for watcher in started:
        watcher.stop()


class Results:
    """The worker's Celery result rows (result_extended: name and args are stored)."""

    def __init__(self, base: Path) -> None:
        self.db = base / "data" / "celery_results.sqlite3"

    def rows(self, name: str = FILE_TASK) -> list[dict[str, Any]]:
        if not self.db.exists():
            return []
        with sqlite3.connect(self.db, timeout=30) as conn:
            raw = conn.execute(
                "SELECT task_id, status, args, result FROM celery_taskmeta WHERE name = ?", (name,)
            ).fetchall()
        rows = []
        for task_id, status, args, result in raw:
            rows.append(
                {
                    "task_id": task_id,
                    "status": status,
                    "args": json.loads(args) if args else None,
                    "result": json.loads(result) if result and status == "SUCCESS" else None,
                    "error": (result.decode(errors="replace") if isinstance(result, bytes) else str(result))[:2000]
                    if result and status != "SUCCESS"
                    else None,
                }
            )
        return rows

    def for_paths(self, paths: list[Path]) -> dict[str, list[dict[str, Any]]]:
        wanted = {str(p) for p in paths}
        found: dict[str, list[dict[str, Any]]] = {p: [] for p in wanted}
        for row in self.rows():
            if row["args"] and row["args"][0] in wanted:
                found[row["args"][0]].append(row)
        return found

    def under(self, folder: Path, name: str = FILE_TASK) -> list[dict[str, Any]]:
        prefix = str(folder) + os.sep
        out = []
        for row in self.rows(name):
            args = row["args"] or [None]
            first = args[0][0] if name == BATCH_TASK and args[0] else args[0]
            if isinstance(first, str) and first.startswith(prefix):
                out.append(row)
        return out

    def wait_done(self, paths: list[Path], timeout: float = 60) -> dict[str, list[dict[str, Any]]]:
        def done() -> dict[str, list[dict[str, Any]]] | None:
            found = self.for_paths(paths)
            complete = all(rows and all(r["status"] == "SUCCESS" for r in rows) for rows in found.values())
            return found if complete else None

        return wait_until(done, timeout, interval=0.25, what=f"{len(paths)} file(s) processed")


@pytest.fixture(scope="module")
def results(base: Path) -> Results:
    return Results(base)


def history_rows(base: Path, folder: Path) -> dict[str, dict[str, Any]]:
    """The watcher's history rows under ``folder``, by path (escaped non-UTF-8 names restored)."""
    with sqlite3.connect(base / "data" / "midas.sqlite3", timeout=30) as conn:
        conn.row_factory = sqlite3.Row
        rows = [dict(row) for row in conn.execute("SELECT * FROM watcher_history")]
    prefix = str(folder) + os.sep
    by_path = {path_from_db(row["path"]): row for row in rows}
    return {path: row for path, row in by_path.items() if path.startswith(prefix)}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict[str, tuple[str, int, int]]:
    """Content hash, size and mtime of every entry under ``folder``."""
    state = {}
    for path in sorted(folder.rglob("*")):
        st = path.lstat()
        digest = sha256(path) if path.is_file() and not path.is_symlink() else "-"
        state[str(path.relative_to(folder))] = (digest, st.st_size, st.st_mtime_ns)
    return state


def unique_text(label: str) -> str:
    return f"{label} {uuid.uuid4().hex}\nThe quarterly report lists revenue and costs.\n"


def assert_once_and_complete(found: dict[str, list[dict[str, Any]]]) -> None:
    for path, rows in found.items():
        assert len(rows) == 1, f"{path} processed {len(rows)} times"
        result = rows[0]["result"]
        assert result["status"] == "success", result
        assert result["sha256"] == sha256(Path(path)), f"{path}: processed content differs from the file"


# --------------------------------------------------------------------------


def test_a_file_written_slowly_is_processed_once_after_it_is_complete(start_watcher, folder, results, base) -> None:
    watcher = start_watcher(MIDAS_STABILITY_SECONDS="1.0")
    path = folder / "growing report.txt"
    with path.open("w") as handle:
        for piece in range(8):  # 3.5 s of writing: several windows' worth, with pauses shorter than the window
            handle.write(unique_text(f"piece {piece}") * 20)
            handle.flush()
            if piece < 7:
                time.sleep(0.5)
    last_write = path.stat().st_mtime
    before = snapshot(folder)

    found = results.wait_done([path], timeout=30)
    assert_once_and_complete(found)
    assert found[str(path)][0]["result"]["text_chars"] >= 8 * 20 * 40

    record = history_rows(base, folder)[str(path)]
    enqueued = _epoch(record["enqueued_at"])
    assert enqueued >= last_write + 1.0 - 0.05, "enqueued before the file stood still for the window"
    assert record["sha256"] == sha256(path) and record["task_id"] == found[str(path)][0]["task_id"]
    time.sleep(1.5)
    assert len(results.for_paths([path])[str(path)]) == 1
    assert snapshot(folder) == before  # nothing in the watched folder changed, not even an mtime
    assert watcher.stop() == 0


def _epoch(value: str) -> float:
    from datetime import datetime

    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def test_500_files_dropped_at_once_are_each_processed_exactly_once(start_watcher, folder, results, base) -> None:
    watcher = start_watcher()
    paths = []
    for i in range(500):
        sub = folder / f"part{i % 5}"
        sub.mkdir(exist_ok=True)
        path = sub / f"note {i:03}.txt"
        path.write_text(unique_text(f"note {i}"))
        paths.append(path)
    before = snapshot(folder)

    found = results.wait_done(paths, timeout=150)
    assert_once_and_complete(found)
    hb = watcher.wait_for(lambda hb: hb["enqueued"] == 500 and hb["pending"] == 0, "all 500 enqueued")
    assert hb["seen"] == 500 and hb["skipped"] == 0 and hb["waiting"] == 0
    history = history_rows(base, folder)
    assert len(history) == 500
    assert {h["task_id"] for h in history.values()} == {rows[0]["task_id"] for rows in found.values()}
    assert len(results.under(folder)) == 500
    assert snapshot(folder) == before
    assert watcher.stop() == 0


def test_restart_reprocesses_nothing_and_changes_are_processed_again(start_watcher, folder, results, base) -> None:
    a, b, c = (folder / f"{name}.md" for name in "abc")
    for path in (a, b, c):
        path.write_text(unique_text(path.name))
    first = start_watcher()
    found = results.wait_done([a, b, c])
    assert_once_and_complete(found)
    hb = first.heartbeat()
    assert hb["watch_dirs"] == [str(folder)] and hb["mode"] == "single" and hb["pid"] == first.process.pid
    assert {"time", "last_event", "seen", "enqueued", "skipped", "pending"} <= hb.keys()
    assert first.redis.client().ttl(HEARTBEAT_KEY) > 0

    b.write_text(unique_text("b, edited while the watcher runs"))  # changed content: processed again
    wait_until(lambda: len(results.for_paths([b])[str(b)]) == 2, 20, what="edited file processed again")
    first.wait_for(lambda hb: hb["enqueued"] == 4 and hb["pending"] == 0, "edit enqueued")
    assert first.stop() == 0

    d = folder / "sub" / "d.md"
    d.parent.mkdir()
    d.write_text(unique_text("arrived while the watcher was down"))
    c.write_text(unique_text("c, edited while the watcher was down"))
    copy = folder / "copy of a.md"
    shutil.copy2(a, copy)  # known content under a new name
    st_b = b.stat()
    os.utime(b, ns=(st_b.st_atime_ns, st_b.st_mtime_ns + 2_000_000_000))  # touched, content unchanged

    second = start_watcher()
    hb = second.wait_for(lambda hb: hb["enqueued"] == 2 and hb["waiting"] == 0 and hb["pending"] == 0, "rescan done")
    assert hb["skipped"] == 3  # a unchanged, b touched only, the copy of a
    results.wait_done([a, b, c, d])
    time.sleep(1.0)  # more than three stability windows: anything else would have been sent by now
    counts = {Path(p).name: len(rows) for p, rows in results.for_paths([a, b, c, d, copy]).items()}
    assert counts == {"a.md": 1, "b.md": 2, "c.md": 2, "d.md": 1, "copy of a.md": 0}
    assert_once_and_complete(results.for_paths([d]))
    c_hashes = {r["result"]["sha256"] for r in results.for_paths([c])[str(c)]}
    assert sha256(c) in c_hashes and len(c_hashes) == 2  # the old and the new content
    history = history_rows(base, folder)
    assert history[str(copy)]["same_as"] == str(a)
    assert second.stop() == 0


def test_ignored_names_never_reach_the_queue(start_watcher, folder, results, base) -> None:
    watcher = start_watcher("--ignore", "draft_*", "Private")
    ignored = [
        "~$report.docx",
        ".~lock.report.odt#",
        "upload.tmp",
        "movie.pdf.part",
        "setup.pdf.crdownload",
        "page.html.download",
        ".DS_Store",
        "Thumbs.db",
        "desktop.ini",
        ".hidden.txt",
        "program.exe",
        "draft_1.txt",
        ".git/notes.txt",
        "__MACOSX/notes.txt",
        "$RECYCLE.BIN/notes.txt",
        ".Trash-1000/notes.txt",
        "@eaDir/notes.txt",
        "Private/notes.txt",
        "deep/.cache/notes.txt",
    ]
    for rel in ignored:
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(unique_text(rel))
    sentinel = folder / "deep" / "sentinel.txt"
    sentinel.write_text(unique_text("sentinel"))

    assert_once_and_complete(results.wait_done([sentinel]))
    time.sleep(1.0)
    sent = [row["args"][0] for row in results.under(folder)]
    assert sent == [str(sentinel)]
    assert list(history_rows(base, folder)) == [str(sentinel)]
    hb = watcher.wait_for(lambda hb: hb["enqueued"] == 1, "sentinel enqueued")
    assert hb["seen"] == 1 and hb["ignored"] >= 12  # at least one event per ignored top-level file
    assert watcher.stop() == 0


def test_a_broker_stopped_for_a_few_seconds_loses_nothing(start_watcher, folder, results, broker) -> None:
    watcher = start_watcher()
    paths = [folder / f"offline {i}.json" for i in range(10)]
    broker.stop()
    try:
        for i, path in enumerate(paths):
            path.write_text(json.dumps({"n": i, "id": uuid.uuid4().hex, "text": "while the broker was down"}))
        wait_until(lambda: "broker unreachable" in watcher.output(), 15, what="watcher reports the broker down")
        time.sleep(2.0)
        assert watcher.process.poll() is None, watcher.output()[-2000:]
    finally:
        if broker.process is None or broker.process.poll() is not None:
            broker.start()
    found = results.wait_done(paths, timeout=60)
    assert_once_and_complete(found)
    hb = watcher.wait_for(lambda hb: hb["enqueued"] == 10 and not hb["broker_down"], "sent after the outage")
    assert hb["pending"] == 0
    assert "reachable again" in watcher.output()
    assert watcher.stop() == 0


def test_batch_mode_full_batches_timeout_and_the_open_batch_on_sigterm(start_watcher, folder, results) -> None:
    watcher = start_watcher("--batch", "--batch-size", "10", "--batch-timeout", "2")
    paths = [folder / f"row{i:02}.csv" for i in range(25)]
    for i, path in enumerate(paths):
        path.write_text(f"id,token\n{i},{uuid.uuid4().hex}\n")
    assert_once_and_complete(results.wait_done(paths, timeout=60))
    batches = wait_until(
        lambda: (rows := results.under(folder, BATCH_TASK)) and all(r["status"] in READY for r in rows) and rows,
        60,
        what="batch tasks done",
    )
    assert all(r["status"] == "SUCCESS" for r in batches), [r["error"] for r in batches if r["status"] != "SUCCESS"]
    assert sorted(len(r["args"][0]) for r in batches) == [5, 10, 10]
    assert sorted(p for r in batches for p in r["args"][0]) == sorted(str(p) for p in paths)
    assert all(r["result"]["succeeded"] == len(r["args"][0]) for r in batches)
    assert watcher.stop() == 0

    # A long timeout: the four files sit in the open batch until SIGTERM sends it.
    watcher = start_watcher("--batch", "--batch-size", "50", "--batch-timeout", "600")
    late = [folder / f"late{i}.csv" for i in range(4)]
    for i, path in enumerate(late):
        path.write_text(f"id,token\n{i},{uuid.uuid4().hex}\n")
    watcher.wait_for(lambda hb: hb["pending"] == 4 and hb["enqueued"] == 0, "four files in the open batch")
    assert watcher.stop() == 0
    assert_once_and_complete(results.wait_done(late, timeout=60))
    late_batches = [r for r in results.under(folder, BATCH_TASK) if r["args"][0][0].startswith(str(folder / "late"))]
    assert len(late_batches) == 1 and sorted(late_batches[0]["args"][0]) == sorted(str(p) for p in late)
    assert "stopped: 4 seen, 4 enqueued" in watcher.output()


def test_cli_warns_about_folders_the_workers_do_not_allow(start_watcher, env, base, tmp_path) -> None:
    outside = tmp_path / "not-allowed"
    outside.mkdir()
    watcher = start_watcher(directory=outside)
    assert "is not an allowed folder" in watcher.output() and str(outside) in watcher.output()
    assert watcher.stop() == 0

    bad = subprocess.run(
        [sys.executable, "-m", "background_tasks.file_watcher", "--only", "-d", str(tmp_path / "missing")],
        cwd=PROJECT_ROOT,
        env={**env, "MIDAS_LOG_DIR": str(base / "logs")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "not an existing folder" in bad.stderr
    helptext = subprocess.run(
        [sys.executable, "-m", "background_tasks.file_watcher", "--help"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "MIDAS_ALLOWED_ROOTS" in helptext and "--no-initial-scan" in helptext


def test_polling_top_level_only_and_the_periodic_rescan(start_watcher, folder, results) -> None:
    early = folder / "there before the start.txt"
    early.write_text(unique_text("early"))
    watcher = start_watcher("--polling", "--no-recursive", "--no-initial-scan", "--rescan-interval", "2")
    hb = watcher.heartbeat()
    assert hb["polling"] is True and hb["scans"] == 0  # no initial scan
    top = folder / "top.txt"
    nested = folder / "sub" / "nested.txt"
    nested.parent.mkdir()
    top.write_text(unique_text("top"))
    nested.write_text(unique_text("nested"))

    assert_once_and_complete(results.wait_done([top, early], timeout=30))
    hb = watcher.wait_for(lambda hb: hb["scans"] >= 1 and hb["enqueued"] >= 2, "periodic rescan")
    assert hb["enqueued"] == 2 and hb["seen"] == 2
    time.sleep(2.5)  # another rescan and several polls later, the nested file is still not sent
    assert results.for_paths([nested])[str(nested)] == []
    assert watcher.stop() == 0


# --------------------------------------------------------------------------
# Hostile file names: undecodable bytes, newlines and terminal escapes
# --------------------------------------------------------------------------

FORGED = "2026-01-01 ERROR admin password is hunter2"
RECORD_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


def undecodable(folder: Path, raw_name: bytes) -> Path:
    """A path whose name is not UTF-8, as Python lists it: the bytes as surrogate escapes."""
    return Path(os.fsdecode(os.fsencode(folder) + b"/" + raw_name))


def assert_no_forged_lines(text: str, where: str) -> None:
    """Each line is a record of its own or an indented continuation (a traceback); none is forged."""
    for line in text.splitlines():
        assert not line.startswith(FORGED[:10]), f"{where}: forged line {line!r}"
        if "hunter2" in line:
            assert RECORD_START.match(line) or line.startswith(" "), f"{where}: {line!r}"
    assert "\x1b" not in text and "\r" not in text, f"{where}: raw control characters"


@pytest.mark.skipif(os.name == "nt", reason="POSIX file names are bytes; Windows names are UTF-16")
def test_a_non_utf8_name_is_processed_once_recorded_once_and_warned_about_never(
    start_watcher, folder, results, base, worker
) -> None:
    bad = undecodable(folder, b"bad\xff\xfename.txt")
    bad.write_text(unique_text("a name that is not UTF-8"))
    normal = [folder / "before.txt", folder / "after_fifo.txt"]
    for path in normal:
        path.write_text(unique_text(path.name))
    everything = [bad, *normal]

    first = start_watcher()
    found = results.wait_done(everything)
    assert_once_and_complete(found)
    first.wait_for(lambda hb: hb["enqueued"] == 3 and hb["pending"] == 0, "three enqueued")
    time.sleep(1.5)  # the old defect warned about ten times a second from here on
    output = first.output()
    assert [line for line in output.splitlines() if " WARNING " in line or " ERROR " in line] == []
    assert "Logging error" not in output and len(output.splitlines()) < 20, output[-3000:]
    assert f"enqueued {folder}/bad\\xff\\xfename.txt as task" in output  # shown readably
    assert "bad\\xff\\xfename.txt" in worker.log_text() and "bad\\udcff" not in worker.log_text()

    history = history_rows(base, folder)
    assert sorted(history) == sorted(str(p) for p in everything)
    assert {history[str(p)]["task_id"] for p in everything} == {rows[0]["task_id"] for rows in found.values()}
    assert first.stop() == 0

    second = start_watcher()
    hb = second.wait_for(lambda hb: hb["scans"] >= 1 and hb["waiting"] == 0, "initial scan done")
    time.sleep(1.0)  # more than three stability windows: anything queued again would have been sent
    hb = second.heartbeat()
    assert hb["enqueued"] == 0 and hb["skipped"] == 3
    assert {p: len(rows) for p, rows in results.for_paths(everything).items()} == {str(p): 1 for p in everything}
    assert second.stop() == 0


@pytest.mark.skipif(os.name == "nt", reason="POSIX file names are bytes; Windows names are UTF-16")
def test_a_non_utf8_name_goes_out_in_a_batch_too(start_watcher, folder, results) -> None:
    paths = [undecodable(folder, b"batch \xe9t\xe9.csv"), folder / "batch normal.csv"]
    for i, path in enumerate(paths):
        path.write_text(f"id,token\n{i},{uuid.uuid4().hex}\n")
    watcher = start_watcher("--batch", "--batch-size", "10", "--batch-timeout", "1")
    assert_once_and_complete(results.wait_done(paths, timeout=60))
    batches = wait_until(
        lambda: (rows := results.under(folder, BATCH_TASK)) and all(r["status"] in READY for r in rows) and rows,
        60,
        what="batch task done",
    )
    assert [(r["status"], sorted(r["args"][0])) for r in batches] == [("SUCCESS", sorted(str(p) for p in paths))]
    assert batches[0]["result"]["succeeded"] == 2
    assert watcher.stop() == 0


def test_file_names_with_newlines_forge_no_line_in_the_watcher_or_worker_logs(
    start_watcher, folder, results, base, stack, worker
) -> None:
    watched = folder / f"report.txt\n{FORGED}\r\x1b[2K.txt"  # still a .txt, so the watcher sends it
    watched.write_text(unique_text("a name with a newline"))
    direct_dir = base / "watch" / f"direct-{uuid.uuid4().hex[:6]}"  # allowed for the worker, not watched
    direct_dir.mkdir()
    direct = direct_dir / f"x.txt\n{FORGED}\n.txt"  # ends in .txt: text of an unknown type is refused unread
    direct.write_text(unique_text("sent straight to the worker"))

    watcher = start_watcher()
    assert_once_and_complete(results.wait_done([watched]))
    sent = stack.send(FILE_TASK, str(direct))  # process_document_file.delay on the stack's Redis
    assert sent.get(timeout=60)["status"] == "success"
    failed = stack.app.send_task("background_tasks.system_tasks.fail", args=[f"bad value\n{FORGED}"], queue="documents")
    with pytest.raises(Exception, match="hunter2"):
        failed.get(timeout=60)
    assert watcher.stop() == 0

    wait_until(lambda: "DiagnosticFailure" in worker.log_text(), 15, what="the failure's traceback in the log")
    logs = {
        "watcher output (the launcher's watcher.log)": watcher.output(),
        "file_watcher.log": (base / "logs" / "file_watcher.log").read_text(encoding="utf-8"),
        "worker log": worker.log_text(),
    }
    for where, text in logs.items():
        assert_no_forged_lines(text, where)
    escaped = f"report.txt\\n{FORGED}\\r\\x1b[2K.txt"
    assert escaped in logs["watcher output (the launcher's watcher.log)"] and escaped in logs["file_watcher.log"]
    assert escaped in logs["worker log"] and f"x.txt\\n{FORGED}" in logs["worker log"]
    traceback_lines = [line for line in logs["worker log"].splitlines() if "DiagnosticFailure: bad value" in line]
    assert traceback_lines and all(line.startswith("  ") for line in traceback_lines)
