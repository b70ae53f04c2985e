"""Command line: ``midas search "query"`` (or ``python -m background_tasks search ...``) and friends.

A quick way to use the document store from a terminal, without the dashboard; ``start``,
``stop``, ``status`` and ``restart`` are the launcher's (``python -m background_tasks.services``),
so one command does both.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from background_tasks.errors import InvalidQuery, TransientError
from background_tasks.processing.origin import describe_origin
from background_tasks.settings import settings_or_exit
from background_tasks.statuses import SearchStatus
from background_tasks.storage.store import DocumentStore, SearchHit

_BOLD = ("\x1b[1m", "\x1b[0m")
_PLAIN = ("**", "**")
# Everything a terminal could interpret (escape sequences, backspaces, ...) except \n and \t.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _safe(value: Any) -> str:
    """Text from documents is untrusted: never let it drive the terminal."""
    return _UNPRINTABLE.sub("", str(value))


def _open_store() -> DocumentStore:
    settings = settings_or_exit()
    store = DocumentStore(settings.database_url_resolved)
    store.create_schema()
    return store


def relevance(score: float, best: float) -> str:
    """A hit's score as a share of the best hit's, ``"42%"``.

    Scores are comparable only within one search, and their raw values mean little to a reader:
    SQLite's BM25 gives ``2.07e-06`` for words found in most documents, fused rankings ``0.0164``.
    """
    if best <= 0 or score <= 0:
        return "-"
    return f"{min(100.0, 100 * score / best):.0f}%"


def _where(hit: SearchHit, best: float) -> str:
    """Where a passage is, e.g. "pages 10-11, chunks 14-15, document 90, relevance 100%, 3 more passages"."""
    pages, chunks = hit.pages or ((hit.page,) if hit.page is not None else ()), hit.chunks or (hit.chunk_index,)
    where = [f"page {pages[0]}" if len(pages) == 1 else f"pages {pages[0]}-{pages[-1]}"] if pages else []
    where.append(f"chunk {chunks[0]}" if len(chunks) == 1 else f"chunks {chunks[0]}-{chunks[-1]}")
    where += [f"document {hit.document_id}", f"relevance {relevance(hit.score, best)}"]
    where += [f"{hit.more} more passage{'s' if hit.more > 1 else ''} in it"] if hit.more else []
    return ", ".join(where)


def _cmd_search(args: argparse.Namespace, out: TextIO) -> int:
    store = _open_store()
    tty = out.isatty()
    # Private-use markers survive sanitizing; they become bold (tty) or **x** afterwards.
    source = args.source
    if source and source != "mail" and not source.startswith(("mail:", "s3://")):
        source = os.path.abspath(source)  # a folder as the user sees it; the store keeps absolute paths
    try:
        hits = store.search(
            args.query,
            limit=args.limit,
            file_type=args.type,
            marks=("\ue000", "\ue001"),
            mode=args.mode,
            since=args.since,
            until=args.until,
            source=source,
            status=args.status,
        )
    except InvalidQuery as exc:
        print(f"Search refused: {_safe(exc.message)}", file=sys.stderr)
        return 2
    if hits.notice:
        print(f"Note: {_safe(hits.notice)}", file=out)
    if not hits:
        print("No matches.", file=out)
        return 0
    start, end = _BOLD if tty else _PLAIN
    best = max(hit.score for hit in hits)
    for rank, hit in enumerate(hits, 1):
        print(f"{rank}. {_safe(hit.path or f'document {hit.document_id}')}  ({_where(hit, best)})", file=out)
        if hit.origin:  # a source (a mail account, an S3 prefix) said where it came from
            print(f"   from {_safe(describe_origin(hit.origin))}", file=out)
        snippet = " ".join(_safe(hit.snippet).split())
        print("   " + snippet.replace("\ue000", start).replace("\ue001", end), file=out)
    return 0


def _cmd_documents(args: argparse.Namespace, out: TextIO) -> int:
    if args.action is not None:
        from background_tasks.errors import MidasError

        try:
            return _DOCUMENT_ACTIONS[args.action](args, out)
        except TransientError:
            raise
        except MidasError as exc:
            print(f"MIDAS: {_safe(exc.message)}", file=sys.stderr)
            return 1
    store = _open_store()
    docs = store.list_documents(limit=args.limit, offset=args.offset, status=args.status, file_type=args.type)
    total = store.count_documents(status=args.status, file_type=args.type)
    if not docs:
        print("No documents.", file=out)
        return 0
    print(f"{'ID':>6}  {'STATUS':<10} {'TYPE':<6} {'CHUNKS':>6}  PATH / ERROR", file=out)
    for d in docs:
        detail = _safe(d["path"] or "")
        if d["status"] in ("failed", "rejected") and d["error_type"]:
            detail += f"  [{_safe(d['error_type'])}: {_safe(d['error'] or '')[:120]}]"
        print(
            f"{d['id']:>6}  {d['status']:<10} {_safe(d['file_type'] or '-'):<6} {d['chunk_count'] or 0:>6}  {detail}",
            file=out,
        )
    shown = args.offset + len(docs)
    if shown < total or args.offset:
        print(f"({args.offset + 1}-{shown} of {total})", file=out)
    return 0


def _cmd_document_delete(args: argparse.Namespace, out: TextIO) -> int:
    from background_tasks.processing.manage import delete_document

    report = delete_document(settings_or_exit(), args.id)
    print(
        f"document {report.document_id} deleted ({report.status}, {_safe(report.path or 'no path')}): "
        f"{report.chunks_deleted} chunks, {report.embeddings_deleted} embeddings, "
        f"{report.analyses_deleted} analyses, {report.ocr_pages_deleted} OCR pages",
        file=out,
    )
    for copy in report.working_copies_removed:
        print(f"  removed MIDAS's copy {_safe(copy)}", file=out)
    for original in report.originals_kept:
        print(f"  left your file alone: {_safe(original)}", file=out)
    return 0


def _cmd_document_reprocess(args: argparse.Namespace, out: TextIO) -> int:
    from background_tasks.processing.manage import reprocess_document

    settings = settings_or_exit()
    task_id = reprocess_document(settings, args.id)
    print(f"document {args.id} sent to be processed again (task {task_id})", file=out)
    if not args.wait:
        return 0
    from celery.exceptions import TimeoutError as CeleryTimeout

    from celery_config import app

    try:
        result = app.AsyncResult(task_id).get(timeout=args.wait, propagate=False)
    except CeleryTimeout:
        print(f"not finished within {args.wait:g} s; `documents` shows it when it is", file=out)
        return 1
    if not isinstance(result, dict):
        print(f"the task failed: {_safe(result)}", file=out)
        return 1
    said = f"{result.get('status')}: document {result.get('document_id')}, {result.get('chunks_created', 0)} chunks"
    if result.get("error"):
        said += f" [{_safe(result.get('error_type'))}: {_safe(result['error'])[:200]}]"
    print(_safe(said), file=out)
    return 0 if result.get("status") == "success" else 1


def _cmd_document_original(args: argparse.Namespace, out: TextIO) -> int:
    import shutil

    from background_tasks.processing.manage import open_original

    settings = settings_or_exit()
    with open_original(settings, args.id) as (source, name, mime):
        if args.output == "-":
            shutil.copyfileobj(source, sys.stdout.buffer)
            sys.stdout.buffer.flush()
            return 0
        target = args.output
        try:
            with open(target, "xb") as handle:  # never over an existing file (it could be the original itself)
                try:
                    shutil.copyfileobj(source, handle)
                except BaseException:
                    os.unlink(target)
                    raise
                size = handle.tell()
        except FileExistsError:
            print(f"MIDAS: {_safe(target)} exists; choose another name (nothing is overwritten)", file=sys.stderr)
            return 1
    print(f"wrote {size:,} bytes of {_safe(name)} ({_safe(mime)}) to {_safe(target)}", file=out)
    return 0


def _cmd_document_related(args: argparse.Namespace, out: TextIO) -> int:
    found = _open_store().related(args.id, limit=args.limit)
    if found is None:
        print(
            f"document {args.id} is not embedded yet (see `embeddings status`), or embeddings are off",
            file=out,
        )
        return 1
    if not found:
        print(f"no other document is embedded to compare document {args.id} with", file=out)
        return 0
    for rank, other in enumerate(found, 1):
        flag = "  NEAR-DUPLICATE" if other.near_duplicate else ""
        print(
            f"{rank}. {_safe(other.path or '-')}  (document {other.document_id}, {_safe(other.file_type or '-')}, "
            f"similarity {other.similarity:.3f}){flag}",
            file=out,
        )
    return 0


_DOCUMENT_ACTIONS = {
    "delete": _cmd_document_delete,
    "reprocess": _cmd_document_reprocess,
    "original": _cmd_document_original,
    "related": _cmd_document_related,
}


def _cmd_stats(args: argparse.Namespace, out: TextIO) -> int:
    stats = _open_store().stats()
    print(f"documents: {stats['documents']}  chunks: {stats['chunks']}", file=out)
    print("by status: " + ", ".join(f"{k} {v}" for k, v in stats["by_status"].items()), file=out)
    for ftype, entry in sorted(stats["by_file_type"].items()):
        print(f"  {_safe(ftype):<8} {entry['documents']:>6} documents {entry['chunks']:>8} chunks", file=out)
    return 0


def _cmd_ledger(args: argparse.Namespace, out: TextIO) -> int:
    from datetime import UTC, datetime

    settings = settings_or_exit()
    if args.action == "reap":
        from background_tasks.ops import reaper
        from celery_config import app

        with app.connection_for_write() as conn:
            report = reaper.reap(settings, app, conn.default_channel.client)
        print(
            f"looked at {report.looked_at}: sent again {len(report.resent)}, still held {report.held}, "
            f"failed for good {len(report.failed)}",
            file=out,
        )
        for task_id, reason in report.failed.items():
            print(f"  failed {task_id}: {_safe(reason)}", file=out)
        return 1 if report.send_errors else 0
    from background_tasks.ops.ledger_health import ledger_figures, ledger_findings

    figures = ledger_figures(settings, datetime.now(UTC))
    if not figures.get("enabled"):
        print("the intake ledger is off (MIDAS_LEDGER=false)", file=out)
        return 0
    if not figures.get("ok"):
        print(f"the ledger cannot be read: {_safe(figures.get('error', ''))}", file=out)
        return 1
    oldest = "-" if figures["oldest_queued_s"] is None else f"{figures['oldest_queued_s']:.0f} s"
    print(
        f"queued {figures['queued']}  running {figures['running']}  done {figures['done']}  "
        f"failed {figures['failed']}  re-sent in the last hour {figures['resent_last_hour']}  oldest queued {oldest}",
        file=out,
    )
    for level, reason in ledger_findings(settings, figures):
        print(f"{level}: {reason}", file=out)
    return 0


def _cmd_sources(args: argparse.Namespace, out: TextIO) -> int:
    from background_tasks.sources.status import all_statuses

    settings = settings_or_exit()
    if args.action == "retry-failed":
        from background_tasks.storage.mail_messages import request_retry

        count = request_retry(settings.database_url_resolved, args.account)
        whose = f"account {_safe(args.account)}" if args.account else "all accounts"
        print(f"{count} failed or too large mail(s) of {whose} will be fetched again at the next run", file=out)
        return 0
    rows = all_statuses(settings)
    if not rows:
        print("no sources configured", file=out)
        return 0
    for row in rows:
        when = row.last_run_at.isoformat(timespec="seconds") if row.last_run_at else "never"
        took = "" if row.last_run_s is None else f" ({row.last_run_s:.1f} s)"
        ok = row.last_success_at.isoformat(timespec="seconds") if row.last_success_at else "never"
        print(
            f"{row.kind:<5} {_safe(row.name)}  last run {when}{took}  last success {ok}  seen {row.seen}  "
            f"submitted {row.submitted}  failed {row.failed}",
            file=out,
        )
        if row.error:
            print(f"      error: {_safe(row.error)}", file=out)
    return 1 if any(row.error for row in rows) else 0


def _cmd_embeddings(args: argparse.Namespace, out: TextIO) -> int:
    from background_tasks.analysis.embeddings import EmbeddingUnavailable
    from background_tasks.analysis.embeddings_index import documents_to_rebuild
    from background_tasks.storage import vectors

    settings = settings_or_exit()
    url = settings.database_url_resolved
    if not settings.embeddings_enabled:
        print("embeddings are off (MIDAS_EMBEDDINGS=false)", file=out)
        return 0 if args.action == "status" else 1
    try:
        model, todo = documents_to_rebuild(settings, url)
    except EmbeddingUnavailable as exc:
        print(f"the embedding model cannot be loaded: {_safe(exc.message)}", file=sys.stderr)
        return 1
    if args.action == "status":
        counts = vectors.counts(url)
        done = counts["by_model"].get(model, 0)
        print(f"model {_safe(model)}: {done} of {counts['chunks']} chunks embedded, {len(todo)} document(s) to do",
              file=out)  # fmt: skip
        for other, n in sorted(counts["by_model"].items()):
            if other != model:
                print(f"  {n} chunk(s) still embedded by {_safe(other)} (not searched)", file=out)
        return 0
    if args.here:
        from background_tasks.analysis.embeddings_index import embed_document

        written = sum(embed_document(document_id, settings, url).embedded for document_id in todo)
        dropped = vectors.drop_other_models(url, model)
        print(f"{written} chunk(s) of {len(todo)} document(s) embedded by {_safe(model)}; {dropped} old dropped",
              file=out)  # fmt: skip
        return 0
    from background_tasks import keys
    from background_tasks.analysis_tasks import embed_document as embed_task

    for document_id in todo:
        embed_task.apply_async(args=[document_id], task_id=keys.embedding_task_id(document_id, f"rebuild:{model}"))
    print(f"queued {len(todo)} document(s) for embedding by {_safe(model)} on the analysis queue", file=out)
    return 0


def _cmd_api(args: argparse.Namespace, out: TextIO) -> int:
    from background_tasks.api.auth import check_new_token, digest, new_token

    if args.stdin:
        try:
            token = check_new_token(sys.stdin.readline())
        except ValueError as exc:
            print(f"MIDAS: {exc}", file=sys.stderr)
            return 2
        print(digest(token), file=out)
        return 0
    token = new_token()
    print(f"token:  {token}", file=out)
    print(f"digest: {digest(token)}", file=out)
    print(
        "Give the token to the clients (it is stored nowhere); put the digest in MIDAS_API_TOKENS "
        "(comma-separated, in .env or the environment) and restart the api service.",
        file=out,
    )
    return 0


#: the launcher's commands, handed to its command line whole (its options and service names included)
LAUNCHER_COMMANDS = {
    "start": "start the services (all, or those named: redis worker beat flower watcher dashboard api)",
    "stop": "stop the services the launcher started",
    "status": "what runs, with PIDs and URLs (--json for machines)",
    "restart": "stop, then start",
}


def _prog() -> str:
    """``midas`` when run as the installed command, else the module form."""
    return "midas" if os.path.basename(sys.argv[0] or "").startswith("midas") else "python -m background_tasks"


def _run_launcher(argv: Sequence[str]) -> int:
    from background_tasks.launcher import cli

    return cli.main(argv, prog=_prog())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_prog(), description="MIDAS: the document store, the intake ledger and the services"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    search = sub.add_parser("search", help="search processed documents by their words and meaning")
    search.add_argument(
        "query",
        help='words (all must match), "a phrase", -excluded words, or a question in plain words '
        "(semantic and hybrid match its meaning)",
    )
    search.add_argument("--limit", type=int, default=10, help="number of documents (default 10)")
    search.add_argument("--type", help="only this file type, e.g. pdf")
    search.add_argument("--since", metavar="DATE", help="only documents dated this day or later (2024-01-31)")
    search.add_argument("--until", metavar="DATE", help="only documents dated this day or earlier")
    search.add_argument(
        "--source", help="only documents from a folder, an s3:// prefix, mail (every account) or mail:ACCOUNT"
    )
    search.add_argument(
        "--status",
        choices=[s.value for s in SearchStatus],
        help="complete: read without warnings; warnings: read with warnings; ocr_pending: OCR still running",
    )
    search.add_argument(
        "--mode",
        choices=("keyword", "semantic", "hybrid"),
        default="hybrid",
        help="keyword: the words; semantic: the meaning (embeddings); hybrid (default): both, one hit per document",
    )
    search.set_defaults(func=_cmd_search)

    embeddings = sub.add_parser("embeddings", help="the chunk embeddings semantic search uses")
    embeddings.add_argument(
        "action", choices=("status", "rebuild"), help="status: what is embedded; rebuild: embed what the model lacks"
    )
    embeddings.add_argument("--here", action="store_true", help="rebuild in this process instead of on the workers")
    embeddings.set_defaults(func=_cmd_embeddings)

    documents = sub.add_parser(
        "documents", help="list documents; delete one, process it again, get its original back, or its related ones"
    )
    documents.add_argument("--limit", type=int, default=50)
    documents.add_argument("--offset", type=int, default=0)
    documents.add_argument("--status", choices=("processing", "success", "failed", "rejected"))
    documents.add_argument("--type", help="only this file type, e.g. pdf")
    documents.set_defaults(func=_cmd_documents, action=None)
    actions = documents.add_subparsers(dest="action", metavar="{delete,reprocess,original,related}")
    delete = actions.add_parser(
        "delete", help="delete a document: its rows, chunks, embeddings and MIDAS's copies; never your file"
    )
    delete.add_argument("id", type=int, help="the document id (see `documents`)")
    reprocess = actions.add_parser("reprocess", help="process a document's content again, replacing its result")
    reprocess.add_argument("id", type=int, help="the document id")
    reprocess.add_argument("--wait", type=float, metavar="SECONDS", help="wait this long for the result and print it")
    original = actions.add_parser("original", help="write a document's original file (from MIDAS's copy or yours)")
    original.add_argument("id", type=int, help="the document id")
    original.add_argument("-o", "--output", required=True, metavar="FILE", help="a new file to write (- for stdout)")
    related = actions.add_parser("related", help="the documents nearest in meaning to one; near-duplicates flagged")
    related.add_argument("id", type=int, help="the document id")
    related.add_argument("--limit", type=int, default=5, help="how many (default 5)")

    stats = sub.add_parser("stats", help="document and chunk counts")
    stats.set_defaults(func=_cmd_stats)

    ledger = sub.add_parser("ledger", help="the intake ledger: what is queued, running, done; send lost tasks again")
    ledger.add_argument("action", choices=("status", "reap"), help="status: counts; reap: one reaper pass now")
    ledger.set_defaults(func=_cmd_ledger)

    sources = sub.add_parser("sources", help="S3 prefixes and mail accounts MIDAS fetches from")
    sources.add_argument(
        "action",
        choices=("status", "retry-failed"),
        help="status: per source, last run, last success, seen, submitted, errors; "
        "retry-failed: fetch the mails recorded as failed or too large again at the next run",
    )
    sources.add_argument("--account", metavar="NAME", help="retry-failed: only this mail account")
    sources.set_defaults(func=_cmd_sources)

    api = sub.add_parser("api", help="the HTTP API's tokens (the server is the api service)")
    api.add_argument(
        "action", choices=("hash-token",), help="hash-token: make a random token and print it with its digest"
    )
    api.add_argument("--stdin", action="store_true", help="hash a token read from stdin instead (prints the digest)")
    api.set_defaults(func=_cmd_api)

    for command, text in LAUNCHER_COMMANDS.items():
        sub.add_parser(command, help=text)  # for the listing in --help; main() hands these over before parsing
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in LAUNCHER_COMMANDS:
        return _run_launcher(argv)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args, out or sys.stdout)
    except TransientError as exc:
        print(f"MIDAS: {exc.message} (try again shortly)", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
