"""Staging over SFTP through the test bed's real OpenSSH server (key-only, pinned host key), with the
server killed in the middle of a transfer and brought back."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import uuid
from pathlib import Path

import pytest

from jupyter_heroes.data import names
from jupyter_heroes.data.errors import Unavailable
from jupyter_heroes.data.sftp_target import SFTPTarget
from jupyter_heroes.data.staging import Stager, StagingError
from jupyter_heroes.testing.memory import rss

pytestmark = [pytest.mark.s3, pytest.mark.slurm]
MiB = 1024 * 1024


def _read(path: str) -> bytes:  # the sshd serves this machine's files
    return Path(path).read_bytes()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
async def bucket(storage, org_name):
    name = names.user_bucket(org_name, "alice")
    await storage.create_bucket(name)
    return name


@pytest.fixture
def instance_dir(sshd) -> str:
    return str(Path(str(sshd.scratch_root)) / f"inst-{uuid.uuid4().hex[:8]}")


@pytest.fixture
async def sftp_target(ssh_connect):
    targets = []

    def make(**kw) -> SFTPTarget:
        t = SFTPTarget(ssh_connect().open_sftp(), **kw)
        targets.append(t)
        return t

    yield make
    for t in targets:
        await t.close()


async def test_stage_in_and_out_over_sftp(storage, bucket, sftp_target, instance_dir):
    files = {"a.txt": b"alpha", "sub/dir/b.bin": os.urandom(2 * MiB + 1), "big.bin": os.urandom(7 * MiB)}
    for k, v in files.items():
        await storage.upload(bucket, "in/" + k, v)
    target = sftp_target()
    stager = Stager(storage, target, parallel=3)
    report = await stager.stage_in(bucket, instance_dir, prefix="in/", subdir="inputs")
    assert report.copied == 3
    for k, v in files.items():
        assert (Path(instance_dir) / "inputs" / k).read_bytes() == v
        # the checksum is computed on the server, and agrees with the bytes
        assert await target.checksum(f"{instance_dir}/inputs/{k}") == sha(v)
    assert (await stager.stage_in(bucket, instance_dir, prefix="in/", subdir="inputs")).bytes == 0

    # without an exec channel the stager reads files back to verify and to skip
    plain = Stager(storage, sftp_target(exec_checksum=False))
    again = await plain.stage_in(bucket, instance_dir, prefix="in/", subdir="inputs")
    assert (again.skipped, again.bytes) == (3, 0)

    report = await stager.stage_out(instance_dir, bucket, "inst-x", subdir="inputs")
    assert report.copied == 3
    for k, v in files.items():
        assert (await storage.stat(bucket, f"results/inst-x/{k}")).sha256 == sha(v)
    assert await target.checksum(f"{instance_dir}/no such file") is None


@pytest.mark.parametrize("tcp_nodelay", [True, False])
async def test_the_target_turns_nagle_off_on_the_connection(ssh_connect, instance_dir, tcp_nodelay):
    """With Nagle's algorithm on, each small SFTP request (a read, a window adjust) can wait for the
    server's delayed ACK: about 40 ms, measured as 132 ms instead of 4 ms to read a 1 MiB file."""
    client = ssh_connect()
    sock = client.get_transport().sock
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0  # as paramiko leaves it
    target = SFTPTarget(client.open_sftp(), tcp_nodelay=tcp_nodelay)
    try:
        assert bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)) is tcp_nodelay
        data = os.urandom(MiB)
        await target.makedirs(instance_dir)
        f = await target.open(f"{instance_dir}/x.bin", "wb")
        await f.write(data)
        await f.close()
        f = await target.open(f"{instance_dir}/x.bin", "rb")
        assert await f.read(2 * MiB) == data
        await f.close()
    finally:
        await target.close()


@pytest.mark.parametrize("prefer_aead", [True, False])
async def test_the_connection_is_rekeyed_to_aes_gcm_once(
    storage, bucket, ssh_connect, instance_dir, prefer_aead
):
    client = ssh_connect()
    transport = client.get_transport()
    assert transport.local_cipher == "aes128-ctr"  # paramiko's default against OpenSSH
    target = SFTPTarget(client.open_sftp(), prefer_aead=prefer_aead)
    try:
        await storage.upload(bucket, "in/x.bin", os.urandom(3 * MiB))
        report = await Stager(storage, target).stage_in(bucket, instance_dir, prefix="in/")
        assert report.copied == 1
        assert transport.local_cipher == ("aes128-gcm@openssh.com" if prefer_aead else "aes128-ctr")
        assert transport.remote_cipher == transport.local_cipher
        # the connection's other users go on as before
        _, out, _ = client.exec_command("echo still-here", timeout=10)
        assert out.read() == b"still-here\n"
    finally:
        await target.close()


#: the large file in segments (4 MiB, 3 at once, complete prefix recorded every 8 MiB), or in one stream
SEGMENTED = {
    "segments": 3,
    "segment_size": 4 * MiB,
    "segment_threshold": 16 * MiB,
    "checkpoint_bytes": 8 * MiB,
}
STREAMED = {"segments": 1}
#: segments, killed before the first checkpoint: nothing is known complete, the rerun starts over
UNCHECKED = {**SEGMENTED, "checkpoint_bytes": 1024 * MiB}


@pytest.mark.parametrize(
    "layout", [STREAMED, SEGMENTED, UNCHECKED], ids=["one-stream", "segments", "segments-no-checkpoint"]
)
async def test_resume_after_the_ssh_server_is_killed(
    storage, bucket, sshd, sftp_target, instance_dir, layout
):
    big = os.urandom(48 * MiB)
    small = {"small/one.txt": b"one", "small/two.bin": os.urandom(300_000)}
    await storage.upload(bucket, "in/big.bin", big)
    for k, v in small.items():
        await storage.upload(bucket, "in/" + k, v)
    killed = False

    def kill_midway(e):
        nonlocal killed
        if e.file == "big.bin" and e.kind == "progress" and e.bytes_done >= 32 * MiB and not killed:
            killed = True
            sshd.kill(sessions=True)  # the listener and every session: connections drop at once

    try:
        stager = Stager(storage, sftp_target(timeout=20), parallel=2, on_event=kill_midway, **layout)
        with pytest.raises(StagingError, match="lost the SFTP connection") as e:
            await stager.stage_in(bucket, instance_dir, prefix="in/")
    finally:
        if not killed or not sshd.started:
            sshd.start()
    assert killed
    assert e.value.transient, "a lost connection is worth retrying"
    assert any(r.reason == Unavailable.default_reason for r in e.value.report.failed)
    part = Path(instance_dir) / "big.bin.part"
    interrupted_at = part.stat().st_size
    assert 0 < interrupted_at < len(big)
    assert not (Path(instance_dir) / "big.bin").exists()

    # a new connection to the restarted server; the same staging again finishes the job
    meta = json.loads((Path(instance_dir) / "big.bin.part.meta").read_text())
    report = await Stager(storage, sftp_target(), parallel=2, **layout).stage_in(
        bucket, instance_dir, prefix="in/"
    )
    rec = {r.file: r for r in report.records}
    assert rec["big.bin"].outcome == ("copied" if layout is UNCHECKED else "resumed")
    if layout is STREAMED:  # written in order: everything in the .part is good
        assert "done" not in meta
        assert rec["big.bin"].resumed_from == interrupted_at
    elif layout is SEGMENTED:  # segments land out of order: the prefix recorded as complete
        assert rec["big.bin"].resumed_from == meta["done"]
        assert 0 < meta["done"] <= interrupted_at and meta["done"] % (4 * MiB) == 0
    else:  # no checkpoint yet: the .part's size says nothing (holes), so nothing counts as done
        assert meta["done"] == 0 and rec["big.bin"].resumed_from == 0
    assert rec["big.bin"].bytes == len(big) - rec["big.bin"].resumed_from
    assert sha((Path(instance_dir) / "big.bin").read_bytes()) == sha(big) == rec["big.bin"].sha256
    for k, v in small.items():
        assert (Path(instance_dir) / k).read_bytes() == v
    assert not part.exists()

    # and once more: everything is in place, nothing moves
    final = await Stager(storage, sftp_target()).stage_in(bucket, instance_dir, prefix="in/")
    assert (final.copied, final.skipped, final.bytes) == (0, 3, 0)


@pytest.mark.parametrize("max_write_request", [224 * 1024, 0], ids=["large-requests", "one-packet"])
async def test_writes_arrive_whole_at_any_request_size(sftp_target, instance_dir, max_write_request):
    target = sftp_target(max_write_request=max_write_request, write_window=16)
    await target.makedirs(instance_dir)
    path = f"{instance_dir}/w.bin"
    data = os.urandom(3 * MiB + 12345)
    f = await target.open(path, "wb")
    try:  # odd sizes: requests end mid-packet and span the channel's window
        for i in range(0, len(data), 777_777):
            await f.write(data[i : i + 777_777])
    finally:
        await f.close()
    # OpenSSH states its limits (limits@openssh.com): 256 KiB messages, 255 KiB of data per read or write
    assert target.server_limits == (255 * 1024, 255 * 1024)
    assert _read(path) == data
    # writing at an offset (a resumed copy) and appending go through the same requests
    f = await target.open(path, "r+b")
    try:
        await f.seek(MiB)
        await f.write(b"x" * (MiB + 5))
    finally:
        await f.close()
    f = await target.open(path, "ab")
    try:
        await f.write(b"tail")
    finally:
        await f.close()
    assert _read(path) == data[:MiB] + b"x" * (MiB + 5) + data[2 * MiB + 5 :] + b"tail"


async def test_reads_run_a_bounded_window_ahead(sftp_target, instance_dir):
    """A file being read is fetched a window ahead of the reader, never whole: a slow consumer (the
    object store, for outputs) must not pull a large file into memory."""
    target = sftp_target()
    await target.makedirs(instance_dir)
    path = f"{instance_dir}/r.bin"
    data = os.urandom(160 * MiB)
    f = await target.open(path, "wb")
    try:
        for i in range(0, len(data), 8 * MiB):
            await f.write(data[i : i + 8 * MiB])
    finally:
        await f.close()
    before = rss()
    f = await target.open(path, "rb")
    try:
        got = [await f.read(MiB)]
        await asyncio.sleep(1.5)  # the server could send the whole file meanwhile
        grown = rss() - before
        while chunk := await f.read(MiB):
            got.append(chunk)
    finally:
        await f.close()
    assert grown < 48 * MiB, f"reading 1 MiB of a 160 MiB file held {grown / MiB:.0f} MiB"
    assert b"".join(got) == data
    del got, data


async def test_checksums_after_the_connection_dropped_are_unavailable(ssh_connect, instance_dir):
    """A lost connection is worth retrying (Unavailable, transient) for checksums too, not a raw
    paramiko error that would mark the staging as failed for good."""
    client = ssh_connect()
    target = SFTPTarget(client.open_sftp())
    try:
        await target.makedirs(instance_dir)
        path = f"{instance_dir}/c.bin"
        f = await target.open(path, "wb")
        await f.write(b"c" * 100_000)
        await f.close()
        assert await target.checksum(path) == sha(b"c" * 100_000)  # a checksum shell now runs
        client.get_transport().close()
        with pytest.raises(Unavailable, match="lost the SFTP connection"):
            await target.checksum(path)
        with pytest.raises(Unavailable, match="lost the SFTP connection"):
            await target.checksum_follow(path, 100_000)
    finally:
        await target.close()


async def test_checksum_follow_hashes_a_file_as_it_lands(sftp_target, instance_dir):
    target = sftp_target()
    await target.makedirs(instance_dir)
    path = f"{instance_dir}/grow.bin"
    data = os.urandom(5 * MiB + 7)
    f = await target.open(path, "wb")
    follow = await target.checksum_follow(path, len(data))
    try:
        for i in range(0, len(data), MiB):
            await f.write(data[i : i + MiB])
            await f.flush()
            await asyncio.sleep(0.05)  # the follower catches up and waits for more
    finally:
        await f.close()
    assert await follow.result() == sha(data)
    # a file longer than announced, or absent, is not vouched for
    assert await (await target.checksum_follow(path, len(data) - 1)).result() is None
    assert await (await target.checksum_follow(f"{instance_dir}/absent", 10)).result() is None
    assert await sftp_target(exec_checksum=False).checksum_follow(path, len(data)) is None
