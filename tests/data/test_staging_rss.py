"""A 2 GiB staging run (one 1.5 GiB file and 128 files of 4 MiB, bucket -> cluster directory over the
test bed's real sshd), and the same 2 GiB staged back out (cluster directory -> bucket), each hold
the staging process's peak RSS under 300 MB.

The stager runs in a child process of its own, as it runs inside the service, so its peak RSS
(``VmHWM`` of the child, which starts afresh at ``exec``) is the staging's alone: not pytest's, and
not moto_server's, which keeps the objects in its own memory. (``ru_maxrss`` would not do: Linux
keeps it across ``exec``, so it starts at the RSS of the forking pytest.) The data is generated as it
is uploaded, never held whole.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from jupyter_heroes.data import names
from jupyter_heroes.data.storage import S3Storage

pytestmark = [pytest.mark.s3, pytest.mark.slurm, pytest.mark.timeout(900)]
MiB = 1024 * 1024
BIG = 1536 * MiB
SMALL, SMALL_SIZE = 128, 4 * MiB
RSS_LIMIT = 300 * 1000 * 1000
REPO = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    import paramiko
    from jupyter_heroes.data.sftp_target import SFTPTarget
    from jupyter_heroes.data.staging import Stager
    from jupyter_heroes.data.storage import S3Storage
    from jupyter_heroes.testing.memory import status_kib

    cfg = json.loads(sys.argv[1])

    async def main():
        storage = S3Storage(endpoint=cfg["endpoint"], access_key=cfg["access_key"],
                            secret_key=cfg["secret_key"], secure=False)
        client = paramiko.SSHClient()
        client.load_host_keys(cfg["known_hosts"])
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(cfg["host"], port=cfg["port"], username=cfg["user"], key_filename=cfg["key"],
                       look_for_keys=False, allow_agent=False, timeout=15)
        target = SFTPTarget(client.open_sftp(), max_channels=6)
        try:
            before = status_kib("VmRSS")
            stager = Stager(storage, target, parallel=4)
            if cfg["direction"] == "in":
                report = await stager.stage_in(cfg["bucket"], cfg["dest"], prefix="in/")
            else:
                report = await stager.stage_out(cfg["dest"], cfg["bucket"], "rss")
            return {"summary": report.summary(), "rss_before_kib": before,
                    "records": {r.file: [r.outcome, r.sha256] for r in report.records}}
        finally:
            await target.close()
            client.close()
            await storage.close()

    out = asyncio.run(main())
    out["vmhwm_kib"] = status_kib("VmHWM")
    print(json.dumps(out))
    """
)


def generated(size: int, seed: bytes, digest: hashlib._Hash):
    """*size* bytes of incompressible data, one MiB at a time, every MiB different."""
    block = hashlib.sha256(seed).digest() * (MiB // 32)

    async def chunks():
        for i in range(size // MiB):
            chunk = hashlib.sha256(seed + i.to_bytes(4, "big")).digest() + block[32:]
            digest.update(chunk)
            yield chunk

    return chunks()


async def run_child(cfg: dict, env: dict) -> dict:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        json.dumps(cfg),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 360)
    assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
    return json.loads(out.decode().strip().splitlines()[-1])


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(4 * MiB), b""):
            h.update(chunk)
    return h.hexdigest()


async def test_2gib_staged_in_and_out_stays_under_300mb(storage, org_name, s3_server, sshd):
    bucket = names.user_bucket(org_name, "alice")
    await storage.create_bucket(bucket)
    # larger parts, more at once: the data goes up in a fraction of the time the 5 MiB parts take
    seeder = S3Storage(
        endpoint=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        secure=False,
        part_size=32 * MiB,
        parallel_parts=3,
        timeout=120,
    )
    expected: dict[str, str] = {}
    big = hashlib.sha256()
    await seeder.upload(bucket, "in/big.bin", generated(BIG, b"big", big), size=BIG)
    expected["big.bin"] = big.hexdigest()
    sem = asyncio.Semaphore(4)

    async def small(i: int) -> None:
        h = hashlib.sha256()
        async with sem:
            await storage.upload(
                bucket, f"in/small/{i:03d}.bin", generated(SMALL_SIZE, b"s%d" % i, h), size=SMALL_SIZE
            )
        expected[f"small/{i:03d}.bin"] = h.hexdigest()

    await asyncio.gather(*(small(i) for i in range(SMALL)))
    total = BIG + SMALL * SMALL_SIZE
    assert total == 2048 * MiB

    dest = Path(str(sshd.scratch_root)) / f"rss-{uuid.uuid4().hex[:8]}"
    cfg = {
        "endpoint": s3_server.endpoint,
        "access_key": s3_server.access_key,
        "secret_key": s3_server.secret_key,
        "host": sshd.host,
        "port": sshd.port,
        "user": sshd.username,
        "key": str(sshd.private_key_path),
        "known_hosts": str(sshd.known_hosts_path),
        "bucket": bucket,
        "dest": str(dest),
    }
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    try:
        for direction in ("in", "out"):
            result = await run_child({**cfg, "direction": direction}, env)
            summary = result["summary"]
            assert (summary["copied"], summary["failed"], summary["bytes"]) == (SMALL + 1, 0, total), summary
            for rel, digest in expected.items():
                outcome, sha = result["records"][rel]
                assert outcome == "copied" and sha == digest, (direction, rel)
                if direction == "in":
                    assert file_sha256(dest / rel) == digest, rel
                else:
                    assert (await storage.stat(bucket, f"results/rss/{rel}")).sha256 == digest, rel
            peak = result["vmhwm_kib"] * 1024
            print(
                f"\n2 GiB staged {direction} in {summary['seconds']:.1f}s "
                f"({total / MiB / summary['seconds']:.0f} MiB/s); stager peak RSS {peak / 1e6:.0f} MB "
                f"(RSS at start {result['rss_before_kib'] * 1024 / 1e6:.0f} MB)"
            )
            assert peak < RSS_LIMIT, f"staging {direction}: the process's peak RSS was {peak / 1e6:.0f} MB"
            if direction == "in":  # room in moto_server's memory for the copies coming back
                await storage.delete_objects(
                    bucket, [o.key async for o in storage.iter_objects(bucket, "in/")]
                )
    finally:
        rm = await asyncio.create_subprocess_exec("rm", "-rf", "--", str(dest))
        await rm.wait()
        await storage.delete_bucket(bucket, force=True)
        await seeder.close()
