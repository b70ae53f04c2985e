"""A large mail taken part by part: never held in memory, parts over the limit never downloaded.

BODYSTRUCTURE gives the mail's tree and each part's size; the MIME headers of its leaf parts
say which are attachments and what they are called (judged by ``message.is_attachment``, the
same rule as for a mail read whole). A part over the file limit is skipped from its size alone;
the others are fetched in ``CHUNK_BYTES`` pieces and decoded (base64, quoted-printable) on their
way to disk, so memory stays at a few chunks however large the mail.
"""

from __future__ import annotations

import binascii
import email
import email.policy
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from email.message import Message

from background_tasks.sources.mail import message
from background_tasks.sources.mail.message import Part

#: a part is fetched in pieces of this size (one round trip each)
CHUNK_BYTES = 4 * 1024 * 1024
#: MIME headers asked for in one round trip
HEADERS_BATCH = 200
#: deeper multipart nesting than this is not followed (Dovecot itself stops at 100)
MAX_DEPTH = 100
#: every byte that is not in the base64 alphabet (deleted before decoding, as a2b_base64 skips them)
_NOT_BASE64 = bytes(sorted(set(range(256)) - set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")))

#: ``fetch(section)`` yields the raw (encoded) bytes of one section in pieces
FetchChunks = Callable[[str], Iterator[bytes]]


@dataclass(frozen=True)
class Section:
    """One node of a mail's tree as BODYSTRUCTURE describes it."""

    number: str  # the IMAP section: "1", "2.3" ("" for the whole mail)
    content_type: str  # lower case, "multipart/mixed" for a multipart
    encoding: str  # Content-Transfer-Encoding, lower case
    size: int  # octets as stored (encoded)
    children: tuple[Section, ...] = ()

    @property
    def multipart(self) -> bool:
        return self.content_type.startswith("multipart/")


def tree(structure: list[object]) -> Section:
    """The mail's tree from a parsed BODYSTRUCTURE; ``ValueError`` when it is not one."""
    return _node(structure, "", 0)


def _node(body: object, number: str, depth: int) -> Section:
    if depth > MAX_DEPTH:
        raise ValueError(f"MIME parts nested more than {MAX_DEPTH} deep")
    if not isinstance(body, list) or not body:
        raise ValueError("BODYSTRUCTURE is not a list")
    if isinstance(body[0], list):  # multipart: (part)(part)... "subtype" extensions
        count = next((i for i, b in enumerate(body) if not isinstance(b, list)), len(body))
        subtype = body[count] if count < len(body) and isinstance(body[count], str) else "mixed"
        prefix = f"{number}." if number else ""
        parts = tuple(_node(body[i], f"{prefix}{i + 1}", depth + 1) for i in range(count))
        return Section(number, f"multipart/{subtype.lower()}", "7bit", sum(p.size for p in parts), parts)
    if len(body) < 7:
        raise ValueError("BODYSTRUCTURE part has fewer than 7 fields")
    kind, subtype, encoding, size = body[0], body[1], body[5], body[6]
    content_type = f"{kind or 'text'}/{subtype or 'plain'}".lower()
    return Section(number or "1", content_type, str(encoding or "7bit").lower(), _int(size))


def _int(value: object) -> int:
    try:
        return max(int(str(value)), 0)
    except ValueError:
        return 0


def leaves(root: Section, limit: int) -> tuple[list[Section], bool]:
    """The parts that may be attachments, in the mail's order: leaves and attached mails (not what is
    inside them), never the mail's own single body. At most ``limit``; the flag says more were left out."""
    if not root.multipart:
        return [], False
    found: list[Section] = []
    stack = list(reversed(root.children))
    while stack:
        section = stack.pop()
        if section.multipart:
            stack.extend(reversed(section.children))
            continue
        if len(found) == limit:
            return found, True
        found.append(section)
    return found, False


def headers_message(block: bytes, section: Section) -> Message:
    """A part's MIME headers as a ``Message`` (what ``message.is_attachment`` and ``message.filename`` read);
    the type comes from BODYSTRUCTURE when the headers name none."""
    part = email.message_from_bytes(block, policy=email.policy.compat32)
    if part.get("Content-Type") is None:
        part["Content-Type"] = section.content_type
    return part


def attachments(pairs: Iterable[tuple[Section, Message]]) -> list[tuple[Section, Message]]:
    """The attachments among the leaves: attached mails, and parts with a file name or disposition."""
    return [(section, part) for section, part in pairs if message.is_attachment(part)]


def plan(
    index: int,
    section: Section,
    part: Message,
    max_bytes: int,
    fetch: FetchChunks,
) -> Part:
    """What becomes of one attachment of a large mail: skipped (type, size) or a file streamed from the server."""
    name, unsupported = message.attachment_name(part, index)
    if unsupported:
        return Part(name, None, unsupported)
    decoded = decoded_size(section)
    if decoded > max_bytes:
        return message.too_large(name, decoded, max_bytes, unread=True)
    encoding = section.encoding
    return Part(name, None, chunks=lambda: decode(fetch(section.number), encoding))


def decoded_size(section: Section) -> int:
    """The file's size from the stored size: base64 is 4 characters for 3 bytes (line breaks make it less)."""
    return section.size * 3 // 4 if section.encoding == "base64" else section.size


def decode(raw: Iterable[bytes], encoding: str) -> Iterator[bytes]:
    """Decode a Content-Transfer-Encoding piece by piece (what ``get_payload(decode=True)`` does whole)."""
    if encoding == "base64":
        yield from _base64(raw)
    elif encoding == "quoted-printable":
        yield from _quoted_printable(raw)
    else:  # 7bit, 8bit, binary, and names no one knows: the bytes as stored
        yield from raw


def _base64(raw: Iterable[bytes]) -> Iterator[bytes]:
    rest = b""
    for chunk in raw:
        end = chunk.find(b"=")
        data = (chunk if end < 0 else chunk[:end]).translate(None, _NOT_BASE64)  # line breaks and junk go
        if rest:
            data = rest + data
        if end >= 0:  # the padding ends the data: what follows is ignored (as a2b_base64 does), and not downloaded
            rest = data
            break
        cut = len(data) - len(data) % 4
        view = memoryview(data)
        if cut:
            yield binascii.a2b_base64(view[:cut])
        rest = bytes(view[cut:])
    if rest:
        yield _b64_end(rest)


def _b64_end(data: bytes) -> bytes:
    """The last characters, whose padding may be missing (a truncated part): whole groups, then what a
    group of 2 or 3 holds (a single character holds no byte)."""
    whole = len(data) - len(data) % 4
    out = binascii.a2b_base64(data[:whole]) if whole else b""
    tail = data[whole:]
    if len(tail) >= 2:
        out += binascii.a2b_base64(tail + b"=" * (4 - len(tail)))
    return out


def _quoted_printable(raw: Iterable[bytes]) -> Iterator[bytes]:
    rest = b""
    for chunk in raw:
        data = rest + chunk
        cut = data.rfind(b"\n") + 1  # whole lines only: a soft break or an =XX escape is never split
        if not cut and len(data) > 2 * CHUNK_BYTES:  # no line break at all: keep only a possible escape back
            cut = len(data) - 2
        data, rest = data[:cut], data[cut:]
        if data:
            yield binascii.a2b_qp(data)
    if rest:
        yield binascii.a2b_qp(rest)
