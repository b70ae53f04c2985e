"""s3:// URIs: what names an object, what names a prefix, what is refused, and the working copy's safe name."""

from __future__ import annotations

import pytest

from background_tasks.errors import InvalidArgument
from background_tasks.settings import SettingsError
from background_tasks.sources.s3.uri import S3Location, parse_object, parse_prefix

#: a PostgreSQL URL for settings that need one (never connected to here)
PG_URL = "postgresql+psycopg://midas@127.0.0.1:5432/midas"


def test_an_object_uri_with_spaces_unicode_and_a_version() -> None:
    loc = parse_object("s3://my-bucket/reports 2024/Übersicht.pdf?versionId=3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY")
    assert loc == S3Location("my-bucket", "reports 2024/Übersicht.pdf", "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY")
    assert loc.uri == "s3://my-bucket/reports 2024/Übersicht.pdf?versionId=3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY"
    assert parse_object("s3://my-bucket/a.txt").version_id is None


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("a/../../etc/passwd", "passwd"),
        ("x/..", "object"),
        ("..", "object"),
        ("dir/.hidden.txt", "hidden.txt"),
        ("back\\slash\\..\\name.txt", "back_slash_.._name.txt"),
        ("a/" + "n" * 400 + ".docx", "n" * 195 + ".docx"),
    ],
)
def test_the_working_copy_name_never_leaves_its_folder(key: str, name: str) -> None:
    got = S3Location("bucket", key).file_name
    assert got == name
    assert "/" not in got and got not in {".", ".."} and len(got.encode()) <= 200


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("s3://Bad_Bucket/key.txt", "not a valid S3 bucket name"),
        ("s3://ab/key.txt", "not a valid S3 bucket name"),
        ("s3://bucket..x/key.txt", "not a valid S3 bucket name"),
        ("s3://bucket/", "names a folder"),
        ("s3://bucket/folder/", "names a folder"),
        ("s3://bucket/evil\nline.txt", "control characters"),
        ("s3://bucket/" + "k" * 1100, "longer than"),
        ("/local/path.pdf", "not an s3:// URI"),
    ],
)
def test_what_cannot_name_an_object_is_refused(uri: str, fragment: str) -> None:
    with pytest.raises(InvalidArgument, match=fragment):
        parse_object(uri)


def test_a_prefix_may_be_a_whole_bucket_or_end_in_a_slash() -> None:
    assert parse_prefix("s3://bucket") == S3Location("bucket", "")
    assert parse_prefix("s3://bucket/in/") == S3Location("bucket", "in/")


def test_s3_settings_parse_and_name_the_variable(settings_for) -> None:
    s = settings_for(
        MIDAS_S3_ENDPOINT_URL="http://127.0.0.1:8333",
        MIDAS_S3_PATH_STYLE="true",
        MIDAS_OBJECT_STORE="s3://stage/midas",
        MIDAS_DATABASE_URL=PG_URL,
        MIDAS_S3_SOURCES="s3://in-one/a/, s3://in-two",
        MIDAS_S3_MAX_PER_RUN="50",
    )
    assert (s.s3_endpoint_url, s.s3_path_style, s.object_store) == ("http://127.0.0.1:8333", True, "s3://stage/midas")
    assert s.s3_sources == ("s3://in-one/a/", "s3://in-two") and s.s3_max_per_run == 50
    assert s.as_env()["MIDAS_S3_SOURCES"] == "s3://in-one/a/,s3://in-two"  # a child process reads the same list
    for name, value in [
        ("MIDAS_S3_ENDPOINT_URL", "127.0.0.1:8333"),
        ("MIDAS_OBJECT_STORE", "/tmp/store"),
        ("MIDAS_S3_SOURCES", "s3://ok,bucket-without-scheme"),
    ]:
        with pytest.raises(SettingsError, match=name):
            settings_for(**{name: value, "MIDAS_DATABASE_URL": PG_URL})


def test_an_object_store_with_sqlite_is_refused_with_the_reason(settings_for) -> None:
    with pytest.raises(SettingsError, match="cannot share a SQLite file; set MIDAS_DATABASE_URL"):
        settings_for(MIDAS_OBJECT_STORE="s3://stage/midas")


def test_beat_lists_the_s3_sources_only_when_there_are_some(settings_for) -> None:
    from background_tasks import keys
    from celery_config import beat_schedule

    assert "s3-sources" not in beat_schedule(settings_for())
    entry = beat_schedule(settings_for(MIDAS_S3_SOURCES="s3://in-one/a/", MIDAS_S3_INTERVAL="120"))["s3-sources"]
    assert entry["task"] == keys.LIST_S3_SOURCES and entry["schedule"].total_seconds() == 120
