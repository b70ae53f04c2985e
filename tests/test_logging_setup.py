"""Log lines cannot be forged: every logged value is escaped by the one MIDAS formatter.

Plain tests of the formatter, and the real log pump process. The worker and the
watcher writing through it are tested end to end in tests/test_file_watcher.py.
"""

from __future__ import annotations

import io
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from background_tasks.logging_setup import (
    LOG_FORMAT,
    TaskContextFilter,
    escape_control,
    install_task_context,
    make_formatter,
)
from tests.support import PROJECT_ROOT

FORGED = "2026-01-01 ERROR admin password is hunter2"
RECORD_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("line\nbreak", "line\\nbreak"),
        ("carriage\rreturn", "carriage\\rreturn"),
        ("tab\there", "tab\\there"),
        ("\x1b[2Kcolour", "\\x1b[2Kcolour"),
        ("nul\x00del\x7f", "nul\\x00del\\x7f"),
        ("c1 \x85 \x9b", "c1 \\x85 \\x9b"),
        ("separators \u2028\u2029", "separators \\u2028\\u2029"),
        ("bad\udcff\udcfename.txt", "bad\\xff\\xfename.txt"),  # undecodable bytes of a file name
        ("lone \ud800", "lone \\ud800"),
        ("Bericht März – 日本.txt", "Bericht März – 日本.txt"),  # printable Unicode stays as it is
    ],
)
def test_control_characters_and_lone_surrogates_are_escaped_printable_text_is_not(raw: str, shown: str) -> None:
    assert escape_control(raw) == shown
    shown.encode("utf-8")  # always writable to a UTF-8 log file


def log_lines(emit, fmt: str = LOG_FORMAT) -> list[str]:
    """What a MIDAS handler writes for the records ``emit(logger)`` logs."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(make_formatter(fmt))
    handler.addFilter(TaskContextFilter())
    logger = logging.getLogger(f"test.logging_setup.{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        emit(logger)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue().splitlines()


def test_a_value_with_newlines_stays_inside_its_own_record() -> None:
    lines = log_lines(lambda log: log.info("enqueued %s as task %s", f"x.txt\n{FORGED}", "t-1"))
    assert len(lines) == 1 and RECORD_START.match(lines[0])
    assert lines[0].endswith(f"enqueued x.txt\\n{FORGED} as task t-1")


def test_the_task_id_and_other_record_fields_are_escaped_too() -> None:
    lines = log_lines(lambda log: log.warning("done", extra={"task_id": f"t\n{FORGED}"}))
    assert lines == [lines[0]] and f"[t\\n{FORGED}] done" in lines[0]


def test_a_traceback_stays_multi_line_but_indented_with_its_messages_escaped() -> None:
    def emit(log: logging.Logger) -> None:
        try:
            try:
                raise KeyError(f"inner\n{FORGED}")
            except KeyError as inner:
                inner.add_note(f"note\n{FORGED}")
                raise OSError(f"cannot read /w/x.txt\n{FORGED}\r\x1b[2K") from inner
        except OSError:
            log.exception("failed on %s", f"x.txt\n{FORGED}")

    lines = log_lines(emit)
    assert RECORD_START.match(lines[0]) and lines[0].endswith(f"failed on x.txt\\n{FORGED}")
    assert all(line.startswith("  ") for line in lines[1:]), lines  # no line inside it starts like a record
    body = "\n".join(lines[1:])
    assert "  Traceback (most recent call last):" in lines and "direct cause" in body
    assert f"  OSError: cannot read /w/x.txt\\n{FORGED}\\r\\x1b[2K" in lines
    assert f"  note\\n{FORGED}" in lines
    assert "\x1b" not in body and "\r" not in body


def test_stack_info_and_a_traceback_formatted_elsewhere_are_indented_as_well() -> None:
    record = logging.makeLogRecord(
        {"msg": "from another process", "levelname": "ERROR", "exc_text": f"Traceback:\n{FORGED}", "task_id": "-"}
    )
    text = make_formatter().format(record)
    assert text.splitlines()[1:] == ["  Traceback:", f"  {FORGED}"]
    lines = log_lines(lambda log: log.info("here", stack_info=True))
    assert len(lines) > 2 and all(line.startswith("  ") for line in lines[1:])


def test_the_record_itself_is_left_alone_for_other_handlers() -> None:
    record = logging.makeLogRecord({"msg": "a %s", "args": ("b\nc",), "levelname": "INFO", "task_id": "x\ny"})
    make_formatter().format(record)
    assert record.getMessage() == "a b\nc" and record.task_id == "x\ny"


def test_install_task_context_puts_the_escaping_formatter_on_every_handler() -> None:
    logger = logging.getLogger("test.logging_setup.install")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        install_task_context(logger)
        logger.warning("name %s", "a\nb")
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue().count("\n") == 1 and "[-] name a\\nb" in stream.getvalue()


def test_the_log_pump_escapes_what_a_service_prints_raw(tmp_path: Path) -> None:
    """The launcher's pump (a real process): lines stay lines, nothing inside one can rewrite the log."""
    logfile = tmp_path / "service.log"
    data = (
        b"plain line\n"
        b"progress 10%\rprogress 100%\n"
        b"\x1b[31mred\x1b[0m\n"
        b"name bad\xff\xfe.txt\n"
        b"windows line\r\n"
        b"Bericht M\xc3\xa4rz\n"
    )
    subprocess.run(
        [sys.executable, "-m", "background_tasks.launcher.logpump", str(logfile)],
        input=data,
        cwd=PROJECT_ROOT,
        check=True,
        timeout=60,
    )
    assert logfile.read_text(encoding="utf-8").splitlines() == [
        "plain line",
        "progress 10%\\rprogress 100%",
        "\\x1b[31mred\\x1b[0m",
        "name bad\\xff\\xfe.txt",
        "windows line",
        "Bericht März",
    ]
