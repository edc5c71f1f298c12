"""A local file against an object's size and ETag (``jupyter_heroes.etag``), checked with the ETags the
test bed's real S3 server gives: one PUT, and parts of 5 MiB (the fixture's part size) and 16 MiB
(HEROES' default)."""

from __future__ import annotations

import os

import pytest

from jupyter_heroes.data import names
from jupyter_heroes.data.storage import S3Storage
from jupyter_heroes.etag import part_sizes, same_content

pytestmark = pytest.mark.s3
MiB = 1024 * 1024


@pytest.fixture
async def bucket(storage, org_name):
    name = names.user_bucket(org_name, "alice")
    await storage.create_bucket(name)
    return name


@pytest.mark.parametrize(
    ("part_size", "size", "parts"),
    [(5 * MiB, 1000, 1), (5 * MiB, 12 * MiB + 5, 3), (16 * MiB, 33 * MiB, 3)],
)
async def test_a_file_matches_the_object_it_was_uploaded_as(
    s3_server, bucket, tmp_path, part_size, size, parts
):
    st = S3Storage(
        endpoint=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        secure=False,
        part_size=part_size,
    )
    try:
        await _check(st, bucket, tmp_path, size, parts)
    finally:
        await st.close()


async def _check(st: S3Storage, bucket: str, tmp_path, size: int, parts: int) -> None:
    data = os.urandom(size)
    res = await st.upload(bucket, "obj.bin", data)
    assert res.parts == parts
    obj = await st.stat(bucket, "obj.bin")
    local = tmp_path / "obj.bin"
    local.write_bytes(data)
    assert same_content(local, obj.size, obj.etag)
    assert same_content(local, obj.size, f'"{obj.etag}"')  # quoted, as HTTP sends it
    changed = bytearray(data)
    changed[size // 2] ^= 1
    local.write_bytes(bytes(changed))
    assert not same_content(local, obj.size, obj.etag)
    local.write_bytes(data + b"x")
    assert not same_content(local, obj.size, obj.etag)
    assert not same_content(tmp_path / "missing.bin", obj.size, obj.etag)


def test_part_sizes_split_into_exactly_that_many_parts():
    assert part_sizes(12 * MiB + 5, 3) == [5 * MiB]
    assert part_sizes(33 * MiB, 3) == [11 * MiB, 16 * MiB]
    assert part_sizes(16 * MiB, 1) == [
        16 * MiB,
        32 * MiB,
        50 * MiB,
        64 * MiB,
        100 * MiB,
        128 * MiB,
        256 * MiB,
        512 * MiB,
    ]
    assert part_sizes(3, 5) == []  # fewer bytes than parts
    assert part_sizes(10 * MiB, 0) == []


def test_etags_of_another_form_never_match(tmp_path):
    local = tmp_path / "f"
    local.write_bytes(b"abc")
    assert same_content(local, 3, "900150983cd24fb0d6963f7d28e17f72")  # md5("abc")
    for etag in (
        "",
        "not-an-etag",
        "900150983cd24fb0d6963f7d28e17f72-0",
        "900150983cd24fb0d6963f7d28e17f72-x",
    ):
        assert not same_content(local, 3, etag)
