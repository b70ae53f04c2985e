"""What a new user trips over (issue 18), tried as they would: real processes, real HTTP.

Flower's address as printed and typed, the live check run with the wrong Python,
the ``midas`` command of an installed checkout, relative paths sent from another
folder than the worker's, and the error types of common mistakes.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import launcher, launcher_env, stop_stack

FLOWER_AUTH = "midas:flower-pw"


def get(port: int, path: str, basic_auth: str | None = None) -> http.client.HTTPResponse:
    """One GET, redirects not followed: the status and headers as the server sent them."""
    from base64 import b64encode

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Authorization": "Basic " + b64encode(basic_auth.encode()).decode()} if basic_auth else {}
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


# -- item 1: Flower's address ------------------------------------------------------------


@pytest.fixture
def flower_stack(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = launcher_env(tmp_path, FLOWER_BASIC_AUTH=FLOWER_AUTH)
    yield env
    stop_stack(env, tmp_path)


@pytest.mark.integration
def test_the_flower_address_printed_works_and_the_bare_prefix_redirects(flower_stack: dict[str, str]) -> None:
    env = flower_stack
    started = launcher(env, "start", "redis", "flower")
    assert started.returncode == 0, started.stdout + started.stderr
    port = int(env["FLOWER_PORT"])

    # The address status prints (and `make run` shows) is one that answers.
    status = launcher(env, "status", "--json")
    url = {row["service"]: row for row in json.loads(status.stdout)}["flower"]["url"]
    assert url == f"http://localhost:{port}/flower/"
    assert f"http://localhost:{port}/flower/" in launcher(env, "status").stdout
    page = get(port, "/flower/", FLOWER_AUTH)
    assert page.status == 200

    # The address people type redirects there (query kept), with or without credentials.
    for auth in (None, FLOWER_AUTH):
        bare = get(port, "/flower", auth)
        assert bare.status == 302, bare.status
        assert bare.getheader("Location") == "/flower/"
    assert get(port, "/flower?state=FAILURE").getheader("Location") == "/flower/?state=FAILURE"
    # The redirect is the only thing open: the pages behind it still ask for the password.
    assert get(port, "/flower/").status == 401
    assert get(port, "/flower/metrics").status == 401
    assert get(port, "/elsewhere").status == 404
