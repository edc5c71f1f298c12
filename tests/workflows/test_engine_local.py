"""The workflow engine end to end on the local backend (LocalTransport + LocalScheduler, real processes).

The same engine runs on Slurm over SSH in tests/workflows/test_engine_slurm.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from jupyter_heroes import dbutil
from jupyter_heroes.orm import Job, WorkflowInstance
from jupyter_heroes.workflows.engine import SUBMITTING, WorkflowError, instance_state, job_name
from jupyter_heroes.workflows.templates import ParameterError


async def wait_final(world, iid: str, timeout: float = 60) -> WorkflowInstance:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, _, cluster = world.ids()
        await world.engine.poll_cluster(cluster.id)
        with dbutil.session_scope(world.factory) as s:
            inst = s.get(WorkflowInstance, iid)
            if inst.state in ("completed", "failed", "cancelled"):
                inst.jobs  # noqa: B018 - load while the session is open
                return inst
        await asyncio.sleep(0.2)
    raise AssertionError(f"instance {iid} not final after {timeout}s")


def pwned() -> bool:
    return Path("/tmp/pwned").exists()


def jobs_of(world, iid):
    with dbutil.session_scope(world.factory) as s:
        return {
            j.step: (j.state, j.scheduler_job_id, j.exit_code, j.reason, dict(j.accounting or {}))
            for j in s.query(Job).filter_by(instance_id=iid)
        }


async def test_single_step_runs_with_heroes_environment_and_outputs_staged(world):
    iid = world.submit("monte-carlo-pi", {"samples": 20000, "label": "$(touch /tmp/pwned) `id`; 'x'\n../y"})
    with dbutil.session_scope(world.factory) as s:  # persisted before anything was sent
        assert s.get(WorkflowInstance, iid).jobs[0].state == "new"
    await world.engine.launch(iid)
    inst = await wait_final(world, iid)
    assert inst.state == "completed", jobs_of(world, iid)
    result = json.loads((world.store / "orga" / "alice" / "results" / iid / "result.json").read_text())
    assert abs(result["pi"] - 3.14159) < 0.1
    assert result["label"] == "$(touch /tmp/pwned) `id`; 'x'\n../y"  # arrived literally
    env = result["heroes_env"]
    assert env["HEROES_INSTANCE_WORKFLOW_ID"] == iid
    assert env["HEROES_ORGANIZATION_NAME"] == "orga"
    assert env["HEROES_USER_ID"] == "alice"
    assert env["HEROES_LOGS_PATH"].endswith(f"/{iid}/logs")
    assert {"HEROES_TEMPLATE_WORKFLOW_ID", "HEROES_ORGANIZATION_ID", "HEROES_PARAM_SAMPLES"} <= set(env)
    assert jobs_of(world, iid)["estimate"][4]["outputs"] == [f"results/{iid}/result.json"]
    assert not pwned()
    assert "pi ~" in await world.engine.tail(iid, "estimate")


async def test_pipeline_runs_in_dependency_order(world):
    iid = world.submit("heat-pipeline", {"cells": 40, "steps": 50, "profile": "step"})
    await world.engine.launch(iid)
    jobs = jobs_of(world, iid)
    # the whole DAG is handed to the scheduler at once, later steps waiting on afterok
    assert all(j[1] for j in jobs.values()), jobs
    inst = await wait_final(world, iid)
    assert inst.state == "completed", jobs_of(world, iid)
    summary = json.loads((world.store / "orga" / "alice" / "results" / iid / "summary.json").read_text())
    assert summary["cells"] == 40 and summary["initial_mean"] == pytest.approx(50.0)


async def test_failed_step_cancels_the_rest(world):
    # alpha is valid but the pre-process reads a missing initial file -> step 1 fails
    (world.store / "orga" / "alice").mkdir(parents=True)
    iid = world.submit("heat-pipeline", {"initial": "nope.txt"})
    await world.engine.launch(iid)
    inst = await wait_final(world, iid)
    jobs = jobs_of(world, iid)
    assert inst.state == "failed"
    assert jobs["preprocess"][0] == "failed"
    assert "not a file in your storage" in jobs["preprocess"][3]
    assert jobs["simulate"][0] == jobs["postprocess"][0] == "cancelled"


async def test_cancel_stops_every_live_step(world):
    iid = world.submit("monte-carlo-pi", {"samples": 2_000_000_000})
    await world.engine.launch(iid)
    await world.engine.cancel(iid)
    inst = await wait_final(world, iid, timeout=30)
    assert inst.state == "cancelled"
    assert jobs_of(world, iid)["estimate"][0] == "cancelled"


async def test_a_cancel_the_scheduler_missed_is_sent_again_even_after_a_restart(world, monkeypatch):
    """The user cancels while the scheduler cannot be reached (scancel fails), then the service
    restarts: the request was kept with the job, so the restarted engine's polls send the cancel again
    until it takes, and the workflow ends cancelled rather than running to completion."""
    from jupyter_heroes.clusters.scheduler import SchedulerError

    iid = world.submit("monte-carlo-pi", {"samples": 2_000_000_000})
    eng = world.engine
    await eng.launch(iid)
    _, _, cluster = world.ids()
    scheduler = eng.backends.scheduler(cluster)

    async def unreachable(ids):  # the controller's boundary: it does not answer
        raise SchedulerError("slurmctld is not responding", transient=True)

    monkeypatch.setattr(scheduler, "cancel", unreachable)
    await eng.cancel(iid)
    await eng.poll_cluster(cluster.id)
    assert jobs_of(world, iid)["estimate"][0] == "running"  # the cancel did not reach it
    await eng.backends.close()
    eng2 = world.new_engine()  # the restarted service; the controller answers again
    await eng2.start()
    inst = await wait_final(world, iid, timeout=30)
    assert inst.state == "cancelled"
    assert jobs_of(world, iid)["estimate"][0] == "cancelled"


async def test_crash_between_submit_and_commit_adopts_instead_of_resubmitting(world):
    iid = world.submit("monte-carlo-pi", {"samples": 5000})
    eng = world.engine
    # simulate the crash: the row was marked submitting, the job reached the scheduler, the id was lost
    with dbutil.session_scope(world.factory) as s:
        ctx = eng._context(s, s.get(WorkflowInstance, iid))
        job = s.query(Job).filter_by(instance_id=iid).one()
        job.state = SUBMITTING
    spec = eng._spec(ctx, ctx["template"].step("estimate"), "", [])
    transport = eng.backends.get(ctx["cluster"])[0]
    for d in (ctx["dirs"].work, ctx["dirs"].logs):  # what launch did before the crash
        await transport.makedirs(d)
    sent_id = await eng.backends.scheduler(ctx["cluster"]).submit(spec)
    # a new engine (the restarted service) recovers
    await eng.backends.close()
    eng2 = world.new_engine()
    counts = await eng2.recover()
    assert counts["adopted"] == 1 and counts["resubmitted"] == 0
    assert jobs_of(world, iid)["estimate"][1] == sent_id
    found = await eng2.backends.scheduler(ctx["cluster"]).find_by_name(job_name(iid, "estimate"))
    assert found == [sent_id]  # one job with that name: nothing submitted twice
    assert (await wait_final(world, iid)).state == "completed"


async def test_crash_before_submit_resubmits_exactly_once(world):
    iid = world.submit("monte-carlo-pi", {"samples": 5000})
    with dbutil.session_scope(world.factory) as s:
        s.query(Job).filter_by(instance_id=iid).one().state = SUBMITTING
    counts = await world.engine.recover()
    assert counts == {
        "adopted": 0,
        "resubmitted": 1,
        "duplicates_cancelled": 0,
        "instances": 1,
        "finished": 0,
    }
    assert (await wait_final(world, iid)).state == "completed"
    _, _, cluster = world.ids()
    found = await world.engine.backends.scheduler(cluster).find_by_name(job_name(iid, "estimate"))
    assert len(found) == 1


class Killed(BaseException):
    """The service process dying at a chosen point (crash injection: this test's own process cannot
    be killed, so the engine's next step raises instead; tests/workflows/test_service_crash.py kills
    the real service at random points)."""


async def test_a_crash_after_the_last_step_finished_brings_its_results_back_at_restart(world, monkeypatch):
    """Killed after a poll committed the last step as completed but before its outputs were copied
    back and the instance marked completed: the restarted engine copies the outputs and completes
    the instance (it used to stay 'running' with its results on the cluster, as the SIGKILL test once
    found)."""
    iid = world.submit("monte-carlo-pi", {"samples": 5000})
    eng = world.engine
    await eng.launch(iid)

    async def die(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(eng, "_finish_jobs", die)
    _, _, cluster = world.ids()
    deadline = time.monotonic() + 60
    while True:  # poll until the one that records the job's end dies right after committing it
        assert time.monotonic() < deadline, jobs_of(world, iid)
        try:
            await eng.poll_cluster(cluster.id)
        except Killed:
            break
        await asyncio.sleep(0.2)
    assert jobs_of(world, iid)["estimate"][0] == "completed"
    with dbutil.session_scope(world.factory) as s:
        # where the crash left it: 'queued' or 'running', whatever the last poll before it saw
        assert s.get(WorkflowInstance, iid).state in ("queued", "running")
    assert "outputs" not in jobs_of(world, iid)["estimate"][4]
    await eng.backends.close()
    eng2 = world.new_engine()  # the restarted service
    await eng2.start()
    with dbutil.session_scope(world.factory) as s:
        assert s.get(WorkflowInstance, iid).state == "completed"
    assert jobs_of(world, iid)["estimate"][4]["outputs"] == [f"results/{iid}/result.json"]
    result = json.loads((world.store / "orga" / "alice" / "results" / iid / "result.json").read_text())
    assert abs(result["pi"] - 3.14159) < 0.2


async def test_background_monitor_and_event_stream(world):
    await world.engine.start()
    async with world.events.subscribe(lambda e: e.get("type") == "instance") as q:
        iid = world.submit("monte-carlo-pi", {"samples": 5000})
        await world.engine.launch(iid)
        states = []
        deadline = time.monotonic() + 60
        while "completed" not in states and time.monotonic() < deadline:
            ev = await asyncio.wait_for(q.get(), timeout=60)
            if ev["instance"] == iid:
                states.append(ev["state"])
    assert states[-1] == "completed"


async def test_bad_parameters_and_foreign_objects_are_refused_before_anything_is_stored(world):
    with pytest.raises(ParameterError, match="'samples': 5 is below the minimum 1000"):
        world.submit("monte-carlo-pi", {"samples": 5})
    with pytest.raises(ParameterError, match="locked"):
        world.submit("parameter-sweep", {"partition": "long"})
    with dbutil.session_scope(world.factory) as s:
        assert s.query(WorkflowInstance).count() == 0
    from jupyter_heroes.orm import Cluster, Organization, User, WorkflowTemplate

    with dbutil.session_scope(world.factory) as s:
        other = s.query(Organization).filter_by(name="orgb").one()
        trow = s.query(WorkflowTemplate).filter_by(name="monte-carlo-pi").one()
        with pytest.raises(WorkflowError, match="not found in your organization"):
            world.engine.create_instance(
                s,
                org=other,
                user=s.query(User).one(),
                template_row=trow,
                params={},
                cluster=s.query(Cluster).one(),
            )


def test_instance_state_table():
    class J:
        def __init__(self, state):
            self.state = state

    assert instance_state([J("completed"), J("completed")]) == "completed"
    assert instance_state([J("completed"), J("running")]) == "running"
    assert instance_state([J("failed"), J("queued")]) == "failing"
    assert instance_state([J("failed"), J("cancelled")]) == "failed"
    assert instance_state([J("cancelled"), J("cancelled")]) == "cancelled"
    assert instance_state([J("unknown"), J("queued")]) == "queued"  # unknown is never final
    assert instance_state([J(SUBMITTING), J("new")]) == "submitting"


async def test_parameter_sweep_array_tasks_each_see_their_index(world):
    iid = world.submit("parameter-sweep", {"points": 4, "x_min": 0.0, "x_max": 3.0})
    await world.engine.launch(iid)
    inst = await wait_final(world, iid)
    assert inst.state == "completed", jobs_of(world, iid)
    out = world.store / "orga" / "alice" / "results" / iid / "points"
    points = sorted(json.loads(p.read_text())["x"] for p in out.glob("point-*.json"))
    assert points == [0.0, 1.0, 2.0, 3.0]
