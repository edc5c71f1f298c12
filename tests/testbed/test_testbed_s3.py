"""The S3 test bed (moto_server) through the minio SDK the HEROES data layer uses."""

from __future__ import annotations

import io

import pytest
import urllib3
from minio import Minio
from minio.error import S3Error

pytestmark = [pytest.mark.s3, pytest.mark.timeout(120)]


def client(s3) -> Minio:
    # no retries: a dead server must fail at once, not after urllib3's back-off
    http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=2, read=10), retries=False)
    return Minio(s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key, secure=False,
                 region=s3.region, http_client=http)  # fmt: skip


def test_put_get_list(s3_server):
    assert s3_server.endpoint == f"127.0.0.1:{s3_server.port}"
    assert s3_server.url == f"http://127.0.0.1:{s3_server.port}"
    m = client(s3_server)
    m.make_bucket("testbed-probe")
    data = b"hello from the test bed\n" * 100
    m.put_object("testbed-probe", "dir/hello.txt", io.BytesIO(data), len(data), content_type="text/plain")
    resp = m.get_object("testbed-probe", "dir/hello.txt")
    try:
        assert resp.read() == data
    finally:
        resp.close()
        resp.release_conn()
    assert [o.object_name for o in m.list_objects("testbed-probe", recursive=True)] == ["dir/hello.txt"]
    with pytest.raises(S3Error) as err:
        m.stat_object("testbed-probe", "missing.txt")
    assert err.value.code == "NoSuchKey"


def test_kill_then_start_is_empty_on_the_same_port(s3_server):
    m = client(s3_server)
    m.make_bucket("before-kill")
    port = s3_server.port
    s3_server.kill()
    try:
        with pytest.raises(urllib3.exceptions.HTTPError):
            m.bucket_exists("before-kill")
    finally:
        s3_server.start()
    assert s3_server.port == port
    assert not m.bucket_exists("before-kill")  # state is in memory: a restart loses it
    m.make_bucket("after-restart")
    assert m.bucket_exists("after-restart")
