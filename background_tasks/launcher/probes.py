"""Whether a started service answers: HTTP checks, Celery worker pings, and the readiness rule per kind.

Beat and the watcher have no probe: they count as ready once they have stayed
alive for ``GRACE_SECONDS``.
"""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode
from typing import Any

from background_tasks.launcher.definitions import Service
from background_tasks.launcher.redis_service import redis_probe
from background_tasks.ops.dashboard_gate import sign_in
from background_tasks.settings import PROJECT_ROOT, Settings

#: Seconds a service without a readiness probe (beat, watcher) must stay alive to count as started.
GRACE_SECONDS = 3.0


def http_status(url: str, basic_auth: str | None = None, timeout: float = 2.0, cookie: str | None = None) -> int | None:
    """HTTP status of a GET on a local URL; None when nothing answers."""
    request = urllib.request.Request(url)
    if basic_auth:
        request.add_header("Authorization", "Basic " + b64encode(basic_auth.encode()).decode())
    if cookie:
        request.add_header("Cookie", cookie)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


#: The local S3 server's own bucket where the launcher proves an object can be written and read back.
S3_PROBE_BUCKET = "midas-launcher-probe"


def s3_answers(settings: Settings) -> bool:
    """Whether the local S3 server stores and serves an object (gateway, filer and volume server all up).

    Listing buckets is not enough: right after a start the gateway answers it before its
    volume server has registered, and the first GetObject fails with InternalError.
    """
    from background_tasks.sources.s3.client import local_client
    from background_tasks.sources.s3.local_server import LOCAL_REGION, identities_file

    endpoint = f"http://127.0.0.1:{settings.s3_local_port}"
    key = f"probe-{time.monotonic_ns()}"
    try:
        client = local_client(endpoint, LOCAL_REGION, str(identities_file(settings)))
        buckets = {bucket["Name"] for bucket in client.list_buckets().get("Buckets", [])}
        if S3_PROBE_BUCKET not in buckets:
            client.create_bucket(Bucket=S3_PROBE_BUCKET)
        client.put_object(Bucket=S3_PROBE_BUCKET, Key=key, Body=b"ready")
        read = client.get_object(Bucket=S3_PROBE_BUCKET, Key=key)["Body"].read()
        client.delete_object(Bucket=S3_PROBE_BUCKET, Key=key)
    except Exception:  # not answering yet, or answering with an error: not ready
        return False
    return read == b"ready"


class ControlClient:
    """A Celery app for the control API (worker pings, Windows warm shutdown), built once per run."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._app: Any = None

    @property
    def app(self) -> Any:
        if self._app is None:
            if str(PROJECT_ROOT) not in sys.path:
                sys.path.insert(0, str(PROJECT_ROOT))
            import celery_config

            self._app = celery_config.create_app(self.settings)
        return self._app

    @staticmethod
    def nodename(template: str) -> str:
        from celery.utils.nodenames import host_format

        return host_format(template)

    def ping(self, template: str, timeout: float = 1.0) -> bool:
        replies = self.app.control.ping(destination=[self.nodename(template)], timeout=timeout)
        return bool(replies)

    def shutdown(self, template: str) -> None:
        self.app.control.shutdown(destination=[self.nodename(template)])

    def close(self) -> None:
        if self._app is not None:
            self._app.close()
            self._app = None


def is_ready(service: Service, settings: Settings, control: ControlClient, started: float) -> bool:
    """Whether ``service``, started at monotonic time ``started``, answers as it should."""
    kind = service.kind
    if kind == "redis":
        return redis_probe(settings) == "pong"
    if kind == "s3":
        return s3_answers(settings)
    if kind == "worker":
        assert service.node
        return control.ping(service.node, timeout=1.0)
    if kind == "flower":
        code = http_status(f"http://127.0.0.1:{settings.flower_port}/flower/", settings.flower_basic_auth)
        return code == 200
    if kind == "dashboard":
        base = f"http://127.0.0.1:{settings.streamlit_port}"
        cookie = None
        if settings.dashboard_password:
            try:
                cookie = sign_in(base, settings.dashboard_password, timeout=2.0)
            except OSError:
                return False  # not answering yet
        return http_status(f"{base}/_stcore/health", cookie=cookie) == 200
    if kind == "api":
        # /health needs no token; 503 is a critical verdict or an unreadable store, but the server answers
        return http_status(f"http://127.0.0.1:{settings.api_port}/health") in (200, 503)
    return time.monotonic() - started >= GRACE_SECONDS
