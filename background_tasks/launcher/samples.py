"""Submit the bundled samples/ documents as one batch and print their results (`make run` does this)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from background_tasks.settings import PROJECT_ROOT, settings_or_exit

SAMPLES_DIR = PROJECT_ROOT / "samples"


def format_results(summary: dict) -> str:
    lines = [f"{'file':<16} {'status':<10} {'type':<6} {'chunks':>6} {'chars':>7}  note", "-" * 72]
    for item in summary["results"]:
        note = item.get("error") or "; ".join(item.get("warnings") or [])
        lines.append(
            f"{Path(item['path']).name:<16} {item['status']:<10} {item.get('file_type') or '':<6} "
            f"{item.get('chunks_created', 0):>6} {item.get('text_chars', 0):>7}  {note[:60]}"
        )
    lines.append(
        f"{summary['total']} files: {summary['succeeded']} processed, {summary['duplicates']} already known, "
        f"{summary['failed']} failed, {summary['rejected']} rejected in {summary['duration_s']:.1f} s"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--timeout", type=float, default=180, help="seconds to wait for the batch")
    args = parser.parse_args(argv)
    settings_or_exit()
    from background_tasks.document_tasks import process_document_batch

    paths = sorted(str(p) for p in SAMPLES_DIR.iterdir() if p.is_file())
    print(f"Submitting {len(paths)} sample documents from {SAMPLES_DIR} ...")
    try:
        summary = process_document_batch.delay(paths).get(timeout=args.timeout)
    except Exception as exc:  # what a user needs is the hint, not a traceback
        print(f"The sample batch did not complete: {exc}", file=sys.stderr)
        print("Is a worker running? `make status`, then see logs/worker-*.log", file=sys.stderr)
        return 1
    print(format_results(summary))
    return 0 if summary["failed"] == 0 and summary["rejected"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
