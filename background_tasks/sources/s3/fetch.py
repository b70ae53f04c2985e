"""An object streamed into a working copy: its head first, then its bytes, hashed on the way.

The size limit is checked from the head before any byte is read. The bytes are read with
the head's ETag as a condition (or the named version), so an object replaced between the
head and the read is read again later instead of being mixed up with what the head said.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from background_tasks.errors import FileTooLarge, MidasError
from background_tasks.processing.copying import copy_hashed
from background_tasks.settings import Settings
from background_tasks.sources.s3.client import as_midas_error, s3_client
from background_tasks.sources.s3.uri import S3Location


@dataclass(frozen=True)
class FetchedObject:
    """A copy of one object: where it is, its hash and size, and what S3 said of it."""

    path: Path
    sha256: str
    size: int
    etag: str
    version_id: str | None
    last_modified: datetime

    def facts(self, location: S3Location) -> dict[str, Any]:
        """What the document's metadata records of its origin (no credentials, no endpoint)."""
        facts: dict[str, Any] = {"source_uri": location.uri, "s3_etag": self.etag}
        if self.version_id:
            facts["s3_version_id"] = self.version_id
        return facts


def _request(location: S3Location) -> dict[str, str]:
    params = {"Bucket": location.bucket, "Key": location.key}
    if location.version_id:
        params["VersionId"] = location.version_id
    return params


def head(location: S3Location, settings: Settings) -> dict[str, Any]:
    """The object's head (size, ETag, version, last modified), or the MIDAS error saying why not."""
    try:
        return s3_client(settings).head_object(**_request(location))
    except Exception as exc:
        raise as_midas_error(exc, location.uri) from None


def fetch(location: S3Location, settings: Settings, folder: Path, max_bytes: int) -> FetchedObject:
    """Stream the object into ``folder`` under its safe name; at most ``max_bytes`` are accepted."""
    info = head(location, settings)
    size = int(info.get("ContentLength") or 0)
    if size > max_bytes:
        raise FileTooLarge(
            f"{location.uri} is {size / 1024 / 1024:.1f} MB; the limit is {max_bytes / 1024 / 1024:g} MB "
            "(MIDAS_MAX_FILE_MB); not read"
        )
    etag = str(info.get("ETag") or "").strip('"')
    request = _request(location)
    if not location.version_id and etag:
        request["IfMatch"] = f'"{etag}"'
    target = folder / location.file_name
    try:
        body = s3_client(settings).get_object(**request)["Body"]
        try:
            with target.open("xb") as out:
                sha256, read = copy_hashed(body, out, max_bytes, location.uri)
        finally:
            body.close()
    except MidasError:
        raise
    except OSError as exc:
        if exc.filename:  # our own working folder: the task's storage fault, not the object's
            raise
        raise as_midas_error(exc, location.uri) from None
    except Exception as exc:
        raise as_midas_error(exc, location.uri) from None
    return FetchedObject(target, sha256, read, etag, info.get("VersionId"), info["LastModified"])
