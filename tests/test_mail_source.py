"""Mail as a source, against a real Dovecot (tests/imap_server.py): config, rules, exactly once, failures.

These tests run the fetch as plain functions; ``submit`` records what would be sent to the
workers (the worker side is in test_mail_source_worker.py).
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import shutil
import sys
import time
import tracemalloc
from email.message import EmailMessage
from pathlib import Path

import pytest

from background_tasks import __main__ as cli
from background_tasks.ops.health import source_errors
from background_tasks.sources.mail import config as mail_config
from background_tasks.sources.mail import imap, parts
from background_tasks.sources.mail.config import MailConfigError, parse_accounts
from background_tasks.sources.mail.fetch import fetch_account
from background_tasks.sources.mail.status import statuses
from background_tasks.sources.mail.take import WHOLE_MAIL_BYTES
from background_tasks.storage import mail_messages
from tests.imap_server import ImapServer, TokenServer
from tests.mail_samples import mail, malformed_mail, nested_mail
from tests.mail_support import Sent, records


@pytest.fixture
def server(dovecot):
    return dovecot


@pytest.fixture
def account_for(mail_account):
    """Factory: an Account for the test server (TOML as a user writes it, password in a file)."""
    return mail_account


#: read each mail whole (the default for mails up to 8 MB) or part by part (as a larger mail is)
WAYS = pytest.mark.parametrize("whole_below", [WHOLE_MAIL_BYTES, 0], ids=["whole", "by-parts"])


# -- configuration ---------------------------------------------------------------------------


def test_a_toml_file_becomes_accounts_with_rules(tmp_path) -> None:
    path = tmp_path / "mail.toml"
    path.write_text(
        '[[account]]\nname = "work"\nhost = "imap.example.com"\nuser = "me"\npassword_env = "MAIL_PW"\n'
        'folders = ["INBOX", "Invoices"]\n'
        '[[account.rule]]\nname = "bills"\nfrom = "billing@"\nsubject = "invoice"\nhas_attachment = true\n'
        'since = 2024-01-31\nafter = "move"\nmove_to = "Done"\n'
        '[[account.rule]]\nname = "rest"\nprocess = "both"\n'
    )
    (account,) = mail_config.load_accounts(path)
    assert (account.port, account.tls, account.folders) == (993, "implicit", ("INBOX", "Invoices"))
    bills, rest = account.rules
    assert (bills.from_contains, bills.subject_contains, bills.has_attachment) == ("billing@", "invoice", True)
    assert str(bills.since) == "2024-01-31" and (bills.after, bills.move_to) == ("move", "Done")
    assert (rest.process, rest.after) == ("both", "none")
    assert "MAIL_PW" not in repr(account) or account.secret.kind == "password_env"  # a name, never a value
    with pytest.raises(MailConfigError, match="MAIL_PW"):
        account.secret.read({})
    assert account.secret.read({"MAIL_PW": "pw"}) == "pw"


YAML_CONFIG = """\
account:
  - name: work
    host: imap.example.com
    user: me
    password_env: MAIL_PW
    folders: [INBOX, Invoices]
    rule:
      - name: bills
        from: billing@
        subject: invoice
        has_attachment: true
        since: 2024-01-31
        after: move
        move_to: Done
      - name: rest
        process: both
"""


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".YAML"])
def test_a_yaml_file_gives_the_same_accounts_as_toml(tmp_path, suffix) -> None:
    toml = tmp_path / "mail.toml"
    toml.write_text(
        '[[account]]\nname = "work"\nhost = "imap.example.com"\nuser = "me"\npassword_env = "MAIL_PW"\n'
        'folders = ["INBOX", "Invoices"]\n'
        '[[account.rule]]\nname = "bills"\nfrom = "billing@"\nsubject = "invoice"\nhas_attachment = true\n'
        'since = 2024-01-31\nafter = "move"\nmove_to = "Done"\n'
        '[[account.rule]]\nname = "rest"\nprocess = "both"\n'
    )
    yaml_path = tmp_path / f"mail{suffix}"
    yaml_path.write_text(YAML_CONFIG)
    assert mail_config.load_accounts(yaml_path) == mail_config.load_accounts(toml)
    (account,) = mail_config.load_accounts(yaml_path)
    assert account.rules[0].since.isoformat() == "2024-01-31" and account.rules[1].process == "both"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("account: [\n", "is not valid YAML"),
        ("- just\n- a list\n", "must be a mapping"),
        ("account:\n  - name: a\n    host: h\n    user: u\n    password: pw\n", "never kept in the config file"),
        ("account:\n  - name: a\n    host: h\n    user: u\n    password_env: P\n    yes: 1\n", "unknown key"),
        ("accounts: 3\n", "a list under account:"),
        ("!!python/object/apply:os.system [echo hi]\n", "is not valid YAML"),
    ],
)
def test_a_bad_yaml_file_is_a_clear_error(tmp_path, text, message) -> None:
    path = tmp_path / "mail.yml"
    path.write_text(text)
    with pytest.raises(MailConfigError, match=message):
        mail_config.load_accounts(path)


def test_the_readme_examples_in_toml_and_yaml_are_valid_and_the_same(tmp_path) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Mail accounts", 1)[1].split("\n## ", 1)[0]
    blocks = {lang: section.split(f"```{lang}\n", 1)[1].split("```", 1)[0] for lang in ("toml", "yaml")}
    (tmp_path / "mail.toml").write_text(blocks["toml"])
    (tmp_path / "mail.yaml").write_text(blocks["yaml"])
    from_toml = mail_config.load_accounts(tmp_path / "mail.toml")
    assert from_toml and from_toml == mail_config.load_accounts(tmp_path / "mail.yaml")


def test_an_empty_yaml_file_has_no_accounts(tmp_path) -> None:
    path = tmp_path / "mail.yaml"
    path.write_text("# nothing yet\n")
    assert mail_config.load_accounts(path) == ()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"password": "x"}, "never kept in the config file"),
        ({"tls": "plain", "host": "imap.example.com"}, "only for 127.0.0.1"),
        ({"colour": "red"}, "unknown key"),
        ({"rule": [{"after": "move"}]}, "move_to is missing"),
        ({"rule": [{"process": "everything"}]}, "process must be one of"),
        ({"password_file": "/x"}, "exactly one of"),
        ({"name": "../etc"}, "may hold only"),
    ],
)
def test_a_bad_config_says_which_account_and_key(change, message) -> None:
    account = {"name": "a", "host": "127.0.0.1", "user": "u", "password_env": "P", **change}
    with pytest.raises(MailConfigError, match=message):
        parse_accounts({"account": [account]})


def test_account_names_are_unique() -> None:
    one = {"name": "a", "host": "h", "user": "u", "password_env": "P"}
    with pytest.raises(MailConfigError, match="unique"):
        parse_accounts({"account": [one, dict(one)]})


# -- rules, attachments, exactly once ------------------------------------------------------------


@WAYS
def test_rules_select_the_right_mails_and_every_mail_is_recorded(server, account_for, settings, whole_below) -> None:
    pdfish = ("invoice.txt", b"Invoice 42: 100 EUR\n", "text/plain")
    server.append(
        [
            mail("Invoice March", sender="billing@shop.example", attachments=(pdfish,)),
            mail("Invoice April", sender="billing@shop.example"),  # no attachment: rule 1 does not take it
            mail("Weekly report", body="numbers"),
            mail("Lunch?"),
            mail("Scan", to="Scans <scans@example.org>", attachments=(("scan.txt", b"scanned", "text/plain"),)),
            mail(
                "Old invoice", sender="billing@shop.example", attachments=(pdfish,), date="Mon, 01 Jan 2018 00:00 +0000"
            ),
        ]
    )
    account = account_for(
        server,
        rules=[
            {"name": "bills", "from": "BILLING@", "subject": "invoice", "has_attachment": True, "since": "2020-01-01"},
            {"name": "reports", "subject": "report", "process": "eml"},
            {"name": "scans", "to": "SCANS@", "process": "both"},
        ],
    )
    sent = Sent()
    run = fetch_account(account, settings, sent, max_mails=50, whole_below=whole_below)
    assert run.error is None and run.seen == 6 and run.submitted == 4
    got = {r.subject: (r.rule, r.outcome, r.documents) for r in records(settings)}
    assert got == {
        "Invoice March": ("bills", "submitted", 1),
        "Invoice April": (None, "no_rule", 0),
        "Weekly report": ("reports", "submitted", 1),
        "Lunch?": (None, "no_rule", 0),
        "Scan": ("scans", "submitted", 2),
        "Old invoice": (None, "no_rule", 0),
    }
    assert sorted(sent.names) == ["invoice.txt", "mail.eml", "mail.eml", "scan.txt"]
    origin = next(o for p, o, _ in sent.calls if p.endswith("invoice.txt"))
    assert origin["source"] == "mail" and origin["from"] == "billing@shop.example"
    assert origin["subject"] == "Invoice March" and origin["attachment"] == "invoice.txt"
    assert origin["date"] == "2026-03-03T09:00:00Z" and origin["message_id"].startswith("<Invoice-March")
    assert origin["folder"] == "INBOX" and origin["account"] == "test" and origin["rule"] == "bills"
    for path, _, _ in sent.calls:
        assert Path(path).is_relative_to(settings.inbox_dir / "mail" / "test")
        assert Path(path).stat().st_mode & 0o077 == 0
    # a second run (and a restart: nothing is kept in memory) takes nothing
    again = Sent()
    assert fetch_account(account, settings, again, max_mails=50, whole_below=whole_below).seen == 0
    assert again.calls == []
    assert server.uids(criteria="UNSEEN") == server.uids()  # reading never marked a mail read


@WAYS
def test_supported_attachments_are_submitted_and_the_others_recorded_as_skipped(
    server, account_for, settings, whole_below
) -> None:
    attachments = (
        ("notes.txt", b"plain notes", "text/plain"),
        ("table.csv", b"a,b\n1,2\n", "text/csv"),
        ("data.json", b'{"a": 1}', "application/json"),
        ("page.html", b"<html><body>hi</body></html>", "text/html"),
        ("setup.exe", b"MZ\x90\x00", "application/octet-stream"),
        ("../../etc/passwd", b"root:x:0:0", "text/plain"),
        (".hidden.md", b"# title", "text/markdown"),
    )
    server.append([mail("many kinds", attachments=attachments), mail("no attachment at all")])
    sent = Sent()
    run = fetch_account(account_for(server), settings, sent, max_mails=10, whole_below=whole_below)
    assert (run.seen, run.submitted, run.skipped) == (2, 6, 1)
    assert sorted(sent.names) == ["data.json", "hidden.md", "notes.txt", "page.html", "passwd.txt", "table.csv"]
    first, second = records(settings)
    assert [p["skipped"] for p in first.parts if "skipped" in p] == ["unsupported type .exe"]
    assert (second.outcome, second.documents) == ("no_document", 0) and second.detail.endswith("no attachment")
    assert ("read part by part" in second.detail) == (whole_below == 0)
    assert len({task_id for _, _, task_id in sent.calls}) == 6
    assert fetch_account(account_for(server), settings, Sent(), max_mails=10, whole_below=whole_below).seen == 0


@WAYS
def test_attachment_names_in_rfc2047_and_rfc2231_are_decoded(server, account_for, settings, whole_below) -> None:
    raw = (
        b"From: a@b\r\nSubject: names\r\nMessage-ID: <names@test>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="x"\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nbody\r\n'
        b"--x\r\nContent-Type: application/octet-stream\r\n"
        b'Content-Disposition: attachment; filename="=?UTF-8?B?w5xiZXJ3ZWlzdW5nLnR4dA==?="\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\nb25l\r\n"
        b"--x\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Disposition: attachment; filename*=UTF-8''%C3%9Cbersicht.txt\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\nzw=C3=B6lf=\r\n und mehr\r\n--x--\r\n"
    )
    server.append([raw])
    sent = Sent()
    run = fetch_account(account_for(server), settings, sent, max_mails=10, whole_below=whole_below)
    assert run.error is None and sorted(sent.names) == ["Übersicht.txt", "Überweisung.txt"]
    contents = {Path(p).name[4:]: Path(p).read_bytes() for p, _, _ in sent.calls}
    assert contents == {"Überweisung.txt": b"one", "Übersicht.txt": "zwölf und mehr".encode()}


@pytest.mark.slow
def test_a_thousand_mails_are_taken_in_capped_runs_each_once(server, account_for, settings) -> None:
    total = 1000
    started = time.monotonic()
    server.append(mail(f"mail {i}", message_id=f"<m{i}@test>") for i in range(total))  # one connection
    appended_s = time.monotonic() - started
    account = account_for(server, rules=[{"process": "eml"}])
    sent = Sent()
    before = len(server.sessions())  # the APPEND session
    runs = [fetch_account(account, settings, sent, max_mails=300) for _ in range(5)]
    sessions = server.wait_sessions(before + 5)[before:]
    assert [r.seen for r in runs] == [300, 300, 300, 100, 0]
    assert [r.more for r in runs] == [True, True, True, False, False]
    recorded = records(settings)
    assert sorted(r.uid for r in recorded) == server.uids() and len(recorded) == total
    assert len({r.message_id for r in recorded}) == total and len(sent.calls) == total
    assert len({task_id for _, _, task_id in sent.calls}) == total
    # the server's own count: each mail's body was sent once, and the last run asked for none
    assert [s["body_count"] for s in sessions] == [300, 300, 300, 100, 0]
    print(f"1,000 mails appended in {appended_s:.1f} s; runs took {[r.duration_s for r in runs]} s")


def test_a_mail_without_attachments_is_never_fetched_again(server, account_for, settings) -> None:
    server.append([mail("only text"), mail("with one", attachments=(("a.txt", b"a", "text/plain"),))])
    account = account_for(server)
    before = len(server.sessions())
    first = fetch_account(account, settings, Sent(), max_mails=10)
    assert (first.seen, first.submitted) == (2, 1) and records(settings)[0].outcome == "no_document"
    # the next runs, and a restart (nothing is kept in memory): not a header, not a body read again
    assert [fetch_account(account, settings, Sent(), max_mails=10).seen for _ in range(2)] == [0, 0]
    sessions = server.wait_sessions(before + 3)[before:]
    assert [(s["hdr_count"], s["body_count"]) for s in sessions] == [(2, 2), (0, 0), (0, 0)]


def test_a_changed_uidvalidity_is_resynced_by_message_id_without_doubles(server, account_for, settings) -> None:
    server.append([mail("one", attachments=(("a.txt", b"a", "text/plain"),)), mail("two")])
    account = account_for(server)
    first = Sent()
    assert fetch_account(account, settings, first, max_mails=10).seen == 2
    before = {r.uidvalidity for r in records(settings)}
    # the server forgets its UIDs (a restore, a migration): Dovecot gives the folder a new UIDVALIDITY
    server.stop()
    time.sleep(1.1)  # UIDVALIDITY is a time in seconds
    maildir = server.root / "mail" / "alice"
    for leftover in [*maildir.glob("dovecot*")]:
        leftover.unlink() if leftover.is_file() else shutil.rmtree(leftover)
    server.start()
    server.append([mail("three", attachments=(("c.txt", b"c", "text/plain"),))])
    again = Sent()
    run = fetch_account(account, settings, again, max_mails=10)
    assert run.error is None and run.seen == 3
    rows = records(settings)
    assert {r.uidvalidity for r in rows} - before, "the server did not change UIDVALIDITY"
    new = [r for r in rows if r.uidvalidity not in before]
    assert sorted((r.subject, r.outcome) for r in new) == [
        ("one", "duplicate"),
        ("three", "submitted"),
        ("two", "duplicate"),
    ]
    assert again.names == ["c.txt"]


def test_after_actions_mark_read_flag_and_move(server, account_for, settings) -> None:
    server.append([mail("read me"), mail("flag me"), mail("move me"), mail("leave me")])
    account = account_for(
        server,
        rules=[
            {"subject": "read", "process": "eml", "after": "read"},
            {"subject": "flag", "process": "eml", "after": "flag"},
            {"subject": "move", "process": "eml", "after": "move", "move_to": "Done"},
            {"process": "eml"},
        ],
    )
    assert fetch_account(account, settings, Sent(), max_mails=10).seen == 4
    assert server.uids(criteria="SEEN") == [1]
    assert server.uids(criteria="FLAGGED") == [2]
    assert server.uids() == [1, 2, 4]
    assert len(server.uids("Done")) == 1


@pytest.mark.parametrize(
    ("name", "wire"),
    [
        ("Rechnungen/Überweisungen", "Rechnungen/&ANw-berweisungen"),
        ("Αρχείο", "&A5EDwQPHA7UDrwO,-"),
        ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),  # RFC 3501's own example
        ("Tom & Jerry", "Tom &- Jerry"),
        ("INBOX", "INBOX"),
        ("😀", "&2D3eAA-"),  # outside the BMP: a UTF-16 surrogate pair
    ],
)
def test_folder_names_in_modified_utf7(name, wire) -> None:
    assert imap.encode_folder(name) == wire
    assert imap.decode_folder(wire) == name
    assert imap.decode_folder("&broken") == "&broken" and imap.decode_folder("&A-") == "&A-"


def test_folders_with_non_ascii_names_are_fetched_and_moved_to(server, account_for, settings) -> None:
    folders = ["Rechnungen/Überweisungen", "Αρχείο", "Rechnungen_Überweisungen"]
    for i, folder in enumerate(folders):
        attachment = ((f"f{i}.txt", f"file {i}".encode(), "text/plain"),)
        server.append([mail(f"in {folder}", attachments=attachment, message_id=f"<folder{i}@test>")], folder)
    raw = server.connect()
    try:
        _typ, listed = raw.list()
    finally:
        raw.logout()
    assert any(line.endswith(b" Rechnungen/&ANw-berweisungen") for line in listed)  # kept in modified UTF-7
    account = account_for(server, rules=[{"after": "move", "move_to": "Erledigt/Größe"}], folders=["INBOX", *folders])
    sent = Sent()
    run = fetch_account(account, settings, sent, max_mails=10)
    assert run.error is None and (run.seen, run.submitted) == (3, 3)
    assert sorted(r.folder for r in records(settings)) == sorted(folders)
    assert sorted(o["folder"] for _, o, _ in sent.calls) == sorted(folders)
    paths = [Path(p) for p, _, _ in sent.calls]
    assert len({p.parent.parent for p in paths}) == 3  # a working folder each, however alike the names
    assert any("Überweisungen" in p.parent.parent.name for p in paths)
    assert len(server.uids("Erledigt/Größe")) == 3 and all(server.uids(f) == [] for f in folders)
    assert fetch_account(account, settings, Sent(), max_mails=10).seen == 0
    missing = account_for(server, folders=["Archiv"])
    error = fetch_account(missing, settings, Sent(), max_mails=10).error
    assert "folder 'Archiv' cannot be opened" in error and "Αρχείο" in error and "Erledigt/Größe" in error


@WAYS
def test_too_large_malformed_and_deeply_nested_mails_end_with_a_clear_record(
    server, account_for, settings_for, whole_below
) -> None:
    settings = settings_for(MIDAS_MAX_FILE_MB="1")
    big = mail("big", attachments=(("big.txt", b"x" * (2 * 1024 * 1024), "text/plain"),))
    malformed, nested = malformed_mail(), nested_mail(50)
    attached = tuple((f"file{i}.txt", f"attachment {i}".encode(), "text/plain") for i in range(500))
    server.append([big, malformed, nested, mail("five hundred", attachments=attached), mail("after them")])
    sent = Sent()
    run = fetch_account(
        account_for(server, rules=[{"process": "attachments"}]), settings, sent, max_mails=10, whole_below=whole_below
    )
    assert run.error is None and run.seen == 5
    got = {r.subject: r for r in records(settings)}
    assert got["big"].outcome == "too_large" and "over the size limit" in got["big"].detail
    (skipped,) = got["big"].parts
    assert skipped["name"] == "001-big.txt" and "over the limit of 1,048,576" in skipped["skipped"]
    assert ("not downloaded" in skipped["skipped"]) == (whole_below == 0)  # by parts: judged from its size alone
    assert got["broken"].outcome == "submitted" and got["broken"].parts[0]["name"] == "001-part.txt"
    if whole_below:  # only a mail read whole shows Python's parser's defects; Dovecot reads the structure its way
        assert "malformed MIME" in got["broken"].detail
    assert got["level 50"].outcome == "submitted" and got["level 50"].documents == 1
    assert got["level 50"].parts[0]["name"] == "001-level49.eml"
    assert got["five hundred"].documents == 500
    assert got["after them"].outcome == "no_document"
    assert len(sent.calls) == 502


@pytest.mark.parametrize("encoding", ["base64", "quoted-printable", "7bit"])
def test_parts_decode_piece_by_piece_as_the_email_package_does_whole(encoding) -> None:
    rng = random.Random(16)
    data = bytes(rng.randrange(256) for _ in range(20_000)) + "Grüße = 100 %\r\n".encode() * 50
    if encoding == "7bit":
        data = b"plain ascii line\r\n" * 500
    msg = EmailMessage()
    msg.set_content(data, maintype="application", subtype="octet-stream", cte=encoding if encoding != "7bit" else None)
    if encoding == "7bit":
        msg.replace_header("Content-Transfer-Encoding", "7bit")
    stored = msg.get_payload().encode("ascii")
    expected = msg.get_payload(decode=True)
    assert expected == data
    for _ in range(20):  # cut anywhere: inside a base64 group, between "=" and its hex digits, inside CRLF
        cuts = sorted(rng.sample(range(1, len(stored)), 12))
        pieces = [stored[a:b] for a, b in zip([0, *cuts], [*cuts, len(stored)], strict=True)]
        assert b"".join(parts.decode(iter(pieces), encoding)) == expected
    assert b"".join(parts.decode([b"YWJj", b"ZA"], "base64")) == b"abcd"  # padding lost with a truncated part


def test_a_bodystructure_becomes_a_tree_with_imap_section_numbers() -> None:
    line = (
        b'1 (UID 7 BODYSTRUCTURE ((("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 12 1 NIL NIL NIL NIL)'
        b'("text" "html" ("charset" "utf-8") NIL NIL "quoted-printable" 40 2 NIL NIL NIL NIL) "alternative" '
        b'("boundary" "b2") NIL NIL NIL)("application" "pdf" ("name" "a b.pdf") NIL NIL "base64" 400 NIL '
        b'("attachment" ("filename" "a b.pdf")) NIL NIL)("message" "rfc822" NIL NIL NIL "7bit" 300 '
        b'(NIL "inner" NIL NIL NIL NIL NIL NIL NIL NIL) ("text" "plain" NIL NIL NIL "7bit" 5 1 NIL NIL NIL NIL) '
        b'8 NIL NIL NIL NIL) "mixed" ("boundary" "b1") NIL NIL NIL))'
    )
    root = parts.tree(imap.structure_of(imap.parse_response([line])))
    assert root.content_type == "multipart/mixed" and [c.number for c in root.children] == ["1", "2", "3"]
    assert [c.number for c in root.children[0].children] == ["1.1", "1.2"]
    leaves, cut = parts.leaves(root, 10)
    assert [(s.number, s.content_type, s.encoding, s.size) for s in leaves] == [
        ("1.1", "text/plain", "7bit", 12),
        ("1.2", "text/html", "quoted-printable", 40),
        ("2", "application/pdf", "base64", 400),
        ("3", "message/rfc822", "7bit", 300),  # an attached mail is one part: what is inside is not listed
    ]
    assert not cut and parts.leaves(root, 2) == (leaves[:2], True)
    assert parts.decoded_size(leaves[2]) == 300
    single = parts.tree(["text", "plain", None, None, None, "7bit", 10, 1])
    assert single.number == "1" and parts.leaves(single, 10) == ([], False)  # a mail's only body is no attachment
    literal = [(b'1 (UID 7 BODYSTRUCTURE ("application" "pdf" ("name" {5}', b"x.pdf"), b') NIL NIL "base64" 9 NIL))']
    assert parts.tree(imap.structure_of(imap.parse_response(literal))).content_type == "application/pdf"


@pytest.mark.slow
def test_a_60_mb_attachment_is_skipped_unread_over_the_limit_and_streamed_under_it(
    server, account_for, settings_for
) -> None:
    payload = os.urandom(60 * 1024 * 1024)
    attachments = (("big.bin.txt", payload, "text/plain"), ("small.txt", b"small one", "text/plain"))
    server.append([mail("sixty", attachments=attachments), mail("after", attachments=(("a.txt", b"a", "text/plain"),))])

    # over MIDAS_MAX_FILE_MB: recorded as skipped from the size the server gives, never downloaded
    limited = settings_for(MIDAS_MAX_FILE_MB="50")
    sent = Sent()
    before = len(server.sessions())
    run = fetch_account(account_for(server), limited, sent, max_mails=10)
    assert run.error is None and (run.seen, run.submitted, run.skipped) == (2, 2, 1)
    assert server.wait_sessions(before + 1)[-1]["out"] < 1024 * 1024  # of a mail of 80 MB as stored
    sixty = next(r for r in mail_messages.messages(limited.database_url_resolved, "test") if r.subject == "sixty")
    big, small = sixty.parts
    assert big["name"] == "001-big.bin.txt" and "over the limit of 52,428,800" in big["skipped"]
    assert "not downloaded" in big["skipped"] and small["name"] == "002-small.txt"
    assert sorted(sent.names) == ["a.txt", "small.txt"]

    # under the limit: streamed to its working file in pieces, never whole in memory
    settings = settings_for()
    sent = Sent()
    tracemalloc.start()
    try:
        run = fetch_account(account_for(server, name="whole"), settings, sent, max_mails=10)
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert run.error is None and (run.seen, run.submitted) == (2, 3)
    path = next(Path(p) for p, _, _ in sent.calls if p.endswith("big.bin.txt"))
    assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(payload).digest()
    # read whole, the mail alone (80 MB as stored) would be more than the whole attachment; pieces of 4 MB are far less
    assert peak < len(payload) // 2, f"peak {peak:,} bytes while taking a 60 MB attachment"
    print(f"peak traced memory while taking a 60 MB attachment: {peak / 2**20:.1f} MB")
    (sixty,) = [r for r in mail_messages.messages(settings.database_url_resolved, "whole") if r.subject == "sixty"]
    assert sixty.parts[0]["bytes"] == len(payload) and "read part by part" in sixty.detail


def test_the_server_stopped_mid_fetch_loses_nothing_and_doubles_nothing(server, account_for, settings) -> None:
    server.append(mail(f"m{i}", attachments=((f"f{i}.txt", f"file {i}".encode(), "text/plain"),)) for i in range(20))
    account = account_for(server)
    sent = Sent()
    sent.hook = lambda n: server.kill() if n == 7 else None
    run = fetch_account(account, settings, sent, max_mails=100)
    assert run.error and "connection lost" in run.error
    assert run.seen == 7 and len(records(settings)) == 7
    server.start()
    sent.hook = None
    run = fetch_account(account, settings, sent, max_mails=100)
    assert run.error is None and run.seen == 13
    rows = records(settings)
    assert sorted(r.uid for r in rows) == list(range(1, 21))
    assert sorted(sent.names) == sorted(f"f{i}.txt" for i in range(20))
    assert len({task_id for _, _, task_id in sent.calls}) == 20


def test_the_server_stopped_while_a_large_part_streams_leaves_no_half_file(server, account_for, settings) -> None:
    payload = os.urandom(10 * 1024 * 1024)  # three pieces of 4 MB as stored
    server.append([mail("large", attachments=(("large.txt", payload, "text/plain"),)), mail("small")])
    pieces: list[str] = []

    def connect(account):
        """A real connection whose server is killed when the second piece of the large part is asked for."""
        client = imap.connect(account)
        real = client.uid

        def uid(command, *args):
            if command == "FETCH" and "BODY.PEEK[2]<" in args[-1]:
                pieces.append(args[-1])
                if len(pieces) == 2:
                    server.kill()
            return real(command, *args)

        client.uid = uid
        return client

    sent = Sent()
    run = fetch_account(account_for(server), settings, sent, max_mails=10, connect=connect, whole_below=0)
    assert run.error.startswith(f"127.0.0.1:{server.port}: connection lost while reading UID 1 at byte 4,194,304 (")
    assert sent.calls == [] and records(settings) == []
    mail_dir = settings.inbox_dir / "mail" / "test"
    assert [p.name for p in mail_dir.rglob("*") if p.is_file()] == []  # the half-written piece is gone
    server.start()
    run = fetch_account(account_for(server), settings, sent, max_mails=10, whole_below=0)
    assert run.error is None and run.seen == 2 and sent.names == ["large.txt"]
    assert Path(sent.calls[0][0]).read_bytes() == payload


@WAYS
def test_a_working_folder_that_cannot_be_written_is_a_clear_error(server, account_for, settings, whole_below) -> None:
    server.append([mail("one", attachments=(("a.txt", b"a", "text/plain"),))])
    blocker = settings.inbox_dir / "mail" / "test"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("a file where the account's folder goes")
    sent = Sent()
    run = fetch_account(account_for(server), settings, sent, max_mails=10, whole_below=whole_below)
    assert run.error.startswith(f"the working file {blocker}/INBOX/") and "cannot be written" in run.error
    assert "connection" not in run.error and sent.calls == [] and records(settings) == []
    blocker.unlink()
    assert fetch_account(account_for(server), settings, sent, max_mails=10, whole_below=whole_below).submitted == 1


def test_a_wrong_password_is_a_clear_error_once_not_a_storm(
    server, account_for, settings, tmp_path, caplog, monkeypatch
) -> None:
    server.append([mail("waiting")])
    account = account_for(server)
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password")
    bad = parse_accounts(
        {"account": [{"name": "test", "host": "127.0.0.1", "port": server.port, "tls": "plain", "user": "alice",
                      "password_file": str(wrong)}]}
    )[0]  # fmt: skip
    with caplog.at_level("INFO", logger="background_tasks.sources.mail.fetch"):
        first = fetch_account(bad, settings, Sent(), max_mails=10)
        second = fetch_account(bad, settings, Sent(), max_mails=10)
    assert first.error == f"127.0.0.1:{server.port}: authentication failed for user alice"
    assert "not-the-password" not in caplog.text
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and second.error == first.error
    config = tmp_path / "mail.toml"
    config.write_text(
        f'[[account]]\nname = "test"\nhost = "127.0.0.1"\nport = {server.port}\ntls = "plain"\n'
        f'user = "alice"\npassword_file = "{wrong}"\n'
    )
    (row,) = statuses(settings.replace(mail_config=config))
    assert row.kind == "mail" and "authentication failed" in row.error and row.seen == 0
    (warning,) = source_errors(settings.replace(mail_config=config))  # the health check's warning
    assert warning.startswith("mail source test (alice@127.0.0.1") and "authentication failed" in warning
    monkeypatch.setattr(cli, "settings_or_exit", lambda: settings.replace(mail_config=config))
    out = io.StringIO()
    assert cli.main(["sources", "status"], out=out) == 1
    head, error_line = out.getvalue().splitlines()
    assert head.startswith(f"mail  test (alice@127.0.0.1:{server.port})  last run 20") and "seen 0  submitted 0" in head
    assert error_line.strip().startswith(f"error: 127.0.0.1:{server.port}: authentication failed for user alice (since")
    # the password is put right: the next run takes the mail and the error is gone
    assert fetch_account(account, settings, Sent(), max_mails=10).seen == 1
    (row,) = statuses(settings.replace(mail_config=config))
    assert row.error is None and row.seen == 1 and row.last_run_at is not None
    assert source_errors(settings.replace(mail_config=config)) == ()
    out = io.StringIO()
    assert cli.main(["sources", "status"], out=out) == 0
    assert "seen 1  submitted 0  failed 0" in out.getvalue() and "error" not in out.getvalue()


def test_an_unexpected_error_mid_run_is_recorded_and_the_mail_taken_next_run(server, account_for, settings) -> None:
    server.append([mail(f"m{i}", attachments=((f"f{i}.txt", b"x", "text/plain"),)) for i in range(3)])
    sent = Sent()

    def bug(count: int) -> None:  # the broker away is a TransientError (mail_tasks._submit): see test_mail_failures
        if count == 2:
            raise RuntimeError("something unexpected")

    sent.hook = bug
    run = fetch_account(account_for(server), settings, sent, max_mails=10)
    assert run.error == (
        "the run stopped after 1 mail(s): RuntimeError: something unexpected "
        "(UID 2 in INBOX: attempt 1 of 3; then it is recorded as failed and skipped)"
    )
    assert [r.subject for r in records(settings)] == ["m0"]  # m1 was not recorded: its submission failed
    sent.hook = None
    assert fetch_account(account_for(server), settings, sent, max_mails=10).seen == 2
    assert sent.names == ["f0.txt", "f1.txt", "f1.txt", "f2.txt"]  # m1 again, with the same task id
    assert sent.calls[1][2] == sent.calls[2][2]


@pytest.fixture
def oauth2_server():
    """Dovecot that also takes XOAUTH2, checking each token at a local introspection endpoint."""
    tokens = TokenServer({"token-1": "alice"})
    srv = ImapServer(oauth2_url=tokens.url).start()
    yield srv, tokens
    srv.close()
    tokens.close()


def test_oauth2_tokens_from_a_file_and_a_command_are_checked_by_the_server(
    oauth2_server, settings, tmp_path, caplog
) -> None:
    srv, tokens = oauth2_server
    srv.append([mail("one", attachments=(("a.txt", b"a", "text/plain"),)), mail("two")])
    token_file = tmp_path / "token"
    token_file.write_text("token-1\n")
    base = {"host": "127.0.0.1", "port": srv.port, "tls": "plain", "user": "alice"}
    script = tmp_path / "get-token.py"
    script.write_text(f"print(open({str(token_file)!r}).read().strip())\n")
    from_file, from_command = parse_accounts(
        {
            "account": [
                {"name": "test", "oauth2_token_file": str(token_file), **base},
                {"name": "cmd", "oauth2_token_command": f"{sys.executable} {script}", **base},
            ]
        }
    )
    with caplog.at_level("DEBUG"):
        run = fetch_account(from_file, settings, Sent(), max_mails=10)
        assert run.error is None and (run.seen, run.submitted) == (2, 1)
        assert tokens.asked == ["token-1"]  # Dovecot asked the endpoint: the token really was checked
        assert fetch_account(from_command, settings, Sent(), max_mails=10).seen == 2
        # the token is read again every run: a refreshed one is used, an expired one is refused clearly
        tokens.tokens = {"token-2": "alice"}
        refused = fetch_account(from_command, settings, Sent(), max_mails=10)
        token_file.write_text("token-2\n")
        srv.append([mail("three")])
        assert fetch_account(from_command, settings, Sent(), max_mails=10).seen == 1
    assert refused.error == (
        f"127.0.0.1:{srv.port}: authentication failed for user alice "
        "(the server refused the OAuth2 token: status 401, scope mail)"
    )
    assert tokens.asked == ["token-1", "token-1", "token-1", "token-2"]
    assert "token-1" not in caplog.text and "token-2" not in caplog.text
    assert "Login: user=<alice>, method=XOAUTH2" in srv.log_tail(20000)


def test_an_oauth2_token_command_that_fails_is_a_clear_error(oauth2_server, settings) -> None:
    srv, tokens = oauth2_server
    account = parse_accounts(
        {
            "account": [
                {
                    "name": "test",
                    "host": "127.0.0.1",
                    "port": srv.port,
                    "tls": "plain",
                    "user": "alice",
                    "oauth2_token_command": f"{sys.executable} -c 'import sys; sys.exit(3)'",
                }
            ]
        }
    )[0]
    assert fetch_account(account, settings, Sent(), max_mails=10).error == (
        "oauth2_token_command exited with 3 and no token"
    )
    assert tokens.asked == []


def test_xoauth2_is_the_user_and_bearer_token_between_ctrl_a() -> None:
    assert imap.xoauth2("me@example.com", "ya29.x") == b"user=me@example.com\x01auth=Bearer ya29.x\x01\x01"


def test_a_password_with_letters_beyond_ascii_logs_in(settings, tmp_path) -> None:
    srv = ImapServer(users={"joerg": "Pässwört-ß"}).start()
    try:
        srv.append([mail("grüße", attachments=(("ä.txt", b"x", "text/plain"),))], user="joerg")
        secret = tmp_path / "pw"
        secret.write_text("Pässwört-ß", encoding="utf-8")
        account = parse_accounts(
            {"account": [{"name": "test", "host": "127.0.0.1", "port": srv.port, "tls": "plain", "user": "joerg",
                          "password_file": str(secret)}]}
        )[0]  # fmt: skip
        run = fetch_account(account, settings, Sent(), max_mails=10)
    finally:
        srv.close()
    assert run.error is None and (run.seen, run.submitted) == (1, 1)


def test_an_unreachable_server_is_a_clear_error(account_for, settings) -> None:
    srv = ImapServer()
    try:
        run = fetch_account(account_for(srv), settings, Sent(), max_mails=10)
    finally:
        srv.close()
    assert run.error.startswith(f"127.0.0.1:{srv.port} cannot be reached")


def test_implicit_tls_with_the_servers_certificate(account_for, settings) -> None:
    srv = ImapServer(tls=True).start()
    try:
        srv.append([mail("over tls", attachments=(("t.txt", b"tls", "text/plain"),))])
        account = account_for(srv, tls="implicit", port=srv.tls_port, ca_file=str(srv.cert_path))
        sent = Sent()
        assert fetch_account(account, settings, sent, max_mails=10).submitted == 1
        untrusted = account_for(srv, tls="implicit", port=srv.tls_port)
        assert "not trusted" in fetch_account(untrusted, settings, Sent(), max_mails=10).error
        starttls = account_for(srv, tls="starttls", port=srv.port, ca_file=str(srv.cert_path))
        assert fetch_account(starttls, settings, Sent(), max_mails=10).error is None
    finally:
        srv.close()
