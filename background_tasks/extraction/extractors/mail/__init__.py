"""E-mail: .eml (stdlib ``email``, ``policy.default``) and Outlook .msg (extract_msg).

The text is a header block (Subject, From, To, Cc, Date), the body (plain text
preferred; HTML-only bodies converted to visible text by the HTML extractor's
``html_to_text``) and, under a ``--- Attachment: name ---`` heading each, the
text of attachments MIDAS can read. Attachments are written to a private
temporary directory, their real type is detected, and the extractor the
registry hands in (``MailExtractor(extractor_for)``) runs on them; pictures
(images, scanned PDFs) are OCR'd within the message's limits (``ocr``); a
failing attachment becomes a warning, never an error. Messages attached to
messages are followed at most ``MAX_ATTACHMENT_DEPTH`` levels deep.

Encrypted mail (S/MIME ``application/pkcs7-mime`` enveloped data, PGP/MIME
``multipart/encrypted``): the headers are not encrypted and are what a user
searches a mailbox by, so extraction succeeds with the headers only, the
metadata flag ``encrypted: True`` and a warning that the body is encrypted.
It is not an ``EncryptedDocument`` error, because the file is not unreadable.

``message`` holds what both formats share (the message record, rendering,
the extractor base), ``attachments`` the running of other extractors,
``ocr`` the OCR of picture attachments, ``eml`` and ``msg`` the two readers.
"""

from __future__ import annotations

from background_tasks.extraction.extractors.base import ExtractorLookup
from background_tasks.extraction.extractors.mail.eml import EmlExtractor
from background_tasks.extraction.extractors.mail.message import ENCRYPTED_WARNING, MAX_ATTACHMENT_DEPTH, MailExtractor
from background_tasks.extraction.extractors.mail.msg import MsgExtractor

__all__ = [
    "ENCRYPTED_WARNING",
    "MAX_ATTACHMENT_DEPTH",
    "EmlExtractor",
    "ExtractorLookup",
    "MailExtractor",
    "MsgExtractor",
]
