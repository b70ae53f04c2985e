"""Names MIDAS shares with the outside world, each spelled once: Redis keys, task names, deterministic task ids.

A task name is what a message carries and what callers, Beat, the dashboard and
the ledger look tasks up by; a Redis key is read by other processes; a
deterministic task id must come out the same in every process that derives it.
A typo in any copy would fail silently, so every module takes them from here.
Plain strings and functions, no imports of the package: any module may use them.
"""

from __future__ import annotations

import uuid

# --------------------------------------------------------------------------
# Redis keys (all under ``midas:``)
# --------------------------------------------------------------------------

KEY_PREFIX = "midas:"

#: the file watcher's heartbeat, a JSON object with a TTL, read by the health check
WATCHER_HEARTBEAT_KEY = KEY_PREFIX + "watcher:heartbeat"

#: held while mail is fetched, so two runs of the mail task never take the same mails
MAIL_FETCH_LOCK = KEY_PREFIX + "mail:fetching"


def alert_key(kind: str) -> str:
    """The quiet period of one kind of alert (a key with a TTL)."""
    return f"{KEY_PREFIX}alert:{kind}"


def batch_sent_key(batch_id: str) -> str:
    """How many of a batch's files were sent, shared by every run of the batch."""
    return f"{KEY_PREFIX}batch:{batch_id}:sent"


def batch_sending_lock(batch_id: str) -> str:
    """The lock only the run of a batch that is sending its files holds."""
    return f"{KEY_PREFIX}batch:{batch_id}:sending"


def deliveries_key(task_id: str, retries: int) -> str:
    """How often one attempt of a task was delivered (a worker process that died got it too)."""
    return f"{KEY_PREFIX}deliveries:{task_id}:{retries}"


# --------------------------------------------------------------------------
# Task modules and names (a task's name is its module's name and its own)
# --------------------------------------------------------------------------

SYSTEM_TASKS = "background_tasks.system_tasks"
DOCUMENT_TASKS = "background_tasks.document_tasks"
MONITORING_TASKS = "background_tasks.monitoring_tasks"
ANALYSIS_TASKS = "background_tasks.analysis_tasks"
MAIL_TASKS = "background_tasks.mail_tasks"
S3_TASKS = "background_tasks.s3_tasks"
TASK_MODULES = (SYSTEM_TASKS, DOCUMENT_TASKS, MONITORING_TASKS, ANALYSIS_TASKS, MAIL_TASKS, S3_TASKS)

PING = f"{SYSTEM_TASKS}.ping"
FAIL = f"{SYSTEM_TASKS}.fail"
SLEEP = f"{SYSTEM_TASKS}.sleep"

PROCESS_DOCUMENT_FILE = f"{DOCUMENT_TASKS}.process_document_file"
PROCESS_DOCUMENT_BATCH = f"{DOCUMENT_TASKS}.process_document_batch"
EXTRACT_DOCUMENT_METADATA = f"{DOCUMENT_TASKS}.extract_document_metadata"
CLEANUP_OLD_PROCESSED_FILES = f"{DOCUMENT_TASKS}.cleanup_old_processed_files"

SYSTEM_HEALTH_CHECK = f"{MONITORING_TASKS}.system_health_check"
CHECK_TASK_QUEUE = f"{MONITORING_TASKS}.check_task_queue"
GENERATE_TASK_REPORT = f"{MONITORING_TASKS}.generate_task_report"
CLEANUP_OLD_TASKS = f"{MONITORING_TASKS}.cleanup_old_tasks"
REAP_LEDGER = f"{MONITORING_TASKS}.reap_ledger"

ANALYZE_DATA_FILE = f"{ANALYSIS_TASKS}.analyze_data_file"
ANALYZE_DOCUMENT = f"{ANALYSIS_TASKS}.analyze_document"
OCR_DOCUMENT_PAGES = f"{ANALYSIS_TASKS}.ocr_document_pages"
EMBED_DOCUMENT = f"{ANALYSIS_TASKS}.embed_document"

FETCH_MAIL = f"{MAIL_TASKS}.fetch_mail"

LIST_S3_SOURCES = f"{S3_TASKS}.list_s3_sources"


# --------------------------------------------------------------------------
# Deterministic task ids: a re-run or a redelivery sends the same id, so work is never queued twice
# --------------------------------------------------------------------------


def _derived_id(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


def batch_child_task_id(batch_id: str, index: int) -> str:
    """The task id of a batch's ``index``-th file: the same in every run, derivable by anyone."""
    return _derived_id(f"midas-batch:{batch_id}:{index}")


def ocr_pages_task_id(document_id: int, pages: list[int]) -> str:
    """The task id of the OCR of a range of a long scan's pages."""
    return _derived_id(f"midas-ocr:{document_id}:{pages[0]}:{len(pages)}")


def data_analysis_task_id(sha256: str | None) -> str:
    """The task id of the profile of a data file, by its content."""
    return _derived_id(f"midas-data-analysis:{sha256}")


def embedding_task_id(document_id: int, version: str) -> str:
    """The task id of embedding one recorded version of a document's chunks."""
    return _derived_id(f"midas-embed:{document_id}:{version}")


def mail_part_task_id(account: str, folder: str, uidvalidity: int, uid: int, part: str) -> str:
    """The task id of one file taken from one mail: a run that re-takes the mail after a crash sends the same id."""
    return _derived_id(f"midas-mail:{account}:{uidvalidity}:{uid}:{part}:{folder}")


def s3_object_task_id(uri: str, etag: str) -> str:
    """The task id of one version of an S3 source's object: a submission repeated after a crash is the same task."""
    return _derived_id(f"midas-s3:{etag}:{uri}")
