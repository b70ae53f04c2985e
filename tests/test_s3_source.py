"""S3 sources against a real SeaweedFS: paginated listings, only new or changed objects submitted, a cap per run,
deletions marked (documents kept), the watcher's filters, a server that goes away, and the status rows."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import pytest

from background_tasks import __main__ as cli
from background_tasks import keys
from background_tasks.processing.pipeline import process_file
from background_tasks.sources.s3.source import list_source
from background_tasks.sources.s3.status import statuses
from background_tasks.storage import s3_objects
from tests.s3_server import S3Server, s3_server  # noqa: F401  (the module's fixture)

pytestmark = pytest.mark.integration


@pytest.fixture
def source_settings(s3_server: S3Server, settings_for, monkeypatch, unique):  # noqa: F811
    for name, value in s3_server.aws_env().items():
        monkeypatch.setenv(name, value)
    bucket = s3_server.make_bucket(f"src-{unique}")
    env = {k: v for k, v in s3_server.env().items() if k.startswith("MIDAS_")}
    return settings_for(**env, MIDAS_S3_SOURCES=f"s3://{bucket}/in/", MIDAS_WATCH_IGNORE="drafts/*")


class Sent(list):
    """The publisher of these tests: records (uri, task id); the worker tests publish for real."""

    def __call__(self, uri: str, task_id: str) -> None:
        self.append((uri, task_id))


def _bucket(settings) -> str:
    return settings.s3_sources[0][len("s3://") :].split("/")[0]


def test_a_large_prefix_is_listed_in_pages_and_submitted_in_capped_runs(s3_server, source_settings) -> None:  # noqa: F811
    settings = source_settings.replace(s3_max_per_run=1000)
    bucket, source = _bucket(settings), settings.s3_sources[0]
    client = s3_server.client()
    keys_ = [f"in/batch {i // 100}/doc-{i:04d}.txt" for i in range(2500)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: client.put_object(Bucket=bucket, Key=k, Body=k.encode()), keys_))
    ignored = ["in/~$lock.docx", "in/.hidden.txt", "in/notes.xyz", "in/sub/", "in/drafts/x.txt", "outside/a.txt"]
    for key in ignored:
        client.put_object(Bucket=bucket, Key=key, Body=b"x")

    runs = []
    for _ in range(4):
        sent = Sent()
        runs.append((list_source(source, settings, sent), sent))
    assert [run.listed for run, _ in runs] == [2505] * 4  # every page listed each time ("outside/" is not under in/)
    assert [run.submitted for run, _ in runs] == [1000, 1000, 500, 0]
    uris = [uri for _, sent in runs for uri, _ in sent]
    assert sorted(uris) == sorted(f"s3://{bucket}/{k}" for k in keys_)  # each exactly once, nothing ignored
    task_ids = {task_id for _, sent in runs for _, task_id in sent}
    assert len(task_ids) == 2500
    [row] = statuses(settings)
    assert (row.kind, row.name, row.seen, row.submitted, row.failed, row.error) == ("s3", source, 2500, 2500, 0, None)
    assert row.last_run_at is not None and row.last_run_s is not None


def test_changed_objects_go_again_deleted_ones_are_flagged_and_kept(s3_server, source_settings, store) -> None:  # noqa: F811
    settings = source_settings.replace(database_url=store.url)
    bucket, source = _bucket(settings), settings.s3_sources[0]
    client = s3_server.client()
    for i in range(5):
        client.put_object(Bucket=bucket, Key=f"in/memo {i}.txt", Body=f"memo number {i} about the harbour".encode())

    def process(uri: str, task_id: str) -> None:  # a real document run, in this process
        assert process_file(uri, settings, store, task_id=task_id).status == "success"

    assert list_source(source, settings, process).submitted == 5
    assert list_source(source, settings, process).submitted == 0  # a restart lists again and submits nothing

    client.put_object(Bucket=bucket, Key="in/memo 2.txt", Body=b"memo number 2, rewritten with new figures")
    client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "in/memo 0.txt"}, {"Key": "in/memo 4.txt"}]})
    sent = Sent()
    run = list_source(source, settings, sent)
    assert (run.submitted, run.deleted) == (1, 2)
    assert sent[0][0] == f"s3://{bucket}/in/memo 2.txt"
    deleted = s3_objects.deleted_documents(settings.database_url_resolved, source)
    assert len(deleted) == 2 and all(store.get_document(d)["status"] == "success" for d in deleted)  # kept
    [row] = statuses(settings)
    assert (row.seen, row.submitted, row.failed) == (3, 3, 0)  # memo 2's new version was submitted

    client.put_object(Bucket=bucket, Key="in/memo 0.txt", Body=b"memo number 0 about the harbour")  # back, unchanged
    assert list_source(source, settings, Sent()).submitted == 0
    assert len(s3_objects.deleted_documents(settings.database_url_resolved, source)) == 1


def test_a_server_that_goes_away_marks_nothing_deleted_and_says_why(s3_server, source_settings) -> None:  # noqa: F811
    bucket, source = _bucket(source_settings), source_settings.s3_sources[0]
    s3_server.client().put_object(Bucket=bucket, Key="in/a.txt", Body=b"a")
    assert list_source(source, source_settings, Sent()).submitted == 1
    s3_server.stop()
    try:
        run = list_source(source, source_settings, Sent())
    finally:
        s3_server.start()
    assert run.deleted == 0 and run.submitted == 0 and "cannot be reached" in run.error
    [row] = statuses(source_settings)
    assert "cannot be reached" in row.error and row.seen == 1  # the object is still known, not deleted


def test_a_missing_bucket_is_an_error_row_not_a_crash(source_settings) -> None:
    settings = source_settings.replace(s3_sources=("s3://no-such-source-bucket/in/",))
    run = list_source(settings.s3_sources[0], settings, Sent())
    assert run.listed == 0 and "no such bucket" in run.error


def test_the_cli_shows_each_source(source_settings, monkeypatch) -> None:
    monkeypatch.setattr(cli, "settings_or_exit", lambda: source_settings)
    list_source(source_settings.s3_sources[0], source_settings, Sent())
    out = io.StringIO()
    assert cli.main(["sources", "status"], out=out) == 0
    assert f"s3    {source_settings.s3_sources[0]}  last run" in out.getvalue()


def test_task_ids_differ_per_version() -> None:
    assert keys.s3_object_task_id("s3://b/k.txt", "e1") != keys.s3_object_task_id("s3://b/k.txt", "e2")
