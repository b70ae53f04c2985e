"""One rooted exception hierarchy.

``PermanentError`` subclasses describe the document or the request: retrying
cannot help, so they are recorded and never retried. ``TransientError`` is the
single retryable type: the task base class (``task_base.MidasTask``) retries it
with exponential backoff and jitter.
A source's errors (``MailError`` and its kinds) share a family base and are each one of the two:
a refused password or a bad configuration is permanent for the run that met it (recorded, tried
again only at the next interval), a server that cannot be reached is transient.
Each class carries an ``error_type`` (an ``ErrorType``, a ``StrEnum``) that results and the store record.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorType(StrEnum):
    """Every ``error_type`` a result or the store can carry: one per exception class, and a few more."""

    ERROR = "error"
    PERMANENT = "permanent"
    REJECTED = "rejected"
    PATH_NOT_ALLOWED = "path_not_allowed"
    INVALID_ARGUMENT = "invalid_argument"
    INVALID_QUERY = "invalid_query"
    TOO_LARGE = "too_large"
    UNSUPPORTED = "unsupported"
    TYPE_MISMATCH = "type_mismatch"
    EXTRACTION_FAILED = "extraction_failed"
    CORRUPT = "corrupt"
    EMPTY = "empty"
    ENCRYPTED = "encrypted"
    LIMIT_EXCEEDED = "limit_exceeded"
    TIMEOUT = "timeout"
    PARSER_CRASHED = "parser_crashed"
    MISSING_DEPENDENCY = "missing_dependency"
    UNSAFE_RESULT = "unsafe_result"
    REDELIVERY_LIMIT = "redelivery_limit"
    TRANSIENT = "transient"
    STORAGE_UNAVAILABLE = "storage_unavailable"
    FILE_NOT_READY = "file_not_ready"
    #: an operating-system error reading the file (``OSError`` other than the ones above)
    IO_ERROR = "io_error"
    #: no file at a path inside the allowed folders, or text analysis of a document id the store does not have
    NOT_FOUND = "not_found"
    #: text analysis of a document that was not processed successfully
    NOT_PROCESSED = "not_processed"
    #: an object store refused the credentials or their rights (not retried: the same request fails again)
    ACCESS_DENIED = "access_denied"
    #: a document being processed right now cannot be deleted or processed again until it is done
    DOCUMENT_BUSY = "document_busy"
    #: no copy MIDAS keeps and no original file holds a document's content any more
    ORIGINAL_UNAVAILABLE = "original_unavailable"
    #: a document processed again whose file no longer holds the content it was recorded with
    CONTENT_CHANGED = "content_changed"
    #: a mail account cannot be fetched (the family of the four below)
    MAIL_ERROR = "mail_error"
    #: the mail configuration, or the password or token it names, cannot be used
    MAIL_CONFIG = "mail_config"
    #: a mail server refused the user's password or OAuth2 token
    AUTH_FAILED = "auth_failed"
    #: a mail server answered NO or BAD: a folder it will not open, a mail it will not give
    MAIL_REFUSED = "mail_refused"
    #: a mail server cannot be reached, or dropped the connection
    MAIL_UNREACHABLE = "mail_unreachable"


class MidasError(Exception):
    """Root of every error MIDAS raises on purpose."""

    error_type: ErrorType = ErrorType.ERROR

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.__doc__ or self.error_type)

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.error_type


class PermanentError(MidasError):
    """Retrying will not help; record the error and move on."""

    error_type: ErrorType = ErrorType.PERMANENT


class RejectedError(PermanentError):
    """The request is refused before the content is read (policy, not content)."""

    error_type: ErrorType = ErrorType.REJECTED


class PathNotAllowed(RejectedError):
    """The path is outside the allowed roots, or is not a regular file."""

    error_type: ErrorType = ErrorType.PATH_NOT_ALLOWED


class NoSuchFile(RejectedError):
    """Nothing is at the path, inside the allowed folders (outside them the answer is ``PathNotAllowed``)."""

    error_type: ErrorType = ErrorType.NOT_FOUND


class InvalidArgument(RejectedError):
    """The task was given something that is not a usable file path (not a string, a NUL byte, empty)."""

    error_type: ErrorType = ErrorType.INVALID_ARGUMENT


class InvalidQuery(RejectedError):
    """A search query the store will not run (too long, too many words in a phrase)."""

    error_type: ErrorType = ErrorType.INVALID_QUERY


class DocumentNotFound(RejectedError):
    """The store has no document with that id (deleted, or never there)."""

    error_type: ErrorType = ErrorType.NOT_FOUND


class ContentChanged(RejectedError):
    """A document was to be processed again, but its file now holds other content: nothing was changed."""

    error_type: ErrorType = ErrorType.CONTENT_CHANGED


class OriginalUnavailable(PermanentError):
    """Neither a copy MIDAS keeps nor the original file holds the document's content (or it never had any)."""

    error_type: ErrorType = ErrorType.ORIGINAL_UNAVAILABLE


class ObjectNotFound(RejectedError):
    """The bucket or the object an s3:// URI names does not exist."""

    error_type: ErrorType = ErrorType.NOT_FOUND


class AccessDenied(PermanentError):
    """The object store refused the credentials (wrong, expired, missing) or their rights."""

    error_type: ErrorType = ErrorType.ACCESS_DENIED


class FileTooLarge(RejectedError):
    """The file is larger than MIDAS_MAX_FILE_MB."""

    error_type: ErrorType = ErrorType.TOO_LARGE


class UnsupportedFileType(RejectedError):
    """No extractor handles this file type."""

    error_type: ErrorType = ErrorType.UNSUPPORTED


class TypeMismatch(RejectedError):
    """The content contradicts the file extension and cannot be handled as what it is."""

    error_type: ErrorType = ErrorType.TYPE_MISMATCH


class ExtractionError(PermanentError):
    """The content was read but could not be turned into text."""

    error_type: ErrorType = ErrorType.EXTRACTION_FAILED


class CorruptDocument(ExtractionError):
    """The document is corrupt, truncated or malformed."""

    error_type: ErrorType = ErrorType.CORRUPT


class EmptyDocument(ExtractionError):
    """The file has no content at all."""

    error_type: ErrorType = ErrorType.EMPTY


class EncryptedDocument(ExtractionError):
    """The document is encrypted and the empty password did not open it."""

    error_type: ErrorType = ErrorType.ENCRYPTED


class ResourceLimitExceeded(ExtractionError):
    """Decompression bomb, nesting too deep, entity expansion or similar."""

    error_type: ErrorType = ErrorType.LIMIT_EXCEEDED


class ExtractionTimeout(ExtractionError):
    """The parser did not finish within the per-file time limit."""

    error_type: ErrorType = ErrorType.TIMEOUT


class ExtractorCrashed(ExtractionError):
    """The parser process died (for example killed by the OS)."""

    error_type: ErrorType = ErrorType.PARSER_CRASHED


class MissingDependency(PermanentError):
    """An optional library or program needed for this format is not installed."""

    error_type: ErrorType = ErrorType.MISSING_DEPENDENCY


class UnsafeResult(PermanentError):
    """A stored task result is not JSON (for example a pickle); it is refused, never deserialized."""

    error_type: ErrorType = ErrorType.UNSAFE_RESULT


class RedeliveryLimitExceeded(PermanentError):
    """The task's worker process died on it too often; it is failed, not run again."""

    error_type: ErrorType = ErrorType.REDELIVERY_LIMIT


class TransientError(MidasError):
    """Worth retrying later: a locked or still-growing file, a busy database, a broker hiccup."""

    error_type: ErrorType = ErrorType.TRANSIENT


class StorageUnavailable(TransientError):
    """MIDAS's own storage (document store, results database, working folder) cannot be written now.

    Retried with backoff for as long as it lasts, not only MIDAS_MAX_RETRIES times: the
    document is fine, and giving up could not even be recorded while the storage is down.
    """

    error_type: ErrorType = ErrorType.STORAGE_UNAVAILABLE


class DocumentBusy(TransientError):
    """The document is being processed right now; delete or process it again when that is done."""

    error_type: ErrorType = ErrorType.DOCUMENT_BUSY


class FileNotReady(TransientError):
    """The file is still being written or is locked by another program."""

    error_type: ErrorType = ErrorType.FILE_NOT_READY


# -- sources: each error is one of the two kinds above as well as its source's family ------------


class MailError(MidasError):
    """A mail account cannot be fetched now; ``str()`` is the plain reason shown in status and logs (never a secret)."""

    error_type: ErrorType = ErrorType.MAIL_ERROR


class MailConfigError(MailError, PermanentError):
    """The mail configuration is invalid, or a password or token it names cannot be had; the message says where."""

    error_type: ErrorType = ErrorType.MAIL_CONFIG


class MailAuthFailed(MailError, PermanentError):
    """The mail server refused the user's password or token: the same login fails again until it is put right."""

    error_type: ErrorType = ErrorType.AUTH_FAILED


class MailRefused(MailError, PermanentError):
    """The mail server answered NO or BAD: a folder it will not open, a mail it will not give."""

    error_type: ErrorType = ErrorType.MAIL_REFUSED


class MailUnreachable(MailError, TransientError):
    """The mail server cannot be reached, or dropped the connection: tried again at the next interval."""

    error_type: ErrorType = ErrorType.MAIL_UNREACHABLE
