"""`python -m background_tasks.samples`: the command users type (code: `launcher.samples`)."""

from background_tasks.launcher.samples import main

if __name__ == "__main__":
    raise SystemExit(main())
