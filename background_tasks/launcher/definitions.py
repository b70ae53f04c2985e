"""Which services MIDAS runs, in start order, and the command and environment each one runs with.

Services: ``redis`` (only when nothing answers at the configured local port),
``s3`` (SeaweedFS, only with ``MIDAS_S3_LOCAL``), one Celery ``worker-N`` per
worker group, ``beat``, ``flower``, ``watcher``, ``dashboard`` (these two only
once their files exist) and ``api``, the HTTP API.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from background_tasks.launcher.redis_service import IS_WINDOWS, redis_command, redis_url
from background_tasks.settings import PROJECT_ROOT, Settings
from background_tasks.sources.s3.local_server import weed_command

__all__ = [
    "CELERY_CONFIG_FILE",
    "DASHBOARD_FILE",
    "IS_WINDOWS",
    "KINDS",
    "WATCHER_FILE",
    "LauncherError",
    "Service",
    "build_services",
    "child_environment",
    "select_services",
]

KINDS = ("redis", "s3", "worker", "beat", "flower", "watcher", "dashboard", "api")
WATCHER_FILE = PROJECT_ROOT / "background_tasks" / "file_watcher.py"
DASHBOARD_FILE = PROJECT_ROOT / "Streamlit_Task_Monitoring.py"
CELERY_CONFIG_FILE = PROJECT_ROOT / "celery_config.py"


class LauncherError(Exception):
    """A request the launcher cannot carry out; the message is the one line shown to the user."""


@dataclass(frozen=True)
class Service:
    """One service: its name (also the log and PID file stem), kind and command line."""

    name: str
    kind: str
    command: tuple[str, ...]
    url: str | None = None
    requires: Path | None = None
    node: str | None = None  # Celery node name template for workers, e.g. worker-1@%h
    queues: tuple[str, ...] = ()


def build_services(settings: Settings, python: str | None = None) -> list[Service]:
    """Every service in start order, with the exact command each one runs."""
    py = python or sys.executable
    celery = (py, "-m", "celery", "-A", "celery_config")
    services = [Service("redis", "redis", redis_command(settings), url=redis_url(settings))]
    if settings.s3_local:
        url = f"http://127.0.0.1:{settings.s3_local_port}"
        services.append(Service("s3", "s3", weed_command(settings), url=url))
    for index, queues in enumerate(settings.worker_groups, 1):
        name = f"worker-{index}"
        node = f"{name}@%h"
        services.append(
            Service(
                name,
                "worker",
                (
                    *celery,
                    "worker",
                    "-Q",
                    ",".join(queues),
                    "-c",
                    str(settings.concurrency),
                    "-P",
                    settings.pool,
                    "-n",
                    node,
                    "--loglevel",
                    "INFO",
                ),
                node=node,
                queues=tuple(queues),
            )
        )
    services.append(
        Service(
            "beat",
            "beat",
            (
                *celery,
                "beat",
                "--schedule",
                str(settings.run_dir / "celerybeat-schedule"),
                "--pidfile=",
                "--loglevel",
                "INFO",
            ),
        )
    )
    # Flower's basic auth goes in the environment (FLOWER_BASIC_AUTH, which Flower reads
    # itself), not on the command line, where every local user could read it with ps.
    # background_tasks.flower_app is Celery's flower command with /metrics and /healthcheck
    # behind that auth too.
    services.append(
        Service(
            "flower",
            "flower",
            (py, "-m", "background_tasks.flower_app", "--address=127.0.0.1", f"--port={settings.flower_port}"),
            url=f"http://localhost:{settings.flower_port}/flower/",
        )
    )
    services.append(Service("watcher", "watcher", (py, "-m", "background_tasks.file_watcher"), requires=WATCHER_FILE))
    services.append(
        Service(
            "dashboard",
            "dashboard",
            # Streamlit behind the password gate, on 127.0.0.1:STREAMLIT_PORT with the upload cap.
            (py, "-m", "background_tasks.dashboard_app"),
            url=f"http://localhost:{settings.streamlit_port}",
            requires=DASHBOARD_FILE,
        )
    )
    services.append(
        Service(
            "api",
            "api",
            # FastAPI on 127.0.0.1:MIDAS_API_PORT; its tokens are digests in MIDAS_API_TOKENS, never on a command line
            (py, "-m", "background_tasks.api_app"),
            url=f"http://localhost:{settings.api_port}/docs",
        )
    )
    return services


def select_services(services: Sequence[Service], names: Sequence[str]) -> list[Service]:
    """The services named (by name such as ``worker-2`` or kind such as ``worker``), in start order."""
    if not names:
        return list(services)
    wanted: set[str] = set()
    for name in names:
        matches = [s.name for s in services if name in (s.name, s.kind)]
        if not matches:
            known = ", ".join(dict.fromkeys([*KINDS, *(s.name for s in services)]))
            raise LauncherError(f"unknown service {name!r} (known: {known})")
        wanted.update(matches)
    return [s for s in services if s.name in wanted]


def child_environment(settings: Settings) -> dict[str, str]:
    """The environment for services: this process's environment with the settings on top."""
    env = os.environ.copy()  # passed through to children only, not read for configuration
    env.update(settings.as_env())
    if not settings.flower_basic_auth:
        env.pop("FLOWER_BASIC_AUTH", None)  # an empty value would make Flower demand a blank login
    env["PYTHONUNBUFFERED"] = "1"  # lines reach the log as they are written
    return env
