"""Check a running MIDAS system end to end (after `make run`).

    .venv/bin/python test_background_processing.py            # table of PASS / FAIL with timings and hints
    .venv/bin/python test_background_processing.py --json     # the same for machines
    .venv/bin/python test_background_processing.py --skip watcher,dashboard

Exit status 0 when every check passed, 1 otherwise. It uses the same settings
(environment / .env) as the services, so it checks the system they form.
The documents it processes are generated into the data dir's inbox; the
watcher check drops one small file into the first watched folder and removes
it again afterwards. The last check, tidy_up, deletes every document the
check created (with `processing.manage.delete_document`, as `midas documents
delete` does) and its inbox folder, so the store holds nothing of it afterwards.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import urllib.error
import urllib.request
import uuid
from base64 import b64encode
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

try:  # a Python without MIDAS's packages (not .venv's) would fail every check and blame Redis
    import celery  # noqa: F401
    import redis  # noqa: F401

    from background_tasks import keys
    from background_tasks.ops.health_verdict import stored_verdict
    from background_tasks.settings import QUEUES, Settings, settings_or_exit
except ImportError as exc:
    raise SystemExit(
        f"{sys.executable} cannot import MIDAS's packages ({exc}).\n"
        "Run it with .venv/bin/python test_background_processing.py "
        "(`make run` or scripts/setup.sh creates .venv)."
    ) from None

HINTS = {
    "redis": "Is Redis running? `.venv/bin/midas status`; start it with `make run`; see logs/redis.log.",
    "workers": "Is a worker up for every queue? `make status`; see logs/worker-*.log.",
    "documents": "Did the worker log an error? See logs/worker-*.log; `.venv/bin/midas documents --status failed` "
    "lists recorded errors.",
    "batch": "See logs/worker-*.log; a batch needs a worker on the `documents` queue.",
    "monitoring": "Is a worker consuming the `monitoring` queue? See logs/worker-*.log.",
    "cleanup": "See logs/worker-*.log.",
    "watcher": "Is the watcher running (`make status`)? See logs/file_watcher.log; the folder must be one it "
    "watches (MIDAS_WATCH_DIRS).",
    "dashboard": "Is the dashboard running (`make status`)? See logs/dashboard.log.",
    "flower": "Is Flower running (`make status`)? See logs/flower.log; set FLOWER_BASIC_AUTH here too if used.",
    "tidy_up": "Is the database reachable? `.venv/bin/midas documents` lists what is left; "
    "`.venv/bin/midas documents delete ID` deletes one.",
}

#: One small generated document per format family, with a word the check looks for afterwards.
SAMPLE_DOCUMENTS: dict[str, Callable[[str], bytes]] = {
    "txt": lambda token: f"Plain text check {token}.\n".encode(),
    "md": lambda token: f"# Check\n\nMarkdown check {token}.\n".encode(),
    "csv": lambda token: f"name,value\ncheck,{token}\n".encode(),
    "json": lambda token: json.dumps({"check": token}).encode(),
    "html": lambda token: f"<html><head><title>Check</title></head><body><p>{token}</p></body></html>".encode(),
    "xml": lambda token: f"<?xml version='1.0'?><check><value>{token}</value></check>".encode(),
    "eml": lambda token: f"From: a@example.com\nTo: b@example.com\nSubject: check\n\nMail check {token}.\n".encode(),
    "rtf": lambda token: ("{\\rtf1\\ansi RTF check " + token + ".\\par}").encode(),
}


@dataclass
class Check:
    name: str
    passed: bool
    seconds: float
    detail: str
    hint: str = ""


class SystemCheck:
    def __init__(self, settings: Settings, timeout: float) -> None:
        self.settings = settings
        self.timeout = timeout
        self.token = "midascheck" + uuid.uuid4().hex[:8]
        self.results: list[Check] = []
        self._app = None
        #: the documents this check created (deleted again by tidy_up)
        self.created: set[int] = set()

    @property
    def app(self):
        if self._app is None:
            import celery_config

            self._app = celery_config.app
        return self._app

    def run(self, name: str, func: Callable[[], str]) -> Check:
        started = time.monotonic()
        try:
            detail = func()
            check = Check(name, True, time.monotonic() - started, detail)
        except Exception as exc:  # every failure becomes a row with its hint, never a traceback
            check = Check(name, False, time.monotonic() - started, f"{type(exc).__name__}: {exc}", HINTS[name])
        self.results.append(check)
        return check

    # -- the checks -------------------------------------------------------------

    def check_redis(self) -> str:
        import redis

        client = redis.Redis.from_url(self.settings.broker_url, socket_timeout=3, socket_connect_timeout=3)
        started = time.monotonic()
        client.ping()
        info = client.info("server")
        return f"PING {1000 * (time.monotonic() - started):.1f} ms, Redis {info.get('redis_version')}"

    def check_workers(self) -> str:
        replies = self.app.control.inspect(timeout=2).active_queues() or {}
        if not replies:
            raise RuntimeError("no worker answered")
        served = {q["name"] for queues in replies.values() for q in queues}
        missing = [q for q in QUEUES if q not in served]
        if missing:
            raise RuntimeError(f"no worker consumes: {', '.join(missing)}")
        result = self.app.send_task(keys.PING, args=[self.token])
        if result.get(timeout=self.timeout)["message"] != self.token:
            raise RuntimeError("ping answered with the wrong message")
        return f"{len(replies)} worker(s), queues {', '.join(sorted(served))}"

    def _created(self, result: dict) -> None:
        """Remember a document the check itself recorded (a duplicate belongs to someone else)."""
        if isinstance(result, dict) and result.get("document_id") and result.get("status") != "duplicate":
            self.created.add(int(result["document_id"]))

    def _inbox(self) -> Path:
        folder = self.settings.inbox_dir / f"system-check-{self.token}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def check_documents(self) -> str:
        folder = self._inbox()
        sent = {}
        for ext, make in SAMPLE_DOCUMENTS.items():
            path = folder / f"check.{ext}"
            path.write_bytes(make(f"{self.token}{ext}"))
            sent[ext] = self.app.send_task(keys.PROCESS_DOCUMENT_FILE, args=[str(path)])
        bad = []
        for ext, result in sent.items():
            value = result.get(timeout=self.timeout)
            self._created(value)
            if value["status"] != "success" or value["chunks_created"] < 1:
                bad.append(f"{ext}: {value['status']} {value.get('error', '')}")
        if bad:
            raise RuntimeError("; ".join(bad))
        return f"{len(sent)} formats processed ({', '.join(sent)})"

    def check_batch(self) -> str:
        folder = self._inbox()
        paths = []
        for i in range(3):
            path = folder / f"batch-{i}.txt"
            path.write_text(f"Batch check {self.token} number {i}.")
            paths.append(str(path))
        summary = self.app.send_task(keys.PROCESS_DOCUMENT_BATCH, args=[paths]).get(timeout=self.timeout)
        for result in summary.get("results", []):
            self._created(result)
        if summary["total"] != 3 or summary["succeeded"] + summary["duplicates"] != 3:
            raise RuntimeError(f"batch summary: {summary['succeeded']} succeeded of {summary['total']}")
        return f"3 files in {summary['duration_s']:.1f} s"

    def check_monitoring(self) -> str:
        health = self.app.send_task(keys.SYSTEM_HEALTH_CHECK).get(timeout=self.timeout)
        queues = self.app.send_task(keys.CHECK_TASK_QUEUE).get(timeout=self.timeout)
        report = self.app.send_task(keys.GENERATE_TASK_REPORT, kwargs={"hours": 1}).get(timeout=self.timeout)
        if "status" not in health or not isinstance(queues, dict) or not isinstance(report, dict):
            raise RuntimeError("unexpected answers from the monitoring tasks")
        if not health.get("stored"):
            raise RuntimeError("the health check could not store its sample (see logs/worker-*.log)")
        return describe_verdict(stored_verdict(self.settings))

    def check_cleanup(self) -> str:
        files = self.app.send_task(keys.CLEANUP_OLD_PROCESSED_FILES, kwargs={"days": 3650}).get(timeout=self.timeout)
        tasks = self.app.send_task(keys.CLEANUP_OLD_TASKS, kwargs={"days": 3650}).get(timeout=self.timeout)
        return f"file cleanup removed {len(files.get('removed', []))}, task cleanup {tasks.get('removed', {})}"

    def check_watcher(self) -> str:
        from background_tasks.processing.intake import default_watch_dirs
        from background_tasks.storage.store import DocumentStore

        folders = [d for d in default_watch_dirs(self.settings) if d.is_dir()]
        if not folders:
            raise RuntimeError("no watched folder exists")
        path = folders[0] / f"midas-system-check-{self.token}.txt"
        path.write_text(f"Watcher check {self.token}: this file may be deleted.")
        store = DocumentStore(self.settings.database_url_resolved)
        try:
            deadline = time.monotonic() + self.timeout + self.settings.stability_seconds
            while time.monotonic() < deadline:
                found = store.find_by_path(str(path.resolve()))
                if found and found[0]["status"] in {"success", "failed", "rejected"}:
                    self.created.add(int(found[0]["id"]))
                    if found[0]["status"] != "success":
                        raise RuntimeError(f"processed with status {found[0]['status']}: {found[0]['error']}")
                    return f"{path.name} processed from {folders[0]}"
                time.sleep(0.5)
            raise TimeoutError(f"{path} was not processed within {self.timeout:.0f} s")
        finally:
            path.unlink(missing_ok=True)

    def check_tidy_up(self) -> str:
        """Delete the documents the check created and its inbox folder (never a watched folder's file)."""
        from background_tasks.errors import DocumentNotFound
        from background_tasks.processing.manage import delete_document

        removed = copies = 0
        for document_id in sorted(self.created):
            try:
                report = delete_document(self.settings, document_id)
            except DocumentNotFound:
                continue  # deleted already
            removed += 1
            copies += len(report.working_copies_removed)
        folder = self.settings.inbox_dir / f"system-check-{self.token}"
        if folder.is_dir():
            shutil.rmtree(folder)  # the check's own folder in MIDAS's inbox: files it wrote that left no document
        return f"deleted {removed} document(s) the check created and {copies} inbox file(s)"

    def _http(self, url: str, auth: str | None = None, cookie: str | None = None) -> str:
        request = urllib.request.Request(url)
        if auth:
            request.add_header("Authorization", "Basic " + b64encode(auth.encode()).decode())
        if cookie:
            request.add_header("Cookie", cookie)
        with urllib.request.urlopen(request, timeout=10) as response:
            return f"HTTP {response.status} from {url}"

    def check_dashboard(self) -> str:
        from background_tasks.ops.dashboard_gate import sign_in

        base = f"http://127.0.0.1:{self.settings.streamlit_port}"
        password = self.settings.dashboard_password
        cookie = sign_in(base, password, timeout=10) if password else None
        return self._http(f"{base}/_stcore/health", cookie=cookie)

    def check_flower(self) -> str:
        return self._http(f"http://127.0.0.1:{self.settings.flower_port}/flower/", self.settings.flower_basic_auth)


def describe_verdict(verdict: dict | None) -> str:
    """The stored health verdict as the dashboard shows it: status, reasons, what is not counted yet."""
    if verdict is None:
        return "health: no check stored"
    text = f"health {verdict['status']} (stored verdict"
    text += f": {'; '.join(verdict['reasons'])})" if verdict["reasons"] else ")"
    if verdict["pending"]:
        text += f"; not counted yet: {'; '.join(verdict['pending'])}"
    return text


def render(results: list[Check]) -> str:
    width = max(len(r.name) for r in results)
    lines = [f"{'CHECK':<{width}}  RESULT  {'TIME':>7}  DETAIL", "-" * 78]
    for r in results:
        lines.append(f"{r.name:<{width}}  {'PASS' if r.passed else 'FAIL':<6}  {r.seconds:>6.2f}s  {r.detail}")
    failed = [r for r in results if not r.passed]
    if failed:
        lines.append("")
        lines.append("What to do:")
        lines.extend(f"  {r.name}: {r.hint}" for r in failed)
    lines.append("")
    lines.append(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--timeout", type=float, default=60, help="seconds to wait for each task")
    parser.add_argument("--skip", default="", help="comma-separated checks to leave out")
    args = parser.parse_args(argv)
    checker = SystemCheck(settings_or_exit(), args.timeout)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    order = [
        "redis", "workers", "documents", "batch", "monitoring", "cleanup", "watcher", "dashboard", "flower", "tidy_up"
    ]  # fmt: skip
    needs_broker = {"workers", "documents", "batch", "monitoring", "cleanup", "watcher"}
    redis_ok = True
    for name in order:
        if name in skip:
            continue
        if not redis_ok and name in needs_broker:
            checker.results.append(Check(name, False, 0.0, "not run: Redis is not reachable", HINTS["redis"]))
            continue
        check = checker.run(name, getattr(checker, f"check_{name}"))
        if name == "redis":
            redis_ok = check.passed
    if args.json:
        print(
            json.dumps(
                {"passed": all(r.passed for r in checker.results), "checks": [asdict(r) for r in checker.results]},
                indent=2,
            )
        )
    else:
        print(render(checker.results))
    return 0 if all(r.passed for r in checker.results) else 1


if __name__ == "__main__":
    sys.exit(main())
