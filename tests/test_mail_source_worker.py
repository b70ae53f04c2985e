"""Mail end to end: the ``fetch_mail`` task on a real worker takes mail from a real Dovecot, the documents
are processed through the ledger, keep their origin, and search shows it."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from background_tasks import keys
from background_tasks.storage import ledger as ledger_store
from background_tasks.storage import mail_messages
from background_tasks.storage.store import DocumentStore
from celery_config import beat_schedule
from tests.imap_server import ImapServer
from tests.support import wait_until


def _mail(subject: str, attachments: dict[str, bytes]) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "Billing <billing@shop.example>", "alice@example.org", subject
    msg["Date"], msg["Message-ID"] = "Wed, 04 Mar 2026 08:30:00 +0000", f"<{subject.replace(' ', '.')}@shop>"
    msg.set_content("see attached")
    for name, data in attachments.items():
        msg.add_attachment(data, maintype="text", subtype="plain", filename=name)
    return msg.as_bytes()


@pytest.fixture
def imap():
    server = ImapServer().start()
    yield server
    server.close()


def test_the_beat_entry_exists_only_with_a_mail_config(settings_for, tmp_path) -> None:
    assert "mail-fetch" not in beat_schedule(settings_for())
    entry = beat_schedule(settings_for(MIDAS_MAIL_CONFIG=str(tmp_path / "m.toml"), MIDAS_MAIL_INTERVAL="120"))
    assert entry["mail-fetch"]["task"] == keys.FETCH_MAIL
    assert entry["mail-fetch"]["schedule"].total_seconds() == 120


def test_fetch_mail_on_a_worker_processes_attachments_with_their_origin(imap, isolated_stack, tmp_path) -> None:
    secret = tmp_path / "pw"
    secret.write_text(imap.users["alice"])
    config = tmp_path / "mail.toml"
    config.write_text(
        f'[[account]]\nname = "shop"\nhost = "127.0.0.1"\nport = {imap.port}\ntls = "plain"\nuser = "alice"\n'
        f'password_file = "{secret}"\n[[account.rule]]\nname = "bills"\nfrom = "billing@"\n'
    )
    imap.append(
        [
            _mail("Invoice 7", {"invoice-7.txt": b"Invoice seven: 120 EUR for zeppelin parts\n"}),
            _mail("Invoice 8", {"invoice-8.txt": b"Invoice eight: 80 EUR\n", "tool.exe": b"MZ"}),
            _mail("No files", {}),
        ]
    )
    stack = isolated_stack(MIDAS_MAIL_CONFIG=str(config), MIDAS_MAIL_MAX_PER_RUN="2")
    stack.start_worker(queues=("default", "documents", "analysis"))
    url = stack.settings.database_url_resolved

    first = stack.send(keys.FETCH_MAIL).get(timeout=60)
    assert [(a["seen"], a["submitted"], a["skipped"], a["more"]) for a in first["accounts"]] == [(2, 2, 1, True)]
    second = stack.send(keys.FETCH_MAIL).get(timeout=60)
    assert [(a["seen"], a["submitted"], a["more"]) for a in second["accounts"]] == [(1, 0, False)]
    assert stack.send(keys.FETCH_MAIL).get(timeout=60)["accounts"][0]["seen"] == 0

    recorded = mail_messages.messages(url, "shop")
    assert [(r.subject, r.outcome, r.documents) for r in recorded] == [
        ("Invoice 7", "submitted", 1),
        ("Invoice 8", "submitted", 1),
        ("No files", "no_document", 0),
    ]
    task_ids = [p["task_id"] for r in recorded for p in r.parts if "task_id" in p]
    results = [stack.app.AsyncResult(t).get(timeout=90) for t in task_ids]
    assert [r["status"] for r in results] == ["success", "success"]
    origin = results[0]["metadata"]["origin"]
    assert origin == {
        "source": "mail",
        "account": "shop",
        "folder": "INBOX",
        "from": "Billing <billing@shop.example>",
        "subject": "Invoice 7",
        "date": "2026-03-04T08:30:00Z",
        "message_id": "<Invoice.7@shop>",
        "attachment": "invoice-7.txt",
        "rule": "bills",
    }
    # every file went through the intake ledger (a worker writes its outcomes there in the background)
    wait_until(lambda: all(ledger_store.get(url, t)["state"] == "done" for t in task_ids), 20, what="ledger done")
    (hit,) = DocumentStore(url).search("zeppelin", limit=5, mode="keyword")
    assert hit.origin is not None and hit.origin["subject"] == "Invoice 7" and hit.origin["account"] == "shop"
