"""keys.py: the task names are exactly the registered tasks, and derived ids and Redis keys keep their form."""

from __future__ import annotations

import importlib
import uuid

from background_tasks import keys


def test_every_task_name_is_a_registered_task_and_every_task_has_a_name() -> None:
    import celery_config

    for module in keys.TASK_MODULES:
        importlib.import_module(module)
    registered = {name for name in celery_config.app.tasks if name.startswith("background_tasks.")}
    declared = {value for name, value in vars(keys).items() if name.isupper() and isinstance(value, str)}
    declared = {value for value in declared if value.count(".") == 2 and value.startswith("background_tasks.")}
    assert registered == declared
    assert set(celery_config.TASK_MODULES) == {name.rpartition(".")[0] for name in declared}


def test_task_ids_are_derived_the_same_way_as_always() -> None:
    """Batches and follow-ups in flight during an upgrade must keep finding their children."""
    ns = uuid.NAMESPACE_URL
    assert keys.batch_child_task_id("b1", 7) == str(uuid.uuid5(ns, "midas-batch:b1:7"))
    assert keys.ocr_pages_task_id(42, [11, 12, 13]) == str(uuid.uuid5(ns, "midas-ocr:42:11:3"))
    assert keys.data_analysis_task_id("ab12") == str(uuid.uuid5(ns, "midas-data-analysis:ab12"))
    assert len({keys.batch_child_task_id("b1", i) for i in range(100)}) == 100


def test_redis_keys_keep_their_names() -> None:
    """Other processes (an older watcher, the dashboard) read these keys by name."""
    assert keys.WATCHER_HEARTBEAT_KEY == "midas:watcher:heartbeat"
    assert keys.batch_sent_key("b1") == "midas:batch:b1:sent"
    assert keys.batch_sending_lock("b1") == "midas:batch:b1:sending"
    assert keys.deliveries_key("t1", 2) == "midas:deliveries:t1:2"
    assert keys.alert_key("task_failure") == "midas:alert:task_failure"
