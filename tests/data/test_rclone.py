"""rclone (the data mover of the HEROES design, Debian's package) pointed at the same S3 endpoint sees
exactly the objects S3Storage wrote, byte for byte: what we store is plain S3, readable by any tool.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil

import pytest

from jupyter_heroes.data import names

pytestmark = pytest.mark.s3
MiB = 1024 * 1024


def rclone_env(s3) -> dict[str, str]:
    """rclone configured through environment variables only (remote name "heroes"). AWS_CA_BUNDLE is
    dropped: rclone 1.60's AWS SDK fails with "LoadCustomCABundleError" when it is set."""
    return {
        **{k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"},
        "RCLONE_CONFIG": "/dev/null",
        "RCLONE_CONFIG_HEROES_TYPE": "s3",
        "RCLONE_CONFIG_HEROES_PROVIDER": "Other",
        "RCLONE_CONFIG_HEROES_ENDPOINT": s3.url,
        "RCLONE_CONFIG_HEROES_ACCESS_KEY_ID": s3.access_key,
        "RCLONE_CONFIG_HEROES_SECRET_ACCESS_KEY": s3.secret_key,
        "RCLONE_CONFIG_HEROES_REGION": "us-east-1",
        "RCLONE_CONFIG_HEROES_FORCE_PATH_STYLE": "true",
    }


async def rclone(s3, *args: str) -> bytes:
    assert shutil.which("rclone"), (
        "rclone is not installed: apt-get install rclone (the test bed installs it)"
    )
    proc = await asyncio.create_subprocess_exec(
        "rclone", *args, env=rclone_env(s3), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, f"rclone {' '.join(args)} exited {proc.returncode}: {err.decode()[-2000:]}"
    return out


async def test_rclone_sees_exactly_what_was_written(storage, s3_server, org_name):
    bucket = names.user_bucket(org_name, "alice")
    await storage.create_bucket(bucket)
    written = {
        "hello.txt": b"hello rclone\n",
        "empty.dat": b"",
        "données/été 2024.csv": b"a,b\n1,2\n",
        "deep/a/b/c/d.bin": os.urandom(300_000),
        "big/multipart.bin": os.urandom(12 * MiB + 7),  # three parts
    }
    for key, data in written.items():
        await storage.upload(bucket, key, data)
    await storage.create_folder(bucket, "results")

    listing = json.loads(await rclone(s3_server, "lsjson", "-R", "--files-only", f"heroes:{bucket}"))
    assert {e["Path"]: e["Size"] for e in listing} == {k: len(v) for k, v in written.items()}
    dirs = json.loads(await rclone(s3_server, "lsjson", "--dirs-only", f"heroes:{bucket}"))
    assert "results" in {e["Path"] for e in dirs}

    sums = {}
    for line in (await rclone(s3_server, "md5sum", "--download", f"heroes:{bucket}")).decode().splitlines():
        digest, path = line.split("  ", 1)
        sums[path] = digest
    assert sums == {k: hashlib.md5(v).hexdigest() for k, v in written.items()}

    assert (
        await rclone(s3_server, "cat", f"heroes:{bucket}/big/multipart.bin") == written["big/multipart.bin"]
    )
    assert (
        await rclone(s3_server, "cat", f"heroes:{bucket}/données/été 2024.csv")
        == written["données/été 2024.csv"]
    )

    # and the other way round: what rclone writes, S3Storage reads with the same bytes
    proc = await asyncio.create_subprocess_exec(
        "rclone",
        "rcat",
        f"heroes:{bucket}/from-rclone.txt",
        env=rclone_env(s3_server),
        stdin=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(b"written by rclone"), 60)
    assert proc.returncode == 0, err.decode()
    info = await storage.stat(bucket, "from-rclone.txt")
    assert info.size == 17 and info.sha256 is None  # not uploaded through HEROES: no recorded checksum
    assert b"".join([c async for c in storage.download(bucket, "from-rclone.txt")]) == b"written by rclone"
