"""End to end in a real browser: the whole stack from the launcher, the dashboard and Flower in Chromium.

``python -m background_tasks.services start`` brings up Redis, a worker, Beat,
Flower, the watcher and the dashboard on private ports with a throwaway data
and log folder. A few documents go through the worker, then Debian's headless
Chromium (driven by Playwright, never a downloaded browser) signs in to the
dashboard, walks its sections, uploads a file, runs a health check, and opens
Flower. Screenshots land in the test's log folder and are copied to the
project's ``logs/`` (git-ignored) for a person to look at. ``stop`` must leave
no process behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from background_tasks.ops.dashboard.common import AMBER, GREEN, RED
from background_tasks.settings import PROJECT_ROOT, Settings, load_settings
from background_tasks.storage.store import DocumentStore
from tests.support import launcher, launcher_env, recorded_processes, stop_stack, wait_until

#: real launcher stacks, workers or servers: deselected by -m "not integration"
pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DASHBOARD_PASSWORD = "open sesame 42"
FLOWER_AUTH = ("flower", "petal-pw")
PROCESS = "background_tasks.document_tasks.process_document_file"
SLEEP = "background_tasks.system_tasks.sleep"
AURORA = "The aurora borealis glowed green over the fjord all night.\n"
MAX_FILE_MB = 5


def require_chromium() -> None:
    if CHROMIUM.is_file():
        return
    message = f"{CHROMIUM} is missing: install Debian's chromium package (the set-up does); no browser is downloaded"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def log_tails(settings: Settings) -> str:
    out = []
    for path in sorted(settings.log_dir.glob("*.log")):
        lines = path.read_text(errors="replace").splitlines()[-15:]
        out.append(f"--- {path.name}\n" + "\n".join(lines))
    return "\n".join(out)


@pytest.fixture
def stack_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of a private stack; whatever is left running at the end is stopped, then killed."""
    (tmp_path / "watch").mkdir()
    env = launcher_env(
        tmp_path,
        MIDAS_WATCH_DIRS=str(tmp_path / "watch"),
        MIDAS_WORKER_CONCURRENCY="2",
        MIDAS_WORKER_GROUPS="default,documents,analysis,monitoring",
        MIDAS_DASHBOARD_PASSWORD=DASHBOARD_PASSWORD,
        FLOWER_BASIC_AUTH=":".join(FLOWER_AUTH),
        MIDAS_MAX_FILE_MB=str(MAX_FILE_MB),
    )
    yield env
    stop_stack(env, tmp_path)


def save_screenshot(page, settings: Settings, name: str) -> Path:
    """Full-page PNG in the test's log folder, copied to the project's logs/ for a person to look at."""
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    path = settings.log_dir / f"dashboard-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 5000, f"{path} looks empty"
    project_logs = PROJECT_ROOT / "logs"
    project_logs.mkdir(exist_ok=True)
    shutil.copy2(path, project_logs / path.name)
    return path


def open_section(page, name: str) -> None:
    page.locator('[data-testid="stSidebar"]').get_by_text(name, exact=True).click()
    page.get_by_role("heading", name=name, exact=True).wait_for(timeout=30_000)


def main_text(page) -> str:
    return page.locator('[data-testid="stMain"]').inner_text()


def metric_value(page, label: str) -> str:
    box = page.locator('[data-testid="stMetric"]').filter(has_text=label).first
    return box.locator('[data-testid="stMetricValue"]').inner_text().strip()


def palette_pixels(png: bytes, colour: str, tolerance: int = 40) -> int:
    """How many pixels of a screenshot are (nearly) the palette colour ``#rrggbb``."""
    import io

    from PIL import Image

    want = tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
    image = Image.open(io.BytesIO(png)).convert("RGB")
    return sum(
        count
        for count, pixel in image.getcolors(maxcolors=1 << 24)
        if all(abs(a - b) <= tolerance for a, b in zip(pixel, want, strict=True))
    )


def alert(page, kind: str, text: str):
    """The alert box of ``kind`` (Success, Info, Warning, Error) that holds ``text``."""
    return page.locator(f'[data-testid="stAlertContent{kind}"]').filter(has_text=text)


def wait_for_text(page, pattern: str, timeout: float = 30) -> str:
    """Wait until the main area, with no element left over from the previous run, matches ``pattern``."""
    regex = re.compile(pattern)

    def matched() -> str | None:
        if page.locator('[data-testid="stMain"] [data-stale="true"]').count():
            return None  # left over from before the rerun that is still going on
        text = main_text(page)
        return text if regex.search(text) else None

    return wait_until(matched, timeout, 0.3, what=pattern)


def test_whole_stack_in_a_real_browser(stack_env: dict[str, str], docs_dir: Path, tmp_path: Path) -> None:
    require_chromium()
    from playwright.sync_api import sync_playwright

    env = stack_env
    settings = load_settings(env, env_file=Path(os.devnull))

    started = launcher(env, "start")
    assert started.returncode == 0, started.stdout + started.stderr + log_tails(settings)
    settings = load_settings(env, env_file=Path(os.devnull))  # now with the Redis password the launcher generated
    for name in ("redis", "worker-1", "beat", "flower", "watcher", "dashboard", "api"):
        assert re.search(rf"^{name}\s+started \(pid \d+\)", started.stdout, re.M), started.stdout
    running = recorded_processes(settings.run_dir)
    assert len(running) >= 14  # seven services, seven pumps (and the worker's pool)

    # A few documents through the worker: two succeed, one broken PDF fails.
    files = {
        "aurora.txt": AURORA * 5,
        "minutes.html": "<html><body><h1>Minutes</h1><p>The committee approved the budget.</p></body></html>",
        "broken.pdf": "%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 9 0 R >> endobj\ntrailer << /Root 1 0 R >>\n",
    }
    import celery_config

    app = celery_config.create_app(settings)
    try:
        results = {}
        for name, content in files.items():
            (docs_dir / name).write_text(content, encoding="utf-8")
            results[name] = app.send_task(PROCESS, args=[str(docs_dir / name)])
        statuses = {name: r.get(timeout=60)["status"] for name, r in results.items()}
    finally:
        app.close()
    assert statuses == {"aurora.txt": "success", "minutes.html": "success", "broken.pdf": "failed"}
    store = DocumentStore(settings.database_url_resolved)

    dashboard = f"http://127.0.0.1:{settings.streamlit_port}/"
    flower = f"http://127.0.0.1:{settings.flower_port}/flower/"
    upload = tmp_path / "field-notes.txt"
    upload.write_text("Field notes: the glacier retreated another forty metres.\n", encoding="utf-8")
    unsupported = tmp_path / "mystery.bin"
    unsupported.write_bytes(bytes(range(256)) * 4)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)

            # Sign in: nothing but the gate's password form (HTTP 401) until then.
            assert page.goto(dashboard).status == 401
            page.get_by_label("Dashboard password").fill("not it")
            page.get_by_role("button", name="Sign in").click()
            page.get_by_text("Wrong password.").wait_for()
            assert page.locator('[data-testid="stSidebar"]').count() == 0 or "Workers online" not in page.content()
            page.get_by_label("Dashboard password").fill(DASHBOARD_PASSWORD)
            page.get_by_role("button", name="Sign in").click()

            # Overview: workers, documents, the stored health verdict (none yet: Beat's first is 5 min away), links.
            page.get_by_role("heading", name="Overview", exact=True).wait_for()
            text = wait_for_text(page, r"(?s)(Health: (OK|WARNING|CRITICAL)|No health check stored yet).*Logs in")
            assert metric_value(page, "Workers online") == "1"
            assert metric_value(page, "Documents processed") == "2"
            assert metric_value(page, "Success rate, 24 h") == "100.0%"  # a failed document is a successful task
            assert str(settings.log_dir) in text
            assert (
                page.get_by_role("link", name="Open Flower (Celery workers and tasks)").get_attribute("href")
                == f"http://localhost:{settings.flower_port}/flower/"
            )
            save_screenshot(page, settings, "overview")

            # Actions: upload a file and one MIDAS cannot read; each one's result shows when it arrives.
            open_section(page, "Actions")
            uploader = page.locator('[data-testid="stFileUploader"]')
            limit = uploader.inner_text()
            assert re.search(rf"\b{MAX_FILE_MB}(\.0)?\s?MB per file", limit) and "200" not in limit, limit
            assert f"at most {MAX_FILE_MB} MB per file" in main_text(page)
            uploader.locator('input[type="file"]').set_input_files([str(upload), str(unsupported)])
            page.get_by_text("field-notes.txt").first.wait_for()
            page.get_by_role("button", name="Process the uploaded files").click()
            processed = alert(page, "Success", "field-notes.txt: processed: document")
            processed.wait_for(timeout=45_000)
            rejected = alert(page, "Warning", "mystery.bin: rejected — ")
            rejected.wait_for(timeout=45_000)
            assert "unsupported" in rejected.inner_text()
            assert alert(page, "Success", "queued").count() == 0  # sent is not done: never green
            assert (settings.inbox_dir / "field-notes.txt").read_bytes() == upload.read_bytes()
            page.get_by_role("button", name="Run a health check now").click()
            text = wait_for_text(page, r"Stored as a sample; task", timeout=45)
            verdict = re.search(r"Health: (OK|WARNING|CRITICAL)", text).group(1)
            retry_choice = page.get_by_role("combobox", name="Failed document").input_value()
            assert "broken.pdf" in retry_choice  # offered for a retry
            save_screenshot(page, settings, "actions")
            inbox_copy = settings.inbox_dir / "field-notes.txt"
            wait_until(
                lambda: any(d["status"] == "success" for d in store.find_by_path(inbox_copy)),
                30,
                what="the uploaded file processed",
            )

            # Documents: search with highlighted matches, one document's details.
            open_section(page, "Documents")
            wait_for_text(page, r"Documents 1–5 of 5, newest first")
            assert metric_value(page, "Success") == "3" and metric_value(page, "Failed") == "1"
            assert metric_value(page, "Rejected") == "1"
            page.get_by_label('Words, "a phrase", -excluded').fill("borealis")
            page.get_by_label('Words, "a phrase", -excluded').press("Enter")
            page.locator("mark", has_text="borealis").first.wait_for()
            assert "aurora.txt" in main_text(page)
            broken = next(d for d in store.list_documents() if d["path"] and d["path"].endswith("broken.pdf"))
            page.get_by_label("Document id").fill(str(broken["id"]))
            page.get_by_label("Document id").press("Enter")
            text = wait_for_text(page, re.escape(str(docs_dir / "broken.pdf")))
            assert "failed" in text and "corrupt" in text
            save_screenshot(page, settings, "documents")

            # Task history: the documents' tasks, searchable, with their details.
            open_section(page, "Task history")
            wait_for_text(page, r"Tasks 1–\d+ of \d+, newest first")
            page.get_by_label("Search (task id, name, arguments, result, error, worker)").fill("aurora")
            page.get_by_label("Search (task id, name, arguments, result, error, worker)").press("Enter")
            text = wait_for_text(page, r"Tasks 1–1 of 1, newest first")
            assert f"Task: {PROCESS}" in text
            assert str(docs_dir / "aurora.txt") in text and "status='success'" in text
            save_screenshot(page, settings, "history")

            # System health: the verdict stored by the check run above, the same on the Overview;
            # the sample drawn with amber warning and red critical lines, current values against thresholds.
            open_section(page, "System health")
            text = wait_for_text(page, r"(?s)Now, against the thresholds.*Recent checks")
            assert f"Health: {verdict}" in text
            charts = page.locator('[data-testid="stVegaLiteChart"]')
            charts.first.wait_for()
            assert charts.count() == 5
            wait_until(lambda: palette_pixels(charts.first.screenshot(), AMBER) > 0, 15, what="the amber warning line")
            cpu_chart = charts.first.screenshot()
            assert palette_pixels(cpu_chart, AMBER) > 0 and palette_pixels(cpu_chart, RED) > 0
            save_screenshot(page, settings, "health")
            open_section(page, "Overview")
            assert f"Health: {verdict}" in wait_for_text(page, r"Health: ")

            # Performance: throughput (succeeded green) and per-task figures.
            open_section(page, "Performance")
            wait_for_text(page, r"Per task")
            assert int(metric_value(page, "Finished").replace(",", "")) >= 5  # 4 documents, a health check
            bars = page.locator('[data-testid="stVegaLiteChart"]').first
            wait_until(lambda: palette_pixels(bars.screenshot(), GREEN) > 50, 15, what="green bars of succeeded tasks")
            assert palette_pixels(bars.screenshot(), GREEN) > palette_pixels(bars.screenshot(), RED)
            save_screenshot(page, settings, "performance")

            # Live tasks: a running task shows; the panel refreshes by itself, without reloading the page.
            app = celery_config.create_app(settings)
            try:
                sleeper = app.send_task(SLEEP, args=[10])
                open_section(page, "Live tasks")
                text = wait_for_text(page, r"Worker worker-1@")
                wait_until(lambda: metric_value(page, "Active") == "1", 15, 0.3, what="the sleeping task shown active")
                text = wait_for_text(page, r"Active \(1\)")
                first = re.search(r"As of (\S+ \S+) UTC", text).group(1)
                page.evaluate("window.__midas_marker = 1")  # a full reload would drop this
                wait_for_text(page, rf"As of (?!{re.escape(first)})\S+ \S+ UTC", timeout=20)
                assert page.evaluate("window.__midas_marker") == 1
                save_screenshot(page, settings, "live")
                assert sleeper.get(timeout=30)["slept"] >= 10
            finally:
                app.close()

            # Flower behind its basic auth, showing the worker and the tasks.
            anonymous = pw.request.new_context()
            assert anonymous.get(flower).status == 401
            anonymous.dispose()
            context = browser.new_context(
                http_credentials={"username": FLOWER_AUTH[0], "password": FLOWER_AUTH[1]},
                viewport={"width": 1400, "height": 900},
            )
            fpage = context.new_page()
            assert fpage.goto(flower).status == 200
            fpage.get_by_text("worker-1@", exact=False).first.wait_for()
            assert "Online" in fpage.inner_text("body")
            save_screenshot(fpage, settings, "flower-workers")
            fpage.goto(flower + "tasks")
            fpage.get_by_text(PROCESS).first.wait_for()
            assert fpage.get_by_text(PROCESS).count() >= 4
            save_screenshot(fpage, settings, "flower-tasks")
            context.close()
        finally:
            browser.close()

    browser_left = [
        p for p in psutil.Process().children(recursive=True) if "chrom" in (p.name() or "").lower() and p.is_running()
    ]
    assert not browser_left, browser_left

    stopped = launcher(env, "stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    wait_until(lambda: not [p for p in running if p.is_running()], 20, what="every stack process gone")
    assert not list(settings.run_dir.glob("*.pid"))
    status = json.loads(launcher(env, "status", "--json").stdout)
    assert {row["service"]: row["state"] for row in status} == {
        "redis": "down",
        "worker-1": "down",
        "beat": "down",
        "flower": "down",
        "watcher": "down",
        "dashboard": "down",
        "api": "down",
    }
    views = ("overview", "actions", "documents", "history", "health", "performance", "live", "flower-workers")
    shots = {f"dashboard-{view}.png" for view in (*views, "flower-tasks")}
    assert {p.name for p in settings.log_dir.glob("dashboard-*.png")} == shots
    assert all((PROJECT_ROOT / "logs" / name).is_file() for name in shots)
