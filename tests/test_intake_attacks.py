"""Attacks on intake, reproduced with real processes: what a sender must never be able to read.

Each test here failed on the code before the fix (issue 12): a symlink swapped
in while tasks ran made a file outside the allowed folders searchable; the
worker's current directory was an allowed root, so ``.env`` and ``.git/config``
were read; ``None`` or a NUL byte as a path failed the task with a raw
``TypeError``/``ValueError``; and "no such file" told a sender which paths
exist outside the roots.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from background_tasks.processing import pipeline
from background_tasks.storage.store import DocumentStore
from tests import db_fixtures
from tests.support import die_with_parent, result_or_log, wait_until

database_url = db_fixtures.database_url  # the SQLite + PostgreSQL fixture

SECRET_WORD = "zyxwvutsecretqqq"

#: A process that swaps two names with renameat2(RENAME_EXCHANGE) as fast as it can.
SWAPPER = textwrap.dedent(
    """
    import ctypes, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    a, b = (os.fsencode(p) for p in sys.argv[1:3])
    AT_FDCWD, RENAME_EXCHANGE = -100, 2
    print("ready", flush=True)
    while True:
        if libc.renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE) != 0:
            raise SystemExit(f"renameat2: {os.strerror(ctypes.get_errno())}")
    """
)


def _renameat2_available() -> bool:
    return hasattr(ctypes.CDLL(None), "renameat2")


@pytest.fixture
def swapped_file(docs_dir, tmp_path):
    """``docs/t.txt`` swapped back and forth with a symlink to a 0600 secret outside every root."""
    if not _renameat2_available():
        pytest.fail("renameat2 is missing from this C library; the attack cannot be reproduced")
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_text(f"the admin password is {SECRET_WORD}\n")
    secret.chmod(0o600)
    target = docs_dir / "t.txt"
    target.write_text("harmless public words about gardening\n")
    link = docs_dir / "t.lnk"
    link.symlink_to(secret)
    swapper = subprocess.Popen(
        [sys.executable, "-c", SWAPPER, str(target), str(link)],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=die_with_parent,
    )
    assert swapper.stdout.readline().strip() == "ready"
    yield target, hashlib.sha256(secret.read_bytes()).hexdigest()
    swapper.kill()
    swapper.wait(10)


def _assert_secret_never_read(results: list[dict], secret_sha: str, store: DocumentStore) -> None:
    leaked = [r for r in results if r.get("sha256") == secret_sha or SECRET_WORD in str(r)]
    assert not leaked, f"{len(leaked)} of {len(results)} tasks read the file outside the roots: {leaked[:2]}"
    assert store.search(SECRET_WORD, mode="keyword") == []
    statuses = {r["status"] for r in results}
    assert statuses <= {"success", "duplicate", "rejected"}, statuses
    refused = [r for r in results if r["status"] == "rejected"]
    assert all(r["error_type"] == "path_not_allowed" for r in refused), refused[:2]


def test_a_symlink_swapped_in_during_intake_is_never_read(swapped_file, settings, store) -> None:
    target, secret_sha = swapped_file
    results = [pipeline.process_file(str(target), settings, store).as_dict() for _ in range(600)]
    _assert_secret_never_read(results, secret_sha, store)
    assert any(r["status"] in {"success", "duplicate"} for r in results), "the real file was never read"


@pytest.mark.integration
def test_a_symlink_swap_through_a_real_worker_never_reads_outside(swapped_file, session_worker, app) -> None:
    from background_tasks.document_tasks import process_document_file
    from background_tasks.settings import get_settings

    target, secret_sha = swapped_file
    pending = [process_document_file.delay(str(target)) for _ in range(150)]
    results = [r.get(timeout=120) for r in pending]
    _assert_secret_never_read(results, secret_sha, DocumentStore(get_settings().database_url_resolved))


def test_the_watcher_hash_refuses_a_link(tmp_path) -> None:
    from background_tasks.watcher.core import sha256_of

    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET_WORD)
    link = tmp_path / "doc.txt"
    link.symlink_to(secret)
    with pytest.raises(OSError):
        sha256_of(link)
    real = tmp_path / "real.txt"
    real.write_text("x")
    assert sha256_of(real) == hashlib.sha256(b"x").hexdigest()


# -- what counts as an allowed file ------------------------------------------------


@pytest.fixture
def project_like_cwd(tmp_path) -> Path:
    """A folder that looks like a checkout: secrets, git config, a venv, a plain note."""
    cwd = tmp_path / "checkout"
    (cwd / ".git").mkdir(parents=True)
    (cwd / ".git" / "config").write_text(f"[credential]\n token = {SECRET_WORD}\n")
    (cwd / ".venv").mkdir()
    (cwd / ".venv" / "pyvenv.cfg").write_text(f"home = /usr/bin\n# {SECRET_WORD}\n")
    (cwd / "secret_in_cwd.env").write_text(f"API_KEY={SECRET_WORD}\n")
    (cwd / "notes.txt").write_text(f"a note with {SECRET_WORD}\n")
    return cwd


@pytest.mark.integration
def test_the_workers_current_directory_is_not_an_allowed_folder(project_like_cwd, isolated_stack, monkeypatch) -> None:
    stack = isolated_stack()
    worker = stack.start_worker(cwd=project_like_cwd, name="cwd-worker")
    monkeypatch.chdir(project_like_cwd)  # the sender resolves relative names (issue 18): here, in the same folder
    names = ["secret_in_cwd.env", ".git/config", ".venv/pyvenv.cfg", "notes.txt", str(project_like_cwd / "notes.txt")]
    pending = [stack.send("background_tasks.document_tasks.process_document_file", name) for name in names]
    for name, outcome in zip(names, pending, strict=True):
        result = result_or_log(outcome, worker)  # timed out once in CI: say what the worker did
        assert result["status"] == "rejected", (name, result)
        assert result["error_type"] == "path_not_allowed", (name, result)
        assert "outside the allowed folders" in result["error"]
        assert str(project_like_cwd) in result["error"], "the error says where the worker looked"
    assert DocumentStore(stack.settings.database_url_resolved).search(SECRET_WORD, mode="keyword") == []
    assert worker.process.poll() is None


def test_midas_own_files_hidden_files_and_unsupported_types_are_refused(settings_for, tmp_path) -> None:
    settings = settings_for(MIDAS_ALLOWED_ROOTS=str(tmp_path), MIDAS_LOG_DIR=str(tmp_path / "logs"))
    store = DocumentStore(settings.database_url_resolved)
    store.create_schema()
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "worker.log").write_text(f"password {SECRET_WORD}\n")
    (tmp_path / "data" / "redis").mkdir(parents=True)
    (tmp_path / "data" / "redis" / "appendonly.txt").write_text(f"SET k {SECRET_WORD}\n")
    (tmp_path / "docs" / ".private").mkdir(parents=True)
    (tmp_path / "docs" / ".private" / "a.txt").write_text(f"hidden {SECRET_WORD}\n")
    (tmp_path / "docs" / ".env.txt").write_text(f"hidden {SECRET_WORD}\n")
    (tmp_path / "docs" / "settings.cfg").write_text(f"[x]\nkey={SECRET_WORD}\n")
    (tmp_path / "docs" / "Makefile").write_text(f"all:\n\techo {SECRET_WORD}\n")
    expected = {
        "logs/worker.log": "path_not_allowed",
        "data/redis/appendonly.txt": "path_not_allowed",
        "data/midas.sqlite3": "path_not_allowed",
        "docs/.private/a.txt": "path_not_allowed",
        "docs/.env.txt": "path_not_allowed",
        "docs/settings.cfg": "unsupported",
        "docs/Makefile": "unsupported",
    }
    for relative, error_type in expected.items():
        result = pipeline.process_file(str(tmp_path / relative), settings, store)
        assert result.status == "rejected", (relative, result)
        assert result.error_type == error_type, (relative, result)
    assert store.search(SECRET_WORD, mode="keyword") == []
    # Uploads in the data dir's inbox are still MIDAS's to read.
    settings.inbox_dir.mkdir(parents=True)
    (settings.inbox_dir / "upload.txt").write_text("an uploaded note\n")
    assert pipeline.process_file(str(settings.inbox_dir / "upload.txt"), settings, store).status == "success"


def test_content_of_a_supported_type_is_read_whatever_the_name(settings, store, docs_dir) -> None:
    """The type check refuses configuration text, not documents that lost their extension."""
    source = Path(__file__).resolve().parent.parent / "samples"
    pdf = next(source.glob("*.pdf"))
    nameless = docs_dir / "scan_without_extension"
    nameless.write_bytes(pdf.read_bytes())
    result = pipeline.process_file(str(nameless), settings, store)
    assert (result.status, result.file_type) == ("success", "pdf"), result


def test_outside_paths_get_one_answer_whether_they_exist_or_not(settings, store, tmp_path) -> None:
    existing = tmp_path / "exists.txt"
    existing.write_text("x")
    answers = set()
    for path in (existing, tmp_path / "missing.txt", Path("/etc/passwd"), Path("/etc/no-such-file")):
        result = pipeline.process_file(str(path), settings, store)
        assert (result.status, result.error_type) == ("rejected", "path_not_allowed")
        answers.add(result.error.replace(str(path), "<path>"))
    assert len(answers) == 1, answers


# -- arguments JSON can carry ----------------------------------------------------------


BAD_ARGUMENTS = [None, 123, ["a.txt"], {"path": "a.txt"}, "a\x00b.txt", "", "   "]


def test_bad_arguments_are_rejected_not_crashes(settings, store) -> None:
    for argument in BAD_ARGUMENTS:
        result = pipeline.process_file(argument, settings, store)
        assert (result.status, result.error_type) == ("rejected", "invalid_argument"), (argument, result)


@pytest.mark.integration
def test_bad_arguments_through_a_real_worker_are_recorded_results(session_worker, app) -> None:
    from background_tasks.document_tasks import (
        extract_document_metadata,
        process_document_batch,
        process_document_file,
    )

    for task in (process_document_file, extract_document_metadata):
        for argument in BAD_ARGUMENTS:
            outcome = task.delay(argument)
            result = outcome.get(timeout=60)
            assert outcome.state == "SUCCESS", (task.name, argument)
            assert (result["status"], result["error_type"]) == ("rejected", "invalid_argument"), (argument, result)
    for argument in ("a_folder/", None, 7):
        summary = process_document_batch.delay(argument).get(timeout=60)
        assert (summary["total"], summary["error_type"]) == (0, "invalid_argument"), summary
    wait_until(lambda: session_worker.process.poll() is None, 1, what="worker alive")


# -- search ---------------------------------------------------------------------------


def test_an_enormous_query_gets_a_clear_refusal_on_every_backend(database_url) -> None:
    from background_tasks.errors import InvalidQuery

    store = DocumentStore(database_url)
    store.create_schema()
    phrase = '"' + " ".join(f"w{i}" for i in range(20_000)) + '"'
    with pytest.raises(InvalidQuery, match="characters"):
        store.search(phrase)
    with pytest.raises(InvalidQuery, match="phrase has 100 words"):
        store.search('"' + " ".join("ab" for _ in range(100)) + '"')
    assert store.search("ordinary words", mode="keyword") == []


def test_the_cli_says_why_a_query_is_refused(tmp_path) -> None:
    env = {**os.environ, "MIDAS_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run(
        [sys.executable, "-m", "background_tasks", "search", "x " * 2000],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done
    assert "Search refused" in done.stderr and "Traceback" not in done.stderr
