"""Mails the mail-source tests put into their Dovecot: plain ones, and the awkward ones the issue names.

Each builder returns the bytes an IMAP APPEND sends (CRLF line ends).
"""

from __future__ import annotations

import re
import time
from email.message import EmailMessage


def mail(
    subject: str = "hello",
    sender: str = "someone@example.org",
    to: str = "alice@example.org",
    body: str = "just text",
    attachments: tuple[tuple[str, bytes, str], ...] = (),
    message_id: str | None = None,
    date: str = "Tue, 03 Mar 2026 10:00:00 +0100",
) -> bytes:
    """A well-formed mail; ``attachments`` are (file name, bytes, MIME type), base64 encoded."""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"], msg["Date"] = sender, to, subject, date
    msg["Message-ID"] = message_id or f"<{re.sub('[^A-Za-z0-9]+', '-', subject)}-{time.monotonic_ns()}@test>"
    msg.set_content(body)
    for name, data, mime in attachments:
        main, _, sub = mime.partition("/")
        msg.add_attachment(data, maintype=main, subtype=sub, filename=name)
    return msg.as_bytes()


def malformed_mail(sender: str = "a@b") -> bytes:
    """A multipart whose closing boundary never comes, with an attachment that is not base64."""
    return (
        f"From: {sender}\r\nSubject: broken\r\nMessage-ID: <broken@test>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="never-closed"\r\n\r\n--never-closed\r\n'
        "Content-Type: text/plain\r\nContent-Disposition: attachment; filename=part.txt\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n!!!not base64\r\n"
    ).encode()


def nested_mail(depth: int = 50, sender: str = "n@test") -> bytes:
    """A mail that attaches a mail that attaches a mail ... ``depth`` levels (message/rfc822, never re-encoded);
    the innermost has a text attachment. Level ``depth`` is the outermost, its Subject ``level {depth}``."""
    nested = mail("level 0", sender=sender, attachments=(("inner.txt", b"deepest", "text/plain"),))
    for level in range(1, depth + 1):
        nested = (
            (
                f"From: {sender}\r\nSubject: level {level}\r\nMessage-ID: <n{level}@test>\r\nMIME-Version: 1.0\r\n"
                f'Content-Type: multipart/mixed; boundary="b{level}"\r\n\r\n--b{level}\r\n'
                f"Content-Type: text/plain\r\n\r\nwraps level {level - 1}\r\n--b{level}\r\n"
                "Content-Type: message/rfc822\r\n"
                f'Content-Disposition: attachment; filename="level{level - 1}.eml"\r\n\r\n'
            ).encode()
            + nested
            + f"\r\n--b{level}--\r\n".encode()
        )
    return nested


def deep_multipart(depth: int, subject: str = "too deep", message_id: str = "<deep@test>") -> bytes:
    """Multiparts nested ``depth`` deep around one text attachment: at 1,000 Python's email parser runs
    out of recursion (a mail that cannot be parsed); Dovecot stores it all the same."""
    head = f"From: d@test\r\nSubject: {subject}\r\nMessage-ID: {message_id}\r\nMIME-Version: 1.0\r\n".encode()
    opening = b"".join(
        f'Content-Type: multipart/mixed; boundary="d{i}"\r\n\r\n--d{i}\r\n'.encode() for i in range(depth)
    )
    inner = b"Content-Type: text/plain\r\nContent-Disposition: attachment; filename=deep.txt\r\n\r\ndeep\r\n"
    closing = b"".join(f"--d{i}--\r\n".encode() for i in reversed(range(depth)))
    return head + opening + inner + closing


def attached_deep_mail(depth: int = 400) -> bytes:
    """A mail whose one attachment is a mail of multiparts ``depth`` deep: the outer mail parses, the
    attached one cannot be written out again (``cannot be decoded: RecursionError``)."""
    inner = deep_multipart(depth, "inside", "<inside@test>")
    return (
        b"From: w@test\r\nSubject: wraps a deep one\r\nMessage-ID: <wraps@test>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="W"\r\n\r\n--W\r\nContent-Type: text/plain\r\n\r\nsee\r\n'
        b'--W\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment; filename="inside.eml"\r\n\r\n'
        + inner
        + b"\r\n--W--\r\n"
    )
