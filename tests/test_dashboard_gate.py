"""The dashboard password guards every Streamlit endpoint, not only the page (issue 12, defect 4).

The attack went past the page straight to Streamlit's own server: three 150 MB
``PUT /_stcore/upload_file/…`` without the password grew the dashboard from
179 to 630 MB, and the WebSocket ``/_stcore/stream`` ran the page for anyone.
Here a real dashboard is started by the launcher with a password and a 1 MB
upload limit, and its endpoints are driven with plain HTTP and WebSocket
clients, as an attacker would. The first tests pin the gate's rules down on the
middleware itself, with a stand-in for Streamlit that records what reaches it.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from background_tasks.ops.dashboard_gate import COOKIE_NAME, LOGIN_PATH, PasswordGate, SessionSigner, safe_next, sign_in
from tests.support import launcher, launcher_env, stop_stack

#: real launcher stacks, workers or servers: deselected by -m "not integration"
pytestmark = pytest.mark.integration

PASSWORD = "gate pw 7"

# --------------------------------------------------------------------------
# The rules, on the middleware with a recording stand-in for Streamlit
# --------------------------------------------------------------------------


class Recorder:
    """An ASGI app that notes every request that reaches it."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def __call__(self, scope, receive, send) -> None:
        self.seen.append(scope["path"])
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"streamlit"})


def call(gate: PasswordGate, path: str, method: str = "GET", cookie: str = "", body: bytes = b"", kind: str = "http"):
    """One request through ``gate``; returns (status, headers, body) of the answer."""
    sent: list[dict] = []
    headers = [(b"cookie", cookie.encode())] if cookie else []
    scope = {"type": kind, "path": path, "method": method, "headers": headers, "query_string": b""}
    scope["headers"].append((b"content-length", str(len(body)).encode()))

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(gate(scope, receive, send))
    if kind == "websocket":
        return (sent[0]["type"] if sent else "passed on"), {}, b""
    start, *rest = sent
    body = b"".join(m.get("body", b"") for m in rest)
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body


def test_without_a_valid_session_nothing_reaches_streamlit() -> None:
    streamlit = Recorder()
    signer = SessionSigner(clock=lambda: 1_000_000.0)
    gate = PasswordGate(streamlit, PASSWORD, signer)
    expired = SessionSigner(signer._key, lifetime=-1, clock=lambda: 1_000_000.0).issue()
    forged = signer.issue()[:-4] + "0000"
    for cookie in ("", f"{COOKIE_NAME}=", f"{COOKIE_NAME}={expired}", f"{COOKIE_NAME}={forged}", "other=1"):
        assert call(gate, "/")[0] == 401
        assert call(gate, "/_stcore/health", cookie=cookie)[0] == 401
        assert call(gate, "/_stcore/upload_file/s/f", "PUT", cookie, b"x" * 1000)[0] == 401
        assert call(gate, "/_stcore/stream", cookie=cookie, kind="websocket")[0] == "websocket.close"
    assert streamlit.seen == []

    session = f"{COOKIE_NAME}={signer.issue()}"
    status, _, page = call(gate, "/", cookie=session)
    assert (status, page) == (200, b"streamlit")
    assert call(gate, "/_stcore/stream", cookie=session, kind="websocket")[0] == "passed on"
    assert streamlit.seen == ["/", "/_stcore/stream"]


def test_signing_in_sets_a_strict_http_only_cookie_and_a_wrong_password_none() -> None:
    gate = PasswordGate(Recorder(), PASSWORD)
    status, headers, _ = call(gate, LOGIN_PATH, "POST", body=b"password=gate+pw+7&next=%2F_stcore%2Fhealth")
    assert status == 303 and headers["location"] == "/_stcore/health"
    cookie = headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert gate.signer.valid(cookie.split(";")[0].split("=", 1)[1])

    status, headers, page = call(gate, LOGIN_PATH, "POST", body=b"password=guess&next=%2F")
    assert status == 401 and "set-cookie" not in headers and b"Wrong password." in page
    assert call(gate, LOGIN_PATH, "POST", body=b"password=" + b"x" * 5000)[0] == 413


@pytest.mark.parametrize(
    ("target", "expected"),
    [("/?section=Documents", "/?section=Documents"), ("//evil.example/", "/"), ("https://evil.example/", "/"),
     ("/\\evil.example", "/"), (LOGIN_PATH, "/"), ("/a\r\nSet-Cookie: x=1", "/")],
)  # fmt: skip
def test_after_signing_in_only_local_paths_are_followed(target: str, expected: str) -> None:
    assert safe_next(target) == expected


# --------------------------------------------------------------------------
# A real dashboard, started by the launcher, attacked over HTTP and WebSocket
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory) -> Iterator[dict[str, str]]:
    tmp = tmp_path_factory.mktemp("gated-dashboard")
    env = launcher_env(tmp, MIDAS_DASHBOARD_PASSWORD=PASSWORD, MIDAS_MAX_FILE_MB="1")
    started = launcher(env, "start", "dashboard")
    assert started.returncode == 0, started.stdout + started.stderr
    env["BASE"] = f"http://127.0.0.1:{env['STREAMLIT_PORT']}"
    yield env
    stop_stack(env, tmp)


def dashboard_memory_mb(env: dict[str, str]) -> float:
    record = json.loads((Path(env["MIDAS_DATA_DIR"]) / "run" / "dashboard.pid").read_text())
    proc = psutil.Process(record["pid"])
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


def put(env: dict[str, str], path: str, body: bytes) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", int(env["STREAMLIT_PORT"]), timeout=60)
    try:
        conn.request("PUT", path, body=body, headers={"Content-Type": "application/octet-stream"})
        return conn.getresponse().status
    finally:
        conn.close()


def test_without_the_password_every_endpoint_answers_401_and_uploads_are_not_kept(dashboard) -> None:
    base = dashboard["BASE"]
    for path in ("/", "/_stcore/health", "/_stcore/host-config", "/static/js/index.js", "/media/x.png"):
        assert requests.get(base + path, timeout=10).status_code == 401, path
    assert "Dashboard password" in requests.get(base + "/", timeout=10).text

    before = dashboard_memory_mb(dashboard)
    big = b"x" * (150 * 2**20)
    assert [put(dashboard, f"/_stcore/upload_file/s{i}/f{i}", big) for i in range(3)] == [401, 401, 401]
    assert dashboard_memory_mb(dashboard) - before < 100, "the uploads were held in memory"

    with pytest.raises(InvalidStatus) as refused:
        connect(base.replace("http", "ws") + "/_stcore/stream", open_timeout=10).close()
    assert refused.value.response.status_code == 403
    forged = {"Cookie": f"{COOKIE_NAME}=9999999999.{'0' * 64}"}
    assert requests.get(base + "/_stcore/health", headers=forged, timeout=10).status_code == 401


def test_with_the_password_page_static_stream_and_uploads_work_up_to_the_limit(dashboard) -> None:
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    base = dashboard["BASE"]
    with pytest.raises(PermissionError):
        sign_in(base, "not it")
    browser = requests.Session()
    signed = browser.post(base + LOGIN_PATH, data={"password": PASSWORD, "next": "/"}, allow_redirects=False)
    assert signed.status_code == 303 and COOKIE_NAME in browser.cookies

    page = browser.get(base + "/", timeout=10)
    assert page.status_code == 200 and "<script" in page.text
    asset = re.search(r'src="\./(static/js/[^"]+\.js)"', page.text).group(1)
    assert browser.get(f"{base}/{asset}", timeout=10).status_code == 200
    assert browser.get(base + "/_stcore/health", timeout=10).text == "ok"
    xsrf = browser.cookies["_streamlit_xsrf"]

    cookies = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
    stream = base.replace("http", "ws") + "/_stcore/stream"
    headers = {"Cookie": cookies, "Origin": base}
    with connect(stream, additional_headers=headers, subprotocols=["streamlit", xsrf]) as ws:
        rerun = BackMsg()
        rerun.rerun_script.query_string = ""
        ws.send(rerun.SerializeToString())
        session = None
        while session is None:
            message = ForwardMsg()
            message.ParseFromString(ws.recv(timeout=30))
            if message.WhichOneof("type") == "new_session":
                session = message.new_session.initialize.session_id

        def upload(name: str, size: int) -> int:
            files = {"file": (name, b"x" * size, "text/plain")}
            url = f"{base}/_stcore/upload_file/{session}/{name}"
            return browser.put(url, files=files, headers={"X-Xsrftoken": xsrf}, timeout=30).status_code

        assert upload("small.txt", 10_000) == 204
        assert upload("over-the-limit.txt", int(1.5 * 2**20)) == 413  # MIDAS_MAX_FILE_MB=1
