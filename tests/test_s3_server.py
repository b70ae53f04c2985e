"""The SeaweedFS fixture itself: a real S3 API that keeps its objects across a restart and can be taken away."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from tests.s3_server import S3Server

pytestmark = pytest.mark.integration


def test_objects_survive_a_restart_and_a_stopped_server_refuses_connections(tmp_path) -> None:
    server = S3Server(tmp_path / "s3")
    server.start()
    try:
        server.make_bucket("fixture-check")
        server.client().put_object(Bucket="fixture-check", Key="a b/ü.txt", Body=b"hello")
        with pytest.raises(ClientError) as wrong:
            server.client(secret_key="not-the-secret").get_object(Bucket="fixture-check", Key="a b/ü.txt")
        assert wrong.value.response["Error"]["Code"] in {"SignatureDoesNotMatch", "403", "AccessDenied"}

        server.stop()
        with pytest.raises(EndpointConnectionError):
            server.client().list_buckets()

        server.start()
        body = server.client().get_object(Bucket="fixture-check", Key="a b/ü.txt")["Body"].read()
        assert body == b"hello"
    finally:
        server.kill()
