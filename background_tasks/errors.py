"""One rooted exception hierarchy.

``PermanentError`` subclasses describe the document or the request: retrying
cannot help, so they are recorded and never retried. ``TransientError`` is the
single retryable type: the task base class (``task_base.MidasTask``) retries it
with exponential backoff and jitter.
Each class carries an ``error_type`` string that results and the store record.
"""

from __future__ import annotations


class MidasError(Exception):
    """Root of every error MIDAS raises on purpose."""

    error_type = "error"

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.__doc__ or self.error_type)

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.error_type


class PermanentError(MidasError):
    """Retrying will not help; record the error and move on."""

    error_type = "permanent"


class RejectedError(PermanentError):
    """The request is refused before the content is read (policy, not content)."""

    error_type = "rejected"


class PathNotAllowed(RejectedError):
    """The path is outside the allowed roots, or is not a regular file."""

    error_type = "path_not_allowed"


class InvalidArgument(RejectedError):
    """The task was given something that is not a usable file path (not a string, a NUL byte, empty)."""

    error_type = "invalid_argument"


class InvalidQuery(RejectedError):
    """A search query the store will not run (too long, too many words in a phrase)."""

    error_type = "invalid_query"


class FileTooLarge(RejectedError):
    """The file is larger than MIDAS_MAX_FILE_MB."""

    error_type = "too_large"


class UnsupportedFileType(RejectedError):
    """No extractor handles this file type."""

    error_type = "unsupported"


class TypeMismatch(RejectedError):
    """The content contradicts the file extension and cannot be handled as what it is."""

    error_type = "type_mismatch"


class ExtractionError(PermanentError):
    """The content was read but could not be turned into text."""

    error_type = "extraction_failed"


class CorruptDocument(ExtractionError):
    """The document is corrupt, truncated or malformed."""

    error_type = "corrupt"


class EmptyDocument(ExtractionError):
    """The file has no content at all."""

    error_type = "empty"


class EncryptedDocument(ExtractionError):
    """The document is encrypted and the empty password did not open it."""

    error_type = "encrypted"


class ResourceLimitExceeded(ExtractionError):
    """Decompression bomb, nesting too deep, entity expansion or similar."""

    error_type = "limit_exceeded"


class ExtractionTimeout(ExtractionError):
    """The parser did not finish within the per-file time limit."""

    error_type = "timeout"


class ExtractorCrashed(ExtractionError):
    """The parser process died (for example killed by the OS)."""

    error_type = "parser_crashed"


class MissingDependency(PermanentError):
    """An optional library or program needed for this format is not installed."""

    error_type = "missing_dependency"


class UnsafeResult(PermanentError):
    """A stored task result is not JSON (for example a pickle); it is refused, never deserialized."""

    error_type = "unsafe_result"


class RedeliveryLimitExceeded(PermanentError):
    """The task's worker process died on it too often; it is failed, not run again."""

    error_type = "redelivery_limit"


class TransientError(MidasError):
    """Worth retrying later: a locked or still-growing file, a busy database, a broker hiccup."""

    error_type = "transient"


class StorageUnavailable(TransientError):
    """MIDAS's own storage (document store, results database, working folder) cannot be written now.

    Retried with backoff for as long as it lasts, not only MIDAS_MAX_RETRIES times: the
    document is fine, and giving up could not even be recorded while the storage is down.
    """

    error_type = "storage_unavailable"


class FileNotReady(TransientError):
    """The file is still being written or is locked by another program."""

    error_type = "file_not_ready"
