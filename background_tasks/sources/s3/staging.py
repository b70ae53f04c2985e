"""Content staging for several hosts: a local file uploaded once to MIDAS_OBJECT_STORE, sent as its s3:// URI.

The object's key is ``<prefix>/<sha256>/<file name>``: content the store already has is never
uploaded again (a new name of known content is copied inside the store), and a worker on any
host reads the file by its URI while the document keeps its own name. A file over
MIDAS_MAX_FILE_MB is not uploaded: its local path is sent, and the worker rejects it unread.
The staged copies are MIDAS's own: deleting a document removes its content's folder
(``remove_staged``); nothing outside ``<prefix>/<sha256>/`` is ever deleted.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from background_tasks.errors import MidasError
from background_tasks.settings import Settings
from background_tasks.sources.s3.client import as_midas_error, error_code, s3_client
from background_tasks.sources.s3.uri import S3Location, parse_prefix

log = logging.getLogger(__name__)

HASH_BUFFER = 1024 * 1024


@dataclass(frozen=True)
class Staged:
    """Where a local file went: its URI (or its own path when not staged), and whether bytes were uploaded."""

    target: str
    uploaded: bool
    sha256: str | None = None


def _sha256(handle) -> str:
    digest = hashlib.sha256()
    while chunk := handle.read(HASH_BUFFER):
        digest.update(chunk)
    return digest.hexdigest()


def _exists(client, bucket: str, key: str) -> bool:
    try:
        client.head_object(Bucket=bucket, Key=key)
        return True
    except Exception as exc:
        if error_code(exc) in {"404", "NoSuchKey", "NotFound"}:
            return False
        raise


def _known_copy(client, bucket: str, folder: str) -> str | None:
    """A key under ``folder`` (the content's own folder) if the store has the content under any name."""
    listing = client.list_objects_v2(Bucket=bucket, Prefix=folder, MaxKeys=1)
    contents = listing.get("Contents") or []
    return contents[0]["Key"] if contents else None


def _content_folder(settings: Settings, sha256: str) -> tuple[str, str]:
    """(bucket, key prefix) of the folder MIDAS_OBJECT_STORE keeps one content in."""
    store = parse_prefix(settings.object_store or "")
    return store.bucket, "/".join(part for part in (store.key.strip("/"), sha256) if part) + "/"


def _staged_keys(settings: Settings, sha256: str) -> tuple[str, list[str]]:
    bucket, folder = _content_folder(settings, sha256)
    try:
        listing = s3_client(settings).list_objects_v2(Bucket=bucket, Prefix=folder, MaxKeys=1000)
    except Exception as exc:
        raise as_midas_error(exc, f"s3://{bucket}/{folder}") from None
    return bucket, [item["Key"] for item in listing.get("Contents") or []]


def staged_copies(settings: Settings, sha256: str) -> list[str]:
    """The s3:// URIs of the copies of ``sha256`` staged in MIDAS_OBJECT_STORE (none when it is not set)."""
    if not settings.object_store:
        return []
    bucket, keys = _staged_keys(settings, sha256)
    return [S3Location(bucket, key).uri for key in keys]


def is_staged_copy(settings: Settings, uri: str, sha256: str) -> bool:
    """Whether ``uri`` is a copy of ``sha256`` that MIDAS staged (and so MIDAS's own to remove)."""
    if not settings.object_store or not isinstance(uri, str) or not sha256:
        return False
    bucket, folder = _content_folder(settings, sha256)
    prefix = S3Location(bucket, folder).uri
    return uri.startswith(prefix) and "/" not in uri[len(prefix) :]


def remove_staged(settings: Settings, sha256: str) -> list[str]:
    """Delete the staged copies of ``sha256`` from MIDAS_OBJECT_STORE; returns their URIs (MidasError on S3 errors)."""
    if not settings.object_store:
        return []
    bucket, keys = _staged_keys(settings, sha256)
    removed = []
    for key in keys:
        uri = S3Location(bucket, key).uri
        try:
            s3_client(settings).delete_object(Bucket=bucket, Key=key)
        except Exception as exc:
            raise as_midas_error(exc, uri) from None
        removed.append(uri)
    if removed:
        log.info("removed %d staged copies of %s from the object store", len(removed), sha256[:12])
    return removed


def stage(path: str | os.PathLike[str], settings: Settings) -> Staged:
    """Upload ``path`` to MIDAS_OBJECT_STORE under its SHA-256 unless the store has it (MidasError on S3 errors)."""
    if not settings.object_store:
        return Staged(str(Path(path).resolve()), uploaded=False)
    local = Path(path).resolve()
    store = parse_prefix(settings.object_store)
    with local.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > settings.max_file_bytes:
            return Staged(str(local), uploaded=False)
        sha256 = _sha256(handle)
        folder = "/".join(part for part in (store.key.strip("/"), sha256) if part) + "/"
        location = S3Location(store.bucket, folder + S3Location(store.bucket, local.name).file_name)
        client = s3_client(settings)
        try:
            if _exists(client, store.bucket, location.key):
                return Staged(location.uri, uploaded=False, sha256=sha256)
            known = _known_copy(client, store.bucket, folder)
            if known is not None:  # the same content under another name: copied inside the store
                source = {"Bucket": store.bucket, "Key": known}
                client.copy_object(Bucket=store.bucket, Key=location.key, CopySource=source)
                return Staged(location.uri, uploaded=False, sha256=sha256)
            handle.seek(0)
            client.upload_fileobj(handle, store.bucket, location.key, ExtraArgs={"Metadata": {"sha256": sha256}})
        except MidasError:
            raise
        except Exception as exc:
            raise as_midas_error(exc, location.uri) from None
    log.info("staged %s as %s (%d bytes)", local.name, location.uri, size)
    return Staged(location.uri, uploaded=True, sha256=sha256)
