"""The sources' shared status view: every kind reports, a broken kind shows as its own row."""

from __future__ import annotations

import io
import sys
import types
from datetime import UTC, datetime

from background_tasks import __main__ as cli
from background_tasks.sources.status import SourceStatus, all_statuses


def _install(name: str, body: dict) -> None:
    module = types.ModuleType(name)
    module.__dict__.update(body)
    sys.modules[name] = module


def test_every_provider_reports_and_a_broken_one_is_a_row_of_its_own(settings) -> None:
    at = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    _install("midas_fake_source_ok", {"statuses": lambda s: [SourceStatus("s3", "s3://b/p", at, 1.5, 10, 4, 1)]})

    def broken(_settings):
        raise RuntimeError("server unreachable")

    _install("midas_fake_source_bad", {"statuses": broken})
    try:
        rows = all_statuses(settings, ("midas_fake_source_ok:statuses", "midas_fake_source_bad:statuses"))
    finally:
        del sys.modules["midas_fake_source_ok"], sys.modules["midas_fake_source_bad"]
    assert rows[0] == SourceStatus("s3", "s3://b/p", at, 1.5, 10, 4, 1)
    assert rows[1].error == "server unreachable" and rows[1].name == "-"


def test_the_cli_says_when_no_source_is_configured(settings, monkeypatch) -> None:
    monkeypatch.setattr(cli, "settings_or_exit", lambda: settings)
    out = io.StringIO()
    assert cli.main(["sources", "status"], out=out) == 0
    assert "no sources configured" in out.getvalue()


def test_an_s3_source_keeps_its_last_successful_listing(settings) -> None:
    from background_tasks.storage import s3_objects

    url, source = settings.database_url_resolved, "s3://bills/in"
    ok, failed = datetime(2026, 12, 6, 9, 0, tzinfo=UTC), datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
    s3_objects.record_run(url, source, ok, 1.0, 3, 3, 0, None)
    s3_objects.record_run(url, source, failed, 0.2, 0, 0, 0, "the S3 server cannot be reached")
    (figures,) = s3_objects.figures(url, [source])
    assert (figures.last_run_at, figures.last_success_at, figures.error) == (
        failed,
        ok,
        "the S3 server cannot be reached",
    )
