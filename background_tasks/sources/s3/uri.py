"""``s3://bucket/key`` and ``s3://bucket/prefix``: parsed once, checked, and turned into a safe file name.

Keys are written as they are (no percent-encoding), as the AWS CLI writes them; a trailing
``?versionId=<id>`` names one version. A key is any UTF-8 text S3 allows except control
characters, which no document name needs and which would reach logs and terminals.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from background_tasks.errors import InvalidArgument

SCHEME = "s3://"
MAX_KEY_BYTES = 1024
#: Longest working-copy file name in bytes (most file systems allow 255).
MAX_NAME_BYTES = 200

#: S3's bucket naming rules: 3-63 of a-z 0-9 . -, starting and ending with a letter or digit.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_VERSION = re.compile(r"\?versionId=([A-Za-z0-9._+=/-]{1,1024})$")
_CONTROL = re.compile("[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class S3Location:
    """One object (``key``) or one prefix (``key`` may be empty, ``version_id`` None) in a bucket."""

    bucket: str
    key: str
    version_id: str | None = None

    @property
    def uri(self) -> str:
        """The canonical text of the location, what the paths table and the results record."""
        text = f"{SCHEME}{self.bucket}/{self.key}"
        return f"{text}?versionId={self.version_id}" if self.version_id else text

    @property
    def file_name(self) -> str:
        """A safe name for the working copy: the key's last part, never ``..``, a separator or too long."""
        name = self.key.rsplit("/", 1)[-1].replace("\\", "_").lstrip(".") or "object"
        if len(name.encode()) > MAX_NAME_BYTES:
            stem, dot, suffix = name.rpartition(".")
            suffix = f".{suffix}" if dot and len(suffix.encode()) <= 16 else ""
            name = (stem if suffix else name).encode()[: MAX_NAME_BYTES - len(suffix.encode())].decode(errors="ignore")
            name += suffix
        return name


def is_s3_uri(value: object) -> bool:
    return isinstance(value, str) and value.startswith(SCHEME)


def check_bucket(bucket: str, text: str) -> str:
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise InvalidArgument(f"{text!r:.200}: {bucket!r:.80} is not a valid S3 bucket name")
    return bucket


def check_key(key: str, text: str, *, prefix: bool = False) -> str:
    if _CONTROL.search(key):
        raise InvalidArgument(f"{text!r:.200}: the key contains control characters")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidArgument(f"{text!r:.200}: the key is longer than S3's {MAX_KEY_BYTES} bytes")
    if not prefix and (not key or key.endswith("/")):
        raise InvalidArgument(f"{text!r:.200}: names a folder, not an object")
    return key


def _split(text: str) -> tuple[str, str]:
    if not is_s3_uri(text):
        raise InvalidArgument(f"{text!r:.200} is not an s3:// URI")
    bucket, _, key = text[len(SCHEME) :].partition("/")
    return check_bucket(bucket, text), key


def parse_object(text: str) -> S3Location:
    """An object's location (``InvalidArgument`` when the URI cannot name one)."""
    bucket, key = _split(text)
    version = _VERSION.search(key)
    if version:
        key = key[: version.start()]
    return S3Location(bucket, check_key(key, text), version.group(1) if version else None)


def parse_prefix(text: str) -> S3Location:
    """A prefix to list (``s3://bucket`` or ``s3://bucket/some/prefix/``)."""
    bucket, key = _split(text.strip())
    return S3Location(bucket, check_key(key, text, prefix=True))
