"""IMAP as plain functions over ``imaplib``: connect, log in, select, list new UIDs, fetch, flag, move.

Everything goes by UID (sequence numbers shift when another client expunges). Bodies are
fetched with ``BODY.PEEK`` so reading never marks a mail read; only an after-action does.
Failures become plain errors a person can act on, rooted in ``errors``: ``MailAuthFailed``
(permanent), ``MailRefused`` (the server said NO: permanent) and ``MailUnreachable`` (transient);
no password or token is ever in a message.
"""

from __future__ import annotations

import base64
import imaplib
import json
import logging
import re
import socket
import ssl
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from background_tasks.errors import MailAuthFailed, MailConfigError, MailRefused, MailUnreachable
from background_tasks.sources.mail.config import Account

log = logging.getLogger(__name__)

#: a connection or a command that hangs longer than this is a server problem, not a slow mail
TIMEOUT_S = 60.0
_FETCH_ITEM = re.compile(rb"\bUID (\d+)")
_SIZE_ITEM = re.compile(rb"\bRFC822\.SIZE (\d+)")
_MIME_ITEM = re.compile(rb"BODY\[([0-9.]+)\.MIME\] \{\d+\}$")
#: one token of a response: a parenthesis, a quoted string or an atom
_TOKEN = re.compile(rb'[()]|"(?:[^"\\]|\\.)*"|[^\s()"]+')
_LITERAL_MARK = re.compile(rb"\{\d+\+?\}\s*$")
_UNQUOTE = re.compile(rb"\\(.)")
#: a modified UTF-7 run in a folder name: "&" base64 "-"
_MUTF7_RUN = re.compile(r"&([A-Za-z0-9+,]*)-")
#: the name at the end of a LIST line: a quoted string or an atom
_LIST_NAME = re.compile(r'(?:"((?:[^"\\]|\\.)*)"|([^\s"]+))\s*$')


#: what a lost connection looks like from imaplib (raised mid-command)
CONNECTION_ERRORS = (OSError, imaplib.IMAP4.abort, EOFError, socket.timeout, ssl.SSLError)


@dataclass(frozen=True)
class Header:
    """A new mail as listed before its body is fetched."""

    uid: int
    size: int
    header: bytes


def connect(account: Account, timeout: float = TIMEOUT_S) -> imaplib.IMAP4:
    """A logged-in connection to the account's server."""
    where = f"{account.host}:{account.port}"
    try:
        if account.tls == "implicit":
            client: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                account.host, account.port, ssl_context=_context(account), timeout=timeout
            )
        else:
            client = imaplib.IMAP4(account.host, account.port, timeout=timeout)
            if account.tls == "starttls":
                client.starttls(ssl_context=_context(account))
    except ssl.SSLCertVerificationError as exc:
        raise MailUnreachable(f"{where}: the server's TLS certificate is not trusted ({exc.verify_message})") from None
    except (*CONNECTION_ERRORS, imaplib.IMAP4.error) as exc:
        raise MailUnreachable(f"{where} cannot be reached: {_reason(exc)}") from None
    try:
        secret = account.secret.read()
    except MailConfigError:
        _close(client)
        raise
    refusal: list[bytes] = []
    try:
        if account.secret.oauth2:
            client.authenticate("XOAUTH2", _sasl(xoauth2(account.user, secret), refusal))
        elif (account.user + secret).isascii():
            client.login(account.user, secret)
        else:  # LOGIN's quoted strings are ASCII only; SASL PLAIN carries UTF-8 (RFC 4616)
            client.authenticate("PLAIN", _sasl(f"\0{account.user}\0{secret}".encode(), refusal))
    except CONNECTION_ERRORS as exc:
        raise MailUnreachable(f"{where} dropped the connection while logging in: {_reason(exc)}") from None
    except imaplib.IMAP4.error:
        _close(client)
        why = f" (the server refused the OAuth2 token: {_oauth2_refusal(refusal)})" if account.secret.oauth2 else ""
        raise MailAuthFailed(f"{where}: authentication failed for user {account.user}{why}") from None
    return client


def xoauth2(user: str, token: str) -> bytes:
    """The SASL XOAUTH2 initial response (Google's and Microsoft's format): user, bearer token, two ^A."""
    return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()


def _sasl(response: bytes, refusal: list[bytes]) -> Callable[[bytes], bytes]:
    """An ``imaplib`` authenticator: the response to the first (empty) challenge; a later challenge is the
    server's reason for refusing (XOAUTH2 sends JSON), kept in ``refusal`` and answered with an empty line."""

    def answer(challenge: bytes) -> bytes:
        if challenge:
            refusal.append(challenge)
            return b""
        return response

    return answer


def _oauth2_refusal(refusal: list[bytes]) -> str:
    """What the server said about a refused token (status, scope), never the token itself."""
    try:
        said = json.loads(refusal[-1])
    except (IndexError, ValueError):
        return "no reason given"
    if not isinstance(said, dict):
        return "no reason given"
    return ", ".join(f"{key} {str(said[key])[:40]}" for key in ("status", "scope") if key in said) or "no reason given"


def _context(account: Account) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(account.ca_file) if account.ca_file else None)


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text[:300]


def _close(client: imaplib.IMAP4) -> None:
    try:
        client.logout()
    except (*CONNECTION_ERRORS, imaplib.IMAP4.error):
        pass


def close(client: imaplib.IMAP4) -> None:
    """Log out; a connection already gone is fine."""
    _close(client)


def encode_folder(name: str) -> str:
    """A folder name in IMAP's modified UTF-7 (RFC 3501 5.1.3): what servers expect for "Überweisungen".

    Printable ASCII stands for itself ("&" as "&-"); every run of other characters is UTF-16BE in
    base64 with "," for "/" and no padding, between "&" and "-".
    """
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            packed = base64.b64encode("".join(pending).encode("utf-16-be")).rstrip(b"=").replace(b"/", b",")
            out.append(f"&{packed.decode('ascii')}-")
            pending.clear()

    for char in name:
        if " " <= char <= "~":
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


def decode_folder(name: str) -> str:
    """A folder name as the server lists it (modified UTF-7) in plain text; a name that is not valid stays as sent."""

    def one(match: re.Match[str]) -> str:
        packed = match.group(1)
        if not packed:
            return "&"
        raw = base64.b64decode(packed.replace(",", "/") + "=" * (-len(packed) % 4), validate=True)
        return raw.decode("utf-16-be")

    try:
        return _MUTF7_RUN.sub(one, name)
    except (ValueError, UnicodeDecodeError):
        return name


def quoted(folder: str) -> str:
    """A folder name as an IMAP quoted string in modified UTF-7 (names may hold spaces and any letters)."""
    return '"' + encode_folder(folder).replace("\\", "\\\\").replace('"', '\\"') + '"'


def folders(client: imaplib.IMAP4) -> list[str]:
    """Every folder of the account, decoded (for a message that helps put a folder name right)."""
    typ, data = client.list()
    if typ != "OK":
        return []
    names: list[str] = []
    for item in data:
        line = b"".join(x for x in item if isinstance(x, bytes)) if isinstance(item, tuple) else item
        if not isinstance(line, bytes):
            continue
        found = _LIST_NAME.search(line.decode("utf-8", "replace"))
        if found:
            raw = found.group(1) if found.group(1) is not None else found.group(2)
            names.append(decode_folder(raw.replace('\\"', '"').replace("\\\\", "\\")))
    return names


def select(client: imaplib.IMAP4, folder: str) -> int:
    """Open ``folder`` for reading and changing flags; returns its UIDVALIDITY."""
    typ, data = client.select(quoted(folder))
    if typ != "OK":
        known = ", ".join(folders(client)[:50]) or "none listed"
        raise MailRefused(f"folder {folder!r} cannot be opened: {_text(data)} (the account's folders: {known})")
    _typ, validity = client.response("UIDVALIDITY")
    if not validity or validity[0] is None:
        raise MailRefused(f"folder {folder!r}: the server sent no UIDVALIDITY")
    return int(validity[-1])


def new_uids(client: imaplib.IMAP4, after_uid: int) -> list[int]:
    """UIDs above ``after_uid``, ascending (``n:*`` names the last mail even when its UID is lower)."""
    typ, data = client.uid("SEARCH", None, f"UID {after_uid + 1}:*")
    if typ != "OK":
        raise MailRefused(f"UID SEARCH failed: {_text(data)}")
    return sorted(u for u in (int(x) for x in (data[0] or b"").split()) if u > after_uid)


def headers(client: imaplib.IMAP4, uids: Sequence[int]) -> dict[int, Header]:
    """Size and header block of each of ``uids`` (a mail expunged meanwhile is simply missing)."""
    if not uids:
        return {}
    typ, data = client.uid("FETCH", ",".join(map(str, uids)), "(UID RFC822.SIZE BODY.PEEK[HEADER])")
    if typ != "OK":
        raise MailRefused(f"FETCH of headers failed: {_text(data)}")
    found: dict[int, Header] = {}
    for item in data:
        if not isinstance(item, tuple):
            continue
        uid, size = _FETCH_ITEM.search(item[0]), _SIZE_ITEM.search(item[0])
        if uid:
            found[int(uid.group(1))] = Header(int(uid.group(1)), int(size.group(1)) if size else 0, item[1] or b"")
    return found


def body(client: imaplib.IMAP4, uid: int) -> bytes | None:
    """The whole mail as the server keeps it; None when it was expunged meanwhile."""
    typ, data = client.uid("FETCH", str(uid), "(UID BODY.PEEK[])")
    if typ != "OK":
        raise MailRefused(f"FETCH of UID {uid} failed: {_text(data)}")
    for item in data:
        if isinstance(item, tuple) and _FETCH_ITEM.search(item[0]):
            return item[1]
    return None


def structure(client: imaplib.IMAP4, uid: int) -> list[object] | None:
    """The mail's BODYSTRUCTURE as nested lists (strings, None for NIL); None when it was expunged meanwhile."""
    typ, data = client.uid("FETCH", str(uid), "(UID BODYSTRUCTURE)")
    if typ != "OK":
        raise MailRefused(f"FETCH of the structure of UID {uid} failed: {_text(data)}")
    return structure_of(parse_response(data))


def structure_of(response: list[object]) -> list[object] | None:
    """The BODYSTRUCTURE list in a parsed FETCH response (``* n FETCH (UID u BODYSTRUCTURE (...))``)."""
    for item in response:
        if isinstance(item, list) and "BODYSTRUCTURE" in item:
            found = item[item.index("BODYSTRUCTURE") + 1 :]
            if found and isinstance(found[0], list):
                return found[0]
    return None


def mime_headers(client: imaplib.IMAP4, uid: int, sections: Sequence[str]) -> dict[str, bytes]:
    """The MIME headers of each of ``sections`` of one mail (a few hundred per round trip)."""
    if not sections:
        return {}
    items = " ".join(f"BODY.PEEK[{section}.MIME]" for section in sections)
    typ, data = client.uid("FETCH", str(uid), f"(UID {items})")
    if typ != "OK":
        raise MailRefused(f"FETCH of part headers of UID {uid} failed: {_text(data)}")
    found: dict[str, bytes] = {}
    for item in data:
        if isinstance(item, tuple) and (match := _MIME_ITEM.search(item[0])):
            found[match.group(1).decode("ascii")] = item[1] or b""
    return found


def chunks(client: imaplib.IMAP4, uid: int, section: str, size: int) -> Iterator[bytes]:
    """One section of a mail ("" for all of it) as stored, ``size`` bytes per round trip, never whole in memory."""
    offset = 0
    while True:
        try:
            typ, data = client.uid("FETCH", str(uid), f"(UID BODY.PEEK[{section}]<{offset}.{size}>)")
        except CONNECTION_ERRORS as exc:  # told apart from the disk the pieces go to (an OSError too)
            where = f"{getattr(client, 'host', '?')}:{getattr(client, 'port', '?')}"
            raise MailUnreachable(
                f"{where}: connection lost while reading UID {uid} at byte {offset:,} ({type(exc).__name__})"
            ) from None
        if typ != "OK":
            raise MailRefused(f"FETCH of UID {uid} part {section or 'all'} failed: {_text(data)}")
        piece = _literal(data)
        if piece is None:
            raise MailRefused(f"UID {uid} was expunged while it was read")
        if piece:
            yield piece
        if len(piece) < size:
            return
        offset += len(piece)


def _literal(data: Sequence[object]) -> bytes | None:
    """The one body section a FETCH answered: its bytes, empty when past the end, None when nothing came."""
    for item in data:
        if isinstance(item, tuple) and b"BODY[" in item[0]:
            return item[1] or b""
        if isinstance(item, bytes) and b"BODY[" in item:
            return b""  # "" or NIL: nothing (more) in this section
    return None


def parse_response(data: Sequence[object]) -> list[object]:
    """An IMAP response as ``imaplib`` hands it over (lines, and (line, literal) pairs) as nested lists:
    parenthesised lists become lists, NIL None, quoted strings, atoms and literals str."""
    tokens: list[object] = []
    for item in data:
        if isinstance(item, tuple):
            head, literal = item[0], item[1]
            tokens.extend(_TOKEN.findall(_LITERAL_MARK.sub(b"", head)))
            tokens.append(_Literal((literal or b"").decode("utf-8", "replace")))
        elif isinstance(item, bytes):
            tokens.extend(_TOKEN.findall(item))
    stack: list[list[object]] = [[]]
    for token in tokens:
        if isinstance(token, _Literal):
            stack[-1].append(str(token))
        elif token == b"(":
            stack.append([])
        elif token == b")":
            if len(stack) > 1:
                done = stack.pop()
                stack[-1].append(done)
        elif token.startswith(b'"'):
            stack[-1].append(_UNQUOTE.sub(rb"\1", token[1:-1]).decode("utf-8", "replace"))
        else:
            stack[-1].append(None if token.upper() == b"NIL" else token.decode("utf-8", "replace"))
    while len(stack) > 1:  # an unclosed list: keep what came
        done = stack.pop()
        stack[-1].append(done)
    return stack[0]


class _Literal(str):
    """A literal's text, kept apart from the tokens around it."""


def after_action(client: imaplib.IMAP4, uids: Iterable[int], action: str, move_to: str | None = None) -> None:
    """What a rule asks to do on the server once the mail was taken: mark read, flag, or move."""
    ids = ",".join(map(str, uids))
    if not ids or action == "none":
        return
    if action in ("read", "flag"):
        typ, data = client.uid("STORE", ids, "+FLAGS.SILENT", r"(\Seen)" if action == "read" else r"(\Flagged)")
    elif action == "move" and move_to:
        typ, data = client.uid("MOVE", ids, quoted(move_to))
        if typ != "OK" and "TRYCREATE" in _text(data).upper():
            client.create(quoted(move_to))
            typ, data = client.uid("MOVE", ids, quoted(move_to))
    else:
        raise MailConfigError(f"unknown after-action {action!r}")
    if typ != "OK":
        raise MailRefused(f"{action} of UID {ids} failed: {_text(data)}")


def _text(data: object) -> str:
    if isinstance(data, list | tuple):
        return " ".join(_text(d) for d in data if d is not None)
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")[:300]
    return str(data)[:300]
