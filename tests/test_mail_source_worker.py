"""Mail end to end: the ``fetch_mail`` task on a real worker takes mail from a real Dovecot, the documents
are processed through the ledger, keep their origin, and search shows it."""

from __future__ import annotations

import os
import subprocess
import sys
from email.message import EmailMessage

import pytest

from background_tasks import keys
from background_tasks.storage import ledger as ledger_store
from background_tasks.storage import mail_messages
from background_tasks.storage.store import DocumentStore
from celery_config import beat_schedule
from tests.generated_corpus import GENERATED_FILES
from tests.imap_server import ImapServer
from tests.mail_samples import malformed_mail, nested_mail
from tests.support import wait_until

pytestmark = pytest.mark.integration  # a real worker


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
            nested_mail(50, sender="billing@shop.example"),  # its attachment is a mail 49 deep
            malformed_mail(sender="billing@shop.example"),
        ]
    )
    stack = isolated_stack(MIDAS_MAIL_CONFIG=str(config), MIDAS_MAIL_MAX_PER_RUN="2")
    stack.start_worker(queues=("default", "documents", "analysis"))
    url = stack.settings.database_url_resolved

    first = stack.send(keys.FETCH_MAIL).get(timeout=60)
    assert [(a["seen"], a["submitted"], a["skipped"], a["more"]) for a in first["accounts"]] == [(2, 2, 1, True)]
    second = stack.send(keys.FETCH_MAIL).get(timeout=60)
    assert [(a["seen"], a["submitted"], a["more"]) for a in second["accounts"]] == [(2, 1, True)]
    third = stack.send(keys.FETCH_MAIL).get(timeout=60)
    assert [(a["seen"], a["submitted"], a["more"]) for a in third["accounts"]] == [(1, 1, False)]
    assert stack.send(keys.FETCH_MAIL).get(timeout=60)["accounts"][0]["seen"] == 0

    recorded = mail_messages.messages(url, "shop")
    assert [(r.subject, r.outcome, r.documents) for r in recorded] == [
        ("Invoice 7", "submitted", 1),
        ("Invoice 8", "submitted", 1),
        ("No files", "no_document", 0),
        ("level 50", "submitted", 1),
        ("broken", "submitted", 1),
    ]
    task_ids = [p["task_id"] for r in recorded for p in r.parts if "task_id" in p]
    results = [stack.app.AsyncResult(t).get(timeout=90) for t in task_ids]
    assert [r["status"] for r in results] == ["success"] * 4  # and the worker went on after each
    nested, broken = results[2:]
    assert nested["metadata"]["file_name"] == "001-level49.eml"
    assert any("not extracted: attachments nested too deeply" in w for w in nested["warnings"])
    assert broken["metadata"]["file_name"] == "001-part.txt" and broken["text_chars"] > 0
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
    # the command line's search says where the hit came from
    done = subprocess.run(
        [sys.executable, "-m", "background_tasks", "search", "zeppelin"],
        env={**stack.env, "MIDAS_ENV_FILE": os.devnull},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert (
        "   from mail: account shop, folder INBOX, from Billing <billing@shop.example>, subject Invoice 7, "
        "date 2026-03-04T08:30:00Z\n" in done.stdout
    ), done.stdout


def test_attachments_of_every_supported_type_are_processed(imap, isolated_stack, tmp_path, generated_corpus) -> None:
    names = sorted(GENERATED_FILES.values())  # one real file of each supported type
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "Archive <archive@shop.example>", "alice@example.org", "Every type"
    msg["Date"], msg["Message-ID"] = "Wed, 04 Mar 2026 09:00:00 +0000", "<every-type@shop>"
    msg.set_content("one of each")
    for name in names:  # sent as mail clients often do: a generic type, the name says what it is
        msg.add_attachment((generated_corpus / name).read_bytes(), maintype="application", subtype="octet-stream",
                           filename=name)  # fmt: skip
    imap.append([msg.as_bytes()])
    secret = tmp_path / "pw"
    secret.write_text(imap.users["alice"])
    config = tmp_path / "mail.yaml"
    config.write_text(
        f"account:\n  - name: shop\n    host: 127.0.0.1\n    port: {imap.port}\n    tls: plain\n"
        f"    user: alice\n    password_file: {secret}\n"
    )
    stack = isolated_stack(MIDAS_MAIL_CONFIG=str(config))
    stack.start_worker(queues=("default", "documents", "analysis"))
    run = stack.send(keys.FETCH_MAIL).get(timeout=60)
    assert [(a["seen"], a["submitted"], a["skipped"], a["error"]) for a in run["accounts"]] == [
        (1, len(names), 0, None)
    ]
    (recorded,) = mail_messages.messages(stack.settings.database_url_resolved, "shop")
    results = {p["name"][4:]: stack.app.AsyncResult(p["task_id"]).get(timeout=180) for p in recorded.parts}
    assert sorted(results) == names
    assert {name: r["status"] for name, r in results.items()} == dict.fromkeys(names, "success")
    assert all(r["text_chars"] > 0 for r in results.values())
