"""Mail failures against a real Dovecot: errors rooted in ``errors``, a poison mail given up after
MIDAS_MAX_REDELIVERIES runs (and fetched again when asked), after-actions only for mails taken,
an exact "more next run", and the last successful fetch beside the last fetch."""

from __future__ import annotations

import importlib
import inspect
import io
import pkgutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from sqlalchemy import text

import background_tasks.sources
from background_tasks import __main__ as cli
from background_tasks import mail_tasks
from background_tasks.errors import (
    MailAuthFailed,
    MailConfigError,
    MailError,
    MailRefused,
    MailUnreachable,
    PermanentError,
    StorageUnavailable,
    TransientError,
)
from background_tasks.ops.dashboard.sources_view import sources_table
from background_tasks.ops.dashboard.view import fmt_time
from background_tasks.sources.mail import imap
from background_tasks.sources.mail.config import parse_accounts
from background_tasks.sources.mail.fetch import fetch_account
from background_tasks.sources.mail.status import statuses
from background_tasks.sources.s3.client import as_midas_error
from background_tasks.storage import mail_messages
from background_tasks.storage.db import get_engine
from celery_config import create_app
from tests.db_fixtures import database_url  # noqa: F401  (the sqlite/postgres fixture)
from tests.imap_server import ImapServer
from tests.mail_samples import attached_deep_mail, deep_multipart, mail
from tests.mail_support import Sent, records
from tests.support import free_port


def _file(name: str, data: bytes | None = None) -> tuple[tuple[str, bytes, str], ...]:
    return ((name, data if data is not None else f"content of {name}".encode(), "text/plain"),)


def _config(tmp_path: Path, srv: ImapServer, secret: Path) -> Path:
    """The account ``test`` as a MIDAS_MAIL_CONFIG file (what ``sources status`` reads)."""
    path = tmp_path / "mail.toml"
    path.write_text(
        f'[[account]]\nname = "test"\nhost = "127.0.0.1"\nport = {srv.port}\ntls = "plain"\n'
        f'user = "alice"\npassword_file = "{secret}"\n'
    )
    return path


# -- 1: one rooted hierarchy -------------------------------------------------------------------


def test_every_source_error_is_rooted_and_either_permanent_or_transient() -> None:
    package = background_tasks.sources
    defined_here = [
        f"{info.name}.{name}"
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}.")
        for name, cls in inspect.getmembers(importlib.import_module(info.name), inspect.isclass)
        if issubclass(cls, BaseException) and cls.__module__ == info.name
    ]
    assert defined_here == [], "a source's exceptions belong in background_tasks/errors.py"
    kinds = {
        MailConfigError: PermanentError,
        MailAuthFailed: PermanentError,
        MailRefused: PermanentError,
        MailUnreachable: TransientError,
    }
    for cls, kind in kinds.items():
        other = TransientError if kind is PermanentError else PermanentError
        assert issubclass(cls, MailError) and issubclass(cls, kind) and not issubclass(cls, other), cls
    assert len({cls.error_type for cls in [MailError, *kinds]}) == 5

    def client_error(code: str, status: int) -> ClientError:
        return ClientError(
            {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Get"
        )

    unknown_4xx = as_midas_error(client_error("SomethingNew", 400), "s3://b/k")
    server_side = as_midas_error(client_error("InternalError", 500), "s3://b/k")
    not_boto = as_midas_error(ValueError("odd"), "s3://b/k")
    assert type(unknown_4xx) is PermanentError and "SomethingNew" in unknown_4xx.message
    assert isinstance(server_side, StorageUnavailable) and isinstance(server_side, TransientError)
    assert type(not_boto) is PermanentError


def test_real_failures_are_permanent_or_transient_as_the_hierarchy_says(
    dovecot, mail_account, settings, tmp_path
) -> None:
    dovecot.append([mail("waiting", attachments=_file("a.txt"))])
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password")
    bad_password = mail_account(dovecot, password_file=str(wrong))
    no_secret = parse_accounts(
        {"account": [{"name": "test", "host": "127.0.0.1", "port": dovecot.port, "tls": "plain", "user": "alice",
                      "password_env": "MIDAS_TEST_MAIL_PASSWORD_NOT_SET"}]}
    )[0]  # fmt: skip
    with pytest.raises(MailAuthFailed) as refused:
        imap.connect(bad_password)
    assert isinstance(refused.value, PermanentError) and refused.value.error_type == "auth_failed"
    runs = {
        "auth_failed": fetch_account(bad_password, settings, Sent(), max_mails=10),
        "mail_config": fetch_account(no_secret, settings, Sent(), max_mails=10),
        "mail_refused": fetch_account(mail_account(dovecot, folders=["Nowhere"]), settings, Sent(), max_mails=10),
    }
    assert {kind: run.error_type for kind, run in runs.items()} == {kind: kind for kind in runs}
    assert "MIDAS_TEST_MAIL_PASSWORD_NOT_SET" in runs["mail_config"].error
    blocker = settings.inbox_dir / "mail" / "test"  # a file where the working folder goes: MIDAS's side
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("in the way")
    blocked = fetch_account(mail_account(dovecot), settings, Sent(), max_mails=10)
    assert blocked.error_type == "storage_unavailable" and "cannot be written" in blocked.error
    blocker.unlink()
    dovecot.stop()
    with pytest.raises(MailUnreachable) as gone:
        imap.connect(mail_account(dovecot))
    assert isinstance(gone.value, TransientError)
    down = fetch_account(mail_account(dovecot), settings, Sent(), max_mails=10)
    assert down.error_type == "mail_unreachable" and "cannot be reached" in down.error
    assert records(settings) == []  # none of these took or spoiled a mail
    dovecot.start()
    fine = fetch_account(mail_account(dovecot), settings, Sent(), max_mails=10)
    assert (fine.error, fine.error_type, fine.seen, fine.submitted) == (None, None, 1, 1)


# -- 2: a poison mail --------------------------------------------------------------------------


def test_a_poison_mail_is_given_up_after_max_redeliveries_runs_and_fetched_again_when_asked(
    dovecot, mail_account, settings, monkeypatch
) -> None:
    dovecot.append(
        [
            mail("before", attachments=_file("before.txt")),
            mail("poison", attachments=_file("poison.txt")),
            mail("after", attachments=_file("after.txt")),
        ]
    )
    account = mail_account(dovecot, rules=[{"after": "move", "move_to": "Done"}])
    sent, broken = Sent(), {"poison.txt"}

    def submit(path: str, origin: dict[str, str], task_id: str) -> None:
        if Path(path).name[4:] in broken:
            raise RuntimeError("a bug this mail hits")
        sent(path, origin, task_id)

    def run():
        return fetch_account(account, settings, submit, max_mails=10)

    assert settings.max_redeliveries == 3
    first, second = run(), run()
    assert (first.seen, second.seen) == (1, 0)
    assert first.error == (
        "the run stopped after 1 mail(s): RuntimeError: a bug this mail hits "
        "(UID 2 in INBOX: attempt 1 of 3; then it is recorded as failed and skipped)"
    )
    assert "attempt 2 of 3" in second.error and [r.subject for r in records(settings)] == ["before"]
    third = run()
    assert third.error is None and (third.seen, third.failed, third.submitted) == (2, 1, 1)
    got = {r.subject: r for r in records(settings)}
    assert got["poison"].outcome == "failed" and got["poison"].documents == 0
    assert got["poison"].detail == (
        "stopped the fetch 3 times (MIDAS_MAX_REDELIVERIES), the last with RuntimeError: a bug this mail hits"
    )
    assert got["after"].outcome == "submitted" and sent.names == ["before.txt", "after.txt"]
    # the failed mail stays where it was, unread; the two taken were moved
    assert dovecot.uids() == [2] and dovecot.uids(criteria="UNSEEN") == [2] and len(dovecot.uids("Done")) == 2
    assert mail_messages.account_runs(settings.database_url_resolved)["test"].failed == 1
    before = len(dovecot.sessions())
    assert run().seen == 0  # never fetched again on its own
    assert dovecot.wait_sessions(before + 1)[-1]["body_count"] == 0

    # the user asks for it again: the next run takes it (the bug is gone now), records it over, moves it
    monkeypatch.setattr(cli, "settings_or_exit", lambda: settings)
    out = io.StringIO()
    assert cli.main(["sources", "retry-failed", "--account", "test"], out=out) == 0
    assert out.getvalue() == "1 failed or too large mail(s) of account test will be fetched again at the next run\n"
    broken.clear()
    again = run()
    assert again.error is None and (again.seen, again.submitted) == (1, 1) and sent.names[-1] == "poison.txt"
    assert [(r.subject, r.outcome) for r in records(settings)] == [
        ("before", "submitted"),
        ("poison", "submitted"),
        ("after", "submitted"),
    ]
    assert dovecot.uids() == [] and len(dovecot.uids("Done")) == 3
    assert run().seen == 0


def test_a_broker_that_is_away_never_counts_against_a_mail(dovecot, mail_account, settings_for, monkeypatch) -> None:
    """``mail_tasks._submit`` on a real Celery app whose broker is not there: a TransientError every run,
    the mail never given up, and taken once the broker is back."""
    settings = settings_for(MIDAS_MAX_REDELIVERIES="2")
    dovecot.append([mail("waits", attachments=_file("waits.txt"))])
    account = mail_account(dovecot)
    monkeypatch.setattr(
        mail_tasks, "app", create_app(settings_for(REDIS_HOST="127.0.0.1", REDIS_PORT=str(free_port())))
    )
    runs = [fetch_account(account, settings, mail_tasks._submit, max_mails=10) for _ in range(4)]
    for run in runs:
        assert run.error_type == "transient" and run.error.startswith("the broker did not take the task (")
        assert "attempt" not in run.error and run.seen == 0
    assert records(settings) == []
    sent = Sent()
    back = fetch_account(account, settings, sent, max_mails=10)
    assert back.error is None and back.submitted == 1 and records(settings)[0].outcome == "submitted"


# -- 3: after-actions only for mails taken -----------------------------------------------------


@pytest.mark.parametrize("after", ["move", "read"])
def test_a_mail_not_taken_keeps_its_folder_and_unread_state(dovecot, mail_account, settings_for, after) -> None:
    settings = settings_for(MIDAS_MAX_FILE_MB="1")
    dovecot.append(
        [
            deep_multipart(1000),  # cannot be parsed
            attached_deep_mail(400),  # its one attachment cannot be decoded
            mail("big", attachments=_file("big.txt", b"x" * (2 * 1024 * 1024))),  # over MIDAS_MAX_FILE_MB
            mail("good", attachments=_file("good.txt")),
            mail("plain text only"),
        ]
    )
    rule = {"after": after, **({"move_to": "Done"} if after == "move" else {})}
    run = fetch_account(mail_account(dovecot, rules=[rule]), settings, Sent(), max_mails=10)
    assert run.error is None and (run.seen, run.submitted, run.failed) == (5, 1, 2)
    got = {r.subject: r for r in records(settings)}
    assert got["too deep"].outcome == "failed" and "cannot be read (RecursionError" in got["too deep"].detail
    wrapper = got["wraps a deep one"]
    assert wrapper.outcome == "failed" and wrapper.detail == "1 of its files cannot be decoded"
    assert wrapper.parts == (
        {"name": "001-inside.eml", "skipped": "cannot be decoded: RecursionError", "failed": True},
    )
    assert got["big"].outcome == "too_large"
    assert (got["good"].outcome, got["plain text only"].outcome) == ("submitted", "no_document")
    if after == "move":
        assert dovecot.uids() == [1, 2, 3] and len(dovecot.uids("Done")) == 2
    else:
        assert dovecot.uids(criteria="SEEN") == [4, 5]
    assert dovecot.uids(criteria="UNSEEN") == [1, 2, 3]


# -- 4: "more next run" only when another mail waits -------------------------------------------


def test_more_next_run_only_when_another_mail_waits(dovecot, mail_account, settings) -> None:
    dovecot.append([mail(f"inbox {i}") for i in range(3)])
    dovecot.append([], "Archive")
    account = mail_account(dovecot, rules=[{"process": "eml"}], folders=["INBOX", "Archive"])
    first = fetch_account(account, settings, Sent(), max_mails=3)
    assert (first.seen, first.more) == (3, False)  # the cap reached at the end of INBOX, and Archive is empty
    dovecot.append([mail("inbox 3"), mail("inbox 4")])
    dovecot.append([mail("archived")], "Archive")
    second = fetch_account(account, settings, Sent(), max_mails=2)
    assert (second.seen, second.more) == (2, True)  # the cap reached at the end of INBOX; Archive has one
    third = fetch_account(account, settings, Sent(), max_mails=1)
    assert (third.seen, third.more) == (1, False)
    assert sorted(r.subject for r in records(settings)) == sorted([f"inbox {i}" for i in range(5)] + ["archived"])


# -- 5: the last successful fetch ----------------------------------------------------------------


def test_status_shows_the_last_successful_fetch_beside_the_last_fetch(
    dovecot, mail_account, settings, tmp_path, monkeypatch
) -> None:
    dovecot.append([mail("one")])
    settings = settings.replace(mail_config=_config(tmp_path, dovecot, mail_account.secret))
    assert fetch_account(mail_account(dovecot), settings, Sent(), max_mails=10).error is None
    (row,) = statuses(settings)
    assert row.last_success_at is not None and row.last_success_at == row.last_run_at
    success = row.last_success_at
    dovecot.stop()
    assert "cannot be reached" in fetch_account(mail_account(dovecot), settings, Sent(), max_mails=10).error
    (row,) = statuses(settings)
    assert row.last_run_at > success and row.last_success_at == success and "cannot be reached" in row.error
    monkeypatch.setattr(cli, "settings_or_exit", lambda: settings)
    out = io.StringIO()
    assert cli.main(["sources", "status"], out=out) == 1
    head = out.getvalue().splitlines()[0]
    assert f"last run {row.last_run_at.isoformat(timespec='seconds')} (" in head
    assert f"  last success {success.isoformat(timespec='seconds')}  seen 1" in head
    (shown,) = sources_table(statuses(settings)).to_dict("records")
    assert shown["last success (UTC)"] == fmt_time(success) and shown["last run (UTC)"] == fmt_time(row.last_run_at)
    dovecot.start()
    assert fetch_account(mail_account(dovecot), settings, Sent(), max_mails=10).error is None
    (row,) = statuses(settings)
    assert row.last_success_at == row.last_run_at > success and row.error is None


def test_an_older_database_gets_the_last_success_column(database_url) -> None:  # noqa: F811
    with get_engine(database_url).begin() as conn:  # mail_accounts as the first mail source made it
        conn.execute(
            text(
                "CREATE TABLE mail_accounts (account VARCHAR(64) PRIMARY KEY, last_run_at TIMESTAMP, "
                "last_run_s FLOAT, seen INTEGER, submitted INTEGER, failed INTEGER, error TEXT, error_since TIMESTAMP)"
            )
        )
        conn.execute(text("INSERT INTO mail_accounts VALUES ('old', NULL, 0.5, 4, 2, 0, NULL, NULL)"))
    old = mail_messages.account_runs(database_url)["old"]
    assert (old.seen, old.submitted, old.last_success_at) == (4, 2, None)
    at = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    assert mail_messages.record_run(database_url, "old", at, 0.1, 1, 0, 0, None).last_success_at == at
    assert mail_messages.account_runs(database_url)["old"].seen == 5
