"""Start, stop and inspect the MIDAS services on Linux, macOS and Windows.

``python -m background_tasks.services start|stop|status|restart [service ...]``

This module is the launcher's old single file, kept as a face: the code lives in
``definitions`` (which services, their commands and environment), ``pidfiles``
(PID records with creation time, the launcher lock), ``processes`` (spawn, wait,
warm stop then force), ``probes`` (readiness), ``lifecycle`` (start, stop,
status), ``autostart`` (systemd user unit, Task Scheduler) and ``cli``.
"""

from background_tasks.launcher.autostart import (
    UNIT_NAME,
    WINDOWS_TASK_NAME,
    default_unit_dir,
    install_autostart,
    systemd_unit_text,
    uninstall_autostart,
    windows_task_command,
    windows_untask_command,
)
from background_tasks.launcher.cli import format_status, main
from background_tasks.launcher.definitions import (
    CELERY_CONFIG_FILE,
    DASHBOARD_FILE,
    IS_WINDOWS,
    KINDS,
    WATCHER_FILE,
    LauncherError,
    Service,
    build_services,
    child_environment,
    select_services,
)
from background_tasks.launcher.lifecycle import DEFAULT_START_TIMEOUT, Launcher, Outcome
from background_tasks.launcher.pidfiles import (
    launcher_lock,
    live_process,
    log_path,
    pid_path,
    read_record,
    record_process,
    write_record,
)
from background_tasks.launcher.probes import GRACE_SECONDS, http_status
from background_tasks.launcher.processes import PUMP_EXIT_TIMEOUT, log_tail, spawn, wait_gone
from background_tasks.settings import PROJECT_ROOT

__all__ = [
    "CELERY_CONFIG_FILE",
    "DASHBOARD_FILE",
    "DEFAULT_START_TIMEOUT",
    "GRACE_SECONDS",
    "IS_WINDOWS",
    "KINDS",
    "PROJECT_ROOT",
    "PUMP_EXIT_TIMEOUT",
    "UNIT_NAME",
    "WATCHER_FILE",
    "WINDOWS_TASK_NAME",
    "Launcher",
    "LauncherError",
    "Outcome",
    "Service",
    "build_services",
    "child_environment",
    "default_unit_dir",
    "format_status",
    "http_status",
    "install_autostart",
    "launcher_lock",
    "live_process",
    "log_path",
    "log_tail",
    "main",
    "pid_path",
    "read_record",
    "record_process",
    "select_services",
    "spawn",
    "systemd_unit_text",
    "uninstall_autostart",
    "wait_gone",
    "windows_task_command",
    "windows_untask_command",
    "write_record",
]

if __name__ == "__main__":
    raise SystemExit(main())
