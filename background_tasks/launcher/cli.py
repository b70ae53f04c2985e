"""The launcher's command line: ``start|stop|status|restart|install-autostart|uninstall-autostart [service ...]``.

Exit codes: 0 when every service did what was asked, 1 when one failed, 2 for
a request the launcher cannot carry out (such as an unknown service).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from background_tasks.launcher.autostart import install_autostart, uninstall_autostart
from background_tasks.launcher.definitions import LauncherError, select_services
from background_tasks.launcher.launch_file import describe_sources
from background_tasks.launcher.lifecycle import DEFAULT_START_TIMEOUT, Launcher, Outcome
from background_tasks.settings import settings_or_exit

ACTIONS = ("start", "stop", "status", "restart", "install-autostart", "uninstall-autostart")


def format_status(rows: Sequence[dict[str, Any]]) -> str:
    """The status table as text."""
    headers = ("SERVICE", "PID", "STATE", "URL", "NOTE")
    table = [(r["service"], str(r["pid"] or "-"), r["state"], r["url"] or "-", r["note"] or "") for r in rows]
    widths = [max(len(headers[i]), *(len(row[i]) for row in table)) for i in range(len(headers))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in table:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, prog: str = "python -m background_tasks.services") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Start, stop and inspect the MIDAS services "
        "(redis, worker, beat, flower, watcher, dashboard, api).",
    )
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("services", nargs="*", help="service names or kinds (default: all)")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_START_TIMEOUT, help="seconds each service may take to become ready"
    )
    parser.add_argument("--json", action="store_true", help="status as JSON")
    parser.add_argument("--unit-dir", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    settings = settings_or_exit()
    if args.action == "install-autostart":
        return install_autostart(settings, args.unit_dir)
    if args.action == "uninstall-autostart":
        return uninstall_autostart(args.unit_dir)

    launcher = Launcher(settings, timeout=args.timeout)
    try:
        if args.action == "status":
            wanted = {s.name for s in select_services(launcher.services, args.services)}
            rows = [launcher.status_one(s) for s in launcher.services if s.name in wanted]
            if args.json:
                print(json.dumps(rows, indent=2))
            else:
                print(describe_sources(settings))  # a shell without the start's exports must see which MIDAS this is
                print(format_status(rows))
            return 0
        outcomes: list[Outcome] = []
        if args.action in ("stop", "restart"):
            outcomes += launcher.stop(args.services)
        if args.action in ("start", "restart"):
            outcomes += launcher.start(args.services)
    except LauncherError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
