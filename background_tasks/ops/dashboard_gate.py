"""The dashboard's password gate: ASGI middleware in front of every Streamlit route.

Streamlit's page can only guard what the page draws. Its server answers on its
own: the WebSocket ``/_stcore/stream`` (which runs the page for anyone who
connects), ``PUT /_stcore/upload_file/…`` (which holds uploads in memory),
static files, media and health. ``PasswordGate`` wraps Streamlit's whole ASGI
application inside the dashboard process (``background_tasks.dashboard_app``),
so no request and no WebSocket reaches Streamlit before the password was given:

- ``/_midas/login`` shows a sign-in form and, for the right password (compared
  with ``hmac.compare_digest``), sets an HttpOnly, SameSite=Strict cookie that
  holds an expiry signed with HMAC-SHA256 under a key made at process start.
- Every other request needs that cookie: without it, HTTP gets 401 (the
  sign-in form for a page, a short text otherwise) and a WebSocket is refused
  (403) before it is accepted. Nothing of the request, body included, is read.
- A wrong password costs a second, and failed attempts wait their turn, so
  guessing runs at one try a second at most.

A restart of the dashboard makes a new key: everyone signs in again.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import logging
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs, urlencode

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE_NAME = "midas_dashboard"
LOGIN_PATH = "/_midas/login"
SESSION_SECONDS = 12 * 3600
MAX_LOGIN_BODY = 4096
FAILURE_DELAY = 1.0

_gated = False


def guards_this_process() -> bool:
    """True when this process serves Streamlit only behind a PasswordGate, so the page need not ask again."""
    return _gated


def mark_process_gated() -> None:
    """Called by the dashboard server just before it serves Streamlit with a PasswordGate in front."""
    global _gated
    _gated = True


class SessionSigner:
    """Issues and checks session tokens: ``<expiry>.<HMAC-SHA256(key, expiry)>``."""

    def __init__(
        self, key: bytes | None = None, lifetime: float = SESSION_SECONDS, clock: Callable[[], float] = time.time
    ) -> None:
        self._key = key or secrets.token_bytes(32)
        self.lifetime = lifetime
        self._clock = clock

    def _signature(self, expires: str) -> str:
        return hmac.new(self._key, f"midas-dashboard|{expires}".encode(), hashlib.sha256).hexdigest()

    def issue(self) -> str:
        expires = str(int(self._clock() + self.lifetime))
        return f"{expires}.{self._signature(expires)}"

    def valid(self, token: str | None) -> bool:
        if not token or token.count(".") != 1:
            return False
        expires, signature = token.split(".")
        if not expires.isdigit():
            return False
        good = hmac.compare_digest(signature.encode(), self._signature(expires).encode())
        return good and int(expires) > self._clock()


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


def _cookie(scope: Scope, name: str) -> str | None:
    for part in _header(scope, b"cookie").split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip().strip('"')
    return None


def safe_next(target: str) -> str:
    """A local path to return to after signing in; anything else (another site, the login itself) is ``/``."""
    if not target.startswith("/") or target.startswith(("//", "/\\")) or target.startswith(LOGIN_PATH):
        return "/"
    if any(ord(c) < 0x20 or c == "\x7f" for c in target):
        return "/"
    return target


LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>MIDAS monitoring: sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:sans-serif;max-width:24rem;margin:4rem auto;padding:0 1rem}}
input,button{{font-size:1rem;padding:.4rem;margin:.3rem 0;width:100%}}.err{{color:#b00020}}</style>
</head><body><h1>MIDAS monitoring</h1>
<form method="post" action="{action}">
<label for="password">Dashboard password</label>
<input id="password" name="password" type="password" autocomplete="current-password" autofocus required>
<input type="hidden" name="next" value="{next}">
<button type="submit">Sign in</button></form>{error}
</body></html>
"""

SECURITY_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"),
]


class PasswordGate:
    """ASGI middleware: only signed-in browsers reach ``app``; see the module docstring."""

    def __init__(self, app: ASGIApp, password: str, signer: SessionSigner | None = None) -> None:
        if not password:
            raise ValueError("PasswordGate needs a password")
        self.app = app
        self._password = password.encode("utf-8")
        self.signer = signer or SessionSigner()
        self._failures = asyncio.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)  # lifespan: start and stop Streamlit's runtime
            return
        if kind == "http" and scope["path"] == LOGIN_PATH:
            await self._login(scope, receive, send)
            return
        if self.signer.valid(_cookie(scope, COOKIE_NAME)):
            await self.app(scope, receive, send)
            return
        if kind == "websocket":
            # Closing before accepting makes the server answer the handshake with 403.
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["method"] in ("GET", "HEAD"):
            query = scope.get("query_string", b"").decode("latin-1")
            target = scope["path"] + (f"?{query}" if query else "")
            await self._form(send, 401, target)
        else:
            await _respond(send, 401, b"Sign in to the MIDAS dashboard first.\n", b"text/plain; charset=utf-8")

    async def _login(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if method in ("GET", "HEAD"):
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            await self._form(send, 200, (query.get("next") or ["/"])[0])
            return
        if method != "POST":
            allow = [(b"allow", b"GET, POST")]
            await _respond(send, 405, b"Method not allowed.\n", b"text/plain; charset=utf-8", allow)
            return
        body = await _read_body(scope, receive, MAX_LOGIN_BODY)
        if body is None:
            await _respond(send, 413, b"Sign-in form too large.\n", b"text/plain; charset=utf-8")
            return
        form = parse_qs(body.decode("utf-8", errors="replace"))
        entered = (form.get("password") or [""])[0].encode("utf-8")
        target = safe_next((form.get("next") or ["/"])[0])
        if hmac.compare_digest(entered, self._password):
            cookie = (
                f"{COOKIE_NAME}={self.signer.issue()}; Path=/; Max-Age={int(self.signer.lifetime)}; "
                "HttpOnly; SameSite=Strict"
            )
            headers = [(b"location", target.encode("latin-1")), (b"set-cookie", cookie.encode("latin-1"))]
            await _respond(send, 303, b"", b"text/plain; charset=utf-8", headers)
            return
        client = scope.get("client") or ("?", 0)
        log.warning("dashboard sign-in with a wrong password from %s", client[0])
        async with self._failures:  # one failed attempt at a time, each a second long
            await asyncio.sleep(FAILURE_DELAY)
        await self._form(send, 401, target, "Wrong password.")

    async def _form(self, send: Send, status: int, target: str, error: str = "") -> None:
        page = LOGIN_PAGE.format(
            action=LOGIN_PATH,
            next=html.escape(safe_next(target), quote=True),
            error=f'<p class="err" role="alert">{html.escape(error)}</p>' if error else "",
        )
        await _respond(send, status, page.encode("utf-8"), b"text/html; charset=utf-8")


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes | None:
    """The request body, or None when it is (or says it will be) larger than ``limit``."""
    declared = _header(scope, b"content-length")
    if declared and (not declared.isdigit() or int(declared) > limit):
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b""
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _respond(
    send: Send, status: int, body: bytes, content_type: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        *SECURITY_HEADERS,
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def sign_in(base_url: str, password: str, timeout: float = 5.0) -> str:
    """Sign in like a browser; the session cookie as ``name=value`` for a Cookie header.

    For the launcher's readiness check and the system check. Raises PermissionError for a
    wrong password and OSError (URLError) when nothing answers.
    """
    body = urlencode({"password": password, "next": "/"}).encode()
    request = urllib.request.Request(base_url.rstrip("/") + LOGIN_PATH, data=body, method="POST")
    request.add_header("Content-Type", "application/x-www-form-urlencoded")
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=timeout) as response:
            headers = response.headers
    except urllib.error.HTTPError as exc:
        if exc.code != 303:
            raise PermissionError(f"sign-in refused with HTTP {exc.code}") from None
        headers = exc.headers
    for value in headers.get_all("Set-Cookie") or ():
        name_value = value.split(";", 1)[0].strip()
        if name_value.startswith(f"{COOKIE_NAME}="):
            return name_value
    raise PermissionError("sign-in answered without a session cookie")
