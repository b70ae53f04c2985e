"""`python -m background_tasks.services`: the command users type (code: `launcher.services`)."""

from background_tasks.launcher.services import main

if __name__ == "__main__":
    raise SystemExit(main())
