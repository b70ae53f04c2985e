"""The HTTP API over real HTTP: a uvicorn subprocess on a free port, a real Redis and worker behind it.

Every endpoint, every error with its JSON body, an upload through a real worker, 200
concurrent uploads with none lost, the token and size gates (the size before a byte of
the body is read), and the launcher's ``api`` service.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from background_tasks import keys
from background_tasks.api.auth import digest, new_token
from background_tasks.settings import SettingsError, load_settings
from background_tasks.storage.db import read_scope
from background_tasks.storage.models import ChunkRow
from background_tasks.storage.store import DocumentStore
from tests.support import PROJECT_ROOT, ApiServer, free_port, launcher, launcher_env, stop_stack, wait_until

TOKEN = new_token()
OTHER_TOKEN = new_token()
PROCESS = keys.PROCESS_DOCUMENT_FILE


@dataclass
class Api:
    """The API under test, the stack behind it and a client that sends the token."""

    server: ApiServer
    stack: object
    client: httpx.Client
    docs: Path

    @property
    def inbox(self) -> Path:
        return self.stack.settings.inbox_dir  # type: ignore[attr-defined]

    def job(self, job_id: str, timeout: float = 60) -> dict:
        """The job once it is done or failed."""

        def finished() -> dict | None:
            body = self.client.get(f"/jobs/{job_id}").json()
            return body if body["state"] in ("done", "failed") else None

        try:
            return wait_until(finished, timeout, interval=0.2, what=f"job {job_id}")
        except TimeoutError:
            worker_logs = "\n".join(w.log_text()[-4000:] for w in self.stack.workers)  # type: ignore[attr-defined]
            raise AssertionError(f"job {job_id} did not finish; workers:\n{worker_logs}") from None


@pytest.fixture(scope="module")
def api(module_isolated_stack, session_dir) -> Iterator[Api]:
    stack = module_isolated_stack(
        MIDAS_API_TOKENS=f"{digest(OTHER_TOKEN)},{digest(TOKEN)}",
        MIDAS_MAX_FILE_MB="1",
        # an s3:// job the tests send is refused at once by a closed port, not tried against AWS
        MIDAS_S3_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}",
        MIDAS_S3_PATH_STYLE="true",
    )
    stack.start_worker(concurrency=2)
    server = ApiServer(stack.env, stack.root / "logs").wait_ready()
    docs = session_dir / "docs" / f"api-{uuid.uuid4().hex[:8]}"
    docs.mkdir()
    client = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    try:
        yield Api(server, stack, client, docs)
    finally:
        client.close()
        server.stop()


def error_of(response: httpx.Response, status: int, error: str) -> dict:
    """The JSON error body of ``response``, checked to be ``status`` with ``error``."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert body["error"] == error and body["status"] == status and body["message"], body
    return body


def inbox_names(api: Api) -> set[str]:
    return {p.name for p in api.inbox.iterdir()} if api.inbox.exists() else set()


# --------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------

PROTECTED = [
    ("GET", "/documents"),
    ("GET", "/documents/1"),
    ("POST", "/documents"),
    ("GET", "/jobs/some-id"),
    ("GET", "/search?q=x"),
    ("GET", "/metrics"),
    ("GET", "/no/such/route"),
    ("PUT", "/documents"),
    ("DELETE", "/documents/1"),
    ("POST", "/documents/1/reprocess"),
    ("GET", "/documents/1/original"),
]


def test_every_endpoint_but_health_and_the_docs_needs_a_valid_token(api: Api) -> None:
    with httpx.Client(base_url=api.server.url, timeout=30) as anonymous:
        for method, path in PROTECTED:
            body = error_of(anonymous.request(method, path), 401, "unauthorized")
            assert "Bearer" in body["message"]
            wrong = anonymous.request(method, path, headers={"Authorization": "Bearer " + TOKEN[:-1] + "x"})
            assert error_of(wrong, 401, "unauthorized")["message"] == "the token is not valid"
            assert wrong.headers["www-authenticate"] == "Bearer"
            basic = anonymous.request(method, path, headers={"Authorization": f"Basic {TOKEN}"})
            error_of(basic, 401, "unauthorized")
        # an upload without a token is refused before its body is looked at: nothing reaches the inbox
        before = inbox_names(api)
        error_of(anonymous.post("/documents", files={"file": ("x.txt", b"no token")}), 401, "unauthorized")
        assert inbox_names(api) == before

        health = anonymous.get("/health")
        assert health.status_code in (200, 503) and "status" in health.json()
        assert "reasons" not in health.json()  # the reasons are for token holders
        docs = anonymous.get("/docs")
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
        schema = anonymous.get("/openapi.json").json()
        assert schema["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
        assert schema["paths"]["/documents"]["post"]["security"] == [{"bearer": []}]
        assert "security" not in schema["paths"]["/health"]["get"]
    # either configured token works (the setting holds their digests only)
    with httpx.Client(base_url=api.server.url, timeout=30) as other:
        assert other.get("/documents", headers={"Authorization": f"Bearer {OTHER_TOKEN}"}).status_code == 200
    assert TOKEN not in api.stack.env["MIDAS_API_TOKENS"]  # type: ignore[attr-defined]
    assert TOKEN not in api.server.log_text()


def test_without_configured_tokens_everything_but_health_is_refused(tmp_path: Path) -> None:
    env = {**os.environ, "MIDAS_DATA_DIR": str(tmp_path / "data"), "MIDAS_API_TOKENS": ""}
    server = ApiServer(env, tmp_path / "logs").wait_ready()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            refused = client.get("/documents", headers={"Authorization": f"Bearer {TOKEN}"})
            assert "MIDAS_API_TOKENS" in error_of(refused, 401, "unauthorized")["message"]
            health = client.get("/health")
            assert health.status_code == 200 and health.json()["status"] == "unknown"
        assert "MIDAS_API_TOKENS is empty" in server.log_text()
    finally:
        server.stop()


def test_hash_token_makes_a_token_and_its_digest_and_settings_refuse_a_bare_token(tmp_path: Path) -> None:
    made = subprocess.run(
        [sys.executable, "-m", "background_tasks", "api", "hash-token"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    lines = dict(line.split(":", 1) for line in made.stdout.splitlines() if line.startswith(("token:", "digest:")))
    token, made_digest = lines["token"].strip(), lines["digest"].strip()
    assert len(token) >= 40 and made_digest == hashlib.sha256(token.encode()).hexdigest()
    chosen = subprocess.run(
        [sys.executable, "-m", "background_tasks", "api", "hash-token", "--stdin"],
        input="a-token-chosen-by-a-person-42\n", cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert chosen.returncode == 0 and chosen.stdout.strip() == digest("a-token-chosen-by-a-person-42")
    short = subprocess.run(
        [sys.executable, "-m", "background_tasks", "api", "hash-token", "--stdin"],
        input="short\n", cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert short.returncode == 2 and "at least" in short.stderr
    with pytest.raises(SettingsError, match=r"MIDAS_API_TOKENS=.*SHA-256 hex digests"):
        load_settings({"MIDAS_API_TOKENS": token, "MIDAS_DATA_DIR": str(tmp_path)}, env_file=Path(os.devnull))
    upper = load_settings({"MIDAS_API_TOKENS": made_digest.upper()}, env_file=Path(os.devnull))
    assert upper.api_tokens == (made_digest,) and upper.api_port == 8700  # the documented default


# --------------------------------------------------------------------------
# Submitting and reading documents
# --------------------------------------------------------------------------

AURORA = "The aurora borealis shimmered over the fjord while the research team logged magnetometer readings."


def test_an_upload_goes_through_a_real_worker_and_every_read_endpoint_finds_it(api: Api) -> None:
    # the same text each run (the module's stack is new each run): random words would blur its meaning
    text = f"{AURORA}\n\nInvoice: the invoice must be paid within thirty days.\n" * 3
    sent = api.client.post("/documents", files={"file": ("aurora report.txt", text.encode(), "text/plain")})
    assert sent.status_code == 202, sent.text
    answer = sent.json()
    assert answer["state"] == "queued" and answer["source"] == "upload" and answer["name"] == "aurora report.txt"
    assert sent.headers["location"] == answer["job"] == f"/jobs/{answer['id']}"
    saved = api.inbox / "aurora report.txt"
    assert saved.read_text() == text and oct(saved.stat().st_mode & 0o777) == "0o600"

    job = api.job(answer["id"])
    assert job["state"] == "done" and job["task"] == PROCESS and job["celery_state"] == "SUCCESS", job
    result = job["result"]
    assert result["status"] == "success" and result["chunks_created"] >= 1, result
    assert job["document_id"] == result["document_id"] and job["outcome"] == "success"
    assert job["submitted_at"] and job["started_at"] and job["finished_at"]
    document_id = result["document_id"]

    one = api.client.get(f"/documents/{document_id}", params={"chunk_limit": 1})
    assert one.status_code == 200
    body = one.json()
    assert body["document"]["id"] == document_id and body["document"]["status"] == "success"
    assert body["document"]["task_id"] == answer["id"]  # the task id is the ledger's and the document's
    assert body["document"]["path"] == str(saved) and body["document"]["metadata"]["encoding"]
    assert body["chunks"]["limit"] == 1 and len(body["chunks"]["items"]) == 1
    assert body["chunks"]["total"] == result["chunks_created"]
    assert "aurora borealis" in body["chunks"]["items"][0]["text"]
    assert "analysis" in body

    listed = api.client.get("/documents", params={"status": "success", "type": "txt", "limit": 500}).json()
    assert listed["total"] >= 1 and document_id in [d["id"] for d in listed["documents"]]

    found = api.client.get("/search", params={"q": "magnetometer readings", "mode": "keyword"}).json()
    hit = next(h for h in found["hits"] if h["document_id"] == document_id)
    assert hit["rank"] >= 1 and hit["path"] == str(saved)
    start, end = hit["highlights"][0]
    assert hit["snippet"][start:end].lower() in ("magnetometer", "readings")
    assert "\ue000" not in hit["snippet"] and "**" not in hit["snippet"]

    meaning = "scientists measuring the magnetic field"  # none of these words is in the text
    by_words = api.client.get("/search", params={"q": meaning, "mode": "keyword"}).json()["hits"]
    assert document_id not in [h["document_id"] for h in by_words]

    def semantically_found() -> bool:  # the embedding is a follow-up task of the worker
        hits = api.client.get("/search", params={"q": meaning, "mode": "semantic"}).json()["hits"]
        return any(h["document_id"] == document_id for h in hits)

    wait_until(semantically_found, 60, interval=0.5, what="the document found by meaning")
    hybrid = api.client.get("/search", params={"q": "aurora fjord"}).json()
    assert hybrid["mode"] == "hybrid" and any(h["document_id"] == document_id for h in hybrid["hits"])


def raw_multipart(filename: bytes, content: bytes) -> tuple[bytes, str]:
    """A multipart body written by hand, so the file name reaches the server byte for byte."""
    boundary = uuid.uuid4().hex
    body = (
        f"--{boundary}\r\n".encode()
        + b'Content-Disposition: form-data; name="file"; filename="'
        + filename
        + b'"\r\nContent-Type: text/plain\r\n\r\n'
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize(
    ("sent_name", "saved_name"),
    [
        (b"../../../etc/cron.d/evil.txt", "evil.txt"),
        (b"/tmp/absolute.txt", "absolute.txt"),
        (b"..\\\\..\\\\windows\\\\system.txt", "system.txt"),
        (b"bell\x07and\x1bescape\x7f.txt", "bell_and_escape_.txt"),
        (b"...hidden.txt", "hidden.txt"),
    ],
)
def test_upload_names_are_sanitised_into_the_inbox(api: Api, sent_name: bytes, saved_name: str) -> None:
    content = f"Sanitised name test {uuid.uuid4().hex}".encode()
    body, content_type = raw_multipart(sent_name, content)
    sent = api.client.post("/documents", content=body, headers={"Content-Type": content_type})
    assert sent.status_code == 202, sent.text
    name = sent.json()["name"]
    stem, suffix = os.path.splitext(saved_name)
    assert name == saved_name or (name.startswith(stem + "-") and name.endswith(suffix)), name
    saved = api.inbox / name
    assert saved.read_bytes() == content and saved.parent == api.inbox
    assert api.job(sent.json()["id"])["result"]["status"] == "success"


def test_a_path_or_uri_in_json_is_vetted_as_the_worker_would(api: Api, tmp_path: Path) -> None:
    inside = api.docs / f"notes-{uuid.uuid4().hex[:6]}.txt"
    inside.write_text(f"Field notes {uuid.uuid4().hex}: the glacier retreated forty metres.")
    sent = api.client.post("/documents", json={"path": str(inside)})
    assert sent.status_code == 202, sent.text
    assert sent.json()["source"] == "path" and sent.json()["target"] == str(inside.resolve())
    assert api.job(sent.json()["id"])["result"]["status"] == "success"
    assert inside.exists()  # never moved or changed

    outside = tmp_path / "secret.txt"
    outside.write_text("not for MIDAS")
    for path in (str(outside), "/etc/passwd", str(tmp_path / "missing.txt")):
        error_of(api.client.post("/documents", json={"path": path}), 403, "path_not_allowed")
    error_of(api.client.post("/documents", json={"path": str(api.docs / "missing.txt")}), 404, "not_found")
    error_of(api.client.post("/documents", json={"path": str(api.docs)}), 403, "path_not_allowed")
    error_of(api.client.post("/documents", json={"path": "relative/file.txt"}), 422, "invalid_argument")
    error_of(api.client.post("/documents", json={"path": 42}), 422, "invalid_argument")
    error_of(api.client.post("/documents", json={"path": "a\x00b"}), 422, "invalid_argument")
    error_of(api.client.post("/documents", json={"uri": "s3://Not A Bucket/x.pdf"}), 422, "invalid_argument")
    error_of(api.client.post("/documents", json={"uri": "s3://bucket/folder/"}), 422, "invalid_argument")
    error_of(api.client.post("/documents", json={"path": "/x", "uri": "s3://b/k"}), 422, "invalid_argument")
    error_of(api.client.post("/documents", json={"pth": "/x"}), 422, "invalid_argument")
    error_of(api.client.post("/documents", json=["/x"]), 422, "invalid_argument")
    bad_json = api.client.post("/documents", content=b"{not json", headers={"Content-Type": "application/json"})
    error_of(bad_json, 422, "invalid_argument")

    uri = f"s3://midas-test-bucket/incoming/{uuid.uuid4().hex}.pdf"
    taken = api.client.post("/documents", json={"uri": uri})
    assert taken.status_code == 202 and taken.json()["target"] == uri and taken.json()["source"] == "uri"
    job = api.client.get(f"/jobs/{taken.json()['id']}").json()
    assert job["task"] == PROCESS and job["state"] in ("queued", "running", "done", "failed")


def test_what_midas_would_not_read_is_refused_at_once_and_leaves_nothing(api: Api) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("inside.txt", "zipped")
    before = inbox_names(api)
    cases = [
        (("photos.zip", archive.getvalue()), 415, "unsupported"),
        (("settings.cfg", b"[section]\nkey = value\n"), 415, "unsupported"),
        (("fake.pdf", os.urandom(4096)), 415, "type_mismatch"),
        (("empty.txt", b""), 422, "empty"),
    ]
    for (name, content), status, error in cases:
        body = error_of(api.client.post("/documents", files={"file": (name, content)}), status, error)
        assert name in body["message"]
    assert inbox_names(api) == before
    error_of(api.client.post("/documents", content=b"hello", headers={"Content-Type": "text/plain"}), 415,
             "unsupported_media_type")  # fmt: skip
    error_of(api.client.post("/documents", data={"note": "no file"}, files={}), 415, "unsupported_media_type")
    no_file, content_type = raw_multipart(b"", b"x")
    no_file = no_file.replace(b'; filename=""', b"")
    error_of(api.client.post("/documents", content=no_file, headers={"Content-Type": content_type}), 422,
             "invalid_argument")  # fmt: skip


def test_unknown_ids_and_bad_parameters_are_json_errors(api: Api) -> None:
    error_of(api.client.get("/documents/999999999"), 404, "not_found")
    error_of(api.client.get("/documents/0"), 422, "invalid_argument")
    error_of(api.client.get("/documents/abc"), 422, "invalid_argument")
    error_of(api.client.get(f"/jobs/{uuid.uuid4()}"), 404, "not_found")
    error_of(api.client.get("/jobs/bad id!"), 422, "invalid_argument")
    error_of(api.client.get("/documents", params={"status": "lost"}), 422, "invalid_argument")
    error_of(api.client.get("/documents", params={"limit": 100000}), 422, "invalid_argument")
    error_of(api.client.get("/search", params={"q": "x", "mode": "psychic"}), 422, "invalid_argument")
    error_of(api.client.get("/search"), 422, "invalid_argument")
    long_phrase = '"' + " ".join(["word"] * 80) + '"'
    assert "64" in error_of(api.client.get("/search", params={"q": long_phrase}), 422, "invalid_query")["message"]
    error_of(api.client.get("/search", params={"q": "x" * 1001}), 422, "invalid_query")
    error_of(api.client.get("/no/such/route"), 404, "not_found")
    error_of(api.client.delete("/jobs/x"), 405, "method_not_allowed")
    assert api.client.get("/search", params={"q": "🙂 ..."}).json()["hits"] == []


# --------------------------------------------------------------------------
# Deleting, processing again, the original
# --------------------------------------------------------------------------


def fingerprint(path: Path) -> tuple[str, int, int]:
    """What must never change about a user's file: content, size, modification time."""
    st = path.stat()
    return hashlib.sha256(path.read_bytes()).hexdigest(), st.st_size, st.st_mtime_ns


def processed(api: Api, response: httpx.Response) -> int:
    """The id of the document a ``POST /documents`` answer's job stored successfully."""
    assert response.status_code == 202, response.text
    result = api.job(response.json()["id"])["result"]
    assert result["status"] == "success", result
    return result["document_id"]


def chunk_ids(api: Api, document_id: int) -> set[int]:
    with read_scope(api.stack.settings.database_url_resolved) as s:  # type: ignore[attr-defined]
        return set(s.execute(select(ChunkRow.id).where(ChunkRow.document_id == document_id)).scalars())


def test_delete_removes_the_document_and_midas_copies_but_never_the_users_file(api: Api) -> None:
    word = f"kestrel{uuid.uuid4().hex[:10]}"
    users = api.docs / f"kestrels-{uuid.uuid4().hex[:6]}.txt"
    users.write_text(f"The {word} survey counted nesting pairs on the cliffs.\n\n" * 40)
    before = fingerprint(users)
    document_id = processed(api, api.client.post("/documents", json={"path": str(users)}))
    uploaded = api.client.post("/documents", files={"file": (f"{word}-upload.txt", f"Uploaded {word} notes.".encode())})
    upload_id = processed(api, uploaded)
    inbox_copy = api.inbox / uploaded.json()["name"]
    chunks = api.client.get(f"/documents/{document_id}").json()["chunks"]["total"]
    assert chunks >= 1 and len(chunk_ids(api, document_id)) == chunks
    found = api.client.get("/search", params={"q": word, "mode": "keyword"}).json()["hits"]
    assert {h["document_id"] for h in found} == {document_id, upload_id}

    deleted = api.client.delete(f"/documents/{document_id}")

    assert deleted.status_code == 200 and deleted.headers["content-type"] == "application/json", deleted.text
    report = deleted.json()
    assert report["document_id"] == document_id and report["status"] == "success"
    assert report["chunks_deleted"] == chunks and report["path"] == str(users.resolve())
    assert report["originals_kept"] == [str(users.resolve())] and report["working_copies_removed"] == []
    error_of(api.client.get(f"/documents/{document_id}"), 404, "not_found")
    assert chunk_ids(api, document_id) == set()
    found = api.client.get("/search", params={"q": word, "mode": "keyword"}).json()["hits"]
    assert {h["document_id"] for h in found} == {upload_id}
    assert fingerprint(users) == before  # the user's file: not moved, not changed, not deleted

    # an upload's inbox file is MIDAS's own copy: it goes with the document
    assert inbox_copy.exists()
    report = api.client.delete(f"/documents/{upload_id}").json()
    assert report["working_copies_removed"] == [str(inbox_copy)] and report["originals_kept"] == []
    assert not inbox_copy.exists() and chunk_ids(api, upload_id) == set()
    assert api.client.get("/search", params={"q": word, "mode": "keyword"}).json()["hits"] == []

    again = error_of(api.client.delete(f"/documents/{document_id}"), 404, "not_found")
    assert str(document_id) in again["message"]


def test_reprocess_runs_through_the_worker_again_on_the_same_document_with_fresh_chunks(api: Api) -> None:
    users = api.docs / f"glacier-{uuid.uuid4().hex[:6]}.txt"
    users.write_text(f"Glacier log {uuid.uuid4().hex}: the ice front retreated forty metres.\n\n" * 30)
    before = fingerprint(users)
    document_id = processed(api, api.client.post("/documents", json={"path": str(users)}))
    first = api.client.get(f"/documents/{document_id}").json()
    old_chunks = chunk_ids(api, document_id)
    assert len(old_chunks) == first["chunks"]["total"] >= 1

    sent = api.client.post(f"/documents/{document_id}/reprocess")

    assert sent.status_code == 202, sent.text
    answer = sent.json()
    assert answer["state"] == "queued" and answer["document_id"] == document_id and answer["source"] == "reprocess"
    assert sent.headers["location"] == answer["job"] == f"/jobs/{answer['id']}"
    job = api.job(answer["id"])
    assert job["state"] == "done" and job["task"] == PROCESS, job
    assert job["result"]["status"] == "success" and job["result"]["document_id"] == document_id, job
    again = api.client.get(f"/documents/{document_id}").json()
    assert again["document"]["task_id"] == answer["id"]
    assert again["document"]["attempts"] == first["document"]["attempts"] + 1
    new_chunks = chunk_ids(api, document_id)
    assert len(new_chunks) == again["chunks"]["total"] == first["chunks"]["total"]
    assert not new_chunks & old_chunks  # new rows, the old ones gone
    assert fingerprint(users) == before


def content_disposition_name(header: str) -> tuple[str, str | None]:
    """(the quoted ASCII ``filename``, the decoded RFC 5987 ``filename*`` or None) of a Content-Disposition."""
    plain = re.fullmatch(r'attachment; filename="([^"\\]*)"(?:; filename\*=UTF-8\'\'([^;\s]+))?', header)
    assert plain, header
    return plain.group(1), unquote(plain.group(2), errors="strict") if plain.group(2) else None


def test_the_original_comes_back_byte_for_byte_under_a_safe_file_name(api: Api) -> None:
    # a name a header must not take literally: a quote, a separator, a percent, a line break, non-ASCII
    name = f'Résumé "final"; 50%\r\nSet-Cookie: evil=1 {uuid.uuid4().hex[:6]}.txt'
    content = f"Caf\xe9 notes {uuid.uuid4().hex}: the m\xe9t\xe9o said rain.\n".encode("latin-1") * 3000
    users = api.docs / name
    users.write_bytes(content)
    document_id = processed(api, api.client.post("/documents", json={"path": str(users)}))

    got = api.client.get(f"/documents/{document_id}/original")

    assert got.status_code == 200, got.text
    assert got.content == content  # > 64 KB: several pieces
    assert got.headers["content-type"] == "text/plain"  # as detected, no charset the bytes may not have
    assert got.headers["content-length"] == str(len(content))
    assert got.headers["x-content-type-options"] == "nosniff" and got.headers["cache-control"] == "no-store"
    assert "set-cookie" not in got.headers
    header = got.headers["content-disposition"]
    assert header.isascii() and "\r" not in header and "\n" not in header
    fallback, exact = content_disposition_name(header)
    assert exact == name.replace("\r\n", "__")  # the line break as _, everything else exact
    assert fallback.isascii() and not set(fallback) & set('"\\%;=:/') and fallback.endswith(".txt")
    work = api.stack.settings.work_dir  # type: ignore[attr-defined]
    # the private copy it was read from is removed once the answer is sent (just after the client has it all)
    wait_until(lambda: not list(work.rglob(f"*{name[-10:]}")), 10, 0.05, "the working copy removed")

    # an upload comes back from MIDAS's inbox copy; a client that hangs up early leaves no copy either (with
    # MIDAS_MAX_FILE_MB=1 the server may have written it all by then: a 40 MB one was checked by hand)
    other = content + f"Uploaded {uuid.uuid4().hex}.\n".encode()
    uploaded = api.client.post("/documents", files={"file": ("plain.txt", other)})
    upload_id = processed(api, uploaded)
    with api.client.stream("GET", f"/documents/{upload_id}/original") as streamed:
        assert streamed.headers["content-disposition"] == f'attachment; filename="{uploaded.json()["name"]}"'
        piece = next(streamed.iter_raw())
        assert piece and other.startswith(piece)  # then the client hangs up
    wait_until(lambda: not list(work.rglob(uploaded.json()["name"])), 10, 0.05, "the working copy removed")


def test_delete_reprocess_and_original_errors_are_json(api: Api) -> None:
    unknown = 999_999_999
    for method, path in (
        ("DELETE", f"/documents/{unknown}"),
        ("POST", f"/documents/{unknown}/reprocess"),
        ("GET", f"/documents/{unknown}/original"),
    ):
        assert str(unknown) in error_of(api.client.request(method, path), 404, "not_found")["message"]
        error_of(api.client.request(method, path.replace(str(unknown), "0")), 422, "invalid_argument")
        error_of(api.client.request(method, path.replace(str(unknown), "abc")), 422, "invalid_argument")

    # a document a task is processing right now is left to it
    store = DocumentStore(api.stack.settings.database_url_resolved)  # type: ignore[attr-defined]
    busy_path = str(api.docs / "busy.txt")
    claim = store.claim(uuid.uuid4().hex * 2, busy_path, "txt", "text/plain", 10, task_id="running-task")
    assert claim.state == "new"
    busy = error_of(api.client.delete(f"/documents/{claim.document_id}"), 409, "document_busy")
    assert "being processed right now; delete it" in busy["message"]
    busy = error_of(api.client.post(f"/documents/{claim.document_id}/reprocess"), 409, "document_busy")
    assert "process it when that is done" in busy["message"]
    store.record_failure(busy_path, "failed", "corrupt", "bad", document_id=claim.document_id)
    assert api.client.delete(f"/documents/{claim.document_id}").json()["status"] == "failed"

    # no copy and no file holds the content any more: gone, for the original and for processing again
    users = api.docs / f"edited-{uuid.uuid4().hex[:6]}.txt"
    users.write_text(f"First draft {uuid.uuid4().hex}.")
    document_id = processed(api, api.client.post("/documents", json={"path": str(users)}))
    users.write_text(f"Second draft, other content {uuid.uuid4().hex}.")  # the user edited it
    gone = error_of(api.client.get(f"/documents/{document_id}/original"), 410, "original_unavailable")
    assert "holds other content now" in gone["message"]
    error_of(api.client.post(f"/documents/{document_id}/reprocess"), 410, "original_unavailable")
    assert api.client.get(f"/documents/{document_id}").json()["document"]["status"] == "success"  # unchanged
    assert api.client.delete(f"/documents/{document_id}").status_code == 200
    assert users.exists()


def test_with_redis_down_the_ledger_keeps_an_upload_and_it_is_processed_once_redis_is_back(isolated_stack) -> None:
    from background_tasks.ops import reaper

    stack = isolated_stack(MIDAS_API_TOKENS=digest(TOKEN), MIDAS_LEDGER_GRACE="1")
    server = ApiServer(stack.env, stack.root / "logs").wait_ready()
    without_ledger = ApiServer({**stack.env, "MIDAS_LEDGER": "false"}, stack.root / "logs").wait_ready()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    content = f"Kept while the broker was down {uuid.uuid4().hex}.".encode()
    try:
        stack.redis.stop()
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
            kept = client.post("/documents", files={"file": ("kept.txt", content)})
            assert kept.status_code == 202, kept.text
            assert "ledger" in kept.json()["note"]
            job_id = kept.json()["id"]
            assert client.get(f"/jobs/{job_id}").json()["state"] == "queued"
            scraped = metric_samples(client.get("/metrics").text)
            assert scraped[("midas_scrape_error", (("part", "queues"),))] == 1  # Redis down: flagged, not fatal
            assert scraped[("midas_ledger_entries", (("state", "queued"),))] == 1
        refused = httpx.post(
            without_ledger.url + "/documents", files={"file": ("refused.txt", b"nobody keeps this")}, headers=headers
        )
        error_of(refused, 503, "broker_unavailable")
        inbox = stack.settings.inbox_dir
        assert sorted(p.name for p in inbox.iterdir()) == ["kept.txt"]

        stack.redis.start()
        stack.start_worker()
        with stack.app.connection_for_write() as conn:
            report = reaper.reap(stack.settings, stack.app, conn.default_channel.client)
        assert job_id in report.resent, report
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:

            def done() -> dict | None:
                job = client.get(f"/jobs/{job_id}").json()
                return job if job["state"] == "done" else None

            job = wait_until(done, 60, interval=0.3, what="the kept upload processed")
        assert job["result"]["status"] == "success" and job["resends"] == 1
    finally:
        server.stop()
        without_ledger.stop()


# --------------------------------------------------------------------------
# Size limits: declared, counted, and before the body is read
# --------------------------------------------------------------------------


def test_a_body_over_the_limit_is_refused_before_it_is_read(api: Api) -> None:
    port = api.server.port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /documents HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"Authorization: Bearer {TOKEN}\r\n".encode()
            + b"Content-Type: multipart/form-data; boundary=xyz\r\nContent-Length: 10000000000\r\n\r\n"
        )
        started = time.monotonic()
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    assert time.monotonic() - started < 5  # no byte of the 10 GB was sent, and none was waited for
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), reply[:300]
    assert json.loads(body)["error"] == "too_large"

    before = inbox_names(api)
    over = os.urandom(1024 * 1024 + 100 * 1024)  # MIDAS_MAX_FILE_MB=1 plus more than the multipart allowance
    error_of(api.client.post("/documents", files={"file": ("big.txt", over)}), 413, "too_large")

    streamed_body, content_type = raw_multipart(b"streamed.txt", over)

    def chunks() -> Iterator[bytes]:  # an iterator: sent chunked, without Content-Length, counted as it comes
        for start in range(0, len(streamed_body), 64 * 1024):
            yield streamed_body[start : start + 64 * 1024]

    streamed = api.client.post("/documents", content=chunks(), headers={"Content-Type": content_type})
    error_of(streamed, 413, "too_large")
    error_of(api.client.post("/documents", json={"path": "/" + "x" * 70_000}), 413, "too_large")
    assert inbox_names(api) == before

    # exactly at the limit is fine: the limit is the file's, not the framing's
    fits = (AURORA + "\n").encode() * (1024 * 1024 // (len(AURORA) + 1))
    sent = api.client.post("/documents", files={"file": ("fits.txt", fits)})
    assert sent.status_code == 202, sent.text
    assert api.job(sent.json()["id"])["result"]["status"] == "success"


# --------------------------------------------------------------------------
# Health and metrics
# --------------------------------------------------------------------------


def metric_samples(text: str) -> dict[tuple[str, tuple], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_health_is_the_stored_verdict_and_metrics_are_prometheus_text(api: Api) -> None:
    check = api.stack.send(keys.SYSTEM_HEALTH_CHECK).get(timeout=60)  # type: ignore[attr-defined]
    health = api.client.get("/health")
    verdict = health.json()
    assert verdict["status"] == check["status"] and verdict["checked_at"] and verdict["age_s"] < 120
    assert verdict["stale"] is False and datetime.fromisoformat(verdict["checked_at"]).tzinfo is not None
    assert verdict["reasons"] == list(check["reasons"])
    assert health.status_code == (503 if check["status"] == "critical" else 200)

    text_doc = api.docs / f"metrics-{uuid.uuid4().hex[:6]}.txt"
    text_doc.write_text(f"Metrics test document {uuid.uuid4().hex}.")
    assert api.job(api.client.post("/documents", json={"path": str(text_doc)}).json()["id"])["state"] == "done"

    scraped = api.client.get("/metrics")
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = metric_samples(scraped.text)
    for queue in ("default", "documents", "analysis", "monitoring"):
        assert ("midas_queue_waiting", (("queue", queue),)) in samples
        assert ("midas_queue_unacked", (("queue", queue),)) in samples
    assert samples[("midas_tasks", (("state", "success"), ("task", PROCESS)))] >= 1
    assert samples[("midas_task_runtime_seconds_count", (("task", PROCESS),))] >= 1
    assert samples[("midas_task_runtime_seconds_sum", (("task", PROCESS),))] > 0
    assert ("midas_task_runtime_recent_seconds", (("quantile", "0.95"), ("task", PROCESS))) in samples
    assert samples[("midas_documents", (("status", "success"),))] >= 1
    assert samples[("midas_documents_by_type", (("file_type", "txt"),))] >= 1
    assert samples[("midas_ledger_entries", (("state", "done"),))] >= 1
    level = {"ok": 0, "warning": 1, "critical": 2}[check["status"]]
    assert samples[("midas_health_level", ())] == level
    assert samples[("midas_health_status", (("status", check["status"]),))] == 1
    failed_parts = {labels: value for (name, labels), value in samples.items() if name == "midas_scrape_error"}
    assert failed_parts and not any(failed_parts.values()), failed_parts


# --------------------------------------------------------------------------
# Many at once
# --------------------------------------------------------------------------


def test_200_concurrent_uploads_are_all_accepted_and_processed_once(api: Api) -> None:
    run = uuid.uuid4().hex[:8]
    files = {f"burst-{run}-{i:03d}.txt": f"Burst {run} document {i}: {uuid.uuid4().hex}".encode() for i in range(200)}

    async def upload_all() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=api.server.url, headers=headers, limits=limits, timeout=120) as client:
            return await asyncio.gather(
                *(client.post("/documents", files={"file": (name, data)}) for name, data in files.items())
            )

    responses = asyncio.run(upload_all())
    assert [r.status_code for r in responses] == [202] * 200, [r.text for r in responses if r.status_code != 202]
    answers = [r.json() for r in responses]
    ids = {a["id"] for a in answers}
    assert len(ids) == 200 and {a["name"] for a in answers} == set(files)
    assert all((api.inbox / name).read_bytes() == data for name, data in files.items())

    def all_stored() -> bool:
        listed = api.client.get("/documents", params={"limit": 500, "type": "txt"}).json()["documents"]
        mine = [d for d in listed if d["path"] and Path(d["path"]).name in files and d["status"] == "success"]
        return len(mine) == 200

    wait_until(all_stored, 120, interval=1.0, what="200 uploaded documents stored")
    jobs = [api.client.get(f"/jobs/{task_id}").json() for task_id in ids]
    assert {j["state"] for j in jobs} == {"done"}
    assert {j["result"]["status"] for j in jobs} == {"success"}
    assert len({j["document_id"] for j in jobs}) == 200  # one document each, none twice


# --------------------------------------------------------------------------
# The launcher's api service
# --------------------------------------------------------------------------


def test_the_launcher_starts_the_api_on_loopback_and_stops_it(tmp_path: Path) -> None:
    env = launcher_env(tmp_path, MIDAS_API_TOKENS=digest(TOKEN))
    try:
        started = launcher(env, "start", "api")
        assert started.returncode == 0, started.stdout + started.stderr
        port = env["MIDAS_API_PORT"]
        assert re.search(rf"^api\s+started \(pid \d+\) http://localhost:{port}/docs", started.stdout, re.M), started
        rows = {row["service"]: row for row in json.loads(launcher(env, "status", "--json").stdout)}
        assert rows["api"]["state"] == "up"
        proc = psutil.Process(rows["api"]["pid"])
        listening = {c.laddr.ip for c in proc.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}
        assert listening == {"127.0.0.1"}
        assert TOKEN not in " ".join(proc.cmdline()) and digest(TOKEN) not in " ".join(proc.cmdline())
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            assert client.get("/docs").status_code == 200
            assert client.get("/documents", headers={"Authorization": f"Bearer {TOKEN}"}).json()["total"] == 0
        stopped = launcher(env, "stop", "api")
        assert stopped.returncode == 0 and "api" in stopped.stdout
        assert not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
        log = (tmp_path / "logs" / "api.log").read_text()
        assert "MIDAS API on http://127.0.0.1" in log and TOKEN not in log
    finally:
        stop_stack(env, tmp_path)
