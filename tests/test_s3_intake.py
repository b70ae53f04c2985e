"""process_file on s3:// URIs against a real SeaweedFS: streamed, hashed, checked, and each failure named."""

from __future__ import annotations

import io

import pytest

from background_tasks.errors import TransientError
from background_tasks.processing.pipeline import process_file
from background_tasks.sources.s3.client import s3_client
from tests.s3_server import S3Server, s3_server  # noqa: F401  (the module's fixture)

pytestmark = pytest.mark.integration

BUCKET = "intake-docs"
TEXT = b"Quarterly numbers for the northern region. Revenue grew by eleven percent.\n" * 20


@pytest.fixture
def s3_settings(s3_server: S3Server, settings_for, monkeypatch):  # noqa: F811
    for name, value in s3_server.aws_env().items():
        monkeypatch.setenv(name, value)  # boto3's own credential chain reads the environment
    settings = settings_for(**{k: v for k, v in s3_server.env().items() if k.startswith("MIDAS_")})
    try:
        s3_server.make_bucket(BUCKET)
    except Exception as exc:  # already made by an earlier test of the module
        assert "BucketAlready" in str(exc), exc
    return settings


def _put(server: S3Server, key: str, body: bytes) -> str:
    server.client().put_object(Bucket=BUCKET, Key=key, Body=body)
    return f"s3://{BUCKET}/{key}"


def test_an_object_is_processed_and_its_uri_etag_recorded(s3_server, s3_settings, store) -> None:  # noqa: F811
    uri = _put(s3_server, "reports 2024/Übersicht ../q3.txt", TEXT)
    result = process_file(uri, s3_settings, store)
    assert result.status == "success", result
    assert result.path == uri and result.chunks_created >= 1
    assert result.metadata["source_uri"] == uri
    head = s3_server.client().head_object(Bucket=BUCKET, Key="reports 2024/Übersicht ../q3.txt")
    assert result.metadata["s3_etag"] == head["ETag"].strip('"')
    assert result.metadata["file_name"] == "q3.txt" and result.metadata["size_bytes"] == len(TEXT)
    assert store.find_by_path(uri)[0]["id"] == result.document_id
    assert not list(s3_settings.work_dir.iterdir())  # the working copy is gone


def test_a_multipart_object_is_read_whole(s3_server, s3_settings, store) -> None:  # noqa: F811
    from boto3.s3.transfer import TransferConfig

    body = b"".join(b"line %07d of a long multipart log file\n" % i for i in range(300_000))  # ~12 MB
    s3_server.client().upload_fileobj(
        io.BytesIO(body), BUCKET, "big/multi.txt", Config=TransferConfig(multipart_threshold=5 * 1024 * 1024)
    )
    assert "-" in s3_server.client().head_object(Bucket=BUCKET, Key="big/multi.txt")["ETag"]  # really multipart
    result = process_file(f"s3://{BUCKET}/big/multi.txt", s3_settings, store)
    assert result.status == "success" and result.metadata["size_bytes"] == len(body)
    import hashlib

    assert result.sha256 == hashlib.sha256(body).hexdigest()


def test_a_version_is_read_as_named(s3_server, s3_settings, store) -> None:  # noqa: F811
    client = s3_server.client()
    client.create_bucket(Bucket="intake-versions")
    client.put_bucket_versioning(Bucket="intake-versions", VersioningConfiguration={"Status": "Enabled"})
    first = client.put_object(Bucket="intake-versions", Key="v.txt", Body=b"the first version of the memo")
    client.put_object(Bucket="intake-versions", Key="v.txt", Body=b"the second version, rewritten")
    uri = f"s3://intake-versions/v.txt?versionId={first['VersionId']}"
    result = process_file(uri, s3_settings, store)
    assert result.status == "success", result
    assert result.metadata["s3_version_id"] == first["VersionId"] and result.path == uri
    assert store.get_document(result.document_id)["text_chars"] == len(b"the first version of the memo")


def test_too_large_is_rejected_from_the_head_without_reading_a_byte(s3_server, settings_for, s3_settings, store):  # noqa: F811
    small = settings_for(**{k: v for k, v in s3_server.env().items() if k.startswith("MIDAS_")}, MIDAS_MAX_FILE_MB="1")
    uri = _put(s3_server, "large.txt", b"x" * (2 * 1024 * 1024))
    gets: list[str] = []
    client = s3_client(small)
    count_get = lambda **kw: gets.append("get")  # noqa: E731
    client.meta.events.register("before-call.s3.GetObject", count_get)
    try:
        result = process_file(uri, small, store)
    finally:
        client.meta.events.unregister("before-call.s3.GetObject", count_get)
    assert (result.status, result.error_type) == ("rejected", "too_large")
    assert "MIDAS_MAX_FILE_MB" in result.error and gets == []


def test_a_multipart_object_over_100_mb_is_rejected_unread(s3_server, s3_settings, store) -> None:  # noqa: F811
    from boto3.s3.transfer import TransferConfig

    size = 101 * 1024 * 1024
    s3_server.client().upload_fileobj(
        io.BytesIO(bytes(size)), BUCKET, "huge/scan.pdf", Config=TransferConfig(multipart_chunksize=16 * 1024 * 1024)
    )
    gets: list[str] = []
    client = s3_client(s3_settings)
    count_get = lambda **kw: gets.append("get")  # noqa: E731
    client.meta.events.register("before-call.s3.GetObject", count_get)
    try:
        result = process_file(f"s3://{BUCKET}/huge/scan.pdf", s3_settings, store)
    finally:
        client.meta.events.unregister("before-call.s3.GetObject", count_get)
    assert (result.status, result.error_type, gets) == ("rejected", "too_large", [])
    assert "101.0 MB" in result.error
    s3_server.client().delete_object(Bucket=BUCKET, Key="huge/scan.pdf")


@pytest.mark.parametrize(
    ("uri", "error_type", "fragment"),
    [
        ("s3://no-such-bucket-here/a.txt", "not_found", "no such"),
        (f"s3://{BUCKET}/not/there.txt", "not_found", "no such"),
        (f"s3://{BUCKET}/folder/", "invalid_argument", "names a folder"),
    ],
)
def test_a_missing_bucket_or_key_is_rejected_with_a_clear_reason(
    s3_settings, store, uri: str, error_type: str, fragment: str
) -> None:
    result = process_file(uri, s3_settings, store)
    assert (result.status, result.error_type) == ("rejected", error_type)
    assert fragment in result.error and uri in result.error
    assert store.find_by_path(uri)[0]["status"] == "rejected"  # the paths table records the URI


def test_a_stopped_server_is_transient(s3_server, s3_settings, store) -> None:  # noqa: F811
    uri = _put(s3_server, "later.txt", TEXT)
    s3_server.stop()
    try:
        with pytest.raises(TransientError, match="cannot be reached"):
            process_file(uri, s3_settings, store)
    finally:
        s3_server.start()
    assert process_file(uri, s3_settings, store).status in {"success", "duplicate"}
