"""The launch file: what ``start`` was started with, so every MIDAS command of the checkout agrees.

``REDIS_PORT=6390 make run`` in one shell and ``midas search`` in another used to
talk to two different MIDAS: the second shell lacked the exports and fell back
to the defaults (another Redis, another data dir). So ``start`` writes the
settings its environment gave (``.midas/launched.env`` in the checkout, or
``MIDAS_LAUNCH_FILE``; 0600 in a 0700 folder), and ``settings.load_settings``
reads them under the environment and over ``.env``. Values from ``.env`` are
not copied (every command reads ``.env`` itself, so an edit there is seen
after a restart), nor are secrets (``Var.is_secret``: passwords, tokens, URLs
that may carry credentials): those stay where the user put them, and the
generated Redis password stays in its own 0600 file in the data dir. ``stop``
of every service removes the file when it describes the stack being stopped.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from background_tasks.launcher.private_files import private_dir, write_private_text
from background_tasks.settings import ENVIRONMENT, VARIABLES, Settings, launched_data_dir

__all__ = ["describe_sources", "remove_launch_file", "secrets_left_out", "write_launch_file"]

#: at most this many variable names per source in the status line
SHOWN_NAMES = 6


def _exported(settings: Settings) -> list[str]:
    """The variables the launcher's own environment (or the launch file it read) gave."""
    mine = {ENVIRONMENT, str(settings.launch_file)}
    return [name for name, source in settings.sources if source in mine]


def secrets_left_out(settings: Settings) -> list[str]:
    """Secrets the starting shell exported, which the launch file does not carry to other shells."""
    secret = {var.env for var in VARIABLES if var.is_secret}
    return [name for name in _exported(settings) if name in secret]


def write_launch_file(settings: Settings) -> tuple[Path, list[str]] | None:
    """Write what this launcher was started with: the file and the names written in it.

    None when the launch file is off (``MIDAS_LAUNCH_FILE`` set to the null device).
    """
    path = settings.launch_file
    if path is None:
        return None
    values = settings.as_env()
    secret = {var.env for var in VARIABLES if var.is_secret}
    lines = [
        f"# Written by `midas start` at {datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}: the settings its shell",
        "# exported. Every MIDAS command of this checkout uses them unless its own environment sets them",
        "# (environment > this file > .env > defaults); `midas stop` removes this file. Edits are overwritten.",
    ]
    left_out = secrets_left_out(settings)
    if left_out:
        lines.append("# Not written (secrets; put them in .env for every shell): " + ", ".join(left_out))
    written = []
    for name in _exported(settings):
        value = values.get(name)
        if name in secret or value is None:
            continue
        if "\n" in value or "\r" in value:
            lines.append(f"# {name} not written: its value has a line break")
            continue
        lines.append(f'{name}="{value}"')
        written.append(name)
    if not path.parent.is_dir():  # a folder of its own (.midas): 0700; a folder the user named stays as it is
        private_dir(path.parent)
    write_private_text(path, "\n".join(lines) + "\n")
    return path, written


def remove_launch_file(settings: Settings) -> Path | None:
    """After every service stopped: remove the launch file if it describes this stack (its data dir)."""
    path = settings.launch_file
    if path is None or launched_data_dir(path) != settings.data_dir:
        return None
    path.unlink(missing_ok=True)
    return path


def describe_sources(settings: Settings) -> str:
    """One line for ``status``: where the settings came from, and the data dir they name."""
    by_source: dict[str, list[str]] = {}
    for name, source in settings.sources:
        by_source.setdefault(source, []).append(name)
    launch = str(settings.launch_file)
    order = [ENVIRONMENT, launch, *(source for source in by_source if source not in (ENVIRONMENT, launch))]
    parts = []
    for source in order:
        names = by_source.get(source)
        if not names:
            continue
        more = len(names) - SHOWN_NAMES
        shown = ", ".join(names[:SHOWN_NAMES]) + (f" and {more} more" if more > 0 else "")
        where = {ENVIRONMENT: "the environment", launch: f"the launch file {launch}"}.get(source, source)
        parts.append(f"{where} ({shown})")
    parts.append("defaults for the rest" if parts else "defaults")
    return f"settings from {'; '.join(parts)}; data dir {settings.data_dir}"
