"""Real services for tests: a private redis-server and Celery worker processes.

Nothing here touches the user's Redis: each RedisServer runs its own
``redis-server`` on a free port with a throwaway data dir, and can be stopped,
killed and restarted by the test that owns it.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import psutil
import redis

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def die_with_parent() -> None:
    """In a test's child process: get SIGTERM when the test run dies, so no worker outlives it."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_module(module: str, env: Mapping[str, str], *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """``python -m MODULE ARGS`` from the checkout, as a user runs it; its output, whatever its exit code."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=PROJECT_ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def midas_cli(env: Mapping[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m background_tasks ARGS``: the ``midas`` command."""
    return run_module("background_tasks", env, *args, timeout=timeout)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # keep polling; report the last error on timeout
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(
        f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc})" if last_exc else "")
    )


def gone(pid: int) -> bool:
    """The process has exited (a zombie waiting to be reaped counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class ChildPids:
    """The pids a test's parser child writes to ``path``; whatever of them still runs is killed at the end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: list[psutil.Process] = []

    def wait(self, timeout: float = 30) -> list[int]:
        pids = wait_until(
            lambda: self.path.exists() and [int(p) for p in self.path.read_text().split()],
            timeout,
            what=f"pids in {self.path}",
        )
        for pid in pids:
            try:
                self._seen.append(psutil.Process(pid))  # remembers its start time: never kills a reused pid
            except psutil.NoSuchProcess:
                pass
        return pids

    def kill_leftovers(self) -> None:
        for proc in self._seen:
            try:
                proc.kill()
            except psutil.Error:
                pass


class RedisServer:
    """A private redis-server process with append-only persistence."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.data_dir = data_dir
        self.process: subprocess.Popen | None = None
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed; run `make test` (it installs it) or apt-get install redis-server"
            )
        self.binary = binary

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.data_dir),
                "--appendonly", "yes",
                "--appendfsync", "always",
                "--save", "",
                "--maxmemory-policy", "noeviction",
                "--logfile", str(self.data_dir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )  # fmt: skip
        wait_until(lambda: self.client().ping(), 15, what=f"redis on port {self.port}")

    def stop(self) -> None:
        """Graceful shutdown (the append-only file is flushed)."""
        if self.process and self.process.poll() is None:
            try:
                self.client().shutdown(nosave=False)
            except (redis.ConnectionError, redis.ResponseError):
                pass
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

    def restart(self) -> None:
        self.stop()
        self.start()


class WorkerProcess:
    """A real ``celery -A celery_config worker`` subprocess."""

    def __init__(
        self,
        env: Mapping[str, str],
        log_dir: Path,
        queues: Iterable[str] = ("default", "documents", "analysis", "monitoring"),
        concurrency: int = 2,
        pool: str = "prefork",
        name: str | None = None,
        extra_args: Iterable[str] = (),
        cwd: Path = PROJECT_ROOT,
    ) -> None:
        self.name = name or f"test-{uuid.uuid4().hex[:8]}"
        self.hostname = f"{self.name}@{socket.gethostname()}"
        self.queues = tuple(queues)
        self.log_path = log_dir / f"{self.name}.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        cmd = [
            sys.executable, "-m", "celery", "-A", "celery_config", "worker",
            "-Q", ",".join(self.queues),
            "-c", str(concurrency),
            "-P", pool,
            "-n", self.hostname,
            "--loglevel", "INFO",
            "--without-mingle", "--without-gossip",
            *extra_args,
        ]  # fmt: skip
        env = dict(env)
        if cwd != PROJECT_ROOT:  # `-A celery_config` must still find the project
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )

    def wait_ready(self, app, timeout: float = 60) -> WorkerProcess:
        def answered() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}; log:\n{self.log_text()[-3000:]}")
            return bool(app.control.ping(destination=[self.hostname], timeout=0.5))

        try:
            wait_until(answered, timeout, interval=0.2, what=f"worker {self.hostname}")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; log:\n{self.log_text()[-3000:]}") from None
        return self

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def pool_pids(self) -> list[int]:
        try:
            return [c.pid for c in psutil.Process(self.process.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self, timeout: float = 30) -> None:
        """Warm shutdown (SIGTERM), then force."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reap_group()
        self._log.close()

    def kill(self) -> None:
        """``kill -9`` of the main worker process (its pool children die with the group)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._reap_group()

    def _reap_group(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class LoggedProcess:
    """A service subprocess writing to ``log_path``: its log, and a stop (SIGTERM, then SIGKILL after 15 s)."""

    process: subprocess.Popen
    log_path: Path
    _log: Any

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


class BeatProcess(LoggedProcess):
    """A real ``celery -A celery_config beat`` subprocess (its schedule file in ``run_dir``)."""

    def __init__(self, env: Mapping[str, str], run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = run_dir / "beat.log"
        self._log = self.log_path.open("ab")
        cmd = [
            sys.executable, "-m", "celery", "-A", "celery_config", "beat",
            "--schedule", str(run_dir / "celerybeat-schedule"),
            "--pidfile", "",
            "--loglevel", "INFO",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            cmd,
            cwd=PROJECT_ROOT,
            env=dict(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )


class ApiServer(LoggedProcess):
    """A real ``python -m background_tasks.api_app`` (uvicorn) subprocess on a free port of 127.0.0.1."""

    def __init__(self, env: Mapping[str, str], log_dir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"api-{self.port}.log"
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "background_tasks.api_app"],
            cwd=PROJECT_ROOT,
            env={**env, "MIDAS_API_PORT": str(self.port)},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )

    def wait_ready(self, timeout: float = 60) -> ApiServer:
        """Until ``/health`` answers (any status: it needs no token)."""
        import urllib.error
        import urllib.request

        def answered() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"the API exited with {self.process.returncode}; log:\n{self.log_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2):
                    return True
            except urllib.error.HTTPError:
                return True
            except OSError:
                return False

        wait_until(answered, timeout, interval=0.1, what=f"the API at {self.url}")
        return self


# --------------------------------------------------------------------------
# The launcher, run as users run it (python -m background_tasks.services)
# --------------------------------------------------------------------------


def launcher_env(tmp: Path, **overrides: str) -> dict[str, str]:
    """A complete environment for a private stack: free ports, data and logs under ``tmp``."""
    env = dict(os.environ)
    for name in ("REDIS_PASSWORD", "FLOWER_BASIC_AUTH", "MIDAS_DATABASE_URL", "POSTGRES_HOST"):
        env.pop(name, None)
    env.update(
        {
            "REDIS_HOST": "127.0.0.1",
            "REDIS_PORT": str(free_port()),
            "FLOWER_PORT": str(free_port()),
            "STREAMLIT_PORT": str(free_port()),
            "MIDAS_API_PORT": str(free_port()),
            "MIDAS_DATA_DIR": str(tmp / "data"),
            "MIDAS_LOG_DIR": str(tmp / "logs"),
            "MIDAS_ENV_FILE": os.devnull,
            "MIDAS_LAUNCH_FILE": str(tmp / "launched.env"),  # never the checkout's .midas/launched.env
            "MIDAS_WORKER_CONCURRENCY": "1",
            "MIDAS_SERVICE_STOP_TIMEOUT": "15",
        }
    )
    env.update(overrides)
    return env


def launcher(env: Mapping[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return run_module("background_tasks.launcher.services", env, *args, timeout=timeout)


def recorded_processes(run_dir: Path) -> list[psutil.Process]:
    """Every process in the launcher's PID files (service and log pump) plus the services' children."""
    from background_tasks.launcher.services import read_record

    procs: list[psutil.Process] = []
    for pidfile in run_dir.glob("*.pid"):
        record = read_record(pidfile) or {}
        for key in ("pid", "pump_pid"):
            try:
                proc = psutil.Process(record[key])
            except (KeyError, TypeError, psutil.NoSuchProcess):
                continue
            procs.append(proc)
            if key == "pid":
                procs.extend(proc.children(recursive=True))
    return procs


def processes_mentioning(*needles: str) -> list[psutil.Process]:
    """Processes whose command line contains any needle (a tmp dir, a private port)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if proc.pid != os.getpid() and any(n in cmdline for n in needles):
            found.append(proc)
    return found


def stop_stack(env: Mapping[str, str], tmp: Path) -> None:
    """After a test: stop through the launcher, then kill whatever it started or that mentions our dirs/ports."""
    run_dir = Path(env["MIDAS_DATA_DIR"]) / "run"
    leftovers = recorded_processes(run_dir)
    launcher(env, "stop", timeout=120)
    needles = (str(tmp), f"127.0.0.1:{env['REDIS_PORT']}", f"--port={env['FLOWER_PORT']}")
    for proc in [*recorded_processes(run_dir), *leftovers, *processes_mentioning(*needles)]:
        try:
            proc.kill()
        except psutil.Error:
            pass


def fire_task_signals(task_id: str, task_name: str, args: tuple = (), retval: object = None) -> dict:
    """Send the publish, prerun and postrun signals a real task's life sends, in this process.

    Lets the history hooks be exercised (and timed by bench_history) without a
    broker; the task object is the registered one so the hooks see real names.
    Returns the message headers as the publish hooks left them.
    """
    import importlib

    from celery import signals

    module, _, name = task_name.rpartition(".")
    task = getattr(importlib.import_module(module), name)
    headers = {"id": task_id, "task": task_name, "retries": 0}
    signals.before_task_publish.send(
        sender=task_name, body=(args, {}, {}), exchange="midas", routing_key="default", headers=headers
    )
    task.push_request(
        id=task_id, hostname="bench@host", delivery_info={"routing_key": "default"}, retries=0, called_directly=False
    )
    try:
        signals.task_prerun.send(sender=task, task_id=task_id, task=task, args=args, kwargs={})
        signals.task_postrun.send(
            sender=task, task_id=task_id, task=task, args=args, kwargs={}, retval=retval, state="SUCCESS"
        )
    finally:
        task.pop_request()
    return headers


def result_or_log(result, worker, timeout: float = 60) -> dict:
    """``result.get`` that, on a timeout, fails with what the worker logged (a bare timeout says nothing)."""
    from celery.exceptions import TimeoutError as ResultTimeout

    try:
        return result.get(timeout=timeout)
    except ResultTimeout:
        raise AssertionError(
            f"no result for {result.id} in {timeout} s; worker log:\n{worker.log_text()[-6000:]}"
        ) from None
