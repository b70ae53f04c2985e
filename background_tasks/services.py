"""`python -m background_tasks.services`: the command users type (code: `launcher.cli`)."""

from background_tasks.launcher.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
