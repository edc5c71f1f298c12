"""An object store over HTTPS whose certificate a private CA signed (an HPC centre's own MinIO): the
test bed's moto_server with a CA of its own (``s3_tls_server``), which the system does not trust."""

from __future__ import annotations

import hashlib
import os
import uuid

import pytest
from traitlets import TraitError
from traitlets.config import Config

from jupyter_heroes.data.errors import DataError
from jupyter_heroes.data.storage import S3Storage

pytestmark = pytest.mark.s3
MiB = 1024 * 1024


def _storage(server, **kw) -> S3Storage:
    return S3Storage(
        endpoint=server.endpoint,
        access_key=server.access_key,
        secret_key=server.secret_key,
        secure=True,
        part_size=5 * MiB,
        timeout=60,
        **kw,
    )


@pytest.fixture
def bucket() -> str:
    return "tls-" + uuid.uuid4().hex[:8]


async def test_a_store_behind_a_private_ca_works_with_its_ca_file(s3_tls_server, bucket):
    st = _storage(s3_tls_server, ca_file=str(s3_tls_server.ca_file))
    try:
        await st.create_bucket(bucket)
        small, large = os.urandom(1000), os.urandom(11 * MiB + 7)  # one PUT; three parts
        for key, data in (("small.bin", small), ("large.bin", large)):
            result = await st.upload(bucket, key, data)
            assert result.sha256 == hashlib.sha256(data).hexdigest()
            assert (await st.stat(bucket, key)).sha256 == result.sha256
            got = b"".join([chunk async for chunk in st.download(bucket, key)])
            assert got == data
        assert result.parts == 3
    finally:
        await st.close()


async def test_an_untrusted_certificate_is_refused_with_the_fix_and_nothing_is_done(s3_tls_server, bucket):
    st = _storage(s3_tls_server)  # the system's CAs only
    try:
        with pytest.raises(DataError) as info:
            await st.create_bucket(bucket)
        e = info.value
        assert (e.reason, e.status, e.transient) == ("s3_tls_certificate", 502, False)
        assert f"https://{s3_tls_server.endpoint}" in e.message
        assert "certificate" in e.message and "c.S3Storage.ca_file" in e.message
    finally:
        await st.close()
    trusted = _storage(s3_tls_server, ca_file=str(s3_tls_server.ca_file))
    try:
        assert not await trusted.bucket_exists(bucket)
    finally:
        await trusted.close()


async def test_the_ca_file_is_taken_from_the_config_and_checked(s3_tls_server, bucket, tmp_path):
    config = Config({"S3Storage": {"ca_file": str(s3_tls_server.ca_file)}})
    st = _storage(s3_tls_server, config=config)
    try:
        await st.create_bucket(bucket)
        assert await st.bucket_exists(bucket)
    finally:
        await st.close()
    with pytest.raises(TraitError, match="S3Storage.ca_file .* does not exist"):
        _storage(s3_tls_server, ca_file=str(tmp_path / "no-such-ca.pem"))
    not_pem = tmp_path / "not-a-ca.pem"
    not_pem.write_text("hello\n")
    with pytest.raises(TraitError, match="S3Storage.ca_file .* no PEM certificate"):
        _storage(s3_tls_server, ca_file=str(not_pem))
