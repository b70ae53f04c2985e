"""Two hosts in one test: workers with their own HOME, data dir and allowed roots (neither sees the producer's
folder), one PostgreSQL, one Redis, one SeaweedFS. The producer submits through the object store and deletes its
copies; every document ends success exactly once, split across both; a killed worker's tasks finish on the other."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from background_tasks.storage import ledger as ledger_store
from background_tasks.storage.store import DocumentStore
from background_tasks.submit import submit
from tests.db_fixtures import throwaway_postgres
from tests.hosts import host_env
from tests.s3_server import S3Server, s3_server  # noqa: F401  (the module's fixture)
from tests.support import wait_until
from tests.test_fault_tolerance import assert_exactly_once, make_documents
from tests.test_ledger import reap

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


def _host(stack, root: Path, name: str):
    """A worker that shares only the broker, the database and the object store with the producer."""
    return stack.start_worker(queues=["documents"], concurrency=1, name=name, env=host_env(root / name))


def test_two_hosts_share_the_work_and_one_finishes_what_the_killed_one_held(
    isolated_stack,
    s3_server: S3Server,  # noqa: F811
    docs_dir: Path,
    tmp_path: Path,
    monkeypatch,
) -> None:
    s3_server.make_bucket("two-hosts")
    env = {**s3_server.env(), "MIDAS_OBJECT_STORE": "s3://two-hosts/staged"}
    for name, value in s3_server.aws_env().items():
        monkeypatch.setenv(name, value)  # the producer's own boto3 reads them
    with throwaway_postgres() as url:
        stack = isolated_stack(
            **env,
            MIDAS_DATABASE_URL=url,
            MIDAS_VISIBILITY_TIMEOUT="3600",
            MIDAS_LEDGER_LEASE="3",
            MIDAS_LEDGER_GRACE="5",
        )
        hosts = [_host(stack, tmp_path, "host-a"), _host(stack, tmp_path, "host-b")]
        paths = make_documents(docs_dir, 300, words=150)
        sent = [submit(p, settings=stack.settings, app=stack.app) for p in paths]
        for p in paths:
            Path(p).unlink()
        results = [r.get(timeout=300) for r in sent]
        assert {r["status"] for r in results} == {"success"}
        assert all(r["path"].startswith("s3://two-hosts/staged/") for r in results)
        assert_exactly_once(stack, paths)
        workers = {ledger_store.get(url, r.id)["worker"] for r in sent}
        assert workers == {w.hostname for w in hosts}, workers  # both hosts took a share
        hits = DocumentStore(url).search("tok123x", mode="keyword")
        assert [h.path for h in hits] == [results[123]["path"]]

        more_dir = docs_dir / "more"
        more_dir.mkdir()
        more = make_documents(more_dir, 30, words=20000)
        late = [submit(p, settings=stack.settings, app=stack.app) for p in more]
        wait_until(lambda: sum(r.ready() for r in late) >= 3, 120, what="some progress on the late documents")
        hosts[0].kill()
        killed_at = time.monotonic()
        assert sum(r.ready() for r in late) < len(late)  # it died holding work
        client = stack.redis.client()
        while not all(r.ready() for r in late):
            assert time.monotonic() - killed_at < 240, "the killed host's tasks never finished elsewhere"
            reap(stack, client)
            time.sleep(1)
        assert {r.get(timeout=10)["status"] for r in late} == {"success"}
        assert_exactly_once(stack, paths + more)
