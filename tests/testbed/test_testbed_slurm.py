"""The Slurm test bed, used the way the HEROES backend uses it: over ssh as the unprivileged ``heroes``."""

from __future__ import annotations

import os
import re
import time

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(240)]


def wait(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:.0f}s")
        time.sleep(interval)


def sacct_row(remote, job_id: int) -> dict[str, str] | None:
    """The allocation line of *job_id* from ``sacct`` (slurmdbd), once the job is final."""
    out = remote.check(f"sacct -X -n -P -j {job_id} --format=JobID,State,ExitCode,Elapsed,Partition,User")
    for line in out.splitlines():
        fields = dict(
            zip(("JobID", "State", "ExitCode", "Elapsed", "Partition", "User"), line.split("|"), strict=True)
        )
        # slurmdbd records arrive asynchronously: a final state can show before the start record
        # (partition, elapsed) is in; wait for a complete row
        final = fields["State"] not in ("PENDING", "RUNNING", "COMPLETING", "REQUEUED")
        if fields["JobID"] == str(job_id) and final and fields["Partition"] and fields["Elapsed"]:
            return fields
    return None


def seconds(elapsed: str) -> int:
    """``[D-]HH:MM:SS`` to seconds."""
    days, _, hms = elapsed.rpartition("-")
    h, m, s = (int(x) for x in hms.split(":"))
    return int(days or 0) * 86400 + h * 3600 + m * 60 + s


def test_cluster_shape(slurm_cluster, remote):
    assert slurm_cluster.partitions == ("debug", "long")
    out = remote.check("sinfo -h -o '%P|%a|%T|%N'")
    rows = {line.split("|")[0]: line.split("|")[1:] for line in out.split()}
    assert sorted(rows) == ["debug*", "long"]
    for avail, state, nodes in rows.values():
        assert (avail, nodes) == ("up", "localhost")
        assert state in ("idle", "mixed", "allocated")  # other tests' jobs may be running
    assert remote.check("scontrol show config | grep -E '^ClusterName'").split("=")[1].strip() == "heroes"


@pytest.mark.parametrize("partition", ["debug", "long"])
def test_heroes_submits_and_accounting_records(slurm_cluster, remote, partition):
    scratch = slurm_cluster.ssh.scratch_root
    job = remote.sbatch("-p", partition, "-J", f"tb-{partition}", "-o", f"{scratch}/tb-%j.out",
                        "--wrap", "sleep 2; echo partition=$SLURM_JOB_PARTITION user=$(id -un)")  # fmt: skip

    queued = remote.check(f"squeue -h -j {job} -o '%i|%P|%u|%T'").strip()
    jid, part, user, state = queued.split("|")
    assert (jid, part, user) == (str(job), partition, "heroes")
    assert state in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING")

    row = wait(lambda: sacct_row(remote, job), 60, f"job {job} final in sacct")
    assert row["State"] == "COMPLETED"
    assert row["ExitCode"] == "0:0"
    assert (row["Partition"], row["User"]) == (partition, "heroes")
    assert 2 <= seconds(row["Elapsed"]) < 60
    output = remote.check(f"cat {scratch}/tb-{job}.out")
    assert output == f"partition={partition} user=heroes\n"
    assert remote.check(f"stat -c %U {scratch}/tb-{job}.out").strip() == "heroes"


def test_failed_and_cancelled_jobs_in_sacct(slurm_cluster, remote):
    scratch = slurm_cluster.ssh.scratch_root
    failed = remote.sbatch("-o", f"{scratch}/fail-%j.out", "--wrap", "echo about to fail; exit 3")
    long = remote.sbatch("-p", "long", "-o", "/dev/null", "--wrap", "sleep 300")
    wait(lambda: remote.check(f"squeue -h -j {long} -o %T").strip() == "RUNNING", 60, f"job {long} running")
    remote.check(f"scancel {long}")

    row = wait(lambda: sacct_row(remote, failed), 60, f"job {failed} final in sacct")
    assert (row["State"], row["ExitCode"]) == ("FAILED", "3:0")
    row = wait(lambda: sacct_row(remote, long), 60, f"job {long} final in sacct")
    assert row["State"].startswith("CANCELLED")  # "CANCELLED by <uid>"
    assert remote.check(f"cat {scratch}/fail-{failed}.out") == "about to fail\n"


def test_many_jobs_run_beyond_the_real_cpus(slurm_cluster, remote):
    """The node is declared with >= 32 CPUs, so one-CPU ``sleep`` jobs are not capped by 2 real cores:
    the whole declared node fills up and the surplus waits in the queue."""
    cpus = slurm_cluster.slurm.cpus
    assert cpus >= 32 and cpus >= (os.cpu_count() or 1)
    n = cpus + 8
    ids = remote.check(
        f"for i in $(seq {n}); do sbatch --parsable -J many -o /dev/null --wrap 'sleep 120'; done"
    )
    jobs = [int(x.split(";")[0]) for x in ids.split()]
    try:
        assert len(set(jobs)) == n
        listed = remote.check("squeue -h -u heroes -n many -o %i").split()
        assert sorted(int(x) for x in listed) == sorted(jobs)

        def node_full() -> bool:  # CPUs of all running jobs (other tests' too) == the declared node
            used = remote.check("squeue -h -t RUNNING -o %C").split()
            return sum(int(c) for c in used) == cpus

        wait(node_full, 90, f"{cpus} CPUs in use")
        pending = remote.check("squeue -h -u heroes -n many -t PENDING -o %i").split()
        assert len(pending) >= 8
    finally:
        remote.check("scancel -u heroes -n many")
    wait(lambda: not remote.check("squeue -h -u heroes -n many -o %i").strip(), 30, "cancelled jobs gone")


def test_controller_outage_keeps_jobs(slurm_cluster, remote):
    slurm = slurm_cluster.slurm
    job = remote.sbatch("-p", "long", "-o", "/dev/null", "--wrap", "sleep 120")
    wait(lambda: remote.check(f"squeue -h -j {job} -o %T").strip() == "RUNNING", 60, f"job {job} running")

    slurm.stop_controller()
    try:
        assert not slurm.controller_running
        rc, _, err = remote.run("squeue -h", timeout=60)
        assert rc != 0
        assert re.search(r"Unable to contact slurm controller|Connection refused", err), err
    finally:
        slurm.start_controller()
    assert slurm.controller_running
    assert remote.check(f"squeue -h -j {job} -o %T").strip() == "RUNNING"  # state recovered
    remote.check(f"scancel {job}")
    row = wait(lambda: sacct_row(remote, job), 60, f"job {job} final in sacct")
    assert row["State"].startswith("CANCELLED")
