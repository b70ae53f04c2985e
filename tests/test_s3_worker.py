"""s3:// documents on real workers: processed from any worker, refused credentials fail once with the reason,
a stopped server is waited out, and the credentials end up in no log, ledger, result or table."""

from __future__ import annotations

from pathlib import Path

import pytest

from background_tasks import keys
from background_tasks.storage import ledger as ledger_store
from tests.s3_server import S3Server, s3_server  # noqa: F401  (the module's fixture)
from tests.support import wait_until

pytestmark = pytest.mark.integration

BUCKET = "worker-docs"
TEXT = b"Minutes of the harbour committee. The new crane arrives in March.\n" * 10


def _stack(isolated_stack, server: S3Server, **env: str):
    stack = isolated_stack(**{**server.env(), "MIDAS_RETRY_BACKOFF_MAX": "2", **env})
    try:
        server.make_bucket(BUCKET)
    except Exception as exc:  # made by an earlier test of the module
        assert "BucketAlready" in str(exc), exc
    return stack


def _files_containing(root: Path, secret: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and secret in p.read_bytes()]


def test_a_worker_processes_an_object_and_the_credentials_are_nowhere(isolated_stack, s3_server) -> None:  # noqa: F811
    stack = _stack(isolated_stack, s3_server)
    key = "in box/Ölbericht ../minutes.txt"
    s3_server.client().put_object(Bucket=BUCKET, Key=key, Body=TEXT)
    stack.start_worker(queues=["documents"], concurrency=1)
    uri = f"s3://{BUCKET}/{key}"
    sent = stack.send(keys.PROCESS_DOCUMENT_FILE, uri)
    result = sent.get(timeout=60)
    assert result["status"] == "success" and result["path"] == uri and result["metadata"]["source_uri"] == uri
    entry = ledger_store.get(stack.settings.database_url_resolved, sent.id)
    assert entry is not None and entry["call_json"]["args"] == [uri]
    # logs, the ledger, results, task history and documents: neither the key id nor the secret is in any file
    stack.workers[0].stop()
    for secret in (s3_server.secret_key.encode(), s3_server.access_key.encode()):
        assert _files_containing(stack.root, secret) == []


def test_refused_credentials_fail_once_with_the_reason(isolated_stack, s3_server) -> None:  # noqa: F811
    stack = _stack(isolated_stack, s3_server, AWS_SECRET_ACCESS_KEY="not-the-secret-key")
    s3_server.client().put_object(Bucket=BUCKET, Key="denied.txt", Body=TEXT)
    stack.start_worker(queues=["documents"], concurrency=1)
    sent = stack.send(keys.PROCESS_DOCUMENT_FILE, f"s3://{BUCKET}/denied.txt")
    result = sent.get(timeout=60)
    assert (result["status"], result["error_type"]) == ("failed", "access_denied")
    assert "refused the credentials" in result["error"] and "not-the-secret-key" not in result["error"]
    wait_until(lambda: ledger_store.get(stack.settings.database_url_resolved, sent.id)["state"] == "done", 10)
    entry = ledger_store.get(stack.settings.database_url_resolved, sent.id)
    assert entry["attempts"] == 1 and "Retry" not in stack.workers[0].log_text()


def test_a_stopped_server_is_retried_until_it_is_back(isolated_stack, s3_server) -> None:  # noqa: F811
    stack = _stack(isolated_stack, s3_server, MIDAS_MAX_RETRIES="1")
    s3_server.client().put_object(Bucket=BUCKET, Key="patience.txt", Body=TEXT + b"patience\n")
    s3_server.stop()
    try:
        stack.start_worker(queues=["documents"], concurrency=1)
        sent = stack.send(keys.PROCESS_DOCUMENT_FILE, f"s3://{BUCKET}/patience.txt")
        # retried with backoff beyond MIDAS_MAX_RETRIES=1: an outage of the store loses nothing
        wait_until(lambda: stack.workers[0].log_text().count("retry: Retry in") >= 3, 60, what="three retries")
        assert "cannot be reached" in stack.workers[0].log_text() and not sent.ready()
    finally:
        s3_server.start()
    result = sent.get(timeout=90)
    assert result["status"] == "success", result
    url = stack.settings.database_url_resolved
    wait_until(lambda: ledger_store.get(url, sent.id)["state"] == "done", 15, what="the ledger's finish")  # batched
    assert ledger_store.get(url, sent.id)["outcome"] == "success"


def test_the_source_task_submits_each_new_object_once_through_the_ledger(isolated_stack, s3_server) -> None:  # noqa: F811
    stack = _stack(isolated_stack, s3_server, MIDAS_S3_SOURCES=f"s3://{BUCKET}/src/")
    client = s3_server.client()
    uris = {}
    for i in range(3):
        key = f"src/report {i}.txt"
        etag = client.put_object(Bucket=BUCKET, Key=key, Body=b"report %d on the harbour works" % i)["ETag"]
        uris[f"s3://{BUCKET}/{key}"] = etag.strip('"')
    stack.start_worker(queues=["default", "documents"], concurrency=2)
    first = stack.send(keys.LIST_S3_SOURCES).get(timeout=60)["sources"]
    assert [(s["listed"], s["submitted"], s["error"]) for s in first] == [(3, 3, None)]
    for uri, etag in uris.items():
        task_id = keys.s3_object_task_id(uri, etag)
        assert stack.app.AsyncResult(task_id).get(timeout=60)["path"] == uri
        assert ledger_store.get(stack.settings.database_url_resolved, task_id)["call_json"]["args"] == [uri]
    again = stack.send(keys.LIST_S3_SOURCES).get(timeout=60)["sources"]
    assert [(s["listed"], s["submitted"]) for s in again] == [(3, 0)]
