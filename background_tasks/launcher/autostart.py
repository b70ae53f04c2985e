"""Start at boot or logon: a systemd user unit (Linux) or a Task Scheduler logon task (Windows) running ``start``.

macOS gets instructions instead: a login item or launchd agent running the same command.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
from pathlib import Path

from background_tasks.launcher.definitions import IS_WINDOWS, build_services
from background_tasks.settings import PROJECT_ROOT, Settings

UNIT_NAME = "midas.service"
WINDOWS_TASK_NAME = "MIDAS Services"


def _systemd_escape(value: str) -> str:
    """A value for a unit file: ``%`` doubled (specifiers)."""
    return value.replace("%", "%%")


def _systemd_arg(value: str) -> str:
    """One ExecStart= argument, quoted when it has spaces or quotes."""
    value = _systemd_escape(value)
    if any(c.isspace() for c in value) or any(c in value for c in "\"'\\;$"):
        value = '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$") + '"'
    return value


def systemd_unit_text(python: str | Path, project_root: Path, stop_timeout: float = 30.0, services: int = 6) -> str:
    """The systemd user unit that starts the services at boot (with lingering) or login."""
    root = str(project_root)
    exe = _systemd_arg(str(python))
    stop_seconds = int(stop_timeout * services + 60)
    return (
        "[Unit]\n"
        "Description=MIDAS document processing services (Redis, Celery workers, Beat, Flower, watcher, dashboard)\n"
        "After=network.target\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        "RemainAfterExit=yes\n"
        f"WorkingDirectory={_systemd_escape(root)}\n"
        f"EnvironmentFile=-{_systemd_escape(str(project_root / '.env'))}\n"
        f"ExecStart={exe} -m background_tasks.services start\n"
        f"ExecStop={exe} -m background_tasks.services stop\n"
        "TimeoutStartSec=600\n"
        f"TimeoutStopSec={stop_seconds}\n"
        "\n"
        "[Install]\n"
        "WantedBy=default.target\n"
    )


def _ps_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def windows_task_command(project_root: Path, task_name: str = WINDOWS_TASK_NAME) -> str:
    """PowerShell that registers the logon task running Start-Celery-Services.ps1 for the current user."""
    script = str(project_root / "Start-Celery-Services.ps1")
    argument = f'-NoProfile -ExecutionPolicy Bypass -WindowStyle Hidden -File "{script}" -SkipInstall'
    return "\n".join(
        [
            "$ErrorActionPreference = 'Stop'",
            f"$action = New-ScheduledTaskAction -Execute 'powershell.exe' -Argument {_ps_quote(argument)} "
            f"-WorkingDirectory {_ps_quote(str(project_root))}",
            "$user = [System.Security.Principal.WindowsIdentity]::GetCurrent().Name",
            "$trigger = New-ScheduledTaskTrigger -AtLogOn -User $user",
            "$settings = New-ScheduledTaskSettingsSet -AllowStartIfOnBatteries -DontStopIfGoingOnBatteries "
            "-ExecutionTimeLimit ([TimeSpan]::Zero) -MultipleInstances IgnoreNew",
            f"Register-ScheduledTask -TaskName {_ps_quote(task_name)} -Description "
            f"{_ps_quote('Starts the MIDAS services at logon')} -Action $action -Trigger $trigger "
            "-Settings $settings -Force | Out-Null",
            f"Write-Output {_ps_quote(f'registered scheduled task {task_name}')}",
        ]
    )


def windows_untask_command(task_name: str = WINDOWS_TASK_NAME) -> str:
    """PowerShell that removes the logon task (no error when it does not exist)."""
    return "\n".join(
        [
            "$ErrorActionPreference = 'Stop'",
            f"$task = Get-ScheduledTask -TaskName {_ps_quote(task_name)} -ErrorAction SilentlyContinue",
            f"if ($task) {{ Unregister-ScheduledTask -TaskName {_ps_quote(task_name)} -Confirm:$false }}",
        ]
    )


def default_unit_dir() -> Path:
    return Path.home() / ".config" / "systemd" / "user"


def _run(command: list[str]) -> tuple[bool, str]:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    return done.returncode == 0, (done.stderr or done.stdout).strip()


def install_autostart(settings: Settings, unit_dir: Path | None = None, use_systemctl: bool = True) -> int:
    """Register start-at-boot/logon; returns the exit code."""
    if IS_WINDOWS:
        ok, out = _run(["powershell.exe", "-NoProfile", "-Command", windows_task_command(PROJECT_ROOT)])
        print(out or ("registered" if ok else "failed"))
        if not ok:
            print("If access was denied, run this again from an elevated PowerShell.", file=sys.stderr)
        return 0 if ok else 1
    if platform.system() != "Linux":
        print(
            "install-autostart supports systemd (Linux) and Task Scheduler (Windows). On macOS add a login item "
            f"or launchd agent running: {sys.executable} -m background_tasks.services start",
            file=sys.stderr,
        )
        return 1
    directory = unit_dir or default_unit_dir()
    directory.mkdir(parents=True, exist_ok=True)
    unit = directory / UNIT_NAME
    unit.write_text(
        systemd_unit_text(sys.executable, PROJECT_ROOT, settings.stop_timeout, len(build_services(settings))),
        encoding="utf-8",
    )
    print(f"wrote {unit}")
    manual = "systemctl --user daemon-reload && systemctl --user enable midas.service"
    if use_systemctl and shutil.which("systemctl"):
        for command in (["systemctl", "--user", "daemon-reload"], ["systemctl", "--user", "enable", UNIT_NAME]):
            ok, out = _run(command)
            if not ok:
                print(f"`{' '.join(command)}` failed: {out}\nRun it yourself in your login session: {manual}")
                return 1
        print("enabled midas.service (starts at login; `loginctl enable-linger $USER` makes it start at boot)")
    else:
        print(f"systemctl not available here; to enable it run: {manual}")
    return 0


def uninstall_autostart(unit_dir: Path | None = None, use_systemctl: bool = True) -> int:
    """Remove what install_autostart registered; returns the exit code."""
    if IS_WINDOWS:
        ok, out = _run(["powershell.exe", "-NoProfile", "-Command", windows_untask_command()])
        print(out or ("removed" if ok else "failed"))
        return 0 if ok else 1
    unit = (unit_dir or default_unit_dir()) / UNIT_NAME
    if use_systemctl and shutil.which("systemctl") and unit.exists():
        ok, out = _run(["systemctl", "--user", "disable", UNIT_NAME])
        if not ok:
            print(f"`systemctl --user disable {UNIT_NAME}` failed: {out}")
    if unit.exists():
        unit.unlink()
        print(f"removed {unit}")
    else:
        print(f"{unit} was not installed")
    if use_systemctl and shutil.which("systemctl"):
        _run(["systemctl", "--user", "daemon-reload"])
    return 0
