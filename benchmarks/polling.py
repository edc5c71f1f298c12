"""Benchmark: one poll cycle over 500 live jobs, batched vs per-job, on the real Slurm test bed.

Starts the test bed itself (Slurm with slurmdbd, and OpenSSH for the ``heroes`` account, from
:mod:`jupyter_heroes.testing`), submits ``--jobs`` ``sleep`` jobs through
:class:`~jupyter_heroes.clusters.slurm.SlurmScheduler` over one pooled
:class:`~jupyter_heroes.clusters.ssh.SSHTransport` (the test-bed node runs 32 at a time; the rest
wait in the queue), then measures, in the same process and over the same connection:

- **batched**: ``scheduler.poll(all_ids)``: one ``squeue`` for every live id of the cluster (and a
  ``sacct`` only for ids that left the queue: none here), ``--cycles`` times;
- **baseline, per job**: ``scheduler.poll([id])`` for each id, 8 at a time on the same pooled
  connection (a generous baseline: no connection cost at all).

Remote commands are counted by the transport's own counters. Targets: 1 ``squeue`` per batched
cycle, at least 100x fewer commands than per-job polling, and a batched cycle under 1 s. All jobs
are cancelled at the end.

    python benchmarks/polling.py [--jobs 500] [--cycles 5] [--json]

``--json`` prints one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections import Counter
from typing import Any

from jupyter_heroes.clusters.slurm import SlurmScheduler
from jupyter_heroes.clusters.spec import JobSpec
from jupyter_heroes.clusters.ssh import SSHTransport
from jupyter_heroes.testing.slurm import SlurmTestbed
from jupyter_heroes.testing.sshd import SshdTestbed


def delta(after: Counter[str], before: Counter[str], key: str) -> int:
    return after[key] - before[key]


async def bench(sshd: SshdTestbed, jobs: int, cycles: int) -> dict[str, Any]:
    t = SSHTransport(
        sshd.host,
        port=sshd.port,
        username=sshd.username,
        host_key=sshd.host_key,
        private_key=sshd.private_key,
    )
    sched = SlurmScheduler(t, scratch_root=str(sshd.scratch_root))
    workdir = f"{sshd.scratch_root}/bench-polling"
    t0 = time.perf_counter()
    ids = await asyncio.gather(
        *(
            sched.submit(JobSpec(name=f"bench-poll-{i}", command=["sleep", "900"], workdir=workdir))
            for i in range(jobs)
        )
    )
    submit_s = time.perf_counter() - t0
    try:
        await asyncio.sleep(2)  # let the scheduler start what fits
        batched_times, batched_cmds, batched_squeue, batched_sacct = [], [], [], []
        states: Counter[str] = Counter()
        for _ in range(cycles):
            before = t.stats.copy()
            c0 = time.perf_counter()
            st = await sched.poll(ids)
            batched_times.append(time.perf_counter() - c0)
            batched_cmds.append(delta(t.stats, before, "run"))
            batched_squeue.append(delta(t.stats, before, "run:squeue"))
            batched_sacct.append(delta(t.stats, before, "run:sacct"))
            states = Counter(s.state.value for s in st.values())
        live = sum(n for s, n in states.items() if s in ("queued", "running", "held", "completing"))

        before = t.stats.copy()
        c0 = time.perf_counter()
        per_job = await asyncio.gather(*(sched.poll([i]) for i in ids))
        per_job_s = time.perf_counter() - c0
        per_job_cmds = delta(t.stats, before, "run")
        per_job_squeue = delta(t.stats, before, "run:squeue")
        per_job_states = Counter(next(iter(p.values())).state.value for p in per_job)
    finally:
        await sched.cancel(ids)
        await t.close()
    cycle = statistics.median(batched_times)
    result: dict[str, Any] = {
        "jobs_submitted": jobs,
        "jobs_live_at_poll": live,
        "states_batched": dict(states),
        "states_per_job": dict(per_job_states),
        "submit_all_s": round(submit_s, 2),
        "batched_cycles": cycles,
        "batched_commands_per_cycle": max(batched_cmds),
        "batched_squeue_per_cycle": max(batched_squeue),
        "batched_sacct_per_cycle": max(batched_sacct),
        "batched_cycle_s_median": round(cycle, 3),
        "batched_cycle_s_max": round(max(batched_times), 3),
        "baseline_per_job_commands_per_cycle": per_job_cmds,
        "baseline_per_job_squeue_per_cycle": per_job_squeue,
        "baseline_per_job_cycle_s": round(per_job_s, 3),
        "ssh_connections": t.stats["connect"],
    }
    result["commands_ratio"] = round(per_job_cmds / max(batched_cmds), 1)
    result["cycle_time_ratio"] = round(per_job_s / cycle, 1)
    result["targets"] = {"squeue_per_cycle": 1, "commands_ratio_min": 100, "cycle_s_max": 1.0}
    result["targets_met"] = (
        result["batched_squeue_per_cycle"] == 1
        and result["commands_ratio"] >= 100
        and result["batched_cycle_s_max"] < 1.0
    )
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=500, help="live jobs to poll (default 500)")
    ap.add_argument("--cycles", type=int, default=5, help="batched poll cycles to time (default 5)")
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    with SlurmTestbed() as slurm, SshdTestbed() as sshd:
        startup = time.monotonic() - t0
        result = asyncio.run(bench(sshd, args.jobs, args.cycles))
        result["slurm_version"] = slurm.run(["sbatch", "--version"]).stdout.strip()
    result["testbed_startup_s"] = round(startup, 1)
    if not args.json:
        print(f"poll cycle over {result['jobs_live_at_poll']} live jobs ({result['states_batched']})")
        print(f"  batched : {result['batched_commands_per_cycle']} command(s) per cycle "
              f"({result['batched_squeue_per_cycle']} squeue), median {result['batched_cycle_s_median']:.3f} s")  # fmt: skip
        print(f"  per job : {result['baseline_per_job_commands_per_cycle']} commands per cycle, "
              f"{result['baseline_per_job_cycle_s']:.3f} s")  # fmt: skip
        print(f"  ratio   : {result['commands_ratio']}x fewer commands, {result['cycle_time_ratio']}x faster "
              f"(targets {'met' if result['targets_met'] else 'NOT met'})")  # fmt: skip
    print(json.dumps(result) if args.json else "")
    return 0 if result["targets_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
