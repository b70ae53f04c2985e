"""The Redis the launcher runs: where its binary is, how it is started, how it is probed.

Redis is started only when nothing answers at the configured local port. It
binds to 127.0.0.1, keeps its data and append-only file (which holds every
queued task message) in ``<data_dir>/redis``, a 0700 folder, and requires a
password: ``REDIS_PASSWORD`` when given, otherwise one generated on first start
and stored 0600 in ``<data_dir>/redis/password``, where the settings module
finds it for every other MIDAS process. The password goes into a 0600 config
file, never on a command line, where any local user could read it. A Redis
the user runs is used as configured and never given a password.
"""

from __future__ import annotations

import platform
import shutil
import socket
from pathlib import Path

from background_tasks.launcher.private_files import private_dir, read_or_create_secret, write_private_text
from background_tasks.settings import Settings

IS_WINDOWS = platform.system() == "Windows"

REDIS_INSTALL_HINT = (
    "Install Redis, then run this again:\n"
    "  Debian/Ubuntu: sudo apt-get install redis-server\n"
    "  macOS:         brew install redis\n"
    "  Windows:       .\\Setup-Redis-Windows.ps1"
)


def find_redis_server() -> str | None:
    """The Redis server binary: ``redis-server`` on PATH, or Memurai on Windows."""
    for name in ("redis-server", "memurai"):
        found = shutil.which(name)
        if found:
            return found
    if IS_WINDOWS:
        for base in (Path(r"C:\Program Files\Memurai"), Path(r"C:\Program Files\Redis")):
            for exe in ("memurai.exe", "redis-server.exe"):
                if (base / exe).is_file():
                    return str(base / exe)
    return None


def redis_conf_path(settings: Settings) -> Path:
    return settings.run_dir / "redis.conf"


def redis_command(settings: Settings) -> tuple[str, ...]:
    """The redis-server command line: loopback only, data in the private data folder, append-only."""
    return (
        find_redis_server() or "redis-server",
        str(redis_conf_path(settings)),
        "--port",
        str(settings.redis_port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(settings.redis_data_dir),
        "--appendonly",
        "yes",
        "--maxmemory-policy",
        "noeviction",
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
    )


def redis_url(settings: Settings) -> str:
    """Where Redis answers, for status lines: never with the password in it."""
    host = "127.0.0.1" if settings.redis_is_local else settings.redis_host
    return f"redis://{host}:{settings.redis_port}"


def with_redis_password(settings: Settings) -> Settings:
    """Settings for starting our own Redis: REDIS_PASSWORD, or the generated one (made now if need be)."""
    if settings.redis_password:
        return settings
    password = read_or_create_secret(settings.redis_password_file)
    return settings.replace(redis_password=password, redis_password_generated=True)


def _quote_redis(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def write_redis_conf(settings: Settings) -> Path:
    """Options that must not appear on a command line (the password), in a file only we can read."""
    path = redis_conf_path(settings)
    private_dir(path.parent)
    private_dir(settings.redis_data_dir)
    lines = ["# Written by background_tasks.launcher.services at every start; edits are overwritten."]
    if settings.redis_password:
        lines.append(f"requirepass {_quote_redis(settings.redis_password)}")
    write_private_text(path, "\n".join(lines) + "\n")
    return path


def password_origin(settings: Settings) -> str:
    """How to name the password in a message, without showing it."""
    if settings.redis_password_generated:
        return f"the generated password in {settings.redis_password_file}"
    return "REDIS_PASSWORD" if settings.redis_password else "no password"


def redis_probe(settings: Settings, timeout: float = 1.0) -> str:
    """``pong`` (answers), ``auth`` (a Redis that rejects our password), ``down`` or ``other`` (not Redis)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis(
        host=settings.redis_host,
        port=settings.redis_port,
        password=settings.redis_password,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),  # a probe answers now; the callers do their own waiting
    )
    try:
        client.ping()
        return "pong"
    except (redis.AuthenticationError, redis.ResponseError):
        return "auth"
    except (redis.ConnectionError, redis.TimeoutError):
        # Refused: nothing listens. Accepted but no Redis reply: something else owns the port.
        return "other" if _port_accepts(settings.redis_host, settings.redis_port, timeout) else "down"
    except redis.RedisError:
        return "other"
    finally:
        client.close()


def _port_accepts(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
