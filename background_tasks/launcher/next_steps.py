"""What to do once MIDAS runs: the last lines ``make run`` prints.

``python -m background_tasks.launcher.next_steps``; ``Start-Celery-Services.ps1`` prints
them too. A new user who just watched the services start should not have to search the
README for how to search, where the dashboard and the logs are, and how to stop it all;
the addresses and folders are this checkout's own (its ports, its log dir).
"""

from __future__ import annotations

import os
from pathlib import Path

from background_tasks.processing.intake import default_watch_dirs
from background_tasks.settings import PROJECT_ROOT, Settings, settings_or_exit


def _shown(path: Path) -> str:
    """A folder as the user can type it from the checkout: relative inside it, ``~/`` in the home folder."""
    for base, shown in ((PROJECT_ROOT, ""), (Path.home(), "~/")):
        if path.is_relative_to(base):
            return f"{shown}{path.relative_to(base)}/"
    return f"{path}/"


def next_steps(settings: Settings, windows: bool = os.name == "nt") -> str:
    """The commands and addresses, one per line, with what each is for (as typed in PowerShell on Windows)."""
    midas = r".venv\Scripts\midas" if windows else ".venv/bin/midas"
    stop = (
        (r".\Stop-Celery-Services.ps1", "stop everything")
        if windows
        else ("make stop", f"stop everything ({midas} stop)")
    )
    dashboard = f"http://localhost:{settings.streamlit_port}"
    gate = " (asks for MIDAS_DASHBOARD_PASSWORD)" if settings.dashboard_password else ""
    rows = [
        (f'{midas} search "your words"', "search the processed documents (--mode keyword|semantic|hybrid)"),
        (dashboard, f"the dashboard: health, tasks, documents, upload{gate}"),
        (f"http://localhost:{settings.flower_port}/flower/", "Flower: workers and tasks"),
        (_shown(default_watch_dirs(settings)[0]), "drop documents here (the watcher sends them)"),
        (_shown(settings.log_dir), "one log per service (worker-1.log, beat.log, ...)"),
        (f"{midas} status", "what runs, and where its settings came from" + ("" if windows else " (make status)")),
        stop,
    ]
    width = max(len(left) for left, _ in rows)
    return "\n".join(["", "Next steps:", *(f"  {left.ljust(width)}  {text}" for left, text in rows)])


def main() -> int:
    print(next_steps(settings_or_exit()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
