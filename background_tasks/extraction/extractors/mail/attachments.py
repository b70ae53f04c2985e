"""Attachments of a message: written to its private folder, their type detected, the registry's extractor run."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from background_tasks.errors import MidasError
from background_tasks.extraction import detect
from background_tasks.extraction.extractors.base import Extraction
from background_tasks.extraction.extractors.mail.message import MailExtractor, MailMessage, Reading

logger = logging.getLogger(__name__)


def safe_name(name: str, index: int) -> tuple[str, str]:
    """(display name, file name for the temp copy): only the suffix of an attacker-chosen name is reused."""
    display = (name or "").replace("\x00", "").strip() or f"attachment-{index}"
    suffix = Path(display.replace("\\", "/")).suffix.lower()
    if not re.fullmatch(r"\.[a-z0-9]{1,10}", suffix):
        suffix = ""
    return display, f"attachment-{index}{suffix}"


def not_extracted(message: MailMessage, display: str, reason: str) -> None:
    message.warnings.append(f"attachment {display!r} not extracted: {reason}")


def add_section(message: MailMessage, display: str, extraction: Extraction) -> None:
    """An attachment's text under its heading; its warnings named after it."""
    message.warnings.extend(f"attachment {display!r}: {w}" for w in extraction.warnings)
    if extraction.text.strip():
        message.sections.append(f"--- Attachment: {display} ---\n{extraction.text.strip()}")


def extract_attachment(message: MailMessage, display: str, filename: str, data: bytes, reading: Reading) -> None:
    """Write one attachment to the private dir, detect its type, run the matching extractor, add a section."""
    if not data:
        return
    if len(data) > reading.limits.max_decompressed_bytes:
        not_extracted(message, display, "larger than the decompression limit")
        return
    target = reading.work / filename
    target.write_bytes(data)
    suffix = target.suffix.lower()
    sniffed = detect.sniff(target)
    if not detect.is_supported(suffix) and (not sniffed.extension or sniffed.kind == "text"):
        return  # images, archives, unknown binaries, extension-less text blobs: listed, not extracted
    if reading.extractor_for is None:
        not_extracted(message, display, "the mail extractor was given no extractors for attachments")
        return
    try:
        extension, mime_type = detect.resolve_extension(target, suffix or sniffed.extension)
        extractor = reading.extractor_for(extension, mime_type)
        if isinstance(extractor, MailExtractor):
            result = extractor.extract_nested(target, reading.limits, reading.depth + 1)
        else:
            result = extractor.extract(target, reading.limits)
    except MidasError as exc:
        not_extracted(message, display, exc.message.replace(filename, display))
        return
    except Exception as exc:  # a third-party parser failing on one attachment must not fail the message
        logger.info("attachment %r failed: %s", display, exc, exc_info=True)
        not_extracted(message, display, f"{type(exc).__name__}: {exc}")
        return
    add_section(message, display, result)
