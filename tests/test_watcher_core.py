"""The watcher's decisions as plain classes: real files and a real database, a fake clock, a fake broker."""

from __future__ import annotations

import itertools
import logging
import os
from pathlib import Path

import pytest
from sqlalchemy import text

from background_tasks.errors import TransientError
from background_tasks.extraction.extractors import SUPPORTED_EXTENSIONS
from background_tasks.storage.db import create_all, dispose_engine, get_engine
from background_tasks.storage.watcher_history import path_from_db, path_to_db
from background_tasks.watcher.core import (
    BATCH_TASK,
    FILE_TASK,
    IGNORED_DIR_PATTERNS,
    Batcher,
    FileJob,
    History,
    Outgoing,
    PathFilter,
    PendingQueue,
    StabilityTracker,
    Watcher,
    lock_reason,
    sha256_of,
    walk_files,
)


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeBroker:
    """Stands in for Celery's send_task: records messages, or raises TransientError while 'down'."""

    def __init__(self) -> None:
        self.messages: list[Outgoing] = []
        self.down = False
        self.attempts = 0

    def __call__(self, item: Outgoing) -> None:
        self.attempts += 1
        if self.down:
            raise TransientError("Error 111 connecting to 127.0.0.1. Connection refused.")
        self.messages.append(item)

    def sent_paths(self) -> list[str]:
        paths: list[str] = []
        for item in self.messages:
            paths.extend(item.args[0] if item.task_name == BATCH_TASK else [item.args[0]])
        return paths


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = content.encode() if isinstance(content, str) else content
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------
# PathFilter
# --------------------------------------------------------------------------


def test_filter_accepts_every_supported_extension_in_any_case(tmp_path: Path) -> None:
    f = PathFilter([tmp_path])
    assert {".pdf", ".docx", ".txt", ".msg", ".xlsx"} <= SUPPORTED_EXTENSIONS
    for ext in SUPPORTED_EXTENSIONS:
        assert f.accepts(tmp_path / f"report{ext}"), ext
        assert f.accepts(tmp_path / "sub" / f"REPORT{ext.upper()}"), ext
    for name in ("setup.exe", "archive.zip", "README", "clip.mp4"):
        assert f.reason(tmp_path / name).startswith("unsupported type"), name


@pytest.mark.parametrize(
    "name",
    [
        "~$report.docx",
        ".~lock.report.odt#",
        "report.tmp",
        "Report.TMP",
        "report.pdf.part",
        "report.pdf.crdownload",
        "report.pdf.download",
        ".DS_Store",
        "Thumbs.db",
        "THUMBS.DB",
        "desktop.ini",
        ".hidden.txt",
        ".notes.md",
    ],
)
def test_filter_ignores_temporary_partial_system_and_hidden_files(tmp_path: Path, name: str) -> None:
    reason = PathFilter([tmp_path]).reason(tmp_path / name)
    assert reason is not None and ("temporary" in reason or "hidden" in reason), reason


@pytest.mark.parametrize("folder", [".git", "__MACOSX", "$RECYCLE.BIN", ".Trash-1000", ".Trashes", "@eaDir", ".cache"])
def test_filter_ignores_files_in_ignored_and_hidden_folders_at_any_depth(tmp_path: Path, folder: str) -> None:
    f = PathFilter([tmp_path])
    assert f.reason(tmp_path / folder / "report.pdf") is not None
    assert f.reason(tmp_path / "a" / folder / "b" / "report.pdf") is not None
    assert f.accepts(tmp_path / "a" / "b" / "report.pdf")
    assert IGNORED_DIR_PATTERNS  # the list the issue names is declared once


def test_filter_judges_only_below_the_root_so_a_hidden_watched_folder_works(tmp_path: Path) -> None:
    root = tmp_path / ".inbox"
    f = PathFilter([root])
    assert f.accepts(root / "letter.txt")
    assert not f.accepts(root / ".git" / "letter.txt")


def test_filter_extra_patterns_match_name_folder_and_relative_path(tmp_path: Path) -> None:
    f = PathFilter([tmp_path], extra_patterns=["draft_*", "Archive", "exports/*.csv", "  "])
    assert "draft_*" in f.reason(tmp_path / "DRAFT_1.txt")
    assert "archive" in f.reason(tmp_path / "x" / "archive" / "old.pdf")
    assert "exports/*.csv" in f.reason(tmp_path / "exports" / "sales.csv")
    assert f.accepts(tmp_path / "exports" / "sales.xlsx")
    assert f.accepts(tmp_path / "final_1.txt")


def test_filter_never_takes_midas_own_folders(tmp_path: Path) -> None:
    f = PathFilter([tmp_path], exclude_dirs=[tmp_path / "logs", tmp_path / "data"])
    assert "MIDAS" in f.reason(tmp_path / "logs" / "file_watcher.log")
    assert "MIDAS" in f.reason(tmp_path / "data" / "inbox" / "x.txt")
    assert f.accepts(tmp_path / "logs2" / "worker.log")


def test_walk_files_prunes_ignored_folders_and_respects_no_recursive(tmp_path: Path) -> None:
    for rel in ("a.txt", "b.exe", "~$c.docx", "sub/d.pdf", "sub/.git/e.txt", "__MACOSX/f.txt", "sub/deep/g.md"):
        write(tmp_path / rel, "x")
    (tmp_path / "loop").symlink_to(tmp_path, target_is_directory=True)
    found = sorted(p.relative_to(tmp_path).as_posix() for p in walk_files(tmp_path, PathFilter([tmp_path])))
    assert found == ["a.txt", "sub/d.pdf", "sub/deep/g.md"]
    top = sorted(p.name for p in walk_files(tmp_path, PathFilter([tmp_path]), recursive=False))
    assert top == ["a.txt"]


# --------------------------------------------------------------------------
# StabilityTracker
# --------------------------------------------------------------------------


def test_new_file_is_ready_once_after_the_window(tmp_path: Path) -> None:
    clock = FakeClock()
    tracker = StabilityTracker(2.0, clock)
    path = write(tmp_path / "a.txt", "hello")
    assert tracker.touch(path) is True
    assert tracker.touch(path) is False  # already tracked
    clock.advance(1.9)
    assert tracker.ready() == []
    clock.advance(0.1)
    ready = tracker.ready()
    assert [p for p, _ in ready] == [path] and ready[0][1].st_size == 5
    assert tracker.ready() == [] and len(tracker) == 0


def test_a_file_that_keeps_growing_is_waited_for_and_never_given_up_on(tmp_path: Path) -> None:
    clock = FakeClock()
    tracker = StabilityTracker(2.0, clock)
    path = write(tmp_path / "big.csv", "id,value\n")
    tracker.touch(path)
    # Written in pieces for 200 windows, without any further event: the tracker notices by itself.
    for i in range(400):
        clock.advance(1.0)
        with path.open("a") as handle:
            handle.write(f"{i},{i * i}\n")
        assert tracker.ready() == [], f"ready while still growing (piece {i})"
        assert path in tracker
    size = path.stat().st_size
    clock.advance(1.0)
    assert tracker.ready() == []  # changed one second ago
    clock.advance(1.0)
    ready = tracker.ready()
    assert len(ready) == 1 and ready[0][1].st_size == size


def test_same_size_rewrite_is_noticed_by_its_mtime(tmp_path: Path) -> None:
    clock = FakeClock()
    tracker = StabilityTracker(2.0, clock)
    path = write(tmp_path / "a.txt", "aaaa")
    tracker.touch(path)
    clock.advance(1.5)
    write(path, "bbbb")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    clock.advance(0.5)
    assert tracker.ready() == []  # mtime changed at 1.5 -> window restarts
    clock.advance(1.9)
    assert tracker.ready() == []
    clock.advance(0.1)
    assert [p for p, _ in tracker.ready()] == [path]


def test_events_during_the_window_restart_it(tmp_path: Path) -> None:
    clock = FakeClock()
    tracker = StabilityTracker(1.0, clock)
    path = write(tmp_path / "a.txt", "a")
    tracker.touch(path)
    for piece in "bcdef":
        clock.advance(0.6)
        with path.open("a") as handle:
            handle.write(piece)
        tracker.touch(path)
        assert tracker.ready() == []
    clock.advance(0.99)
    assert tracker.ready() == []
    clock.advance(0.01)
    assert tracker.ready()[0][1].st_size == 6


def test_empty_file_waits_until_it_has_content(tmp_path: Path) -> None:
    clock = FakeClock()
    tracker = StabilityTracker(1.0, clock)
    path = write(tmp_path / "download.pdf", b"")
    tracker.touch(path)
    for _ in range(10):
        clock.advance(1.0)
        assert tracker.ready() == []
    write(path, b"%PDF-1.4 ...")
    clock.advance(1.0)
    assert tracker.ready() == []  # the change starts the window
    clock.advance(1.0)
    assert [p for p, _ in tracker.ready()] == [path]


@pytest.mark.parametrize(
    "sibling",
    [".~lock.report.docx#", "~$report.docx", "~$port.docx", "report.docx.part", "report.docx.crdownload"],
)
def test_locked_file_waits_until_the_lock_goes(tmp_path: Path, sibling: str) -> None:
    clock = FakeClock()
    tracker = StabilityTracker(1.0, clock)
    path = write(tmp_path / "report.docx", b"PK\x03\x04 content")
    lock = write(tmp_path / sibling, b"owner")
    assert lock_reason(path) is not None
    tracker.touch(path)
    for _ in range(5):
        clock.advance(1.0)
        assert tracker.ready() == []
    lock.unlink()
    assert lock_reason(path) is None
    clock.advance(1.0)
    assert [p for p, _ in tracker.ready()] == [path]


def test_vanished_and_special_files_are_dropped(tmp_path: Path) -> None:
    clock = FakeClock()
    tracker = StabilityTracker(1.0, clock)
    gone = write(tmp_path / "gone.txt", "x")
    tracker.touch(gone)
    gone.unlink()
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    assert tracker.touch(fifo) is False
    assert tracker.touch(tmp_path) is False  # a directory
    clock.advance(2)
    assert tracker.ready() == [] and len(tracker) == 0


def test_zero_window_is_ready_at_once_and_next_check_reports_deadlines(tmp_path: Path) -> None:
    clock = FakeClock()
    tracker = StabilityTracker(0, clock)
    assert tracker.next_check() is None
    path = write(tmp_path / "a.txt", "x")
    tracker.touch(path)
    assert tracker.next_check() == clock.now
    assert len(tracker.ready()) == 1

    slow = StabilityTracker(3.0, clock)
    slow.touch(path)
    assert slow.next_check() == clock.now + 3.0


# --------------------------------------------------------------------------
# Batcher
# --------------------------------------------------------------------------


def test_batcher_sends_full_batches_at_once_and_a_partial_one_after_the_timeout() -> None:
    clock = FakeClock()
    batcher: Batcher[int] = Batcher(10, 60.0, clock)
    for i in range(25):
        batcher.add(i)
        clock.advance(0.1)
    assert batcher.due() == [list(range(10)), list(range(10, 20))]
    assert len(batcher) == 5
    # The oldest remaining item (20) was added at t=2.0; timeout counts from it, not from the newest.
    assert batcher.next_deadline() == pytest.approx(1000.0 + 2.0 + 60.0)
    clock.advance(59.0)
    assert batcher.due() == []
    clock.advance(0.51)
    assert batcher.due() == [[20, 21, 22, 23, 24]]
    assert batcher.due() == [] and batcher.next_deadline() is None


def test_batcher_drain_and_validation() -> None:
    batcher: Batcher[str] = Batcher(2, 60.0, FakeClock())
    for item in "abcde":
        batcher.add(item)
    assert batcher.drain() == [["a", "b"], ["c", "d"], ["e"]]
    assert len(batcher) == 0
    with pytest.raises(ValueError):
        Batcher(0, 1.0)


# --------------------------------------------------------------------------
# History
# --------------------------------------------------------------------------


@pytest.fixture
def db_url(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    yield url
    dispose_engine(url)


def send_all(history: History, path: Path, task_id: str = "task-1") -> None:
    st = path.stat()
    decision = history.decide(path, st)
    assert decision.process, decision
    history.reserve(path, st, decision.sha256)
    history.mark_sent(path, st, task_id)
    assert history.flush()


def test_history_skips_unchanged_files_also_after_a_restart(tmp_path: Path, db_url: str) -> None:
    path = write(tmp_path / "w" / "a.txt", "alpha")
    history = History(db_url)
    decision = history.decide(path, path.stat())
    assert decision.process and decision.reason == "new"
    assert decision.sha256 == sha256_of(path)
    send_all(history, path, "t-a")

    restarted = History(db_url)
    assert len(restarted) == 1
    entry = restarted.get(path)
    assert entry.task_id == "t-a" and entry.sha256 == sha256_of(path) and entry.size == 5
    assert restarted.is_unchanged(path, path.stat().st_size, path.stat().st_mtime_ns)
    decision = restarted.decide(path, path.stat())
    assert not decision.process and "unchanged" in decision.reason


def test_history_reprocesses_changed_content_and_skips_a_mere_touch(tmp_path: Path, db_url: str) -> None:
    path = write(tmp_path / "a.txt", "version 1")
    history = History(db_url)
    send_all(history, path, "t1")

    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    decision = history.decide(path, path.stat())
    assert not decision.process and "touched" in decision.reason
    assert history.flush()
    assert History(db_url).get(path).mtime_ns == path.stat().st_mtime_ns  # the touch is remembered

    write(path, "version 2, longer")
    decision = history.decide(path, path.stat())
    assert decision.process and decision.reason == "changed"
    history.reserve(path, path.stat(), decision.sha256)
    history.mark_sent(path, path.stat(), "t2")
    assert history.flush()
    assert History(db_url).get(path).task_id == "t2"


def test_history_recognises_copies_and_renames_by_hash(tmp_path: Path, db_url: str) -> None:
    original = write(tmp_path / "a" / "report.txt", "quarterly numbers")
    history = History(db_url)
    send_all(history, original, "t-orig")

    copy = write(tmp_path / "b" / "copy of report.txt", "quarterly numbers")
    decision = history.decide(copy, copy.stat())
    assert not decision.process and decision.same_as == str(original)
    renamed = tmp_path / "a" / "renamed.txt"
    original.rename(renamed)
    decision = history.decide(renamed, renamed.stat())
    assert not decision.process and "copy or rename" in decision.reason
    assert history.flush()

    restarted = History(db_url)
    assert restarted.get(copy).same_as == str(original) and restarted.get(copy).task_id == "t-orig"
    assert not restarted.decide(copy, copy.stat()).process


def test_content_counts_as_known_only_once_its_task_was_sent(tmp_path: Path, db_url: str) -> None:
    first = write(tmp_path / "one.txt", "same bytes")
    second = write(tmp_path / "two.txt", "same bytes")
    history = History(db_url)
    decision = history.decide(first, first.stat())
    history.reserve(first, first.stat(), decision.sha256)
    # A copy arriving while the original waits for the broker is recognised in this run ...
    assert not history.decide(second, second.stat()).process
    # ... but nothing was sent, so after a restart both are unknown and the content goes.
    assert history.flush()
    restarted = History(db_url)
    assert len(restarted) == 0
    assert restarted.decide(first, first.stat()).process


def test_mark_sent_ignores_an_older_state_of_a_file_that_changed_again(tmp_path: Path, db_url: str) -> None:
    path = write(tmp_path / "a.txt", "v1")
    history = History(db_url)
    st1 = path.stat()
    history.reserve(path, st1, history.decide(path, st1).sha256)
    write(path, "version two")
    st2 = path.stat()
    history.reserve(path, st2, history.decide(path, st2).sha256)
    history.mark_sent(path, st1, "old-task")  # the first message reached the broker
    assert history.flush()
    assert History(db_url).get(path) is None  # the newer state is not recorded before its own task is sent
    history.mark_sent(path, st2, "new-task")
    assert history.flush()
    assert History(db_url).get(path).task_id == "new-task"


def test_too_large_files_are_not_hashed_but_still_enqueued(tmp_path: Path, db_url: str) -> None:
    path = write(tmp_path / "big.txt", b"x" * 5000)
    history = History(db_url, max_hash_bytes=1000)
    decision = history.decide(path, path.stat())
    assert decision.process and decision.sha256 is None and "too large" in decision.reason


def test_history_keeps_records_while_the_database_fails_and_backs_off_instead_of_looping(
    tmp_path: Path, db_url: str, caplog
) -> None:
    clock = FakeClock()
    path = write(tmp_path / "a.txt", "content")
    history = History(db_url, clock=clock, backoff_start=0.5, backoff_max=30.0)
    with get_engine(db_url).begin() as conn:
        conn.execute(text("DROP TABLE watcher_history"))
    st = path.stat()
    history.reserve(path, st, history.decide(path, st).sha256)
    history.mark_sent(path, st, "t1")
    with caplog.at_level(logging.WARNING):
        assert history.flush() is False
        for _ in range(300):  # the watcher's loop asks every 0.1 s for 30 s
            clock.advance(0.1)
            history.flush()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "could not save 1 records" in warnings[0].getMessage()
    assert history.unsaved == 1

    create_all(db_url)  # the table is back (create_schema builds once per engine; this builds again)
    assert history.flush(force=True) is True and history.unsaved == 0
    assert "saved again" in caplog.text
    assert History(db_url).get(path).task_id == "t1"


def undecodable(folder: Path, raw_name: bytes) -> Path:
    """A path whose name is not UTF-8, as Python lists it: the bytes as surrogate escapes."""
    return Path(os.fsdecode(os.fsencode(folder) + b"/" + raw_name))


def test_stored_paths_are_unchanged_unless_undecodable_and_always_come_back_exactly() -> None:
    assert path_to_db("/w/Bericht März.txt") == "/w/Bericht März.txt"
    assert path_to_db("C:\\Users\\a.txt") == "C:\\Users\\a.txt"
    bad = os.fsdecode(b"/w/bad\xff\xfe\\name.txt")
    stored = path_to_db(bad)
    assert stored == "escaped:/w/bad\\xff\\xfe\\\\name.txt"
    stored.encode("utf-8")  # a database can take it
    for path in (bad, "/w/plain.txt", os.fsdecode(b"/w/\xe9t\xe9 \\x41.txt"), "/w/lone\ud800.txt"):
        assert path_from_db(path_to_db(path)) == path


@pytest.mark.skipif(os.name == "nt", reason="POSIX file names are bytes; Windows names are UTF-16")
def test_history_records_a_non_utf8_name_and_knows_it_after_a_restart(tmp_path: Path, db_url: str) -> None:
    bad = write(undecodable(tmp_path, b"bad\xff\xfename.txt"), "bytes in the name are not UTF-8")
    good = write(tmp_path / "after_fifo.txt", "a normal name beside it")
    copy = write(undecodable(tmp_path, b"copy \xff.txt"), "a normal name beside it")
    history = History(db_url)
    send_all(history, bad, "t-bad")
    send_all(history, good, "t-good")
    assert not history.decide(copy, copy.stat()).process  # same content as after_fifo.txt
    assert history.flush()

    restarted = History(db_url)
    assert len(restarted) == 3
    assert restarted.get(bad).task_id == "t-bad" and restarted.get(good).task_id == "t-good"
    assert restarted.get(copy).same_as == str(good)
    for path in (bad, good, copy):
        assert not restarted.decide(path, path.stat()).process


def test_a_record_the_database_refuses_costs_only_itself_and_is_reported_once(
    tmp_path: Path, db_url: str, caplog
) -> None:
    clock = FakeClock()
    history = History(db_url, clock=clock)
    files = [write(tmp_path / f"{name}.txt", name) for name in ("before", "refused", "after_fifo")]
    for path in files:
        st = path.stat()
        history.reserve(path, st, history.decide(path, st).sha256)
        # A record the database cannot store (here: a task id it cannot encode) among valid ones.
        history.mark_sent(path, st, "id-\udcff" if path.stem == "refused" else f"t-{path.stem}")
    with caplog.at_level(logging.WARNING):
        assert history.flush() is True  # nothing left to retry
        for _ in range(50):
            clock.advance(0.1)
            assert history.flush() is True
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "refused.txt cannot be saved" in warnings[0]
    assert history.unsaved == 0
    restarted = History(db_url)
    assert len(restarted) == 2 and restarted.get(files[1]) is None
    assert restarted.get(files[0]).task_id == "t-before" and restarted.get(files[2]).task_id == "t-after_fifo"


# --------------------------------------------------------------------------
# PendingQueue
# --------------------------------------------------------------------------


def job(path: str) -> FileJob:
    return FileJob(Path(path), os.stat("/"), None, f"id-{path}", 0.0)


def test_pending_queue_keeps_everything_while_the_broker_is_down(caplog) -> None:
    clock = FakeClock()
    broker = FakeBroker()
    pending = PendingQueue(broker, clock, backoff_start=0.5, backoff_max=4.0)
    broker.down = True
    items = [Outgoing.single(job(f"/w/{i}.txt")) for i in range(5)]
    for item in items:
        pending.add(item)
    with caplog.at_level(logging.WARNING):
        assert pending.flush() == []
    assert "broker unreachable" in caplog.text and "5 file(s) wait" in caplog.text
    assert pending.broker_down and pending.files == 5

    # Backoff doubles up to the cap: attempts at +0.5, +1, +2, +4, +4 ...
    attempt_times = []
    for _ in range(200):
        clock.advance(0.25)
        before = broker.attempts
        pending.flush()
        if broker.attempts > before:
            attempt_times.append(clock.now)
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(attempt_times)]
    assert gaps[:4] == [1.0, 2.0, 4.0, 4.0], gaps
    assert max(gaps) == 4.0

    broker.down = False
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        clock.advance(4.0)
        sent = pending.flush()
    assert sent == items and [m.task_id for m in broker.messages] == [i.task_id for i in items]
    assert "reachable again" in caplog.text
    assert len(pending) == 0 and not pending.broker_down
    assert broker.sent_paths() == [f"/w/{i}.txt" for i in range(5)]  # each once, in order


def test_pending_queue_keeps_an_item_whose_send_failed_unexpectedly(caplog) -> None:
    clock = FakeClock()
    calls = []

    def flaky(item: Outgoing) -> None:
        calls.append(item.task_id)
        if len(calls) == 1:
            raise ValueError("unexpected")

    pending = PendingQueue(flaky, clock, backoff_start=1.0)
    item = Outgoing.single(job("/w/a.txt"))
    pending.add(item)
    with caplog.at_level(logging.ERROR):
        assert pending.flush() == []
    assert "failed unexpectedly" in caplog.text
    clock.advance(1.0)
    assert pending.flush() == [item] and calls == [item.task_id, item.task_id]
    assert item.attempts == 2


def test_outgoing_messages_name_the_document_tasks() -> None:
    single = Outgoing.single(job("/w/a.txt"))
    assert single.task_name == FILE_TASK and single.args == ["/w/a.txt"] and single.task_id == "id-/w/a.txt"
    batch = Outgoing.batch([job("/w/a.txt"), job("/w/b.txt")])
    assert batch.task_name == BATCH_TASK and batch.args == [["/w/a.txt", "/w/b.txt"]]


# --------------------------------------------------------------------------
# Watcher (all parts together, fake clock and broker)
# --------------------------------------------------------------------------


def make_watcher(root: Path, db_url: str, clock: FakeClock, broker: FakeBroker, batch: bool = False) -> Watcher:
    return Watcher(
        [root],
        PathFilter([root]),
        StabilityTracker(1.0, clock),
        History(db_url, clock=clock),
        PendingQueue(broker, clock, backoff_start=0.5, backoff_max=2.0),
        batcher=Batcher(10, 5.0, clock) if batch else None,
        clock=clock,
    )


def run(watcher: Watcher, clock: FakeClock, seconds: float, step: float = 0.1) -> None:
    for _ in range(round(seconds / step)):
        watcher.tick()
        clock.advance(step)


def test_watcher_enqueues_each_complete_file_once(tmp_path: Path, db_url: str) -> None:
    clock, broker = FakeClock(), FakeBroker()
    root = tmp_path / "in"
    watcher = make_watcher(root, db_url, clock, broker)
    files = [write(root / f"doc{i}.txt", f"document {i}") for i in range(5)]
    ignored = [write(root / "x.tmp", "t"), write(root / ".hidden.txt", "h"), write(root / "app.exe", "e")]
    for path in files + ignored:
        watcher.notify(str(path))
        watcher.notify(str(path))  # created + modified
    run(watcher, clock, 0.5)
    assert broker.messages == []  # inside the window
    run(watcher, clock, 1.0)
    assert sorted(broker.sent_paths()) == sorted(str(p) for p in files)
    run(watcher, clock, 5.0)
    assert len(broker.messages) == 5
    stats = watcher.stats()
    assert stats["seen"] == 5 and stats["enqueued"] == 5 and stats["ignored"] == 6 and stats["pending"] == 0
    assert stats["last_event_path"] is not None

    # An unchanged file touched by an event is not sent again; a changed one is.
    watcher.notify(str(files[0]))
    write(files[1], "document 1, edited")
    watcher.notify(str(files[1]))
    run(watcher, clock, 2.0)
    assert broker.sent_paths().count(str(files[1])) == 2
    assert broker.sent_paths().count(str(files[0])) == 1


def test_watcher_restart_reprocesses_nothing_but_finds_what_arrived_meanwhile(tmp_path: Path, db_url: str) -> None:
    clock, broker = FakeClock(), FakeBroker()
    root = tmp_path / "in"
    old = [write(root / f"old{i}.md", f"# old {i}") for i in range(3)]
    first = make_watcher(root, db_url, clock, broker)
    first.scan(initial=True)
    run(first, clock, 2.0)
    assert sorted(broker.sent_paths()) == sorted(str(p) for p in old)
    assert first.shutdown(timeout=1.0, sleep=clock.advance) == 0

    new = write(root / "sub" / "new.md", "# new")
    copy = write(root / "copy-of-old0.md", "# old 0")
    write(old[2], "# old 2, rewritten")
    second = make_watcher(root, db_url, clock, broker)
    second.scan(initial=True)
    assert second.counters.skipped == 2  # old0 and old1 known unchanged without reading them
    run(second, clock, 2.0)
    assert sorted(broker.sent_paths()[3:]) == sorted([str(new), str(old[2])])
    assert str(copy) not in broker.sent_paths()
    assert second.counters.skipped == 3  # plus the copy


def test_watcher_batches_and_shutdown_sends_the_open_batch(tmp_path: Path, db_url: str) -> None:
    clock, broker = FakeClock(), FakeBroker()
    root = tmp_path / "in"
    watcher = make_watcher(root, db_url, clock, broker, batch=True)
    for i in range(23):
        watcher.notify(str(write(root / f"f{i:02}.csv", f"a,b\n{i},{i}\n")))
    run(watcher, clock, 1.5)
    assert [len(m.args[0]) for m in broker.messages] == [10, 10]
    assert all(m.task_name == BATCH_TASK for m in broker.messages)
    assert watcher.stats()["pending"] == 3
    assert watcher.shutdown(timeout=1.0, sleep=clock.advance) == 0
    assert [len(m.args[0]) for m in broker.messages] == [10, 10, 3]
    assert sorted(broker.sent_paths()) == sorted(str(root / f"f{i:02}.csv") for i in range(23))
    # Every file's history names the batch task that carried it.
    history = History(db_url)
    batch_ids = {m.task_id for m in broker.messages}
    assert {history.get(p).task_id for p in broker.sent_paths()} == batch_ids


def test_watcher_loses_nothing_when_the_broker_is_down_even_across_a_restart(tmp_path: Path, db_url: str) -> None:
    clock, broker = FakeClock(), FakeBroker()
    root = tmp_path / "in"
    watcher = make_watcher(root, db_url, clock, broker)
    broker.down = True
    files = [write(root / f"d{i}.json", f'{{"n": {i}}}') for i in range(4)]
    for path in files:
        watcher.notify(str(path))
    run(watcher, clock, 3.0)
    assert watcher.stats()["pending"] == 4 and watcher.stats()["broker_down"]
    # Stopped while the broker is still down: nothing sent, nothing recorded as sent.
    assert watcher.shutdown(timeout=1.0, sleep=clock.advance) == 4
    assert broker.messages == []

    broker.down = False
    restarted = make_watcher(root, db_url, clock, broker)
    restarted.scan(initial=True)
    run(restarted, clock, 2.0)
    assert sorted(broker.sent_paths()) == sorted(str(p) for p in files)


def test_a_folder_moved_in_is_scanned(tmp_path: Path, db_url: str) -> None:
    clock, broker = FakeClock(), FakeBroker()
    root = tmp_path / "in"
    root.mkdir()
    watcher = make_watcher(root, db_url, clock, broker)
    staged = tmp_path / "staging" / "project"
    write(staged / "a.txt", "a")
    write(staged / "deeper" / "b.txt", "b")
    write(staged / ".git" / "c.txt", "c")
    (staged.parent).rename(root / "moved")
    watcher.notify(str(root / "moved"), is_dir=True)
    watcher.notify(str(root / ".git"), is_dir=True)  # an ignored folder is not scanned
    run(watcher, clock, 2.0)
    assert sorted(Path(p).name for p in broker.sent_paths()) == ["a.txt", "b.txt"]


@pytest.mark.skipif(os.name == "nt", reason="POSIX file names are bytes; Windows names are UTF-16")
def test_watcher_sends_a_non_utf8_name_exactly_and_shows_it_readably(tmp_path: Path, db_url: str) -> None:
    from kombu.utils.json import dumps, loads

    clock, broker = FakeClock(), FakeBroker()
    root = tmp_path / "in"
    bad = write(undecodable(root, b"bad\xff\xfename.txt"), "not UTF-8")
    good = write(root / "after_fifo.txt", "fine")
    watcher = make_watcher(root, db_url, clock, broker)
    watcher.scan(initial=True)
    run(watcher, clock, 2.0)
    assert sorted(broker.sent_paths()) == sorted([str(bad), str(good)])
    message = next(m for m in broker.messages if m.args == [str(bad)])
    assert loads(dumps(message.args)) == [str(bad)]  # Celery's JSON carries it as \\udcff escapes, exactly
    watcher.notify(str(bad))
    run(watcher, clock, 2.0)
    assert watcher.stats()["last_event_path"] == str(root) + "/bad\\xff\\xfename.txt"
    assert watcher.shutdown(timeout=1.0, sleep=clock.advance) == 0

    restarted = make_watcher(root, db_url, clock, broker)
    restarted.scan(initial=True)
    run(restarted, clock, 2.0)
    assert len(broker.messages) == 2 and restarted.counters.skipped == 2
