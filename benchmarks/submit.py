"""Benchmark: Slurm submit latency over one pooled SSH connection vs a fresh connection per command.

Starts the test bed itself (Slurm with slurmdbd, and OpenSSH for the unprivileged ``heroes`` account,
from :mod:`jupyter_heroes.testing`), then submits ``--jobs`` small jobs one after the other through
:class:`~jupyter_heroes.clusters.slurm.SlurmScheduler` twice, in the same process and on the same
code path:

- **pooled**: :class:`~jupyter_heroes.clusters.ssh.SSHTransport` as used in production: one
  connection, one channel per command, SFTP on the same connection;
- **baseline, fresh**: the same transport class, disconnected after every operation, so each SFTP
  upload and each ``sbatch`` pays for its own TCP connection, key exchange, authentication and close
  (what a client that opens a connection per command does).

A submit is: upload the batch script (SFTP), run ``sbatch --parsable``. The target is the pooled
submit being at least 5x faster. Jobs are ``true`` and are cancelled at the end.

    python benchmarks/submit.py [--jobs 40] [--json]

``--json`` prints one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from jupyter_heroes.clusters.slurm import SlurmScheduler
from jupyter_heroes.clusters.spec import JobSpec
from jupyter_heroes.clusters.ssh import SSHTransport
from jupyter_heroes.testing.slurm import SlurmTestbed
from jupyter_heroes.testing.sshd import SshdTestbed

T = TypeVar("T")


class FreshConnectionSSH(SSHTransport):
    """Baseline: the production transport, but the connection is closed after every operation."""

    async def _call(
        self, op: str, what: str, factory: Callable[[], Awaitable[T]], timeout: float | None = None
    ) -> T:
        try:
            return await super()._call(op, what, factory, timeout)
        finally:
            if op not in ("read", "write"):  # an open file keeps its connection until closed
                await self.disconnect()


def transport(cls: type[SSHTransport], sshd: SshdTestbed) -> SSHTransport:
    return cls(
        sshd.host,
        port=sshd.port,
        username=sshd.username,
        host_key=sshd.host_key,
        private_key=sshd.private_key,
    )


async def submit_series(
    sched: SlurmScheduler, workdir: str, n: int, label: str
) -> tuple[list[float], list[str]]:
    times, ids = [], []
    for i in range(n):
        spec = JobSpec(name=f"bench-{label}-{i}", command=["true"], workdir=workdir)
        t0 = time.perf_counter()
        ids.append(await sched.submit(spec))
        times.append(time.perf_counter() - t0)
    return times, ids


async def bench(sshd: SshdTestbed, jobs: int) -> dict[str, Any]:
    workdir = f"{sshd.scratch_root}/bench-submit"
    pooled_t = transport(SSHTransport, sshd)
    fresh_t = transport(FreshConnectionSSH, sshd)
    pooled = SlurmScheduler(pooled_t, scratch_root=str(sshd.scratch_root))
    fresh = SlurmScheduler(fresh_t, scratch_root=str(sshd.scratch_root))
    # warm-up outside the measurement: connect once, create the work and script directories
    await pooled.submit(JobSpec(name="bench-warmup", command=["true"], workdir=workdir))
    await fresh.submit(JobSpec(name="bench-warmup", command=["true"], workdir=workdir))
    connects_before = (pooled_t.stats["connect"], fresh_t.stats["connect"])
    # interleave the two series in halves so drift on the machine affects both alike
    half = jobs // 2
    p1, ids1 = await submit_series(pooled, workdir, half, "pooled")
    f1, ids2 = await submit_series(fresh, workdir, half, "fresh")
    p2, ids3 = await submit_series(pooled, workdir, jobs - half, "pooled")
    f2, ids4 = await submit_series(fresh, workdir, jobs - half, "fresh")
    pooled_times, fresh_times = p1 + p2, f1 + f2
    await pooled.cancel(ids1 + ids2 + ids3 + ids4)
    result = {
        "jobs_per_mode": jobs,
        "submit_pooled_ms_median": round(statistics.median(pooled_times) * 1000, 2),
        "submit_pooled_ms_mean": round(statistics.mean(pooled_times) * 1000, 2),
        "submit_pooled_ms_p90": round(sorted(pooled_times)[int(0.9 * (len(pooled_times) - 1))] * 1000, 2),
        "baseline_submit_fresh_ms_median": round(statistics.median(fresh_times) * 1000, 2),
        "baseline_submit_fresh_ms_mean": round(statistics.mean(fresh_times) * 1000, 2),
        "baseline_submit_fresh_ms_p90": round(
            sorted(fresh_times)[int(0.9 * (len(fresh_times) - 1))] * 1000, 2
        ),
        "pooled_connections_opened_while_measuring": pooled_t.stats["connect"] - connects_before[0],
        "baseline_connections_opened_while_measuring": fresh_t.stats["connect"] - connects_before[1],
    }
    result["speedup_median"] = round(
        result["baseline_submit_fresh_ms_median"] / result["submit_pooled_ms_median"], 2
    )
    result["speedup_mean"] = round(
        result["baseline_submit_fresh_ms_mean"] / result["submit_pooled_ms_mean"], 2
    )
    result["target_speedup"] = 5.0
    result["target_met"] = result["speedup_median"] >= 5.0
    await pooled_t.close()
    await fresh_t.close()
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=40, help="submits per mode (default 40)")
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    with SlurmTestbed() as slurm, SshdTestbed() as sshd:
        startup = time.monotonic() - t0
        result = asyncio.run(bench(sshd, args.jobs))
        result["slurm_version"] = slurm.run(["sbatch", "--version"]).stdout.strip()
    result["testbed_startup_s"] = round(startup, 1)
    if not args.json:
        print(f"submit latency over {args.jobs} jobs per mode (Slurm test bed, OpenSSH on 127.0.0.1)")
        print(f"  pooled connection : median {result['submit_pooled_ms_median']:.1f} ms, "
              f"p90 {result['submit_pooled_ms_p90']:.1f} ms, {result['pooled_connections_opened_while_measuring']} new connection(s)")  # fmt: skip
        print(f"  fresh per command : median {result['baseline_submit_fresh_ms_median']:.1f} ms, "
              f"p90 {result['baseline_submit_fresh_ms_p90']:.1f} ms, {result['baseline_connections_opened_while_measuring']} connections")  # fmt: skip
        print(
            f"  speedup (median)  : {result['speedup_median']:.1f}x (target >= 5x: {'met' if result['target_met'] else 'NOT met'})"
        )
    print(json.dumps(result) if args.json else "")
    return 0 if result["target_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
