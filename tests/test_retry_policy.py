"""The task base class's one retry policy (background_tasks/task_base.py), on a real worker.

Transient errors are retried with backoff MIDAS_MAX_RETRIES times and then fail (or, for documents,
are recorded as failed); a storage fault is retried for as long as it lasts.
"""

from __future__ import annotations

from background_tasks.storage.store import DocumentStore

FAULTS = {"MIDAS_EXTRA_TASK_MODULES": "tests.fault_tasks", "MIDAS_MAX_RETRIES": "2", "MIDAS_RETRY_BACKOFF_MAX": "1"}


def test_transient_errors_are_retried_max_retries_times_then_fail(isolated_stack) -> None:
    stack = isolated_stack(**FAULTS)
    stack.start_worker(queues=["default"], concurrency=1)
    result = stack.send("tests.fault_tasks.fail_transiently", "runs", 100)
    assert result.get(timeout=60, propagate=False) is not None
    assert result.state == "FAILURE" and "TransientError" in repr(result.result)
    assert int(stack.redis.client().get("runs")) == 3, "the first run and MIDAS_MAX_RETRIES=2 retries"

    flaky = stack.send("tests.fault_tasks.fail_transiently", "flaky", 2)
    assert flaky.get(timeout=60) == 3, "succeeds on its last allowed try"


def test_a_storage_fault_is_retried_for_as_long_as_it_lasts(isolated_stack) -> None:
    stack = isolated_stack(**FAULTS)
    stack.start_worker(queues=["default"], concurrency=1)
    result = stack.send("tests.fault_tasks.fail_transiently", "runs", 5, storage=True)
    assert result.get(timeout=90) == 6, "five storage faults, more than MIDAS_MAX_RETRIES, then success"


def test_a_document_that_stays_transient_is_recorded_as_failed_after_the_last_retry(isolated_stack, docs_dir) -> None:
    stack = isolated_stack(**FAULTS)
    stack.start_worker(queues=["default"], concurrency=1)
    path = docs_dir / "growing.txt"
    path.write_text("never complete")
    result = stack.send("tests.fault_tasks.never_ready", str(path)).get(timeout=60)
    assert result["status"] == "failed" and result["error_type"] == "file_not_ready"
    assert "attempt 3" in result["error"]
    docs = DocumentStore(stack.settings.database_url_resolved).find_by_path(str(path))
    assert [d["status"] for d in docs] == ["failed"]
