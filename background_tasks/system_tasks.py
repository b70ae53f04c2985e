"""Tasks of the ``default`` queue: a round-trip check any user can send."""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

from celery_config import app

log = logging.getLogger(__name__)


@app.task(name="background_tasks.system_tasks.ping")
def ping(message: str = "pong") -> dict[str, Any]:
    """Proves broker, worker and result backend work end to end."""
    log.info("ping: %s", message)
    return {"message": message, "hostname": socket.gethostname(), "pid": os.getpid(), "time": time.time()}
