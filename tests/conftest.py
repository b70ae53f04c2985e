"""Session-wide isolation: a private Redis, a throwaway data dir, real workers.

The environment is set here, at import time, before any MIDAS module reads its
settings, so nothing in the suite can reach the user's Redis (port 6379) or
the project's own ./data.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import BeatProcess, ChildPids, RedisServer, WorkerProcess, free_port

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="midas-test-"))
_REDIS_PORT = free_port()
_DOCS_DIR = _SESSION_DIR / "docs"  # where tests put documents; an allowed root of every worker
_WATCH_DIR = _SESSION_DIR / "watch"
_DOCS_DIR.mkdir()
_WATCH_DIR.mkdir()
_CORPUS = Path(
    os.environ.get("MIDAS_TEST_CORPUS") or Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"
)
_ROOTS = [str(_DOCS_DIR)] + ([str(_CORPUS)] if _CORPUS.is_dir() else [])

for _name in [k for k in os.environ if k.startswith(("MIDAS_", "REDIS_", "POSTGRES_", "FLOWER_", "STREAMLIT_"))]:
    if _name != "MIDAS_TEST_CORPUS":
        del os.environ[_name]
os.environ.update(
    {
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(_REDIS_PORT),
        "REDIS_DB": "0",
        "MIDAS_DATA_DIR": str(_SESSION_DIR / "data"),
        "MIDAS_LOG_DIR": str(_SESSION_DIR / "logs"),
        "MIDAS_ENV_FILE": os.devnull,
        "MIDAS_LAUNCH_FILE": os.devnull,  # no launch file: neither the checkout's nor one written by a test
        "MIDAS_WORKER_CONCURRENCY": "2",
        "MIDAS_ALLOWED_ROOTS": os.pathsep.join(_ROOTS),
        "MIDAS_WATCH_DIRS": str(_WATCH_DIR),
        "MIDAS_STABILITY_SECONDS": "0",
        "FLOWER_PORT": str(free_port()),
        "STREAMLIT_PORT": str(free_port()),
        "MIDAS_API_PORT": str(free_port()),
    }
)


#: fixtures that start real worker processes: a test that uses one is an ``integration`` test
_WORKER_FIXTURES = frozenset({"start_worker", "session_worker", "isolated_stack", "module_isolated_stack"})


def pytest_collection_modifyitems(config, items) -> None:
    """Mark every test that starts workers ``integration`` (``-m "not integration"`` is the fast loop)."""
    for item in items:
        if _WORKER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def pytest_sessionfinish(session, exitstatus) -> None:
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def session_dir() -> Path:
    return _SESSION_DIR


@pytest.fixture(scope="session")
def generated_corpus() -> Path:
    """One small real file of every supported type (tests/generated_corpus.py), inside the allowed roots."""
    from tests.generated_corpus import build

    return build(_DOCS_DIR / "generated")


@pytest.fixture
def docs_dir(unique) -> Path:
    """A fresh folder inside the allowed roots for this test's documents."""
    path = _DOCS_DIR / unique
    path.mkdir()
    return path


@pytest.fixture(autouse=True)
def _keep_main_module():
    """Streamlit's AppTest runs the page as ``__main__`` and leaves it there; a later test that
    spawns processes would then re-run the dashboard in each child. Put the real one back."""
    import sys

    main = sys.modules.get("__main__")
    yield
    if main is not None and sys.modules.get("__main__") is not main:
        sys.modules["__main__"] = main


@pytest.fixture
def settings_for(tmp_path):
    """Factory: settings of this test run with a private data dir and any overrides (plain-function tests)."""
    from background_tasks.settings import load_settings

    def make(**overrides: str):
        env = {k: v for k, v in os.environ.items() if k.startswith(("MIDAS_", "REDIS_"))}
        env.update({"MIDAS_DATA_DIR": str(tmp_path / "data"), "MIDAS_STABILITY_SECONDS": "0"})
        env.update(overrides)
        return load_settings(env, env_file=Path(os.devnull))

    return make


@pytest.fixture
def settings(settings_for):
    return settings_for()


@pytest.fixture
def store(settings):
    """A document store on a fresh SQLite file of this test."""
    from background_tasks.storage.store import DocumentStore

    store = DocumentStore(settings.database_url_resolved)
    store.create_schema()
    return store


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """The private Redis every worker of the session uses."""
    server = RedisServer(_SESSION_DIR / "redis", port=_REDIS_PORT)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def dovecot():
    """A private Dovecot IMAP server (tests/imap_server.py) with the user alice, gone after the test."""
    from tests.imap_server import ImapServer

    server = ImapServer().start()
    yield server
    server.close()


@pytest.fixture
def mail_account(tmp_path):
    """Factory: the mail account ``test`` of a test Dovecot, as a user writes it (``mail_support.AccountFactory``)."""
    from tests.mail_support import AccountFactory

    return AccountFactory(tmp_path)


@pytest.fixture(scope="session")
def app(redis_server):
    """The project's Celery app, configured (by the environment above) for the private Redis."""
    import celery_config

    assert str(_REDIS_PORT) in celery_config.app.conf.broker_url
    return celery_config.app


@pytest.fixture
def start_worker(app, session_dir) -> Iterator:
    """Factory: start real worker processes; all are stopped at the end of the test."""
    workers: list[WorkerProcess] = []

    def start(**kwargs) -> WorkerProcess:
        env = {**os.environ, **kwargs.pop("env", {})}
        worker = WorkerProcess(env=env, log_dir=session_dir / "logs", **kwargs)
        workers.append(worker)
        return worker.wait_ready(app)

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture(scope="session")
def session_worker(app, session_dir) -> Iterator[WorkerProcess]:
    """One worker on all four queues, shared by tests that only need tasks to run."""
    worker = WorkerProcess(env=dict(os.environ), log_dir=session_dir / "logs", name="session-worker")
    worker.wait_ready(app)
    yield worker
    worker.stop()


@pytest.fixture
def purge_queues(app, redis_server) -> None:
    """Empty every MIDAS queue before a test that counts messages."""
    redis_server.client().delete("default", "documents", "analysis", "monitoring")


@pytest.fixture
def child_pids(tmp_path) -> Iterator[ChildPids]:
    """A file a test's parser child writes its pids to; leftovers are killed after the test."""
    pids = ChildPids(tmp_path / "child-pids")
    yield pids
    pids.kill_leftovers()


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


class IsolatedStack:
    """A Redis of its own, an app bound to it, and workers on it: no other test's worker can steal a task."""

    def __init__(self, root: Path, env_overrides: dict[str, str] | None = None) -> None:
        import celery_config
        from background_tasks.settings import load_settings

        self.root = root
        self.redis = RedisServer(root / "redis")
        self.redis.start()
        self.env = {
            **os.environ,
            "REDIS_PORT": str(self.redis.port),
            "MIDAS_DATA_DIR": str(root / "data"),
            **(env_overrides or {}),
        }
        self.settings = load_settings(self.env, env_file=Path(os.devnull))
        self.app = celery_config.create_app(self.settings)
        self.workers: list[WorkerProcess] = []
        self.beats: list[BeatProcess] = []

    def start_worker(self, **kwargs) -> WorkerProcess:
        env = {**self.env, **kwargs.pop("env", {})}
        worker = WorkerProcess(env=env, log_dir=self.root / "logs", **kwargs)
        self.workers.append(worker)
        return worker.wait_ready(self.app)

    def start_beat(self) -> BeatProcess:
        """Beat on this stack's schedule (the ledger reaper among it)."""
        beat = BeatProcess(self.env, self.root / f"beat{len(self.beats)}")
        self.beats.append(beat)
        return beat

    def send(self, name: str, *args, **kwargs):
        return self.app.send_task(name, args=list(args), kwargs=kwargs)

    def close(self) -> None:
        for beat in self.beats:
            beat.stop()
        for worker in self.workers:
            worker.stop()
        self.redis.kill()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item, so fixtures can tell whether their test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def _print_worker_logs(stacks: list[IsolatedStack]) -> None:
    """What the workers of a failed test logged (a bare timeout says nothing)."""
    for stack in stacks:
        for worker in stack.workers:
            print(f"\n----- {worker.name} log (last 6,000 characters) -----\n{worker.log_text()[-6000:]}")


@pytest.fixture
def isolated_stack(request, tmp_path) -> Iterator:
    """Factory for an IsolatedStack (extra env as keyword arguments); torn down after the test."""
    stacks: list[IsolatedStack] = []

    def make(**env: str) -> IsolatedStack:
        stack = IsolatedStack(tmp_path / f"stack{len(stacks)}", env)
        stacks.append(stack)
        return stack

    yield make
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        _print_worker_logs(stacks)
    for stack in stacks:
        stack.close()


@pytest.fixture(scope="module")
def module_isolated_stack(tmp_path_factory) -> Iterator:
    """Like ``isolated_stack``, but shared by the tests of a module (one Redis and its workers per module)."""
    stacks: list[IsolatedStack] = []

    def make(**env: str) -> IsolatedStack:
        stack = IsolatedStack(tmp_path_factory.mktemp("module-stack"), env)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.close()
