"""SlurmRestScheduler against the test bed's real slurmrestd (API v0.0.38, JWT) in front of the real
Slurm 22.05 (slurmctld, slurmd, slurmdbd on MariaDB). The token comes from ``scontrol token`` run as
the unprivileged ``heroes`` account over the test bed's real sshd, like on a real cluster."""

import asyncio
import base64
import json
import re
import secrets
import time

import pytest

from jupyter_heroes.clusters.scheduler import JobState, SchedulerError, SubmitError
from jupyter_heroes.clusters.slurmrest import SlurmRestScheduler, decode_wait_status, expand_tasks, jwt_claims
from jupyter_heroes.clusters.spec import JobSpec
from jupyter_heroes.clusters.ssh import SSHTransport


def test_wait_status_decoding():
    # slurmctld reports exit_code as a raw wait status
    assert decode_wait_status(768) == (3, None)
    assert decode_wait_status(0) == (0, None)
    assert decode_wait_status(15) == (None, 15)
    assert decode_wait_status(None) == (None, None)
    assert expand_tasks("0-2,5%2") == [0, 1, 2, 5]
    assert jwt_claims("garbage") == {}


async def test_registry_and_per_cluster_url():
    from types import SimpleNamespace

    from jupyter_heroes.clusters.local import LocalTransport
    from jupyter_heroes.clusters.registry import scheduler_class

    cls = scheduler_class("jupyter_heroes.clusters.slurmrest:SlurmRestScheduler")
    assert cls is SlurmRestScheduler and cls.name == "slurmrest"
    cluster = SimpleNamespace(
        scratch_root="/s", container_runtime="", site={"slurmrestd_url": "http://h:6820"}
    )
    s = cls.from_cluster(cluster, LocalTransport())
    assert s.url == "http://h:6820" and s.scratch_root == "/s"
    s = cls.from_cluster(SimpleNamespace(scratch_root="", container_runtime="", site={}), LocalTransport())
    with pytest.raises(SchedulerError) as e:
        await s.find_by_name("x")
    assert e.value.reason == "not_configured" and "c.SlurmRestScheduler.url" in str(e.value)
    # the job's settings become JSON fields (slurmrestd reads no #SBATCH line); free text stays data
    spec = JobSpec(name="n", command=["echo", "$(x)"], workdir="/w", walltime_s=61, mem_mb=10, partition="long",
                   afterok=["4", "5"], comment="a #SBATCH --uid=0")  # fmt: skip
    job = s.job_properties(spec)
    assert job["time_limit"] == 2 and job["memory_per_node"] == 10 and job["partition"] == "long"
    assert job["dependency"] == "afterok:4:5" and job["kill_on_invalid_dependency"] is True
    assert job["comment"] == "a #SBATCH --uid=0" and job["current_working_directory"] == "/w"
    assert "#SBATCH" not in s.render_script(spec) and "'$(x)'" in s.render_script(spec)


@pytest.fixture
async def ssh(slurm_cluster):
    s = slurm_cluster.ssh
    t = SSHTransport(s.host, port=s.port, username=s.username, host_key=s.host_key, private_key=s.private_key)
    yield t
    await t.close()


@pytest.fixture
async def rest(ssh, slurm_cluster, slurmrestd):
    s = SlurmRestScheduler(
        ssh,
        scratch_root=str(slurm_cluster.ssh.scratch_root),
        url=slurmrestd.url,
        token_command=["scontrol", "token", "lifespan=600"],
    )
    s.submitted = []
    yield s
    if s.submitted:
        await s.cancel(s.submitted)
    await s.close()


@pytest.fixture
def workdir(slurm_cluster, request):
    return f"{slurm_cluster.ssh.scratch_root}/rest-{re.sub(r'[^A-Za-z0-9_.-]', '-', request.node.name)}-{secrets.token_hex(3)}"


async def submit(rest, spec):
    job_id = await rest.submit(spec)
    rest.submitted.append(job_id)
    return job_id


@pytest.mark.slurm
@pytest.mark.timeout(240)
async def test_submit_poll_output_and_exit_code_3(rest, ssh, workdir):
    out = f"{workdir}/ok.out"
    ok = await submit(rest, JobSpec(name=f"rest-ok-{secrets.token_hex(3)}", workdir=workdir, stdout=out,
                                    command=["sh", "-c", 'printf "%s|%s" "$HEROES_X" "$1"', "sh", "a b;$(x)"],
                                    env={"HEROES_X": "it's $HOME"}, walltime_s=120))  # fmt: skip
    bad = await submit(rest, JobSpec(name=f"rest-exit3-{secrets.token_hex(3)}", workdir=workdir,
                                     command=["sh", "-c", "exit 3"], walltime_s=120))  # fmt: skip
    st = await rest.wait([ok, bad], timeout=90)
    assert st[ok].state is JobState.COMPLETED, st[ok]
    assert st[ok].exit_code == 0
    assert st[bad].state is JobState.FAILED, st[bad]
    assert st[bad].exit_code == 3  # the raw wait status 768, decoded
    assert "status 3" in st[bad].reason
    # the job ran as heroes in its workdir, with its environment and argv intact
    assert (await ssh.read_bytes(out)).decode() == "it's $HOME|a b;$(x)"
    # slurmdbd records a job in steps (first "allocation" without its partition): wait for the end record
    deadline = time.monotonic() + 30
    while True:
        acct = await rest.accounting([bad, ok])
        if (
            all(a.partition and a.end for a in acct.values())
            and len(acct) == 2
            or time.monotonic() > deadline
        ):
            break
        await asyncio.sleep(0.5)
    assert acct[bad].state is JobState.FAILED and acct[bad].exit_code == 3
    assert acct[ok].state is JobState.COMPLETED and acct[ok].exit_code == 0
    assert acct[ok].alloc_cpus == 1 and acct[ok].partition == "debug"
    assert acct[ok].elapsed_s is not None and acct[ok].end is not None


@pytest.mark.slurm
@pytest.mark.timeout(240)
async def test_cancel_and_find_by_name(rest, workdir):
    name = f"rest-sleep-{secrets.token_hex(4)}"
    job = await submit(rest, JobSpec(name=name, workdir=workdir, command=["sleep", "300"], walltime_s=600))
    st = await rest.poll([job])
    assert st[job].state in (JobState.QUEUED, JobState.RUNNING), st[job]
    assert await rest.find_by_name(name) == [job]
    assert await rest.find_by_name(f"rest-nobody-{secrets.token_hex(4)}") == []
    await rest.cancel([job])
    st = await rest.wait([job], timeout=60)
    assert st[job].state is JobState.CANCELLED, st[job]
    await rest.cancel([job])  # already finished: not an error
    assert (await rest.poll(["999999"]))["999999"].state is JobState.UNKNOWN


@pytest.mark.slurm
@pytest.mark.timeout(240)
async def test_refused_job_names_the_reason(rest, workdir):
    with pytest.raises(SubmitError) as e:
        await rest.submit(
            JobSpec(name="rest-bad-partition", workdir=workdir, command=["true"], partition="nope")
        )
    assert not e.value.transient and e.value.reason == "submit_refused"
    assert "Invalid partition" in str(e.value)


def _forged(token: str) -> str:
    """The same claims with another signature: a JWT slurmctld must refuse."""
    head, payload, _sig = token.split(".")
    return f"{head}.{payload}.{base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b'=').decode()}"


@pytest.mark.slurm
@pytest.mark.timeout(240)
@pytest.mark.parametrize("kind", ["garbage", "forged", "expired"])
async def test_bad_token_is_a_clear_permanent_error(ssh, slurm_cluster, slurmrestd, workdir, kind, caplog):
    good = slurmrestd.token("heroes", 600)
    if kind == "garbage":
        token = "not-a-token"
    elif kind == "forged":
        token = _forged(good)
    else:
        head, payload, sig = good.split(".")
        claims = jwt_claims(good)
        claims["exp"] = 1
        payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        token = f"{head}.{payload}.{sig}"
    s = SlurmRestScheduler(ssh, url=slurmrestd.url, token=token)
    caplog.set_level("DEBUG", logger="jupyter_heroes.clusters")
    try:
        with pytest.raises(SubmitError) as e:
            await s.submit(JobSpec(name=f"rest-badtok-{kind}", workdir=workdir, command=["true"]))
        assert e.value.transient is False and e.value.reason == "auth_failed", e.value
        assert "token" in str(e.value)
        assert token not in str(e.value)
        with pytest.raises(SchedulerError) as e2:
            await s.find_by_name("rest-anything")
        assert e2.value.transient is False and e2.value.reason == "auth_failed"
        st = await s.poll(["1"])  # a poll never raises: unknown, with the reason
        assert st["1"].state is JobState.UNKNOWN and "token" in st["1"].reason
    finally:
        await s.close()
    assert token not in caplog.text and good.split(".")[2] not in caplog.text


@pytest.mark.slurm
@pytest.mark.timeout(240)
async def test_token_command_is_refreshed_before_expiry(ssh, slurmrestd):
    s = SlurmRestScheduler(ssh, url=slurmrestd.url, token_command=["scontrol", "token", "lifespan=400"],
                           token_refresh_margin=300)  # fmt: skip
    try:
        runs_before = ssh.stats.get("run:scontrol", 0)
        await s.poll(["1"])
        await s.poll(["1"])
        assert ssh.stats.get("run:scontrol", 0) == runs_before + 1  # reused while fresh
        s._token_expires = 0.0  # as if it were about to expire
        await s.poll(["1"])
        assert ssh.stats.get("run:scontrol", 0) == runs_before + 2
        assert jwt_claims(s._token)["sun"] == "heroes"
    finally:
        await s.close()


@pytest.mark.slurm
@pytest.mark.timeout(240)
async def test_slurmrestd_down_then_controller_down_are_transient(rest, slurm_cluster, slurmrestd, workdir):
    job = await submit(rest, JobSpec(name=f"rest-live-{secrets.token_hex(3)}", workdir=workdir,
                                     command=["sleep", "120"], walltime_s=300))  # fmt: skip
    slurmrestd.kill()
    try:
        st = await rest.poll([job])
        assert st[job].state is JobState.UNKNOWN and "cannot be reached" in st[job].reason
        with pytest.raises(SubmitError) as e:
            await rest.submit(JobSpec(name="rest-while-down", workdir=workdir, command=["true"]))
        assert e.value.transient and e.value.reason == "scheduler_unavailable"
    finally:
        slurmrestd.start()
    assert (await rest.poll([job]))[job].state in (JobState.QUEUED, JobState.RUNNING)
    slurm_cluster.slurm.stop_controller()
    try:
        st = await rest.poll([job])
        assert st[job].state is JobState.UNKNOWN, st[job]
        assert "cannot reach slurmctld" in st[job].reason and "invalid" not in st[job].reason, st[job].reason
        with pytest.raises(SubmitError) as e:
            await rest.submit(JobSpec(name="rest-ctld-down", workdir=workdir, command=["true"]))
        assert e.value.transient and e.value.reason == "scheduler_unavailable", e.value
    finally:
        slurm_cluster.slurm.start_controller()
    assert (await rest.poll([job]))[job].state in (JobState.QUEUED, JobState.RUNNING)
