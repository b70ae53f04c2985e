"""Content staging: submit() and the watcher upload a file once under its SHA-256 and send its s3:// URI,
so a worker that cannot see the producer's folder processes it; without an object store nothing changes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from background_tasks import keys
from background_tasks.errors import TransientError
from background_tasks.file_watcher import staged_args
from background_tasks.sources.s3.staging import stage
from background_tasks.submit import submit
from background_tasks.watcher.pending import Outgoing
from tests.db_fixtures import throwaway_postgres
from tests.s3_server import S3Server, s3_server  # noqa: F401  (the module's fixture)
from tests.test_s3_uri import PG_URL

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

STORE = "midas-stage"


@pytest.fixture
def stack_db() -> Iterator[ExitStack]:
    """Contexts closed after the test's stack (a throwaway PostgreSQL outlives its workers)."""
    with ExitStack() as contexts:
        yield contexts


def _env(server: S3Server, bucket: str = STORE) -> dict[str, str]:
    try:
        server.make_bucket(bucket)
    except Exception as exc:  # made by an earlier test of the module
        assert "BucketAlready" in str(exc), exc
    return {**server.env(), "MIDAS_OBJECT_STORE": f"s3://{bucket}/content"}


@pytest.fixture
def staging_settings(s3_server, settings_for, monkeypatch):  # noqa: F811
    env = _env(s3_server)
    for name, value in s3_server.aws_env().items():
        monkeypatch.setenv(name, value)
    return settings_for(**{k: v for k, v in env.items() if k.startswith("MIDAS_")}, MIDAS_DATABASE_URL=PG_URL)


def _objects(server: S3Server) -> list[str]:
    return [o["Key"] for o in server.client().list_objects_v2(Bucket=STORE).get("Contents", [])]


def test_content_is_uploaded_once_and_a_new_name_is_copied_inside_the_store(
    s3_server,  # noqa: F811
    staging_settings,
    docs_dir: Path,
) -> None:
    body = b"Inspection report of the east pier, signed off in June.\n" * 50
    (docs_dir / "pier.txt").write_bytes(body)
    (docs_dir / "pier copy.txt").write_bytes(body)
    first = stage(docs_dir / "pier.txt", staging_settings)
    assert first.uploaded and first.target == f"s3://{STORE}/content/{first.sha256}/pier.txt"
    assert stage(docs_dir / "pier.txt", staging_settings).uploaded is False  # already there: nothing sent
    renamed = stage(docs_dir / "pier copy.txt", staging_settings)
    assert renamed.uploaded is False and renamed.target.endswith(f"/{first.sha256}/pier copy.txt")
    head = s3_server.client().head_object(Bucket=STORE, Key=f"content/{first.sha256}/pier copy.txt")
    assert head["ContentLength"] == len(body)


def test_a_file_over_the_limit_is_not_uploaded(s3_server, staging_settings, docs_dir: Path) -> None:  # noqa: F811
    small = staging_settings.replace(max_file_mb=0.001)
    (docs_dir / "big.txt").write_bytes(b"y" * 5000)
    before = _objects(s3_server)
    staged = stage(docs_dir / "big.txt", small)
    assert staged.target == str((docs_dir / "big.txt").resolve()) and not staged.uploaded
    assert _objects(s3_server) == before


def test_the_watcher_stages_files_and_batches_and_waits_while_the_store_is_away(
    s3_server,  # noqa: F811
    staging_settings,
    docs_dir: Path,
) -> None:
    paths = []
    for i in range(2):
        (docs_dir / f"w{i}.txt").write_bytes(b"watched file %d" % i)
        paths.append(str(docs_dir / f"w{i}.txt"))
    batch = Outgoing(keys.PROCESS_DOCUMENT_BATCH, [paths], [])
    [uris] = staged_args(batch, staging_settings)
    assert all(u.startswith(f"s3://{STORE}/content/") for u in uris) and [u[-6:] for u in uris] == ["w0.txt", "w1.txt"]
    local = staging_settings.replace(object_store=None)
    assert staged_args(Outgoing(keys.PROCESS_DOCUMENT_FILE, [paths[0]], []), local) == [paths[0]]
    s3_server.stop()
    try:
        with pytest.raises(TransientError, match="cannot be reached"):
            staged_args(Outgoing(keys.PROCESS_DOCUMENT_FILE, [paths[0]], []), staging_settings)
    finally:
        s3_server.start()


def test_a_worker_that_cannot_see_the_producers_folder_processes_what_submit_staged(
    stack_db: ExitStack,  # first: set up before the stack, so the database is dropped after its workers stop
    isolated_stack,
    s3_server,  # noqa: F811
    docs_dir: Path,
    tmp_path: Path,
    monkeypatch,
) -> None:
    env = _env(s3_server)
    for name, value in s3_server.aws_env().items():
        monkeypatch.setenv(name, value)
    url = stack_db.enter_context(throwaway_postgres())
    stack = isolated_stack(**env, MIDAS_DATABASE_URL=url)
    elsewhere = tmp_path / "other-host"
    (elsewhere / "home").mkdir(parents=True)
    stack.start_worker(
        queues=["documents"],
        concurrency=1,
        env={
            "HOME": str(elsewhere / "home"),
            "MIDAS_ALLOWED_ROOTS": str(elsewhere / "home"),
            "MIDAS_WATCH_DIRS": str(elsewhere / "home"),
        },
    )
    doc = docs_dir / "harbour minutes.txt"
    doc.write_bytes(b"The harbour committee met on Tuesday and approved the crane.\n" * 30)
    sent = submit(doc, settings=stack.settings, app=stack.app)
    doc.unlink()  # the producer keeps nothing: the worker reads the store
    result = sent.get(timeout=60)
    assert result["status"] == "success", result
    assert result["path"].startswith(f"s3://{STORE}/content/") and result["path"].endswith("/harbour minutes.txt")
    assert result["metadata"]["file_name"] == "harbour minutes.txt"

    (docs_dir / "local.txt").write_bytes(b"only on the producer's disk")
    local = submit(docs_dir / "local.txt", settings=stack.settings.replace(object_store=None), app=stack.app)
    refused = local.get(timeout=60)
    assert (refused["status"], refused["error_type"]) == ("rejected", "path_not_allowed")  # it really is elsewhere
