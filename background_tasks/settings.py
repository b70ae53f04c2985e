"""The one place MIDAS reads its configuration.

The variables are declared in ``settings_vars.VARIABLES``; this module turns
the environment (over the launch file, over ``.env``) into a frozen, typed
``Settings`` with one attribute per variable, checks the values that depend on
each other, and computes the derived values (URLs, byte limits, folders) once
per object.

The launch file (``.midas/launched.env`` in the checkout, or ``MIDAS_LAUNCH_FILE``)
is written by ``midas start`` with the settings its shell exported, so a command
run from another shell, without those exports, talks to the same Redis and data
dir instead of silently to another MIDAS. It never holds a secret.

Nothing else in the project reads ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from background_tasks.settings_vars import PROJECT_ROOT, QUEUES, VARIABLES, WORKER_POOLS, Var

__all__ = [
    "ENVIRONMENT",
    "PROJECT_ROOT",
    "QUEUES",
    "VARIABLES",
    "WORKER_POOLS",
    "Settings",
    "SettingsError",
    "Var",
    "get_settings",
    "launched_data_dir",
    "load_settings",
    "settings_or_exit",
]

MIB = 1024 * 1024
#: ``Settings.sources`` label of a value from the process environment (the others are file paths)
ENVIRONMENT = "environment"
#: where ``midas start`` writes the settings it was started with, unless MIDAS_LAUNCH_FILE says otherwise
DEFAULT_LAUNCH_FILE = PROJECT_ROOT / ".midas" / "launched.env"


class SettingsError(ValueError):
    """A configuration value is invalid; the message names the variable."""


def _generated_redis_password_path(data_dir: Path) -> Path:
    """Where the launcher keeps the password it generated for its own Redis (a 0600 file)."""
    return data_dir / "redis" / "password"


def _generated_redis_password(data_dir: Path) -> str | None:
    path = _generated_redis_password_path(data_dir)
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SettingsError(f"REDIS_PASSWORD is not set and {path} cannot be read: {exc.strerror}") from None


@dataclass(frozen=True)
class Settings:
    """Typed, validated configuration: one attribute per variable of ``VARIABLES``.

    Build it with ``load_settings()``; derived values are computed on first use
    and kept (the object never changes).
    """

    # Redis
    redis_host: str
    redis_port: int
    redis_db: int
    redis_password: str | None
    # PostgreSQL
    postgres_user: str
    postgres_password: str | None
    postgres_host: str | None
    postgres_port: int
    postgres_db: str
    database_url: str | None
    # Paths
    data_dir: Path
    log_dir: Path
    allowed_roots: tuple[Path, ...]
    watch_dirs: tuple[Path, ...]
    # Services
    flower_port: int
    flower_basic_auth: str | None
    streamlit_port: int
    api_port: int
    api_tokens: tuple[str, ...]
    worker_concurrency: int | None
    worker_pool: str | None
    worker_groups: tuple[tuple[str, ...], ...]
    extra_task_modules: tuple[str, ...]
    stop_timeout: float
    # Tasks
    task_soft_time_limit: int
    task_time_limit: int
    visibility_timeout: int
    soft_shutdown_timeout: float
    max_redeliveries: int
    ledger_enabled: bool
    ledger_lease_seconds: int
    ledger_grace_seconds: int
    result_expires_hours: int
    max_tasks_per_child: int
    max_memory_per_child_mb: int
    max_retries: int
    retry_backoff_max: int
    # Schedule
    ledger_reap_interval: int
    health_check_interval: int
    queue_check_interval: int
    task_report_interval: int
    task_cleanup_interval: int
    file_cleanup_interval: int
    retention_days: int
    # Documents
    max_file_mb: float
    max_decompressed_mb: float
    max_text_mb: float
    max_nesting: int
    extract_timeout: float
    chunk_size: int
    chunk_overlap: int
    stability_seconds: float
    ocr_languages: str
    # Watcher
    watch_ignore: tuple[str, ...]
    watch_rescan_seconds: float
    watch_batch_size: int
    watch_batch_timeout: float
    watch_polling: bool
    # Mail
    mail_config: Path | None
    mail_interval: int
    mail_max_per_run: int
    # Monitoring
    ledger_warn_age_seconds: int
    cpu_warn_percent: float
    cpu_crit_percent: float
    cpu_window_seconds: int
    health_hold_checks: int
    memory_warn_percent: float
    memory_crit_percent: float
    disk_warn_percent: float
    disk_crit_percent: float
    queue_warn_length: int
    watcher_heartbeat_max_age: float
    stuck_task_seconds: float
    # Alerts
    smtp_host: str | None
    smtp_port: int
    smtp_user: str | None
    smtp_password: str | None
    smtp_from: str
    smtp_to: tuple[str, ...]
    smtp_starttls: bool
    alert_webhook_url: str | None
    alert_quiet_minutes: float
    # Dashboard
    dashboard_password: str | None
    # OCR
    ocr_enabled: bool
    tesseract_cmd: str
    ocr_dpi: int
    ocr_page_timeout: float
    ocr_max_pages_per_task: int
    # Semantic search
    embeddings_enabled: bool
    embed_model: str | None
    embed_device: str
    # Object storage
    s3_endpoint_url: str | None
    s3_region: str | None
    s3_path_style: bool
    object_store: str | None
    s3_sources: tuple[str, ...]
    s3_local: bool
    s3_local_port: int
    s3_interval: int
    s3_max_per_run: int
    # Not a variable: True when redis_password is the launcher's generated one, not REDIS_PASSWORD.
    redis_password_generated: bool = False
    # Not variables: the launch file (None: off), and where each value not left at its default came
    # from, as (variable, ENVIRONMENT or a file's path) pairs; for ``status`` and the launcher.
    launch_file: Path | None = field(default=None, compare=False)
    sources: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def replace(self, **changes: object) -> Settings:
        """A copy with some values changed (the launcher adds the Redis password it generated)."""
        return dataclasses.replace(self, **changes)

    # -- derived values, computed once ---------------------------------------

    @cached_property
    def broker_url(self) -> str:
        auth = f":{quote(self.redis_password, safe='')}@" if self.redis_password else ""
        return f"redis://{auth}{self.redis_host}:{self.redis_port}/{self.redis_db}"

    @cached_property
    def uses_postgres(self) -> bool:
        url = self.database_url or ""
        return url.startswith("postgres") or (not url and bool(self.postgres_host))

    @cached_property
    def database_url_resolved(self) -> str:
        """SQLAlchemy URL of the document store and task history."""
        if self.database_url:
            return self.database_url
        if self.postgres_host:
            pw = f":{quote(self.postgres_password, safe='')}" if self.postgres_password else ""
            return (
                f"postgresql+psycopg://{quote(self.postgres_user, safe='')}{pw}"
                f"@{self.postgres_host}:{self.postgres_port}/{self.postgres_db}"
            )
        return f"sqlite:///{self.data_dir / 'midas.sqlite3'}"

    @cached_property
    def result_backend_url(self) -> str:
        """Celery's database backend: the store's database, a separate file on SQLite."""
        if self.database_url or self.postgres_host:
            return "db+" + self.database_url_resolved
        return f"db+sqlite:///{self.data_dir / 'celery_results.sqlite3'}"

    @cached_property
    def concurrency(self) -> int:
        return self.worker_concurrency or max(1, os.cpu_count() or 1)

    @cached_property
    def pool(self) -> str:
        """Pool to use: prefork where fork works, threads on Windows."""
        if self.worker_pool:
            return self.worker_pool
        return "threads" if platform.system() == "Windows" else "prefork"

    @cached_property
    def max_file_bytes(self) -> int:
        """MIDAS_MAX_FILE_MB in bytes: the size a document may have."""
        return int(self.max_file_mb * MIB)

    @cached_property
    def max_decompressed_bytes(self) -> int:
        return int(self.max_decompressed_mb * MIB)

    @cached_property
    def max_text_chars(self) -> int:
        """MIDAS_MAX_TEXT_MB as a number of characters of extracted text."""
        return int(self.max_text_mb * MIB)

    @cached_property
    def max_memory_per_child_kib(self) -> int:
        """MIDAS_MAX_MEMORY_PER_CHILD_MB in KiB, the unit Celery's worker_max_memory_per_child takes."""
        return self.max_memory_per_child_mb * 1024

    @cached_property
    def inbox_dir(self) -> Path:
        return self.data_dir / "inbox"

    @cached_property
    def work_dir(self) -> Path:
        return self.data_dir / "work"

    @cached_property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @cached_property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"

    @cached_property
    def redis_data_dir(self) -> Path:
        return self.data_dir / "redis"

    @cached_property
    def redis_password_file(self) -> Path:
        return _generated_redis_password_path(self.data_dir)

    @cached_property
    def s3_local_dir(self) -> Path:
        """The local S3 server's data and its generated identities file (MIDAS_S3_LOCAL)."""
        return self.data_dir / "s3"

    @cached_property
    def s3_local_endpoint(self) -> str | None:
        """The local S3 server's URL when MIDAS uses it: MIDAS_S3_LOCAL on and no MIDAS_S3_ENDPOINT_URL."""
        if self.s3_local and not self.s3_endpoint_url:
            return f"http://127.0.0.1:{self.s3_local_port}"
        return None

    @cached_property
    def redis_is_local(self) -> bool:
        return self.redis_host in {"localhost", "127.0.0.1", "::1"}

    def as_env(self) -> dict[str, str]:
        """The settings as environment variables, for child processes."""
        env = {}
        for var in VARIABLES:
            value = getattr(self, var.attr)
            if value is None or (var.attr == "redis_password" and self.redis_password_generated):
                continue  # a generated password stays in its 0600 file; children read it from there
            if isinstance(value, tuple):
                if var.attr == "worker_groups":
                    value = ";".join(",".join(g) for g in value)
                elif all(isinstance(v, str) for v in value):  # comma lists (URIs hold the path separator)
                    value = ",".join(value)
                else:
                    value = os.pathsep.join(str(v) for v in value)
            elif isinstance(value, bool):
                value = "true" if value else "false"
            env[var.env] = str(value)
        return env


def _read_env_file(path: Path) -> dict[str, str]:
    """Minimal ``.env`` reader (KEY=VALUE, # comments, optional quotes)."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"{path} cannot be read: {exc.strerror}") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("export "):
            stripped = stripped[7:]
        key, sep, value = stripped.partition("=")
        if not sep:
            raise SettingsError(f"{path}:{lineno}: expected KEY=VALUE, got {line!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def _launch_file_path(env: Mapping[str, str], default: Path | None) -> Path | None:
    """The launch file: MIDAS_LAUNCH_FILE (``os.devnull``: none), else ``default``."""
    raw = env.get("MIDAS_LAUNCH_FILE")
    if not raw:
        return default
    if raw == os.devnull:
        return None
    path = Path(raw).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path


def load_settings(
    environ: Mapping[str, str] | None = None, env_file: Path | None = None, launch_file: Path | None = None
) -> Settings:
    """Build settings from ``environ`` (default: the process environment) over the launch file over ``.env``.

    A variable is taken from the first of them that has it (set but empty means its default).
    A caller that names ``env_file`` chose its files: the checkout's launch file is then read
    only when ``launch_file`` or MIDAS_LAUNCH_FILE names it (tests never see a user's stack).
    Raises SettingsError naming the first bad variable.
    """
    env = dict(os.environ if environ is None else environ)
    if launch_file is None:
        launch_file = _launch_file_path(env, DEFAULT_LAUNCH_FILE if env_file is None else None)
    if env_file is None:
        env_file = Path(env.get("MIDAS_ENV_FILE") or PROJECT_ROOT / ".env")
    layers: list[tuple[str, Mapping[str, str]]] = [(ENVIRONMENT, env)]
    if launch_file is not None:
        layers.append((str(launch_file), _read_env_file(launch_file)))
    layers.append((str(env_file), _read_env_file(env_file)))

    values: dict[str, Any] = {}
    sources: list[tuple[str, str]] = []
    for var in VARIABLES:
        raw, source = None, ENVIRONMENT
        for label, layer in layers:
            if var.env in layer:
                raw, source = layer[var.env], label
                if raw != "":
                    sources.append((var.env, label))
                break
        if raw is None or raw == "":
            raw = var.default
        try:
            values[var.attr] = var.parse(raw)
        except (ValueError, TypeError) as exc:
            reason = str(exc)
            if "invalid literal" in reason or "could not convert" in reason:
                reason = "not a number"
            where = "" if source == ENVIRONMENT else f" (in {source})"
            raise SettingsError(f"{var.env}={raw!r} is invalid: {reason}{where}") from None

    settings = Settings(**values, launch_file=launch_file, sources=tuple(sources))
    _check_relations(settings)
    if settings.redis_password is None:
        generated = _generated_redis_password(settings.data_dir)
        if generated is not None:
            settings = settings.replace(redis_password=generated, redis_password_generated=True)
    return settings


def _check_relations(s: Settings) -> None:
    soft, hard, vis = s.task_soft_time_limit, s.task_time_limit, s.visibility_timeout
    if not soft < hard:
        raise SettingsError(f"MIDAS_TASK_SOFT_TIME_LIMIT={soft} must be below MIDAS_TASK_TIME_LIMIT={hard}")
    if not hard < vis:
        raise SettingsError(
            f"MIDAS_VISIBILITY_TIMEOUT={vis} must exceed MIDAS_TASK_TIME_LIMIT={hard}, "
            "or Redis redelivers tasks that are still running"
        )
    if not s.extract_timeout < soft:
        raise SettingsError(
            f"MIDAS_EXTRACT_TIMEOUT={s.extract_timeout:g} must be below MIDAS_TASK_SOFT_TIME_LIMIT={soft}, "
            "or a parser still runs when its task is stopped"
        )
    if s.chunk_overlap >= s.chunk_size:
        raise SettingsError(
            f"MIDAS_CHUNK_OVERLAP={s.chunk_overlap} must be smaller than MIDAS_CHUNK_SIZE={s.chunk_size}"
        )
    if s.object_store and s.database_url_resolved.startswith("sqlite"):
        raise SettingsError(
            f"MIDAS_OBJECT_STORE={s.object_store} is for workers on several hosts, which cannot share a SQLite file; "
            "set MIDAS_DATABASE_URL (or POSTGRES_HOST) to PostgreSQL"
        )
    if s.data_dir.exists() and not s.data_dir.is_dir():
        raise SettingsError(f"MIDAS_DATA_DIR={s.data_dir} exists and is not a folder")
    if s.log_dir.exists() and not s.log_dir.is_dir():
        raise SettingsError(f"MIDAS_LOG_DIR={s.log_dir} exists and is not a folder")
    for root in s.allowed_roots:
        if not root.is_dir():
            raise SettingsError(f"MIDAS_ALLOWED_ROOTS: {root} is not an existing folder")


def launched_data_dir(launch_file: Path) -> Path | None:
    """The data dir of the stack a launch file describes (None: there is no launch file).

    ``stop`` removes the file only when it describes the stack being stopped.
    """
    if not launch_file.is_file():
        return None
    data_dir = next(var for var in VARIABLES if var.attr == "data_dir")
    raw = _read_env_file(launch_file).get(data_dir.env) or data_dir.default
    try:
        return data_dir.parse(raw)  # type: ignore[return-value]
    except ValueError:
        return None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings, read once."""
    return load_settings()


def settings_or_exit() -> Settings:
    """For entry points: print the one clear line and exit 2 on a bad value."""
    try:
        return get_settings()
    except SettingsError as exc:
        print(f"MIDAS configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
