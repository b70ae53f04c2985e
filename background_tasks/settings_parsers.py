"""Parsers of configuration values: each turns the raw string into a typed value or raises
``ValueError`` with a short reason (``settings.load_settings`` adds the variable's name).

Their return annotations are the types of the ``Settings`` attributes they fill
(``settings_vars`` pairs each variable with its parser; tests/test_settings.py holds the two together).
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

QUEUES = ("default", "documents", "analysis", "monitoring")
WORKER_POOLS = ("prefork", "solo", "threads", "eventlet", "gevent")


# --------------------------------------------------------------------------


def text(raw: str) -> str:
    return raw


def opt_text(raw: str) -> str | None:
    return raw or None


def pos_int(raw: str) -> int:
    value = int(raw.strip())
    if value <= 0:
        raise ValueError("must be a positive whole number")
    return value


def nonneg_int(raw: str) -> int:
    value = int(raw.strip())
    if value < 0:
        raise ValueError("must be zero or a positive whole number")
    return value


def opt_pos_int(raw: str) -> int | None:
    return pos_int(raw) if raw.strip() else None


def pos_float(raw: str) -> float:
    value = float(raw.strip())
    if not value > 0:
        raise ValueError("must be a positive number")
    return value


def nonneg_float(raw: str) -> float:
    value = float(raw.strip())
    if value < 0:
        raise ValueError("must be zero or a positive number")
    return value


def port(raw: str) -> int:
    value = int(raw.strip())
    if not 1 <= value <= 65535:
        raise ValueError("must be a port number between 1 and 65535")
    return value


def flag(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("must be true or false")


def path(raw: str) -> Path:
    if not raw.strip():
        raise ValueError("must not be empty")
    path = Path(raw.strip()).expanduser()
    if not path.is_absolute():
        path = PROJECT_ROOT / path
    return path


def opt_path(raw: str) -> Path | None:
    return path(raw) if raw.strip() else None


def path_list(raw: str) -> tuple[Path, ...]:
    parts = [p.strip() for p in raw.replace(";", os.pathsep).split(os.pathsep)]
    return tuple(path(p) for p in parts if p)


def text_list(raw: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in raw.split(",") if p.strip())


def pool(raw: str) -> str | None:
    value = raw.strip().lower()
    if not value:
        return None
    if value not in WORKER_POOLS:
        raise ValueError("must be one of " + ", ".join(WORKER_POOLS))
    return value


def embed_device(raw: str) -> str:
    value = raw.strip().lower() or "cpu"
    if value not in ("cpu", "cuda"):
        raise ValueError("must be cpu or cuda")
    return value


def basic_auth(raw: str) -> str | None:
    if not raw:
        return None
    if ":" not in raw or raw.startswith(":"):
        raise ValueError("must look like user:password")
    return raw


def sha256_list(raw: str) -> tuple[str, ...]:
    """Comma-separated SHA-256 hex digests (of API tokens: the tokens themselves are never stored)."""
    digests = tuple(p.strip().lower() for p in raw.split(",") if p.strip())
    for digest in digests:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError("must be SHA-256 hex digests of the tokens (midas api hash-token), not tokens")
    return digests


def worker_groups(raw: str) -> tuple[tuple[str, ...], ...]:
    """``documents,analysis;default,monitoring`` -> one worker per group."""
    groups = []
    for chunk in raw.split(";"):
        queues = tuple(q.strip() for q in chunk.split(",") if q.strip())
        if not queues:
            continue
        unknown = [q for q in queues if q not in QUEUES]
        if unknown:
            raise ValueError(f"unknown queue {unknown[0]!r} (known: {', '.join(QUEUES)})")
        groups.append(queues)
    return tuple(groups) or (QUEUES,)


def database_url(raw: str) -> str | None:
    if not raw:
        return None
    if "://" not in raw:
        raise ValueError("must be a URL such as postgresql+psycopg://user:pw@host/db")
    return raw


def opt_http_url(raw: str) -> str | None:
    value = raw.strip()
    if value and not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL (empty = AWS)")
    return value or None


def s3_uri(raw: str) -> str:
    value = raw.strip()
    if not value.startswith("s3://") or not value[5:].split("/", 1)[0]:
        raise ValueError("must look like s3://bucket or s3://bucket/prefix")
    return value


def opt_s3_uri(raw: str) -> str | None:
    return s3_uri(raw) if raw.strip() else None


def s3_uri_list(raw: str) -> tuple[str, ...]:
    return tuple(s3_uri(part) for part in text_list(raw))
