"""Staging throughput, bucket -> cluster directory over SFTP, against ``rclone copy`` in the same run.

Two data sets of ``--size`` MiB (default 1024) each are put in a bucket: ``--files`` files (default
256) and one file. Each is staged into a fresh directory on the cluster, once by the HEROES
:class:`~jupyter_heroes.data.staging.Stager` (paramiko SFTP, SHA-256 checked on both ends) and once
by ``rclone copy`` from the same S3 source to rclone's own sftp backend with the same key and the
same number of parallel transfers (rclone checks the MD5 where S3 has one). Each data set is
copied ``--rounds`` times by each tool, the order alternating between rounds. ``--json`` prints one
JSON object last: ``figures`` (HEROES: median MiB/s over the wall time of each copy, and every
copy's seconds, and the median CPU seconds per GiB of this process during the copy, every thread),
``baseline`` (the same for rclone: its own CPU, from the children's rusage), ``ratio`` (per data
set, the median of the rounds' rclone seconds / HEROES seconds: above 1 is faster than rclone; and
``<data set>_cpu``, rclone's median CPU seconds / ours: above 1 uses less CPU, a figure the
machine's other load disturbs much less than wall time) and ``runs`` (every round, with the 1-minute
load average when it started: the machine may be shared). Neither CPU figure includes the server
side (sshd, the checksum processes on the cluster, the object store).

``--rss-check`` instead streams ``--size`` MiB up to the store and back through
:class:`~jupyter_heroes.data.storage.S3Storage` and reports this process's peak RSS growth (run it
with ``--size 2048`` for the 2 GiB check).

By default the test bed's own moto_server and OpenSSH server are started and stopped by PID (as the
pytest fixtures do); ``--s3`` and ``--ssh`` point at running ones instead.

    python benchmarks/staging.py --size 256 --json
    python benchmarks/staging.py --rss-check --size 2048
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import paramiko

from jupyter_heroes.data.sftp_target import SFTPTarget
from jupyter_heroes.data.staging import Stager
from jupyter_heroes.data.storage import S3Storage
from jupyter_heroes.testing.base import Component, free_port, port_open, wait_for
from jupyter_heroes.testing.memory import peak_rss, reset_peak_rss

MiB = 1024 * 1024


class _Moto(Component):
    """moto_server on a free port, when the test bed's S3 component is not available."""

    name = "bench-moto"
    access_key, secret_key = "bench", "bench-secret"

    def __init__(self) -> None:
        super().__init__(Path(tempfile.mkdtemp(prefix="bench-moto-")))
        self.port = free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.endpoint}"

    def _start(self) -> None:
        exe = shutil.which("moto_server")
        if not exe:
            raise SystemExit("moto_server not found: pip install 'moto[server]'")
        self.spawn([exe, "-H", "127.0.0.1", "-p", str(self.port)], "moto")
        wait_for(lambda: port_open(self.port), 30, "moto_server", self.log_path("moto"))


def s3_component() -> Any:
    try:
        from jupyter_heroes.testing.s3 import S3Testbed  # type: ignore[import-not-found]
    except ImportError:
        return _Moto()
    return S3Testbed()


def sshd_component() -> Any:
    from jupyter_heroes.testing.sshd import SshdTestbed

    return SshdTestbed()


class External:
    """Already running servers given on the command line."""

    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)

    def __enter__(self) -> External:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def rclone_env(s3: Any, ssh: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}  # rclone 1.60 fails with it set
    env.update(
        {
            "RCLONE_CONFIG": "/dev/null",
            "RCLONE_CONFIG_SRC_TYPE": "s3",
            "RCLONE_CONFIG_SRC_PROVIDER": "Other",
            "RCLONE_CONFIG_SRC_ENDPOINT": s3.url,
            "RCLONE_CONFIG_SRC_ACCESS_KEY_ID": s3.access_key,
            "RCLONE_CONFIG_SRC_SECRET_ACCESS_KEY": s3.secret_key,
            "RCLONE_CONFIG_SRC_REGION": "us-east-1",
            "RCLONE_CONFIG_SRC_FORCE_PATH_STYLE": "true",
            "RCLONE_CONFIG_DST_TYPE": "sftp",
            "RCLONE_CONFIG_DST_HOST": ssh.host,
            "RCLONE_CONFIG_DST_PORT": str(ssh.port),
            "RCLONE_CONFIG_DST_USER": ssh.username,
            "RCLONE_CONFIG_DST_KEY_FILE": str(ssh.private_key_path),
            "RCLONE_CONFIG_DST_KNOWN_HOSTS_FILE": str(ssh.known_hosts_path),
            "RCLONE_CONFIG_DST_SHELL_TYPE": "unix",
        }
    )
    return env


def connect(ssh: Any) -> paramiko.SSHClient:
    """A plain paramiko connection to the test bed's sshd (Nagle's algorithm on, as paramiko leaves it:
    SFTPTarget turns it off, as the engine's SSHTransport does for its own connections)."""
    client = paramiko.SSHClient()
    client.load_host_keys(str(ssh.known_hosts_path))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        ssh.host,
        port=ssh.port,
        username=ssh.username,
        key_filename=str(ssh.private_key_path),
        look_for_keys=False,
        allow_agent=False,
        timeout=15,
    )
    return client


async def put_dataset(storage: S3Storage, bucket: str, prefix: str, size: int, files: int) -> list[str]:
    """*files* objects totalling *size* bytes of incompressible data under *prefix*."""
    each = size // files
    keys = []
    sem = asyncio.Semaphore(4)

    async def one(i: int) -> None:
        n = each if i < files - 1 else size - each * (files - 1)

        async def chunks():
            left = n
            while left:
                k = min(MiB, left)
                yield os.urandom(k)
                left -= k

        key = f"{prefix}d{i // 64:03d}/f{i:05d}.bin"
        async with sem:
            await storage.upload(bucket, key, chunks(), size=n)
        keys.append(key)

    await asyncio.gather(*(one(i) for i in range(files)))
    return keys


def remote_tree_size(client: paramiko.SSHClient, path: str) -> tuple[int, int]:
    _, out, err = client.exec_command(f"find {shlex.quote(path)} -type f -printf '%s\\n'", timeout=300)
    sizes = [int(x) for x in out.read().split()]
    return len(sizes), sum(sizes)


async def _timed_staging(
    storage: S3Storage, ssh: Any, parallel: int, run: Callable[[Stager], Awaitable[Any]]
) -> tuple[float, float]:
    """Wall seconds of ``run(stager)`` on a fresh connection, and this process's CPU seconds during
    it (every thread). The target is set up as the engine's ObjectStoreStager does (prefer_aead:
    the connection is re-keyed to AES-GCM)."""
    client = connect(ssh)
    target = SFTPTarget(client.open_sftp(), max_channels=parallel + 2, prefer_aead=True)
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        report = await run(Stager(storage, target, parallel=parallel))
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        assert report.ok and report.copied == len(report.records), report.summary()
        return seconds, cpu
    finally:
        await target.close()
        client.close()


async def bench_heroes(
    storage: S3Storage, ssh: Any, bucket: str, prefix: str, dest: str, parallel: int
) -> tuple[float, float]:
    """Staging in: ``bucket/prefix`` -> *dest* on the cluster."""
    return await _timed_staging(storage, ssh, parallel, lambda st: st.stage_in(bucket, dest, prefix=prefix))


async def bench_heroes_out(
    storage: S3Storage, ssh: Any, source_dir: str, bucket: str, instance: str, parallel: int
) -> tuple[float, float]:
    """Staging out: *source_dir* on the cluster -> ``results/<instance>/`` in *bucket*."""
    return await _timed_staging(storage, ssh, parallel, lambda st: st.stage_out(source_dir, bucket, instance))


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def bench_rclone(env: dict[str, str], source: str, dest: str, parallel: int) -> tuple[float, float]:
    """Wall seconds of ``rclone copy SOURCE DEST`` (remotes ``src:`` the bucket, ``dst:`` the
    cluster), and rclone's CPU seconds (every thread)."""
    t0, c0 = time.perf_counter(), _children_cpu()
    cp = subprocess.run(
        [
            "rclone",
            "copy",
            source,
            dest,
            "--transfers",
            str(parallel),
            "--checkers",
            str(2 * parallel),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=7200,
    )
    seconds, cpu = time.perf_counter() - t0, _children_cpu() - c0
    if cp.returncode:
        raise SystemExit(f"rclone copy failed ({cp.returncode}):\n{cp.stderr[-3000:]}")
    return seconds, cpu


def _median(values: list[float]) -> float:
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


async def run_staging(args: argparse.Namespace, s3: Any, ssh: Any) -> dict[str, Any]:
    """Each data set once in the bucket, then ``--rounds`` rounds of both copies into fresh
    directories, the order alternating between rounds (the machine's load changes; alternating
    spreads it over both). Figures are medians over the rounds; each round's ratio is
    rclone seconds / HEROES seconds of that round."""
    size = args.size * MiB
    storage = S3Storage(
        endpoint=s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key, secure=False
    )
    bucket = f"bench--u-{uuid.uuid4().hex[:8]}"
    await storage.create_bucket(bucket)
    env = rclone_env(s3, ssh)
    root = f"{args.remote_dir or ssh.scratch_root}/bench-{uuid.uuid4().hex[:6]}"
    client = connect(ssh)
    figures: dict[str, Any] = {}
    baseline: dict[str, Any] = {"tool": "rclone copy (s3 <-> sftp backend)"}
    ratio: dict[str, float] = {}
    runs: list[dict[str, Any]] = []

    async def compare(
        label: str,
        ours_fn: Callable[[int], Awaitable[tuple[float, float]]],
        theirs_fn: Callable[[int], Awaitable[tuple[float, float]]],
        after: Callable[[int], Awaitable[None]],
    ) -> None:
        """``--rounds`` rounds of both tools, order alternating; *after* checks and clears a round."""
        ours_s: list[float] = []
        theirs_s: list[float] = []
        ours_cpu: list[float] = []
        theirs_cpu: list[float] = []
        for r in range(args.rounds):
            load = os.getloadavg()[0]
            if r % 2 == 0:
                ours, cpu_ours = await ours_fn(r)
                theirs, cpu_theirs = await theirs_fn(r)
            else:
                theirs, cpu_theirs = await theirs_fn(r)
                ours, cpu_ours = await ours_fn(r)
            await after(r)
            ours_s.append(ours)
            theirs_s.append(theirs)
            ours_cpu.append(cpu_ours)
            theirs_cpu.append(cpu_theirs)
            run = {
                "dataset": label,
                "round": r,
                "first": "heroes" if r % 2 == 0 else "rclone",
                "heroes_mib_s": round(args.size / ours, 1),
                "rclone_mib_s": round(args.size / theirs, 1),
                "ratio": round(theirs / ours, 3),
                "heroes_cpu_s": round(cpu_ours, 2),
                "rclone_cpu_s": round(cpu_theirs, 2),
                "load_avg_1m": round(load, 1),
            }
            runs.append(run)
            print(
                f"{label} round {r}: HEROES {run['heroes_mib_s']} MiB/s ({ours:.1f}s), rclone "
                f"{run['rclone_mib_s']} MiB/s ({theirs:.1f}s), ratio {run['ratio']}; CPU s HEROES "
                f"{cpu_ours:.2f}, rclone {cpu_theirs:.2f} (load {load:.1f})",
                file=sys.stderr,
            )
        figures[label] = {
            "mib_s": round(args.size / _median(ours_s), 1),
            "seconds": [round(x, 3) for x in ours_s],
            "cpu_s_per_gib": round(_median(ours_cpu) * 1024 / args.size, 2),
        }
        baseline[label] = {
            "mib_s": round(args.size / _median(theirs_s), 1),
            "seconds": [round(x, 3) for x in theirs_s],
            "cpu_s_per_gib": round(_median(theirs_cpu) * 1024 / args.size, 2),
        }
        ratio[label] = round(_median([t / o for o, t in zip(ours_s, theirs_s, strict=True)]), 3)
        ratio[label + "_cpu"] = round(_median(theirs_cpu) / max(_median(ours_cpu), 1e-9), 3)

    try:
        for name, files in (("many_files", args.files), ("one_file", 1)):
            prefix = f"{name}/"
            t0 = time.perf_counter()
            await put_dataset(storage, bucket, prefix, size, files)
            print(
                f"{name}: {files} file(s), {args.size} MiB put in the bucket in {time.perf_counter() - t0:.1f}s",
                file=sys.stderr,
            )

            async def heroes_in(r: int, name: str = name, prefix: str = prefix) -> tuple[float, float]:
                return await bench_heroes(
                    storage, ssh, bucket, prefix, f"{root}/heroes-{name}-{r}", args.parallel
                )

            async def rclone_in(r: int, name: str = name, prefix: str = prefix) -> tuple[float, float]:
                return await asyncio.to_thread(
                    bench_rclone,
                    env,
                    f"src:{bucket}/{prefix}",
                    f"dst:{root}/rclone-{name}-{r}",
                    args.parallel,
                )

            async def after_in(r: int, name: str = name, files: int = files) -> None:
                for who in ("heroes", "rclone"):
                    n, total = remote_tree_size(client, f"{root}/{who}-{name}-{r}")
                    assert (n, total) == (files, size), (
                        f"{who} copied {n} files / {total} bytes, expected {files} / {size}"
                    )
                keep = args.out and r == 0  # the source of the copies back out
                client.exec_command(
                    f"rm -rf {shlex.quote(root)}/rclone-{name}-{r}"
                    + ("" if keep else f" {shlex.quote(root)}/heroes-{name}-{r}"),
                    timeout=600,
                )[1].read()

            await compare(name, heroes_in, rclone_in, after_in)
            await storage.delete_objects(bucket, [o.key async for o in storage.iter_objects(bucket, prefix)])
            if not args.out:
                continue
            source = f"{root}/heroes-{name}-0"

            async def heroes_out(r: int, name: str = name, source: str = source) -> tuple[float, float]:
                return await bench_heroes_out(storage, ssh, source, bucket, f"out-{name}-{r}", args.parallel)

            async def rclone_out(r: int, name: str = name, source: str = source) -> tuple[float, float]:
                return await asyncio.to_thread(
                    bench_rclone, env, f"dst:{source}", f"src:{bucket}/rclone-out-{name}-{r}/", args.parallel
                )

            async def after_out(r: int, name: str = name, files: int = files) -> None:
                for who, prefix in (
                    ("heroes", f"results/out-{name}-{r}/"),
                    ("rclone", f"rclone-out-{name}-{r}/"),
                ):
                    objs = [o async for o in storage.iter_objects(bucket, prefix)]
                    n, total = len(objs), sum(o.size for o in objs)
                    assert (n, total) == (files, size), (
                        f"{who} copied {n} files / {total} bytes out, expected {files} / {size}"
                    )
                    await storage.delete_objects(bucket, [o.key for o in objs])

            await compare(f"{name}_out", heroes_out, rclone_out, after_out)
            client.exec_command(f"rm -rf {shlex.quote(source)}", timeout=600)[1].read()
    finally:
        client.exec_command(f"rm -rf {shlex.quote(root)}", timeout=600)[1].read()
        client.close()
        with contextlib.suppress(Exception):
            await storage.delete_bucket(bucket, force=True)
        await storage.close()
    return {
        "figures": figures,
        "baseline": baseline,
        "ratio": ratio,
        "runs": runs,
        "size_mib": args.size,
        "files": args.files,
        "parallel": args.parallel,
        "rounds": args.rounds,
        "unit": "MiB/s",
        "cpus": os.cpu_count(),
    }


async def run_rss_check(args: argparse.Namespace, s3: Any) -> dict[str, Any]:
    size = args.size * MiB
    storage = S3Storage(
        endpoint=s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key, secure=False
    )
    bucket = f"bench--u-{uuid.uuid4().hex[:8]}"
    await storage.create_bucket(bucket)
    sent = hashlib.sha256()

    async def source():
        block = os.urandom(MiB)
        for i in range(size // MiB):
            chunk = hashlib.sha256(i.to_bytes(4, "big")).digest() + block[32:]
            sent.update(chunk)
            yield chunk

    try:
        base = reset_peak_rss()
        t0 = time.perf_counter()
        res = await storage.upload(bucket, "rss/big.bin", source(), size=size)
        up_s = time.perf_counter() - t0
        up = peak_rss() - base
        base = reset_peak_rss()
        got, t0 = hashlib.sha256(), time.perf_counter()
        async for chunk in storage.download(bucket, "rss/big.bin"):
            got.update(chunk)
        down_s = time.perf_counter() - t0
        down = peak_rss() - base
        assert got.hexdigest() == sent.hexdigest() == res.sha256, "round trip corrupted the data"
    finally:
        await storage.delete_bucket(bucket, force=True)
        await storage.close()
    out = {
        "size_mib": args.size,
        "part_size_mib": storage.part_size // MiB,
        "parallel_parts": storage.parallel_parts,
        "upload_seconds": round(up_s, 2),
        "download_seconds": round(down_s, 2),
        "upload_peak_rss_growth_mib": round(up / MiB, 1),
        "download_peak_rss_growth_mib": round(down / MiB, 1),
        "sha256_verified": True,
    }
    print(
        f"{args.size} MiB streamed: upload {up_s:.1f}s (peak RSS +{up / 1024:.1f} MiB), download {down_s:.1f}s "
        f"(peak RSS +{down / 1024:.1f} MiB), checksums equal",
        file=sys.stderr,
    )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--size", type=int, default=1024, help="MiB per data set (default 1024)")
    p.add_argument("--files", type=int, default=256, help="files in the many-files data set (default 256)")
    p.add_argument("--parallel", type=int, default=4, help="parallel transfers, for both tools (default 4)")
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="copies of each data set by each tool, order alternating; figures are medians (default 3)",
    )
    p.add_argument(
        "--rss-check", action="store_true", help="measure peak RSS of a streaming S3 round trip instead"
    )
    p.add_argument("--s3", help="use a running S3 server: host:port,access_key,secret_key (http)")
    p.add_argument("--ssh", help="use a running sshd: user@host:port,private_key_path,known_hosts_path")
    p.add_argument(
        "--remote-dir", help="directory on the ssh server to copy into (default: the test bed's scratch)"
    )
    p.add_argument(
        "--out",
        action="store_true",
        help="also stage each data set back out (cluster directory -> bucket) against rclone the other way",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = p.parse_args(argv)
    if args.size < 1 or args.files < 1 or args.parallel < 1 or args.rounds < 1:
        p.error("--size, --files, --parallel and --rounds must be at least 1")

    if args.s3:
        endpoint, ak, sk = args.s3.split(",")
        s3_cm: Any = External(endpoint=endpoint, url=f"http://{endpoint}", access_key=ak, secret_key=sk)
    else:
        s3_cm = s3_component()
    with s3_cm as s3:
        if args.rss_check:
            result = asyncio.run(run_rss_check(args, s3))
        else:
            if not shutil.which("rclone"):
                raise SystemExit("rclone is not installed (apt-get install rclone): it is the baseline")
            if args.ssh:
                userhost, key, known = args.ssh.split(",")
                user, hostport = userhost.split("@")
                host, port = hostport.rsplit(":", 1)
                ssh_cm: Any = External(
                    host=host,
                    port=int(port),
                    username=user,
                    private_key_path=key,
                    known_hosts_path=known,
                    scratch_root="",
                )
                if not args.remote_dir:
                    p.error("--ssh needs --remote-dir")
            else:
                ssh_cm = sshd_component()
            with ssh_cm as ssh:
                result = asyncio.run(run_staging(args, s3, ssh))
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
