"""Bearer tokens: kept only as SHA-256 digests, compared in constant time, asked of every request but ``/health``.

``MIDAS_API_TOKENS`` holds the hex digests of the tokens (``midas api hash-token`` makes a
token and prints its digest), so the settings, ``.env`` and the environment of every
service never hold a token itself. A request's token is hashed and compared with every
digest by ``hmac.compare_digest``: the time taken says nothing about how much of it was
right. A token is random (32 bytes, URL-safe), so a fast hash is the right one: there is
nothing to guess.

``TokenGate`` is plain ASGI in front of the whole app, so it answers before routing and
before a byte of the body is read: an unknown path, a wrong method and an upload all get
the same 401 without a token. ``/health`` says the verdict to anyone (and its reasons to
a token holder); the OpenAPI schema and its page (``/docs``) describe the API and hold no
data, so a browser can show them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from typing import Any

from background_tasks.api.errors import error_response

#: paths answered without a token
PUBLIC_PATHS = frozenset({"/health", "/docs", "/docs/oauth2-redirect", "/openapi.json"})
#: the shortest token ``hash-token`` accepts from a person (the generated ones are 43 characters)
MIN_TOKEN_CHARS = 24
#: ``scope["state"]`` key telling the routes that the request carried a valid token
TOKEN_OK = "midas_token_ok"


def digest(token: str) -> str:
    """The SHA-256 hex digest ``MIDAS_API_TOKENS`` holds for ``token``."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh random token (256 bits)."""
    return secrets.token_urlsafe(32)


def check_new_token(token: str) -> str:
    """A token a person chose, stripped; ValueError when it is too short or has spaces or control characters."""
    token = token.strip()
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"a token needs at least {MIN_TOKEN_CHARS} characters (without one, a random one is made)")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in token):
        raise ValueError("a token cannot contain spaces or control characters")
    return token


def token_matches(presented: str, digests: Iterable[str]) -> bool:
    """Whether ``presented`` hashes to one of ``digests``; every digest is compared, in constant time each."""
    wanted = digest(presented).encode("ascii")
    found = False
    for known in digests:
        found |= hmac.compare_digest(wanted, known.encode("ascii"))
    return found


def bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None


class TokenGate:
    """ASGI middleware: a request without a valid bearer token gets a JSON 401 (``/health`` and the docs pass)."""

    def __init__(self, app: Any, digests: tuple[str, ...]) -> None:
        self.app = app
        self.digests = tuple(digests)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope.get("headers") or ())
        valid = token is not None and bool(self.digests) and token_matches(token, self.digests)
        scope.setdefault("state", {})[TOKEN_OK] = valid
        if valid or scope.get("path") in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        if not self.digests:
            message = "no API token is configured: set MIDAS_API_TOKENS (midas api hash-token makes one)"
        elif token is None:
            message = "this endpoint needs a token: send 'Authorization: Bearer <token>'"
        else:
            message = "the token is not valid"
        response = error_response(401, "unauthorized", message, {"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)


def token_was_valid(state: Any) -> bool:
    """Whether ``TokenGate`` found the request's token valid (for the public routes that say more to holders)."""
    return bool(getattr(state, TOKEN_OK, False))
