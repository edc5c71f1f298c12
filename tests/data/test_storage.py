"""S3Storage against the real S3-protocol server of the test bed (moto_server).

boto3 serves as an independent second client: what it sees on the server is what was stored.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import re
import urllib.error
import urllib.request
from contextlib import aclosing

import boto3
import pytest
from minio.error import S3Error

from jupyter_heroes.data import names
from jupyter_heroes.data.errors import (
    Conflict,
    DataError,
    IntegrityError,
    InvalidName,
    InvalidRequest,
    NotFound,
    Unavailable,
)
from jupyter_heroes.data.storage import S3Storage, multipart_etag

pytestmark = pytest.mark.s3
MiB = 1024 * 1024


@pytest.fixture
def boto(s3_server):
    return boto3.client(
        "s3",
        endpoint_url=s3_server.url,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key,
        region_name="us-east-1",
    )


@pytest.fixture
async def bucket(storage, org_name):
    name = names.user_bucket(org_name, "alice")
    await storage.create_bucket(name)
    return name


async def chunks_of(data: bytes, size: int = 1 * MiB):
    for i in range(0, len(data), size):
        await asyncio.sleep(0)
        yield data[i : i + size]


async def fetch(req) -> tuple[int, bytes]:
    """urllib in a thread (a browser or curl using a presigned URL)."""

    def go() -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    return await asyncio.to_thread(go)


async def read_all(storage, bucket, key, **kw) -> bytes:
    out = bytearray()
    async with aclosing(storage.download(bucket, key, **kw)) as it:
        async for chunk in it:
            out += chunk
    return bytes(out)


async def test_bucket_lifecycle(storage, boto, org_name):
    name = names.project_bucket(org_name, "wing")
    assert not await storage.bucket_exists(name)
    await storage.create_bucket(name)
    assert await storage.bucket_exists(name)
    assert name in [b.name for b in await storage.list_buckets()]
    with pytest.raises(Conflict, match="already exists"):
        await storage.create_bucket(name)
    await storage.upload(name, "a.txt", b"abc")
    await storage.create_folder(name, "results")
    usage = await storage.bucket_usage(name)
    assert (usage.bytes, usage.objects) == (3, 2)
    with pytest.raises(
        Conflict, match="not empty; delete its objects first, or delete the bucket with force"
    ):
        await storage.delete_bucket(name)
    assert await storage.bucket_exists(name)
    await storage.delete_bucket(name, force=True)
    assert not await storage.bucket_exists(name)
    assert name not in [b["Name"] for b in boto.list_buckets()["Buckets"]]


async def test_listing_pages_folders_and_prefixes(storage, boto, bucket):
    keys = [f"data/run{i:02d}/out.txt" for i in range(7)] + [f"data/f{i}.csv" for i in range(5)] + ["top.txt"]
    for k in keys:
        await storage.upload(bucket, k, k.encode())
    await storage.create_folder(bucket, "empty")

    top = await storage.list_objects(bucket)
    assert [o.key for o in top.objects] == ["top.txt"]
    assert top.prefixes == ["data/", "empty/"]

    # a delimited listing in pages of 3 returns every file and folder exactly once, in order
    seen_objects, seen_prefixes, token, pages = [], [], None, 0
    while True:
        page = await storage.list_objects(bucket, "data/", token=token, max_keys=3)
        assert len(page.objects) + len(page.prefixes) <= 3
        seen_objects += [o.key for o in page.objects]
        seen_prefixes += page.prefixes
        pages += 1
        token = page.next_token
        if not token:
            break
    assert seen_objects == [f"data/f{i}.csv" for i in range(5)]
    assert seen_prefixes == [f"data/run{i:02d}/" for i in range(7)]
    assert pages == 4

    # recursive: the folder marker is an object, not a prefix
    everything = [o async for o in storage.iter_objects(bucket)]
    assert sorted(o.key for o in everything) == sorted([*keys, "empty/"])
    assert [o.is_folder for o in everything if o.key == "empty/"] == [True]
    server_side = sorted(o["Key"] for o in boto.list_objects_v2(Bucket=bucket)["Contents"])
    assert server_side == sorted([*keys, "empty/"])

    with pytest.raises(InvalidName, match=r"'\.\.' segment"):
        await storage.list_objects(bucket, "../")
    with pytest.raises(InvalidRequest, match="max_keys"):
        await storage.list_objects(bucket, max_keys=5000)


async def test_small_upload_records_sha256_and_md5_etag(storage, boto, bucket):
    res = await storage.upload(bucket, "hello.txt", b"hello world", content_type="text/plain")
    assert res.sha256 == hashlib.sha256(b"hello world").hexdigest()
    assert res.etag == hashlib.md5(b"hello world").hexdigest()
    head = boto.head_object(Bucket=bucket, Key="hello.txt")
    assert head["Metadata"]["heroes-sha256"] == res.sha256
    assert head["ContentType"] == "text/plain"
    st = await storage.stat(bucket, "hello.txt")
    assert (st.size, st.sha256, st.content_type) == (11, res.sha256, "text/plain")


async def test_multipart_upload_is_verified_and_readable_by_another_client(storage, boto, bucket):
    data = os.urandom(12 * MiB + 123)  # three 5 MiB parts with the fixture's part size
    res = await storage.upload(bucket, "big.bin", chunks_of(data, 700_000), size=len(data))
    assert res.parts == 3
    parts = [hashlib.md5(data[i : i + 5 * MiB]).digest() for i in range(0, len(data), 5 * MiB)]
    assert res.etag == multipart_etag(parts)
    body = boto.get_object(Bucket=bucket, Key="big.bin")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest() == res.sha256
    st = await storage.stat(bucket, "big.bin")
    assert (st.sha256, st.etag) == (res.sha256, res.etag)  # recorded as a tag: the object was not rewritten
    tags = {t["Key"]: t["Value"] for t in boto.get_object_tagging(Bucket=bucket, Key="big.bin")["TagSet"]}
    assert tags == {"heroes-sha256": res.sha256}
    assert await read_all(storage, bucket, "big.bin") == data
    assert (
        await read_all(storage, bucket, "big.bin", offset=5 * MiB - 3, length=10)
        == data[5 * MiB - 3 : 5 * MiB + 7]
    )


async def test_each_body_goes_with_its_content_md5(storage, bucket):
    """The store checks a body against its Content-MD5 before storing it (MinIO and AWS S3 do), and the
    SDK, given the header, does not hash the body a second time. Read off the SDK's trace of the
    requests it sends."""
    small, big = os.urandom(1000), os.urandom(11 * MiB)
    trace = io.StringIO()
    storage._client.trace_on(trace)
    try:
        await storage.upload(bucket, "small.bin", small)
        await storage.upload(bucket, "big.bin", chunks_of(big), size=len(big))
    finally:
        storage._client.trace_off()
    requests = trace.getvalue().split("---------START-HTTP---------")
    puts = [r for r in requests if re.search(r"^PUT /[^?\s]+/[^?\s]+(\?partNumber=\S+)? HTTP", r, re.M)]
    sent = [m for r in puts for m in re.findall(r"^Content-Md5: (\S+)$", r, flags=re.M | re.I)]
    bodies = [small] + [big[i : i + 5 * MiB] for i in range(0, len(big), 5 * MiB)]
    assert sent == [base64.b64encode(hashlib.md5(b).digest()).decode() for b in bodies]
    assert await read_all(storage, bucket, "big.bin") == big


async def test_a_body_the_store_received_damaged_is_an_integrity_error(storage, boto, bucket, monkeypatch):
    """moto_server does not check Content-MD5, so the store's answer to a damaged part (MinIO and AWS S3
    answer ``BadDigest``) is stood in for at the SDK call: the upload is aborted and nothing is left."""

    def damaged(bucket_name, object_name, data, headers, upload_id, part_number):
        raise S3Error(
            None,
            "BadDigest",
            "The Content-MD5 you specified did not match",
            object_name,
            "r",
            "h",  # type: ignore[arg-type]
        )

    monkeypatch.setattr(storage._client, "_upload_part", damaged)
    with pytest.raises(
        IntegrityError, match="received object 'part.bin' .* damaged on the way; nothing was stored"
    ):
        await storage.upload(bucket, "part.bin", chunks_of(os.urandom(6 * MiB)), size=6 * MiB)
    assert "Contents" not in boto.list_objects_v2(Bucket=bucket)
    assert boto.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


async def test_upload_of_unknown_size(storage, bucket):
    data = os.urandom(11 * MiB)
    res = await storage.upload(bucket, "unknown.bin", chunks_of(data))
    assert (res.size, res.parts) == (len(data), 3)
    assert await read_all(storage, bucket, "unknown.bin") == data


async def test_wrong_declared_size_stores_nothing(storage, boto, bucket):
    data = os.urandom(7 * MiB)
    with pytest.raises(InvalidRequest, match="sent more than the 6291456 bytes declared; nothing was stored"):
        await storage.upload(bucket, "more.bin", chunks_of(data), size=6 * MiB)
    with pytest.raises(
        InvalidRequest, match=r"ended after 7340032 of the 8388608 bytes declared; nothing was stored"
    ):
        await storage.upload(bucket, "fewer.bin", chunks_of(data), size=8 * MiB)
    with pytest.raises(InvalidRequest, match="ended after 3 of the 4 bytes"):
        await storage.upload(bucket, "tiny.bin", chunks_of(b"abc"), size=4)
    listing = boto.list_objects_v2(Bucket=bucket)
    assert "Contents" not in listing
    assert boto.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


async def test_source_failing_midway_aborts_the_multipart_upload(storage, boto, bucket):
    async def broken():
        for _ in range(12):
            yield os.urandom(1 * MiB)
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await storage.upload(bucket, "broken.bin", broken(), size=40 * MiB)
    assert "Contents" not in boto.list_objects_v2(Bucket=bucket)
    assert boto.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


async def test_cancelled_upload_leaves_nothing(storage, boto, bucket):
    started = asyncio.Event()

    async def slow():
        for i in range(100):
            if i == 11:
                started.set()
            yield os.urandom(1 * MiB)
            await asyncio.sleep(0.01)

    task = asyncio.ensure_future(storage.upload(bucket, "cancelled.bin", slow(), size=100 * MiB))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "Contents" not in boto.list_objects_v2(Bucket=bucket)
    assert boto.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


async def test_delete_objects_and_errors(storage, bucket):
    for k in ("a", "b", "c/d"):
        await storage.upload(bucket, k, b"x")
    res = await storage.delete_objects(bucket, ["a", "c/d"])
    assert sorted(res.deleted) == ["a", "c/d"] and res.errors == {}
    assert [o.key async for o in storage.iter_objects(bucket)] == ["b"]
    with pytest.raises(NotFound, match="does not exist"):
        await storage.stat(bucket, "a")
    with pytest.raises(NotFound, match="bucket .* does not exist"):
        await storage.list_objects(bucket + "x")
    with pytest.raises(InvalidName, match="absolute"):
        await storage.delete_objects(bucket, ["/b"])


async def test_conditional_read_detects_a_changed_object(storage, bucket):
    await storage.upload(bucket, "v.txt", b"version one")
    old = await storage.stat(bucket, "v.txt")
    await storage.upload(bucket, "v.txt", b"version two!")
    with pytest.raises(Conflict, match="changed while it was being read"):
        await read_all(storage, bucket, "v.txt", if_match=old.etag)


async def test_presigned_urls(storage, boto, bucket):
    await storage.upload(bucket, "dir/report.txt", b"the report")
    url = await storage.presign_get(bucket, "dir/report.txt", expires=60)
    status, got = await fetch(url)
    assert (status, got) == (200, b"the report")
    body = b"uploaded through a presigned URL"
    put = await storage.presign_put(bucket, "dir/upload.bin", size=len(body), expires=60)
    assert "X-Amz-SignedHeaders=content-length%3Bhost" in put
    req = urllib.request.Request(
        put, data=body, method="PUT", headers={"Content-Type": "application/octet-stream"}
    )
    assert (await fetch(req))[0] == 200
    assert boto.get_object(Bucket=bucket, Key="dir/upload.bin")["Body"].read() == body
    with pytest.raises(InvalidRequest, match="longer than the longest allowed"):
        await storage.presign_get(bucket, "dir/report.txt", expires=8 * 24 * 3600)
    with pytest.raises(InvalidName, match=r"'\.\.' segment"):
        await storage.presign_put(bucket, "../x", size=1)


async def test_unreachable_store_is_a_transient_error():
    from jupyter_heroes.testing.base import free_port

    st = S3Storage(
        endpoint=f"127.0.0.1:{free_port()}", access_key="a", secret_key="b", secure=False, retries=0
    )
    try:
        with pytest.raises(
            Unavailable, match="cannot reach the object store at 127.0.0.1:.*check that it runs"
        ) as e:
            await st.list_buckets()
        assert e.value.transient and e.value.status == 503
        assert isinstance(e.value, DataError)
    finally:
        await st.close()


def test_configuration_errors_name_the_setting():
    with pytest.raises(ValueError, match="endpoint"):
        S3Storage(access_key="a", secret_key="b")
    with pytest.raises(ValueError, match="without scheme"):
        S3Storage(endpoint="http://127.0.0.1:9000")
    with pytest.raises(ValueError, match="part_size must be at least"):
        S3Storage(endpoint="127.0.0.1:9000", part_size=1024)
    st = S3Storage(endpoint="127.0.0.1:9000", access_key="AKIAEXAMPLE", secret_key="very-secret")
    assert "very-secret" not in repr(st) and "AKIAEXAMPLE" not in repr(st)


async def test_store_errors_map_to_the_family(storage, org_name):
    with pytest.raises(NotFound) as e:
        await storage.bucket_usage(f"{org_name}--u-nobody")
    assert e.value.status == 404 and e.value.to_json() == {"message": e.value.message, "reason": "not_found"}
