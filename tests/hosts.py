"""Workers that behave like separate hosts, and the store's exactly-once check, for tests and benchmarks."""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path


def host_env(folder: Path, *extra_roots: Path) -> dict[str, str]:
    """What sets a worker apart as a host of its own: HOME, data dir, logs and allowed roots under ``folder``.

    Only ``extra_roots`` (none for a host that must not see the producer's disk) are readable besides its HOME.
    """
    home = folder / "home"
    home.mkdir(parents=True, exist_ok=True)
    return {
        "HOME": str(home),
        "MIDAS_DATA_DIR": str(folder / "data"),
        "MIDAS_LOG_DIR": str(folder / "logs"),
        "MIDAS_ALLOWED_ROOTS": os.pathsep.join(map(str, [home, *extra_roots])),
        "MIDAS_WATCH_DIRS": str(home),
    }


def exactly_once_problems(database_url: str, count: int, paths: Collection[str] | None = None) -> list[str]:
    """Why the store does not hold ``count`` documents, each ``success`` once with its chunks once (empty: it does).

    With ``paths``, each document's recorded path must be one of them, and each of them recorded.
    """
    from background_tasks.storage.store import DocumentStore

    store = DocumentStore(database_url)
    docs = store.list_documents(limit=count + 10)
    problems = [] if len(docs) == count else [f"{len(docs)} documents stored for {count} submitted"]
    problems += [f"document {d['id']} ({d['path']}) ended {d['status']}" for d in docs if d["status"] != "success"]
    if paths is not None:
        recorded = {d["path"] for d in docs}
        problems += [f"{p} has no document" for p in sorted(set(paths) - recorded)]
        problems += [f"{p} was not submitted" for p in sorted(recorded - set(paths))]
    for doc in docs:
        indexes = [c["chunk_index"] for c in store.get_chunks(doc["id"])]
        if indexes != list(range(doc["chunk_count"])):
            problems.append(f"document {doc['id']} has chunks {indexes[:20]} for a chunk count of {doc['chunk_count']}")
    return problems
