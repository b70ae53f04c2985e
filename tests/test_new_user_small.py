"""The small things a new user trips over (issue 18, items 10 and 11), tried as they would.

``search --help`` cut off mid-sentence, scores printed as ``2.07e-06``, a raw epoch in
task details, Streamlit's Deploy button, ``make run`` ending without saying what next,
the every-minute queue check's kilobyte of INFO log, and Flower's API answering 401
with advice the README did not explain.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import re
import subprocess
import sys
import time
import tomllib
from base64 import b64encode
from pathlib import Path

import pytest
from sqlalchemy import select

from background_tasks import keys
from background_tasks.__main__ import build_parser, relevance
from background_tasks.launcher.next_steps import next_steps
from background_tasks.ops.history_summaries import summarize_result
from background_tasks.ops.task_history import TaskRecord
from background_tasks.processing.chunking import chunk_text, normalize_text
from background_tasks.settings import PROJECT_ROOT, load_settings
from background_tasks.storage.db import session_scope
from background_tasks.storage.store import DocumentStore
from tests.support import launcher, launcher_env, stop_stack, wait_until

PING = "background_tasks.system_tasks.ping"


def python(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` from the checkout, as a user runs it; its output."""
    return subprocess.run(
        [sys.executable, *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )


# -- search --help ---------------------------------------------------------------------------


def _all_help(parser: argparse.ArgumentParser) -> dict[str, str]:
    texts = {}
    for action in parser._actions:
        if action.help and action.help != argparse.SUPPRESS:
            texts[f"{parser.prog} {'/'.join(action.option_strings) or action.dest}"] = action.help
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                texts.update(_all_help(sub))
    return texts


def test_no_help_text_of_the_command_line_stops_mid_sentence() -> None:
    texts = _all_help(build_parser())
    assert len(texts) >= 15  # every subcommand and option
    dangling = {where: text for where, text in texts.items() if re.search(r"(\b(or|and|the|a)|[,(:])\s*$", text)}
    assert not dangling
    shown = python("-m", "background_tasks", "search", "--help").stdout
    assert "-excluded words, or a question in plain words" in " ".join(shown.split())


# -- scores --------------------------------------------------------------------------------


def test_search_shows_relevance_a_person_can_read_not_raw_scores(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'midas.sqlite3'}"
    store = DocumentStore(url)
    store.create_schema()
    texts = {
        "a": "The annual report names the budget.",
        "b": "The report on the report of the report.",
        "c": "A report.",
    }
    for label, text in texts.items():
        claim = store.claim(hashlib.sha256(label.encode()).hexdigest(), f"/docs/{label}.txt", "txt", "text/plain", 9)
        body = normalize_text(text)
        store.record_success(claim.document_id, {"title": label}, chunk_text(body, size=200, overlap=40), len(body))
    raw = [hit.score for hit in store.search("report", mode="keyword")]
    assert len(raw) == 3 and max(raw) < 1e-4, raw  # a word in every document: BM25's tiny numbers

    env = {**os.environ, "MIDAS_DATABASE_URL": url, "MIDAS_DATA_DIR": str(tmp_path / "data")}
    done = python("-m", "background_tasks", "search", "report", "--mode", "keyword", env=env)
    assert done.returncode == 0, done.stderr
    shown = re.findall(r"relevance (\d+)%", done.stdout)
    assert len(shown) == 3 and shown[0] == "100" and all(0 < int(p) <= 100 for p in shown), done.stdout
    assert not re.search(r"\de-\d", done.stdout), done.stdout
    assert (relevance(2.07e-06, 4.14e-06), relevance(0.0164, 0.0164), relevance(0.0, 1.0)) == ("50%", "100%", "-")


# -- task details ----------------------------------------------------------------------------


def test_times_in_task_details_are_iso_utc_not_epoch_seconds() -> None:
    summary = summarize_result({"checked_at": 1796315294.17, "ok": True, "stuck_after_s": 900.0, "queues": {}})
    assert summary == "checked_at=2026-12-03T16:28:14Z, ok=True, stuck_after_s=900.0 (+1 fields)"
    # Only times: a count or a duration that happens to end in _at stays a number.
    assert summarize_result({"retried_at": 3, "started_at": None}) == "retried_at=3, started_at=None"


# -- the dashboard's toolbar -----------------------------------------------------------------------


def test_the_dashboard_has_no_deploy_button(settings) -> None:
    from streamlit import config

    from background_tasks.dashboard_app import server_config

    assert "minimal" in config.get_config_options()["client.toolbarMode"].description
    assert server_config(settings)["client.toolbarMode"] == "minimal"  # the launcher's dashboard
    by_hand = tomllib.loads((PROJECT_ROOT / ".streamlit" / "config.toml").read_text())  # streamlit run
    assert by_hand["client"]["toolbarMode"] == "minimal"


# -- make run's last words --------------------------------------------------------------------------


def test_make_run_ends_with_the_next_steps(tmp_path: Path) -> None:
    recipe = (PROJECT_ROOT / "Makefile").read_text().split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert recipe.strip().splitlines()[-1].strip() == "@$(PY) -m background_tasks.launcher.next_steps"

    env = launcher_env(tmp_path, MIDAS_LOG_DIR=str(tmp_path / "logs"), MIDAS_WATCH_DIRS=str(tmp_path / "in"))
    done = python("-m", "background_tasks.launcher.next_steps", env=env)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "Next steps:" in text
    for expected in (
        '.venv/bin/midas search "your words"',
        f"http://localhost:{env['STREAMLIT_PORT']} ",
        f"http://localhost:{env['FLOWER_PORT']}/flower/",
        f"{tmp_path / 'in'}/",
        f"{tmp_path / 'logs'}/",
        ".venv/bin/midas status",
        "make stop",
    ):
        assert expected in text, (expected, text)
    checkout = next_steps(load_settings({"MIDAS_ENV_FILE": os.devnull}, launch_file=None, env_file=Path(os.devnull)))
    assert "\n  logs/ " in checkout  # inside the checkout: as typed from it
    on_windows = next_steps(
        load_settings({"MIDAS_ENV_FILE": os.devnull}, launch_file=None, env_file=Path(os.devnull)), windows=True
    )
    assert r'.venv\Scripts\midas search "your words"' in on_windows and r".\Stop-Celery-Services.ps1" in on_windows
    assert "make" not in on_windows and ".venv/bin" not in on_windows


def test_the_windows_start_script_ends_with_the_next_steps() -> None:
    script = (PROJECT_ROOT / "Start-Celery-Services.ps1").read_text(encoding="utf-8")
    tail = script[script.index("Invoke-MidasLauncher -Action start") :]
    assert "-m background_tasks.launcher.next_steps" in tail and "Invoke-MidasLauncher -Action status" in tail
    assert tail.rstrip().endswith("exit $started")


# -- the every-minute queue check in the worker's log ------------------------------------------------------


@pytest.mark.integration
def test_routine_checks_do_not_fill_the_worker_log_at_info(isolated_stack) -> None:
    stack = isolated_stack()
    worker = stack.start_worker(queues=("default", "monitoring"), concurrency=1)
    check = stack.send(keys.CHECK_TASK_QUEUE)
    assert "checked_at" in check.get(timeout=60)
    ping = stack.send(PING, "still at info")
    ping.get(timeout=60)

    def logged() -> str | None:
        text = worker.log_text()
        return text if f"[{ping.id}] succeeded" in text else None

    text = wait_until(logged, 30, what="the ping's success line")
    assert f"{PING}[{ping.id}] received" in text  # other tasks: as before
    task_lines = [line for line in text.splitlines() if f"{keys.CHECK_TASK_QUEUE}[{check.id}]" in line]
    assert not task_lines, task_lines  # neither "received" nor "succeeded in …: {…1 KB…}"

    # Its details in the task history (the dashboard's "One task") show the time, not epoch seconds.
    def row() -> TaskRecord | None:
        with session_scope(stack.settings.database_url_resolved) as session:
            found = session.scalar(select(TaskRecord).where(TaskRecord.task_id == check.id))
            return found if found is not None and found.result_summary else None

    summary = wait_until(row, 30, what="the check's history row").result_summary
    assert re.search(r"checked_at=20\d\d-\d\d-\d\dT\d\d:\d\d:\d\dZ", summary), summary
    worker.stop()

    # The lines are DEBUG, not gone: a worker run with --loglevel DEBUG shows them.
    verbose = stack.start_worker(queues=("monitoring",), concurrency=1, extra_args=("--loglevel", "DEBUG"))
    again = stack.send(keys.CHECK_TASK_QUEUE)
    again.get(timeout=60)
    wait_until(lambda: f"[{again.id}] succeeded" in verbose.log_text(), 30, what="the DEBUG success line")
    line = next(line for line in verbose.log_text().splitlines() if f"[{again.id}] succeeded" in line)
    assert " DEBUG " in line, line


# -- Flower's API ---------------------------------------------------------------------------------------------


def _get(port: int, path: str, basic_auth: str | None = None) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Authorization": "Basic " + b64encode(basic_auth.encode()).decode()} if basic_auth else {}
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    body = response.read().decode(errors="replace")
    connection.close()
    return response.status, body


@pytest.mark.integration
def test_flowers_api_works_as_the_readme_says(tmp_path: Path) -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    quoted = re.search(r"answers `401 (FLOWER_UNAUTHENTICATED_API[^`]*)`", readme)
    assert quoted, "the README quotes Flower's answer"
    assert "curl -u user:password http://localhost:5555/flower/api/workers" in readme
    assert "FLOWER_BASIC_AUTH=user:password .venv/bin/midas restart flower" in readme

    env = launcher_env(tmp_path)
    port = int(env["FLOWER_PORT"])
    try:
        started = launcher(env, "start", "redis", "flower")
        assert started.returncode == 0, started.stdout + started.stderr
        # Without Flower auth: the answer the README quotes, word for word.
        assert _get(port, "/flower/api/workers") == (401, quoted.group(1))

        # The README's way: restart Flower with basic auth, then call the API with it.
        auth = "user:password"
        restarted = launcher({**env, "FLOWER_BASIC_AUTH": auth}, "restart", "flower")
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        deadline = time.monotonic() + 30
        while _get(port, "/flower/api/workers", auth)[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        status, body = _get(port, "/flower/api/workers", auth)
        assert status == 200 and body.startswith("{"), (status, body)
        assert _get(port, "/flower/api/workers")[0] == 401
        assert _get(port, "/flower/api/workers", "user:wrong")[0] == 401
    finally:
        stop_stack(env, tmp_path)
