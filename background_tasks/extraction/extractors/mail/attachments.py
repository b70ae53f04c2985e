"""Attachments of a message: written to its private folder, read through the registry, pictures OCR'd."""

from __future__ import annotations

import logging

from background_tasks.errors import MidasError
from background_tasks.extraction.extractors.base import Extraction
from background_tasks.extraction.extractors.embedded import read_contained, safe_name
from background_tasks.extraction.extractors.mail.message import MailMessage, Reading

logger = logging.getLogger(__name__)

__all__ = ["add_section", "extract_attachment", "not_extracted", "safe_name"]


def not_extracted(message: MailMessage, display: str, reason: str) -> None:
    message.warnings.append(f"attachment {display!r} not extracted: {reason}")


def add_section(message: MailMessage, display: str, extraction: Extraction) -> None:
    """An attachment's text under its heading; its warnings named after it."""
    message.warnings.extend(f"attachment {display!r}: {w}" for w in extraction.warnings)
    if extraction.text.strip():
        message.sections.append(f"--- Attachment: {display} ---\n{extraction.text.strip()}")


def extract_attachment(message: MailMessage, display: str, filename: str, data: bytes, reading: Reading) -> None:
    """Run the registry's extractor on one attachment (OCR its pictures) and add its section."""
    if not data:
        return
    if len(data) > reading.limits.max_decompressed_bytes:
        not_extracted(message, display, "larger than the decompression limit")
        return
    if reading.extractor_for is None:
        not_extracted(message, display, "the mail extractor was given no extractors for attachments")
        return
    target = reading.work / filename
    try:
        read = read_contained(data, target, reading.extractor_for, reading.limits, reading.depth)
        if read is None:
            return  # archives, unknown binaries, extension-less text blobs: listed, not extracted
        result, notes = reading.ocr.read(display, target, *read)
    except MidasError as exc:
        not_extracted(message, display, exc.message.replace(filename, display))
        return
    except Exception as exc:  # a third-party parser failing on one attachment must not fail the message
        logger.info("attachment %r failed: %s", display, exc, exc_info=True)
        not_extracted(message, display, f"{type(exc).__name__}: {exc}")
        return
    add_section(message, display, result)
    message.warnings.extend(notes)
