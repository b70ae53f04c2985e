"""The boto3 client of a process, and what its errors mean to MIDAS.

Credentials come only from boto3's standard chain (environment, shared profile, instance
role): MIDAS never reads, prints, logs or stores them. An error is classified once here:
a missing bucket or key is refused (``ObjectNotFound``), credentials the server refuses are
failed for good with the server's reason (``AccessDenied``, never retried), and a server
that cannot be reached or answers 5xx is ``StorageUnavailable``: the content is fine and
the store is MIDAS's storage, so the task base class retries it with backoff for as long as
it lasts and nothing an S3 source submitted is lost to an outage.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from background_tasks.errors import (
    AccessDenied,
    InvalidArgument,
    MidasError,
    ObjectNotFound,
    PermanentError,
    StorageUnavailable,
    TransientError,
)
from background_tasks.settings import Settings

log = logging.getLogger(__name__)

#: Error codes meaning the bucket or the object is not there.
_NOT_FOUND = {"404", "NoSuchBucket", "NoSuchKey", "NoSuchVersion", "NotFound"}
#: Error codes meaning the credentials (or their permissions) are refused.
_DENIED = {
    "403",
    "AccessDenied",
    "AllAccessDisabled",
    "ExpiredToken",
    "InvalidAccessKeyId",
    "InvalidToken",
    "SignatureDoesNotMatch",
    "InvalidSecurity",
    "TokenRefreshRequired",
}
#: Codes of a request S3 will not serve as asked (a bad name or argument).
_INVALID = {"InvalidBucketName", "InvalidArgument", "KeyTooLongError", "InvalidObjectName"}


@lru_cache(maxsize=4)
def _client(endpoint_url: str | None, region: str | None, path_style: bool) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        s3={"addressing_style": "path" if path_style else "auto"},
        # Few quick attempts: a server that stays away is the task's to retry, with backoff and a ledger.
        retries={"max_attempts": 2, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, region_name=region, config=config)


@lru_cache(maxsize=2)
def local_client(endpoint_url: str, region: str, identities: str) -> Any:
    """A client of the local server (MIDAS_S3_LOCAL), signing with its generated identity."""
    import boto3
    from botocore.config import Config

    from background_tasks.sources.s3.local_server import read_credentials

    access_key, secret_key = read_credentials(identities)
    config = Config(
        s3={"addressing_style": "path"},
        retries={"max_attempts": 2, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
    )
    session = boto3.session.Session(aws_access_key_id=access_key, aws_secret_access_key=secret_key)
    return session.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)


def s3_client(settings: Settings) -> Any:
    """One client per process and endpoint (boto3 clients are thread-safe; sessions are not shared).

    With MIDAS_S3_LOCAL and no MIDAS_S3_ENDPOINT_URL, the local server with its own credentials."""
    if settings.s3_local_endpoint:
        from background_tasks.sources.s3.local_server import LOCAL_REGION, ensure_credentials

        identities = ensure_credentials(settings)
        return local_client(settings.s3_local_endpoint, settings.s3_region or LOCAL_REGION, str(identities))
    return _client(settings.s3_endpoint_url, settings.s3_region, settings.s3_path_style)


def error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    code = response.get("Error", {}).get("Code")
    return str(code) if code is not None else str(response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


def as_midas_error(exc: BaseException, label: str) -> MidasError:
    """The MIDAS error for a boto3/botocore exception about ``label`` (an s3:// URI): always permanent
    or transient (a 5xx, a throttle, a transport error), never the bare root."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError
    from urllib3.exceptions import HTTPError as TransportError

    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return AccessDenied(
            f"{label}: no S3 credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE "
            "or an instance role)"
        )
    if isinstance(exc, ClientError):
        code = error_code(exc) or "unknown"
        message = exc.response.get("Error", {}).get("Message") or code
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        if code in _NOT_FOUND:
            what = "bucket" if code == "NoSuchBucket" else "object"
            return ObjectNotFound(f"{label}: no such {what} ({code}: {message})")
        if code in _DENIED:
            return AccessDenied(f"{label}: the S3 server refused the credentials or their rights ({code}: {message})")
        if code in _INVALID:
            return InvalidArgument(f"{label}: {code}: {message}")
        if code == "PreconditionFailed":
            return TransientError(f"{label}: the object changed while it was read; read again")
        if status >= 500 or code in {"SlowDown", "RequestTimeout", "ServiceUnavailable", "InternalError"}:
            return StorageUnavailable(f"{label}: the S3 server is unavailable ({code}: {message})")
        return PermanentError(f"{label}: S3 error {code}: {message}")  # any other 4xx: the same request fails again
    if isinstance(exc, BotoCoreError | TransportError | OSError):
        return StorageUnavailable(f"{label}: the S3 server cannot be reached ({type(exc).__name__}: {exc})")
    return PermanentError(f"{label}: {type(exc).__name__}: {exc}")
