"""What the mail-source tests share: a ``submit`` that records, accounts for a test Dovecot, the records."""

from __future__ import annotations

from pathlib import Path

from background_tasks.sources.mail.config import Account, parse_accounts
from background_tasks.storage import mail_messages
from tests.imap_server import ImapServer

PASSWORD = "secret-a"


class Sent:
    """What the fetch submitted: (path, origin, task_id) per file; ``hook(count)`` runs after each."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str], str]] = []
        self.hook = None

    def __call__(self, path: str, origin: dict[str, str], task_id: str) -> None:
        self.calls.append((path, origin, task_id))
        if self.hook:
            self.hook(len(self.calls))

    @property
    def names(self) -> list[str]:
        return [Path(p).name[4:] for p, _, _ in self.calls]


class AccountFactory:
    """``make(server, rules, **keys)``: the account ``test`` of a test server, as a user writes it in TOML
    (password in a file under ``folder``)."""

    def __init__(self, folder: Path) -> None:
        self.secret = folder / "password"
        self.secret.write_text(PASSWORD + "\n")

    def __call__(self, srv: ImapServer, rules: list[dict] | None = None, **extra: object) -> Account:
        data = {
            "name": "test",
            "host": "127.0.0.1",
            "port": srv.port,
            "tls": "plain",
            "user": "alice",
            "password_file": str(self.secret),
            **extra,
        }
        if rules is not None:
            data["rule"] = rules
        return parse_accounts({"account": [data]})[0]


def records(settings, folder: str | None = None) -> list[mail_messages.MailRecord]:
    """The mails recorded for the account ``test``, oldest first."""
    return mail_messages.messages(settings.database_url_resolved, "test", folder)
