"""The words MIDAS records: document, task and health statuses, defined once.

They are ``StrEnum``s, so they compare equal to the plain strings that results, the database
and the dashboard carry (``DocumentStatus.SUCCESS == "success"``) and serialize to JSON as those
strings. The CHECK constraint of ``documents.status`` is built from ``DocumentStatus``.
Error types live with their exceptions (``errors.ErrorType``).
"""

from __future__ import annotations

from enum import StrEnum


class DocumentStatus(StrEnum):
    """Where a document stands in the store (and the ``status`` of its task result)."""

    PROCESSING = "processing"
    SUCCESS = "success"
    FAILED = "failed"
    REJECTED = "rejected"

    @classmethod
    def finished_badly(cls) -> frozenset[DocumentStatus]:
        """The statuses a document can be recorded with when it did not succeed."""
        return frozenset({cls.FAILED, cls.REJECTED})


class SearchStatus(StrEnum):
    """How complete a searchable (``success``) document's text is: the ``status`` filter of search.

    Only documents that succeeded have text to search, so the filter tells them apart by what
    MIDAS noted while reading them.
    """

    COMPLETE = "complete"  # no warning, OCR not waiting
    WARNINGS = "warnings"  # read with warnings (pages without text, parts skipped ...)
    OCR_PENDING = "ocr_pending"  # a long scan whose OCR still runs: more text is coming


class TaskState(StrEnum):
    """A task's state in the task history (Celery's states, lower case), in the order they happen."""

    PENDING = "pending"
    RECEIVED = "received"
    STARTED = "started"
    RETRY = "retry"
    SUCCESS = "success"
    FAILURE = "failure"
    REVOKED = "revoked"


class LedgerState(StrEnum):
    """Where a submission stands in the intake ledger: sent, taken by a worker, or over."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class HealthStatus(StrEnum):
    """The verdict of a health check, from best to worst."""

    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"


class MailOutcome(StrEnum):
    """What became of one mail an account's fetch handled (``mail_messages.outcome``)."""

    SUBMITTED = "submitted"
    NO_DOCUMENT = "no_document"  # its rule took it, and nothing in it is a file MIDAS processes
    NO_RULE = "no_rule"
    DUPLICATE = "duplicate"  # the same Message-ID was taken before (another folder, an older UIDVALIDITY)
    TOO_LARGE = "too_large"  # every file it would give is over MIDAS_MAX_FILE_MB
    FAILED = "failed"  # it cannot be read, none of its files could, or it stopped the fetch too often
    RETRY = "retry"  # failed or too large, and asked to be fetched again (``sources retry-failed``)

    @classmethod
    def taken(cls) -> frozenset[MailOutcome]:
        """Mails taken as their rule wanted: only these get the rule's after-action (read, flag, move)."""
        return frozenset({cls.SUBMITTED, cls.NO_DOCUMENT})

    @classmethod
    def retryable(cls) -> frozenset[MailOutcome]:
        """Mails that gave no document they should have: ``sources retry-failed`` has them fetched again."""
        return frozenset({cls.FAILED, cls.TOO_LARGE})


def sql_in(column: str, values: type[StrEnum]) -> str:
    """``column IN ('a', 'b')`` for a CHECK constraint (the values are our own constants)."""
    return f"{column} IN ({', '.join(repr(str(v)) for v in values)})"
