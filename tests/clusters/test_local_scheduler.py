"""LocalScheduler end to end: real background processes through the LocalTransport."""

import json
import sys

import pytest

from jupyter_heroes.clusters.local import LocalTransport
from jupyter_heroes.clusters.localsched import LocalScheduler
from jupyter_heroes.clusters.scheduler import JobState, SchedulerError
from jupyter_heroes.clusters.spec import JobSpec, JobSpecError

pytestmark = pytest.mark.timeout(60)

DUMP = [
    sys.executable,
    "-c",
    "import json, os, sys; print(json.dumps([sys.argv[1:], os.environ.get('HEROES_X'), os.environ.get('JUPYTERHUB_API_TOKEN')]))",
]


@pytest.fixture
def transport():
    return LocalTransport()


@pytest.fixture
def sched(transport, tmp_path):
    return LocalScheduler(transport, scratch_root=str(tmp_path / "scratch"))


async def test_hostile_parameters_arrive_literally(sched, tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "service-secret")  # the service's env must not leak into jobs
    pwned = tmp_path / "pwned"
    args = [
        f"$(touch {pwned})",
        f"`touch {pwned}`",
        f"a; touch {pwned}",
        "it's",
        "x\ny",
        "../../etc/passwd",
        "*",
        "",
    ]
    env = f"$(touch {pwned})\n#SBATCH --x 'q'"
    workdir = str(tmp_path / "w")
    job = await sched.submit(
        JobSpec(
            name="hostile", command=[*DUMP, *args], env={"HEROES_X": env}, workdir=workdir, stdout="out.txt"
        )
    )
    st = (await sched.wait([job], 30, 0.05))[job]
    assert st.state is JobState.COMPLETED and st.exit_code == 0
    got_args, got_env, leaked = json.loads((tmp_path / "w" / "out.txt").read_text())
    assert got_args == args and got_env == env and leaked is None
    assert not pwned.exists()


async def test_failure_exit_code_and_accounting(sched, tmp_path):
    job = await sched.submit(JobSpec(name="fails", command=["sh", "-c", "echo oops >&2; exit 3"], workdir=str(tmp_path / "w"),
                                     stdout="o.txt", stderr="e.txt"))  # fmt: skip
    st = (await sched.wait([job], 30, 0.05))[job]
    assert (st.state, st.exit_code, st.reason) == (JobState.FAILED, 3, "its command exited with status 3")
    assert (tmp_path / "w" / "e.txt").read_text() == "oops\n"
    acct = (await sched.accounting([job]))[job]
    assert (
        acct.state is JobState.FAILED
        and acct.exit_code == 3
        and acct.elapsed_s is not None
        and acct.max_rss_bytes > 0
    )
    assert acct.alloc_cpus == 1 and acct.start <= acct.end


async def test_poll_is_one_command_for_many_jobs(sched, transport, tmp_path):
    jobs = [
        await sched.submit(JobSpec(name=f"j{i}", command=["sleep", "30"], workdir=str(tmp_path / "w")))
        for i in range(5)
    ]
    before = transport.stats["run"]
    st = await sched.poll(jobs)
    assert transport.stats["run"] - before == 1
    assert {s.state for s in st.values()} <= {JobState.RUNNING, JobState.QUEUED}
    await sched.cancel(jobs)
    final = await sched.wait(jobs, 30, 0.05)
    assert all(s.state is JobState.CANCELLED for s in final.values()), final
    assert all(s.signal == 15 for s in final.values())


async def test_cancel_finished_job_is_not_an_error(sched, tmp_path):
    job = await sched.submit(JobSpec(name="quick", command=["true"], workdir=str(tmp_path / "w")))
    assert (await sched.wait([job], 30, 0.05))[job].state is JobState.COMPLETED
    await sched.cancel([job])
    assert (await sched.poll([job]))[job].state is JobState.COMPLETED


async def test_walltime_gives_timeout(sched, tmp_path):
    job = await sched.submit(
        JobSpec(name="slow", command=["sleep", "30"], walltime_s=1, workdir=str(tmp_path / "w"))
    )
    st = (await sched.wait([job], 20, 0.1))[job]
    assert st.state is JobState.TIMEOUT and "longer walltime" in st.reason


async def test_afterok_chain_and_broken_dependency(sched, tmp_path):
    w = str(tmp_path / "w")
    a = await sched.submit(JobSpec(name="a", command=["sh", "-c", "sleep 0.5; echo a >> order"], workdir=w))
    b = await sched.submit(JobSpec(name="b", command=["sh", "-c", "echo b >> order"], workdir=w, afterok=[a]))
    st = await sched.poll([b])
    assert st[b].state is JobState.QUEUED and st[b].reason == "waiting for the jobs it depends on to finish"
    final = await sched.wait([a, b], 30, 0.05)
    assert final[b].state is JobState.COMPLETED
    assert (tmp_path / "w" / "order").read_text() == "a\nb\n"
    bad = await sched.submit(JobSpec(name="bad", command=["false"], workdir=w))
    never = await sched.submit(JobSpec(name="never", command=["touch", "ran"], workdir=w, afterok=[bad]))
    st = (await sched.wait([never], 30, 0.05))[never]
    assert st.state is JobState.CANCELLED and "did not complete successfully" in st.reason
    assert not (tmp_path / "w" / "ran").exists()


async def test_array_job_aggregates_tasks(sched, tmp_path):
    w = tmp_path / "w"
    job = await sched.submit(JobSpec(name="arr", command=["sh", "-c", 'echo "$HEROES_ARRAY_TASK_ID"; exit $((HEROES_ARRAY_TASK_ID == 2))'],
                                     workdir=str(w), array="0-3%2", stdout="t-%a.out"))  # fmt: skip
    st = (await sched.wait([job], 30, 0.05))[job]
    assert st.state is JobState.FAILED and st.reason.startswith("1 of 4 tasks did not complete")
    assert [(w / f"t-{i}.out").read_text() for i in range(4)] == ["0\n", "1\n", "2\n", "3\n"]
    tasks = await sched.poll([f"{job}_1", f"{job}_2"])
    assert tasks[f"{job}_1"].state is JobState.COMPLETED and tasks[f"{job}_2"].exit_code == 1


async def test_find_by_name(sched, tmp_path):
    job = await sched.submit(
        JobSpec(name="heroes-inst1-step1-0", command=["true"], workdir=str(tmp_path / "w"))
    )
    assert await sched.find_by_name("heroes-inst1-step1-0") == [job]
    assert await sched.find_by_name("no-such-job") == []
    with pytest.raises(JobSpecError, match="is not a job name"):
        await sched.find_by_name("$(id)")


async def test_unknown_id_and_broken_scheduler_say_unknown(transport, tmp_path):
    sched = LocalScheduler(transport, scratch_root=str(tmp_path))
    st = await sched.poll(["999"])
    assert st["999"].state is JobState.UNKNOWN and "knows no job" in st["999"].reason
    broken = LocalScheduler(transport, scratch_root=str(tmp_path), python="/nonexistent/python")
    st = await broken.poll(["1", "2"])
    assert {s.state for s in st.values()} == {JobState.UNKNOWN}
    assert "could not be asked" in st["1"].reason
    with pytest.raises(SchedulerError, match="python: command not found"):
        await broken.accounting(["1"])


async def test_local_refuses_what_it_cannot_do(sched):
    with pytest.raises(JobSpecError, match="nodes: the local scheduler runs jobs on this one machine"):
        await sched.submit(JobSpec(name="mpi", command=["true"], nodes=2))
    with pytest.raises(JobSpecError, match="gpus: the local scheduler has no GPUs"):
        await sched.submit(JobSpec(name="gpu", command=["true"], gpus=1))


async def test_check(sched):
    items = await sched.check()
    assert [i.status for i in items] == ["ok", "ok"], items
