"""Regenerate .env.example and the README's configuration table from settings_vars.VARIABLES."""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from background_tasks.settings_vars import PROJECT_ROOT, VARIABLES

BEGIN, END = "<!-- config-table:begin -->", "<!-- config-table:end -->"


def env_example() -> str:
    out = [
        "# MIDAS configuration. Copy to .env and change what you need;",
        "# real environment variables win over this file. Empty = not set / automatic.",
        "",
    ]
    group = None
    for var in VARIABLES:
        if var.group != group:
            group = var.group
            out.append(f"# --- {group} ---")
        out.append(f"# {var.help}")
        out.append(f"{var.env}={var.default}")
    return "\n".join(out) + "\n"


def table() -> str:
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for var in VARIABLES:
        default = f"`{var.default}`" if var.default else "(empty)"
        rows.append(f"| `{var.env}` | {default} | {var.help} |")
    return "\n".join(rows)


def main() -> None:
    (PROJECT_ROOT / ".env.example").write_text(env_example())
    readme = PROJECT_ROOT / "README.md"
    text = readme.read_text()
    block = f"{BEGIN}\n{table()}\n{END}"
    text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    readme.write_text(text)


if __name__ == "__main__":
    main()
