"""Per-submission walltime and memory (the user's ``resources``, a decision's advice): validation that
stores nothing, precedence user > advice > template, one place where they apply (the job spec that
both schedulers render, and the reservation's upper bound), and the queue's limits. Engine on SQLite
with the local backend (real processes); the same through the REST API is in
tests/service/test_workflow_resources.py, on Slurm in test_resource_overrides_e2e.py."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select

from jupyter_heroes import dbutil
from jupyter_heroes.accounting import budgets
from jupyter_heroes.clusters.local import LocalTransport
from jupyter_heroes.clusters.slurm import SlurmScheduler
from jupyter_heroes.orm import (
    Cluster,
    ClusterQueue,
    Job,
    Organization,
    User,
    WorkflowInstance,
    WorkflowTemplate,
)
from jupyter_heroes.orm_market import BudgetReservation
from jupyter_heroes.workflows.overrides import (
    ResourceError,
    advice_resources,
    check_limits,
    effective_template,
    merge,
    parse_resources,
    resources_view,
)
from jupyter_heroes.workflows.templates import load_template

SITE_PRICE = {"currency": "EUR", "fixed": "1.00", "core_hour": "3.60"}
# the advice a decision stored for a placement (DecisionService.advise's shape)
ADVICE = {
    "run": {
        "walltime_s": 240,
        "walltime": "0:04:00",
        "requested_walltime_s": 600,
        "memory_mb": 192,
        "requested_memory_mb": 512,
        "basis": "upper quantile of similar runs (2% risk from the user's recent runs)",
        "memory_basis": "largest recent peak of your runs of this step + 20%",
    }
}


def _template(name: str = "heat-pipeline"):
    from pathlib import Path

    return load_template((Path(__file__).parents[2] / "templates" / f"{name}.yaml").read_text())


# --- pure: parsing, merging, applying ------------------------------------------------------------


def test_parse_accepts_seconds_and_clock_times_per_step():
    t = _template()
    got = parse_resources(
        t, {"simulate": {"walltime": "1-02:03:04", "memory_mb": 300}, "preprocess": {"walltime": 90}}
    )
    assert got == {
        "simulate": {"walltime_s": 93784, "memory_mb": 300},
        "preprocess": {"walltime_s": 90},
    }
    assert parse_resources(t, None) == {} and parse_resources(t, {}) == {}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"nope": {"walltime": 60}},
            r"resources\.nope: template heat-pipeline has no step 'nope'; its steps "
            r"are preprocess, simulate, postprocess",
        ),  # fmt: skip
        (
            {"simulate": {"cpus_per_task": 4}},
            r"unknown key\(s\) \['cpus_per_task'\]; only walltime and memory_mb",
        ),
        ({"simulate": {}}, r"expected an object with walltime and/or memory_mb"),
        ({"simulate": 60}, r"expected an object with walltime and/or memory_mb"),
        ({"simulate": {"walltime": 0}}, r"walltime 0 must be seconds or \[D-\]HH:MM:SS"),
        ({"simulate": {"walltime": -5}}, r"walltime -5 must be seconds"),
        ({"simulate": {"walltime": "1h"}}, r"walltime '1h' must be seconds or \[D-\]HH:MM:SS.*01:30:00"),
        ({"simulate": {"walltime": "00:61:00"}}, r"minutes or seconds above 59"),
        ({"simulate": {"walltime": 1.5}}, r"is not seconds or"),
        ({"simulate": {"walltime": True}}, r"is not seconds or"),
        ({"simulate": {"memory_mb": 0}}, r"memory_mb: expected a whole number of MB per node between 1"),
        ({"simulate": {"memory_mb": "512"}}, r"memory_mb: expected a whole number"),
        ({"simulate": {"memory_mb": 2.5}}, r"memory_mb: expected a whole number"),
        ([["simulate", 60]], r"resources: expected an object"),
    ],
)
def test_parse_refuses_anything_else_saying_what_is_allowed(raw, message):
    with pytest.raises(ResourceError, match=message) as e:
        parse_resources(_template(), raw)
    assert e.value.status == 400 and e.value.reason == "invalid_resources"


def test_user_wins_over_advice_which_wins_over_the_template_key_by_key():
    t = _template("run-python")
    advice = advice_resources(t, ADVICE)
    assert advice == {"run": {"walltime_s": 240, "memory_mb": 192, "basis": ADVICE["run"]["basis"]
                              + "; memory: " + ADVICE["run"]["memory_basis"]}}  # fmt: skip
    only_advice = merge(t, {}, advice)
    assert only_advice["run"]["walltime_s"] == 240 and only_advice["run"]["memory_mb"] == 192
    assert only_advice["run"]["source"] == "advice"
    mixed = merge(t, parse_resources(t, {"run": {"walltime": "00:07:00"}}), advice)
    assert mixed["run"] == {
        "walltime_s": 420,
        "memory_mb": 192,
        "source": "user+advice",
        "sources": {"walltime_s": "user", "memory_mb": "advice"},
        "basis": advice["run"]["basis"],
    }
    user = merge(t, parse_resources(t, {"run": {"walltime": 300, "memory_mb": 1024}}), advice)
    assert user["run"]["source"] == "user" and "basis" not in user["run"]
    assert (user["run"]["walltime_s"], user["run"]["memory_mb"]) == (300, 1024)
    assert merge(t, {}, {}) is None
    # applied: only the overridden keys change; everything else is the template's
    eff = effective_template(t, mixed).step("run").resources
    orig = t.step("run").resources
    assert (eff.walltime_s, eff.memory_mb) == (420, 192)
    assert (eff.nodes, eff.tasks, eff.cpus_per_task, eff.gpus) == (
        orig.nodes,
        orig.tasks,
        orig.cpus_per_task,
        orig.gpus,
    )
    view = resources_view(t, mixed)["run"]
    assert view["walltime"] == "00:07:00" and view["walltime_source"] == "user"
    assert view["memory_source"] == "advice" and view["template_walltime_s"] == 600
    plain = resources_view(t, None)["run"]
    assert (plain["walltime_s"], plain["memory_mb"], plain["source"]) == (600, 512, "template")


def test_limits_check_what_the_scheduler_would_be_asked_for_and_say_where_it_comes_from():
    t = _template()  # heat-pipeline: simulate asks for 01:00:00 and 256 MB, 1 node, 1 core
    q = SimpleNamespace(
        max_nodes=None, cpus_per_node=None, mem_per_node_mb=None, gpus_per_node=0, max_walltime_s=None
    )
    check_limits(t, None, where="c/q", queue=q)  # no limits: nothing to refuse
    short = SimpleNamespace(**{**vars(q), "max_walltime_s": 1800})
    with pytest.raises(ResourceError) as e:
        check_limits(t, None, where="c/short", queue=short)
    assert str(e.value) == (
        "step 'simulate' asks for 01:00:00 of walltime (the template's); c/short allows 00:30:00: "
        "ask for less walltime or memory in 'resources', or submit to a queue with higher limits"
    )
    assert e.value.reason == "resources_beyond_limits"
    # the user's shorter walltime makes the same template fit
    check_limits(
        t,
        merge(t, parse_resources(t, {"simulate": {"walltime": "00:20:00"}}), {}),
        where="c/short",
        queue=short,
    )
    # what cannot be asked for per submission: only another queue helps
    big = dataclasses.replace(t, steps=tuple(_bigger(st) if st.name == "simulate" else st for st in t.steps))
    small = SimpleNamespace(**{**vars(q), "max_nodes": 2, "cpus_per_node": 8})
    with pytest.raises(ResourceError) as e:
        check_limits(big, None, where="c/small", queue=small)
    assert str(e.value) == (
        "step 'simulate' needs 3 nodes; c/small allows at most 2; step 'simulate' needs 16 cores per node; "
        "c/small has 8; step 'simulate' needs 1 GPU(s) per node; c/small has 0: "
        "submit to a queue with higher limits"
    )
    check_limits(big, None, where="c/large", queue=SimpleNamespace(**{**vars(q), "gpus_per_node": 1}))


def _bigger(step):
    """3 nodes x 16 cores (48 tasks), 3 GPUs in all."""
    return dataclasses.replace(step, resources=dataclasses.replace(step.resources, nodes=3, tasks=48, gpus=3))


def test_advice_for_steps_or_values_it_does_not_cover_is_left_out():
    t = _template()
    got = advice_resources(
        t,
        {
            "simulate": {"walltime_s": 1200, "memory_mb": None},
            "gone": {"walltime_s": 60, "memory_mb": 64},
            "postprocess": {"walltime_s": True, "memory_mb": -3},
        },
    )
    assert got == {"simulate": {"walltime_s": 1200}}


# --- the engine: stored in the instance's transaction, applied to the job and the price ------------


def _rows(s):
    org = s.scalar(select(Organization).where(Organization.name == "orga"))
    user = s.scalar(select(User).where(User.name == "alice"))
    cluster = s.scalar(select(Cluster).where(Cluster.name == "local"))
    trow = s.scalar(select(WorkflowTemplate).where(WorkflowTemplate.name == "run-python"))
    return org, user, cluster, trow


def create(world, *, queue: str = "debug", predicted=None, **kw):
    with dbutil.session_scope(world.factory) as s:
        org, user, cluster, trow = _rows(s)
        inst = world.engine.create_instance(
            s,
            org=org,
            user=user,
            template_row=trow,
            params={"script": "print(1)"},
            cluster=cluster,
            queue=queue,
            **kw,
        )
        r = world.engine.admit(s, inst, predicted=predicted)
        return inst.id, r.predicted_cents, r.note


def counts(world) -> tuple[int, int, int]:
    with dbutil.session_scope(world.factory) as s:
        return (
            s.scalar(select(func.count()).select_from(WorkflowInstance)),
            s.scalar(select(func.count()).select_from(Job)),
            s.scalar(select(func.count()).select_from(BudgetReservation)),
        )


@pytest.fixture
def priced(world):
    """The local cluster with a site price and queue limits (30 min, 1024 MB), a 100 EUR budget."""
    with dbutil.session_scope(world.factory) as s:
        c = s.scalar(select(Cluster).where(Cluster.name == "local"))
        c.site = {"offer": SITE_PRICE}
        q = s.scalar(select(ClusterQueue).where(ClusterQueue.cluster_id == c.id))
        q.max_walltime_s, q.mem_per_node_mb = 1800, 1024
        org = s.scalar(select(Organization).where(Organization.name == "orga"))
        budgets.create_budget(s, org.id, limit="100.00", margin=1.0, on_exhausted="cancel")
    return world


def test_accepting_advice_reserves_less_and_user_values_win(priced):
    world = priced
    plain, plain_cents, plain_note = create(world)
    # 1.00 fixed + 1 core x 10 min (the template's walltime) x 3.60/h
    assert plain_cents == 160 and plain_note.endswith("site price, requested walltime x resources")
    advised, advised_cents, advised_note = create(world, advice=ADVICE)
    # the advised 4 minutes: 1.00 + 4/60 x 3.60
    assert advised_cents == 124 < plain_cents
    assert advised_note.endswith("requested walltime x resources (advice walltime and memory)")
    mine, mine_cents, _ = create(world, advice=ADVICE, resources={"run": {"walltime": "00:20:00"}})
    assert mine_cents == 220  # the user's 20 minutes win over the advice: 1.00 + 1/3 x 3.60
    with dbutil.session_scope(world.factory) as s:
        stored = {i: s.get(WorkflowInstance, i).resource_overrides for i in (plain, advised, mine)}
    assert stored[plain] is None
    assert stored[advised]["run"]["walltime_s"] == 240 and stored[advised]["run"]["source"] == "advice"
    assert stored[mine]["run"]["sources"] == {"walltime_s": "user", "memory_mb": "advice"}
    assert (stored[mine]["run"]["walltime_s"], stored[mine]["run"]["memory_mb"]) == (1200, 192)


def test_a_decisions_prediction_is_reserved_unless_the_submitted_walltime_bounds_it_lower(priced):
    world = priced
    _, cents, note = create(world, predicted=(110, "EUR"), advice=ADVICE)
    assert (cents, note.split(": ", 1)[1]) == (110, "decision prediction")  # below the bound 1.24
    _, cents, note = create(world, predicted=(140, "EUR"), advice=ADVICE)
    assert cents == 124 and note.endswith("(advice walltime and memory) (below the decision's prediction)")
    _, cents, note = create(world, predicted=(500, "EUR"), resources={"run": {"walltime": 60}})
    assert cents == 106  # 1.00 + 1 minute x 3.60/h: the run cannot cost more
    assert note.endswith("(user walltime and memory) (below the decision's prediction)"), note
    _, cents, note = create(world, predicted=(500, "EUR"))
    assert (cents, note.split(": ", 1)[1]) == (500, "decision prediction")  # no overrides: as before


def test_the_job_spec_both_schedulers_render_carries_the_overrides(priced):
    world = priced
    iid, _, _ = create(world, advice=ADVICE, resources={"run": {"memory_mb": 640}})
    with dbutil.session_scope(world.factory) as s:
        ctx = world.engine._context(s, s.get(WorkflowInstance, iid))
    step = ctx["template"].step("run")
    spec = world.engine._spec(ctx, step, "debug", [])
    assert (spec.walltime_s, spec.mem_mb) == (240, 640)
    script = SlurmScheduler(LocalTransport()).render_script(spec)
    assert "#SBATCH --time=0-00:04:00" in script and "#SBATCH --mem=640M" in script
    # the template itself is unchanged: a plain submission still asks for 10 minutes and 512 MB
    plain, _, _ = create(world)
    with dbutil.session_scope(world.factory) as s:
        ctx = world.engine._context(s, s.get(WorkflowInstance, plain))
    spec = world.engine._spec(ctx, ctx["template"].step("run"), "debug", [])
    assert (spec.walltime_s, spec.mem_mb) == (600, 512)


@pytest.mark.parametrize(
    ("kw", "reason", "message"),
    [
        (
            {"resources": {"run": {"walltime": "01:00:00"}}},
            "resources_beyond_limits",
            r"step 'run' asks for 01:00:00 of walltime \(your 'resources'\); local/debug allows 00:30:00",
        ),
        (
            {"resources": {"run": {"memory_mb": 4096}}},
            "resources_beyond_limits",
            r"step 'run' needs 4096 MB per node \(your 'resources'\); local/debug has 1024 MB: ask for less",
        ),
        (
            {"advice": {"run": {"walltime_s": 7200, "memory_mb": 128}}},
            "resources_beyond_limits",
            r"asks for 02:00:00 of walltime \(the decision's advice\); local/debug allows 00:30:00",
        ),
        ({"resources": {"other": {"walltime": 60}}}, "invalid_resources", r"has no step 'other'"),
        (
            {"advice": {"solve": {"walltime_s": 60, "memory_mb": 64}}},
            "no_advice",
            r"the decision's advice covers none of the steps of run-python \(run\): was it made for another",
        ),
    ],
)
def test_refused_overrides_leave_nothing(priced, kw, reason, message):
    world = priced
    before = counts(world)
    with pytest.raises(ResourceError, match=message) as e:
        create(world, **kw)  # session_scope rolls back
    assert e.value.reason == reason and e.value.status == 400
    assert counts(world) == before == (0, 0, 0)


def test_without_queue_limits_nothing_is_refused_but_the_scheduler_gets_the_values(world):
    """The cluster's queue declares no limits (the scheduler then decides), and a queue name the
    cluster does not list is checked by the API before it gets here."""
    iid, _, _ = create(world, resources={"run": {"walltime": "02:00:00", "memory_mb": 4096}})
    with dbutil.session_scope(world.factory) as s:
        assert s.get(WorkflowInstance, iid).resource_overrides["run"]["walltime_s"] == 7200


async def test_a_local_run_gets_the_overridden_walltime(priced):
    """The local scheduler enforces the step's walltime from the same spec: a 3-second walltime kills
    a 30-second script, which the template's 10 minutes would have let finish."""
    world = priced
    iid, _, _ = create(
        world,
        resources={"run": {"walltime": 3}},
    )
    with dbutil.session_scope(world.factory) as s:
        inst = s.get(WorkflowInstance, iid)
        inst.params = {"script": "import time; time.sleep(30)"}
    world.engine._running = True
    t0 = time.monotonic()
    await world.engine.launch(iid)
    while True:
        with dbutil.session_scope(world.factory) as s:
            cid = s.scalar(select(Cluster.id).where(Cluster.name == "local"))
        await world.engine.poll_cluster(cid)
        with dbutil.session_scope(world.factory) as s:
            inst = s.get(WorkflowInstance, iid)
            state, jobs = inst.state, [(j.state, j.reason) for j in inst.jobs]
        if state in ("completed", "failed", "cancelled"):
            break
        assert time.monotonic() - t0 < 25, jobs
        await asyncio.sleep(0.3)
    assert state == "failed" and jobs[0][0] == "timeout", jobs


def test_the_bill_and_the_learning_follow_what_the_run_asked_for(priced):
    """GB-hours are charged on the memory the submission asked for, and the decision module learns
    the walltime that was really requested (the advisor's kills are counted against it)."""
    from datetime import timedelta

    from jupyter_heroes.accounting.ledger import measure
    from jupyter_heroes.decision.service import OrgPredictors
    from jupyter_heroes.orm import utcnow

    world = priced
    plain, _, _ = create(world)
    mine, _, _ = create(world, resources={"run": {"walltime": "00:20:00", "memory_mb": 768}})
    with dbutil.session_scope(world.factory) as s:
        usage = {}
        for iid in (plain, mine):
            inst = s.get(WorkflowInstance, iid)
            (job,) = inst.jobs
            job.state, job.finished = "completed", utcnow()
            job.started = job.finished - timedelta(hours=1)
            job.accounting = {"elapsed_s": 3600, "alloc_cpus": 1, "nnodes": 1}
            usage[iid] = measure(s, job)[0]
            step = OrgPredictors._template(s, inst, {}).step("run").resources
            usage[iid, "asked"] = (step.walltime_s, step.memory_mb)
    assert float(usage[plain].mem_gb_hours) == 0.5  # the template's 512 MB for an hour
    assert float(usage[mine].mem_gb_hours) == 0.75  # the 768 MB asked for
    assert usage[plain, "asked"] == (600, 512) and usage[mine, "asked"] == (1200, 768)


def test_a_template_beyond_the_queue_is_refused_until_the_submission_asks_for_less(priced):
    world = priced
    with dbutil.session_scope(world.factory) as s:
        q = s.scalar(select(ClusterQueue).where(ClusterQueue.name == "debug"))
        q.max_walltime_s = 300  # 5 minutes; run-python asks for 10
    before = counts(world)
    with pytest.raises(ResourceError, match=r"^step 'run' asks for 00:10:00 of walltime \(the template's\); local/debug allows 00:05:00: ask for less walltime or memory in 'resources'") as e:  # fmt: skip
        create(world)
    assert e.value.reason == "resources_beyond_limits" and counts(world) == before
    iid, cents, _ = create(world, resources={"run": {"walltime": "00:04:00"}})
    assert cents == 124 and counts(world) == (before[0] + 1, before[1] + 1, before[2] + 1)
