"""What a new user trips over (issue 18), tried as they would: real processes, real HTTP.

Flower's address as printed and typed, the live check run with the wrong Python,
the ``midas`` command of an installed checkout, relative paths sent from another
folder than the worker's, and the error types of common mistakes.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

from background_tasks.processing import pipeline
from tests.support import PROJECT_ROOT, launcher, launcher_env, stop_stack

FLOWER_AUTH = "midas:flower-pw"


def get(port: int, path: str, basic_auth: str | None = None) -> http.client.HTTPResponse:
    """One GET, redirects not followed: the status and headers as the server sent them."""
    from base64 import b64encode

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Authorization": "Basic " + b64encode(basic_auth.encode()).decode()} if basic_auth else {}
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


# -- item 1: Flower's address ------------------------------------------------------------


@pytest.fixture
def flower_stack(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = launcher_env(tmp_path, FLOWER_BASIC_AUTH=FLOWER_AUTH)
    yield env
    stop_stack(env, tmp_path)


@pytest.mark.integration
def test_the_flower_address_printed_works_and_the_bare_prefix_redirects(flower_stack: dict[str, str]) -> None:
    env = flower_stack
    started = launcher(env, "start", "redis", "flower")
    assert started.returncode == 0, started.stdout + started.stderr
    port = int(env["FLOWER_PORT"])

    # The address status prints (and `make run` shows) is one that answers.
    status = launcher(env, "status", "--json")
    url = {row["service"]: row for row in json.loads(status.stdout)}["flower"]["url"]
    assert url == f"http://localhost:{port}/flower/"
    assert f"http://localhost:{port}/flower/" in launcher(env, "status").stdout
    page = get(port, "/flower/", FLOWER_AUTH)
    assert page.status == 200

    # The address people type redirects there (query kept), with or without credentials.
    for auth in (None, FLOWER_AUTH):
        bare = get(port, "/flower", auth)
        assert bare.status == 302, bare.status
        assert bare.getheader("Location") == "/flower/"
    assert get(port, "/flower?state=FAILURE").getheader("Location") == "/flower/?state=FAILURE"
    # The redirect is the only thing open: the pages behind it still ask for the password.
    assert get(port, "/flower/").status == 401
    assert get(port, "/flower/metrics").status == 401
    assert get(port, "/elsewhere").status == 404


# -- item 5: error types of common mistakes ------------------------------------------------


def _zip(path: Path, members: dict[str, str]) -> Path:
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return path


def test_formats_midas_does_not_read_are_unsupported_not_a_mismatch(settings, store, docs_dir) -> None:
    slides = _zip(
        docs_dir / "slides.pptx",
        {"[Content_Types].xml": "<Types/>", "ppt/presentation.xml": "<presentation/>"},
    )
    archive = _zip(docs_dir / "bundle.zip", {"a.txt": "some words", "b.txt": "more words"})
    for path, what in ((slides, "PowerPoint"), (archive, "ZIP archive")):
        result = pipeline.process_file(str(path), settings, store)
        assert (result.status, result.error_type) == ("rejected", "unsupported"), result.error
        assert "is not a supported type" in result.error and what in result.error, result.error
    # A supported name whose content is something else is still a mismatch.
    named_docx = slides.rename(docs_dir / "slides.docx")
    result = pipeline.process_file(str(named_docx), settings, store)
    assert (result.status, result.error_type) == ("rejected", "type_mismatch"), result.error


def test_a_missing_file_is_not_found_inside_the_roots_and_not_allowed_outside(settings, store, docs_dir, tmp_path):
    inside = pipeline.process_file(str(docs_dir / "sub" / ".." / "missing.pdf"), settings, store)
    assert (inside.status, inside.error_type) == ("rejected", "not_found"), inside
    assert f"(resolved to {docs_dir / 'missing.pdf'})" in inside.error and "no such file" in inside.error
    under_a_file = docs_dir / "note.txt"
    under_a_file.write_text("a note")
    nested = pipeline.process_file(str(under_a_file / "x.txt"), settings, store)
    assert (nested.status, nested.error_type) == ("rejected", "not_found"), nested
    # Outside the roots nothing says whether it exists: one answer for a missing and an existing file.
    existing = tmp_path / "exists.txt"
    existing.write_text("x")
    answers = set()
    for path in (existing, tmp_path / "missing.txt"):
        result = pipeline.process_file(str(path), settings, store)
        assert (result.status, result.error_type) == ("rejected", "path_not_allowed"), result
        answers.add(result.error.replace(str(path), "<path>"))
    assert len(answers) == 1, answers


def test_a_climb_out_of_the_roots_is_called_what_it_is(settings, store, docs_dir, monkeypatch) -> None:
    deep = docs_dir / "a" / "b"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    climb = "../../../" * 12 + "etc/passwd"
    result = pipeline.process_file(climb, settings, store)
    assert (result.status, result.error_type) == ("rejected", "path_not_allowed"), result
    assert "link" not in result.error, result.error
    assert result.error == (
        f"{climb} (resolved to /etc/passwd) is outside the allowed folders; "
        "add its folder to MIDAS_ALLOWED_ROOTS to allow it"
    )


# -- item 4: relative paths are the sender's ---------------------------------------------------

PROCESS_FILE = "background_tasks.document_tasks.process_document_file"
PROCESS_BATCH = "background_tasks.document_tasks.process_document_batch"


@pytest.mark.parametrize(
    ("given", "anchored"),
    [
        ("note.txt", "{cwd}/note.txt"),
        ("sub/../c.txt", "{cwd}/sub/../c.txt"),
        ("/abs/x.pdf", "/abs/x.pdf"),
        ("s3://bucket/report 0.txt", "s3://bucket/report 0.txt"),  # an object is the same from every host
        ("s3://bucket/k?versionId=3", "s3://bucket/k?versionId=3"),
        ("", ""),
        (None, None),
        (123, 123),
    ],
)
def test_anchoring_makes_only_relative_file_paths_absolute(given, anchored, tmp_path, monkeypatch) -> None:
    from background_tasks.processing.intake import anchor_path

    monkeypatch.chdir(tmp_path)
    expected = anchored.format(cwd=os.getcwd()) if isinstance(anchored, str) else anchored
    assert anchor_path(given) == expected


@pytest.mark.integration
def test_a_relative_path_is_resolved_where_it_was_sent_not_where_the_worker_runs(
    isolated_stack, tmp_path, monkeypatch, unique
) -> None:
    stack = isolated_stack()
    worker_home = tmp_path / "worker-home"
    worker_home.mkdir()
    (worker_home / "note.txt").write_text("the worker's own note\n")
    worker = stack.start_worker(cwd=worker_home, name="elsewhere")
    sender_home = stack.settings.inbox_dir / "sender"
    (sender_home / "sub").mkdir(parents=True)
    (sender_home / "note.txt").write_text(f"the sender's note {unique}a\n")
    (sender_home / "b.txt").write_text(f"second note {unique}b\n")
    (sender_home / "c.txt").write_text(f"third note {unique}c\n")
    monkeypatch.chdir(sender_home)

    def result(outcome):
        try:
            return outcome.get(timeout=90)
        except Exception:
            raise AssertionError(f"no result; worker log:\n{worker.log_text()[-4000:]}") from None

    one = result(stack.send(PROCESS_FILE, "note.txt"))
    assert (one["status"], one["path"]) == ("success", str(sender_home / "note.txt")), one
    keyword = result(stack.app.send_task(PROCESS_FILE, kwargs={"file_path": Path("b.txt")}))
    assert (keyword["status"], keyword["path"]) == ("success", str(sender_home / "b.txt")), keyword
    batch = result(stack.send(PROCESS_BATCH, ["sub/../c.txt", "note.txt", str(sender_home / "b.txt")]))
    assert (batch["total"], batch["succeeded"] + batch["duplicates"]) == (3, 3), batch
    assert {r["path"] for r in batch["results"]} == {str(sender_home / n) for n in ("c.txt", "note.txt", "b.txt")}

    # Errors say where the path was resolved to: the sender's directory.
    missing = result(stack.send(PROCESS_FILE, "gone.txt"))
    assert (missing["status"], missing["error_type"]) == ("rejected", "not_found"), missing
    assert f"{sender_home / 'gone.txt'}: no such file" in missing["error"], missing["error"]
    assert str(worker_home) not in missing["error"]
    climb = result(stack.send(PROCESS_FILE, "../" * 15 + "etc/passwd"))
    assert (climb["status"], climb["error_type"]) == ("rejected", "path_not_allowed"), climb
    assert "(resolved to /etc/passwd) is outside the allowed folders" in climb["error"], climb["error"]
    assert "link" not in climb["error"]
    # Arguments that are not paths are left for the worker to refuse, as before.
    for argument in (None, 123, ["a.txt"], ""):
        refused = result(stack.send(PROCESS_FILE, argument))
        assert (refused["status"], refused["error_type"]) == ("rejected", "invalid_argument"), refused


# -- item 3: commands that work without an activated venv ------------------------------------


def test_the_live_check_run_by_a_python_without_midas_says_which_python_to_use(tmp_path: Path) -> None:
    bare = tmp_path / "bare"  # a Python with the standard library only, like the system's
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=120)
    python = bare / "bin" / "python"
    assert subprocess.run([python, "-c", "import celery"], capture_output=True, check=False).returncode != 0
    done = subprocess.run(
        [python, "test_background_processing.py"],
        cwd=PROJECT_ROOT,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "run it with .venv/bin/python test_background_processing.py" in output.lower(), output
    assert "No module named" in output and "Redis" not in output, output


@pytest.mark.integration
def test_setup_installs_midas_into_the_venv_and_the_command_works_anywhere(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=180)
    # The pinned requirements are those of this test run: seen through a .pth, recorded as installed,
    # so setup.sh goes straight to installing MIDAS itself.
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "midas-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    requirements = (PROJECT_ROOT / "requirements.txt").read_bytes()
    (venv / ".installed-requirements").write_text(hashlib.sha256(requirements * 2).hexdigest() + "\n")

    def setup() -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["bash", "scripts/setup.sh"],
            cwd=PROJECT_ROOT,
            env={**os.environ, "VENV": str(venv)},
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    assert "pip install -e ." in setup().stdout
    assert "installing" not in setup().stdout  # nothing changed: quick

    # From a folder outside the checkout, with nothing activated.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = launcher_env(tmp_path)
    env.pop("PYTHONPATH", None)

    def run(*command: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)

    midas = venv / "bin" / "midas"
    shown = run(midas, "--help")
    assert shown.returncode == 0, shown.stderr
    for command in ("search", "documents", "stats", "ledger", "start", "stop", "status", "restart"):
        assert command in shown.stdout
    assert shown.stdout.startswith("usage: midas")
    status = run(midas, "status", "--json")
    assert status.returncode == 0, status.stderr
    rows = {row["service"]: row for row in json.loads(status.stdout)}
    assert rows["flower"]["url"] == f"http://localhost:{env['FLOWER_PORT']}/flower/"
    assert {row["state"] for row in rows.values()} == {"down"}
    stats = run(midas, "stats")
    assert (stats.returncode, stats.stdout.split("\n")[0]) == (0, "documents: 0  chunks: 0"), stats.stderr
    imported = run(
        venv / "bin" / "python", "-c", "import celery_config, background_tasks; print(background_tasks.__file__)"
    )
    assert imported.stdout.strip() == str(PROJECT_ROOT / "background_tasks" / "__init__.py"), imported.stderr
