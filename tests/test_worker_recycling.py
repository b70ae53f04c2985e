"""A pool process lives on from task to task: what it loaded (parsers, model, parser process) is paid once.

A memory limit set below what a pool process holds after its first document replaced it
after every task (20 documents, 20 pool processes), and with it the parser process
whose reuse makes small documents cheap.
"""

from __future__ import annotations

import re

import pytest

from tests.test_ledger_proofs import ALL_QUEUES, PROCESS, mixed_documents

pytestmark = pytest.mark.integration


def pool_processes(log: str) -> set[str]:
    """The pool processes that logged a line (``ForkPoolWorker-N``)."""
    return set(re.findall(r"ForkPoolWorker-\d+", log))


def test_twenty_mixed_documents_keep_one_pool_process_at_the_default_limits(isolated_stack, docs_dir) -> None:
    stack = isolated_stack()
    worker = stack.start_worker(queues=ALL_QUEUES, concurrency=1)
    paths = mixed_documents(docs_dir, 20)
    results = [stack.send(PROCESS, p) for p in paths]
    assert {r.get(timeout=180)["status"] for r in results} == {"success"}
    used = pool_processes(worker.log_text())
    assert len(used) == 1, f"{len(used)} pool processes for 20 documents: replaced after tasks ({sorted(used)})"


def test_a_limit_below_what_a_pool_process_holds_replaces_it(isolated_stack, docs_dir) -> None:
    # the other side of the rule: the limit really is applied (and a limit this low replaces after every task)
    stack = isolated_stack(MIDAS_MAX_MEMORY_PER_CHILD_MB="50")
    worker = stack.start_worker(queues=["documents"], concurrency=1)
    paths = mixed_documents(docs_dir, 4)
    assert {stack.send(PROCESS, p).get(timeout=120)["status"] for p in paths} == {"success"}
    assert len(pool_processes(worker.log_text())) >= 3
