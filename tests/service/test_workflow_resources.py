"""Submitting with your own walltime and memory, or with the decision's advice, through the real hub +
service (local-backend clusters): bad values are 400 and store nothing, the user's values win over
the advice, which wins over the template, the instance shows what each step asks for and why, and
the budget reservation follows the walltime asked for.

The organization's history (40 finished runs of the template, ~30 s each, 100 MiB peak) is written
into the service's database as the engine would have left it, so that the decision's predictor has
something to advise from without running 40 jobs first.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from jupyter_heroes import orm

from .conftest import OnWorld, World

ORG = "wres-lab"
ADMIN, RES = "wres-admin", "wres-res"
SUBMIT = "/organization/workflow/submit"
TEMPLATE = {
    "heroes_template": 1,
    "name": "wres-sleep",
    "version": 1,
    "application": "wres-sleep",
    "description": "sleeps",
    "parameters": {"seconds": {"type": "integer", "default": 0, "min": 0, "max": 60}},
    "steps": [
        {
            "name": "nap",
            "command": ["sleep", "{{ seconds }}"],
            "resources": {"memory_mb": 1024, "walltime": "00:30:00"},
        }
    ],
}


class Lab(OnWorld):
    def __init__(self, world: World) -> None:
        self.world = world

    def counts(self) -> tuple[int, int]:
        with self.world.db() as s:
            org = s.scalar(select(orm.Organization).where(orm.Organization.name == ORG))
            n = s.scalar(
                select(func.count())
                .select_from(orm.WorkflowInstance)
                .where(orm.WorkflowInstance.org_id == org.id)
            )
        budget = self.ok(ADMIN, "GET", f"/organization/budgets/{self.budget_id}")
        return n, budget["reserved"]


@pytest.fixture(scope="module")
def lab(world: World, tmp_path_factory) -> Lab:
    scratch = tmp_path_factory.mktemp("wres-scratch")
    world.found_org(ORG, {ADMIN: "org-admin", RES: "researcher"})
    world.ok(
        ADMIN,
        "POST",
        "/organization/admin/cluster",
        {
            "name": "wres-local",
            "transport": "local",
            "scheduler": "local",
            "scratch_root": str(scratch / "local"),
            "queues": [{"name": "debug", "max_walltime_s": 3600, "mem_per_node_mb": 2048}],
            "site": {"offer": {"currency": "EUR", "core_hour": "3.60"}, "typical_wait_s": 0},
        },
        status=201,
    )
    world.ok(
        ADMIN,
        "POST",
        "/organization/admin/cluster",
        {
            "name": "wres-tiny",
            "transport": "local",
            "scheduler": "local",
            "scratch_root": str(scratch / "tiny"),
            "queues": [{"name": "small", "mem_per_node_mb": 128}],
        },
        status=201,
    )
    world.ok(ADMIN, "POST", "/organization/admin/workflow/template", {"template": TEMPLATE}, status=201)
    lab = Lab(world)
    lab.budget_id = world.ok(
        ADMIN, "POST", "/organization/budgets", {"limit": "100.00", "currency": "EUR", "margin": 1.0}, 201
    )["id"]
    # the history the advice learns from: 40 runs of ~30 s, 100 MiB peak, all finished before now
    end = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0) - timedelta(hours=1)
    with world.db() as s:
        org = s.scalar(select(orm.Organization).where(orm.Organization.name == ORG))
        user = s.scalar(select(orm.User).where(orm.User.name == RES))
        trow = s.scalar(select(orm.WorkflowTemplate).where(orm.WorkflowTemplate.name == "wres-sleep"))
        cluster = s.scalar(select(orm.Cluster).where(orm.Cluster.name == "wres-local"))
        for i in range(40):
            finished = end - timedelta(minutes=10 * i)
            inst = orm.WorkflowInstance(
                org_id=org.id,
                user_id=user.id,
                template_id=trow.id,
                cluster_id=cluster.id,
                params={"seconds": 0},
                state="completed",
                created=finished - timedelta(minutes=2),
            )
            s.add(inst)
            s.flush()
            elapsed = 28 + (i % 5)
            s.add(
                orm.Job(
                    instance_id=inst.id,
                    step="nap",
                    cluster_id=cluster.id,
                    queue="debug",
                    state="completed",
                    exit_code=0,
                    scheduler_job_id=str(900000 + i),
                    submitted=finished - timedelta(seconds=elapsed + 30),
                    started=finished - timedelta(seconds=elapsed),
                    finished=finished,
                    accounting={"elapsed_s": float(elapsed), "max_rss_bytes": 100 * 2**20, "nnodes": 1},
                )
            )
        s.commit()
    return lab


@pytest.mark.parametrize(
    ("extra", "status", "reason", "message"),
    [
        (
            {"resources": {"bogus": {"walltime": 60}}},
            400,
            "invalid_resources",
            "has no step 'bogus'; its steps are nap",
        ),
        (
            {"resources": {"nap": {"cpus_per_task": 4}}},
            400,
            "invalid_field",
            "unknown field 'resources.nap.cpus_per_task'; allowed fields: memory_mb, walltime",
        ),
        (
            {"resources": {"nap": {"walltime": "1h"}}},
            400,
            "invalid_field",
            "must match exactly one of: a positive number of seconds, a string [D-]HH:MM:SS",
        ),
        ({"resources": {"nap": {"walltime": 0}}}, 400, "invalid_field", "must match exactly one of"),
        (
            {"resources": {"nap": {"walltime": "00:75:00"}}},
            400,
            "invalid_resources",
            "minutes or seconds above 59",
        ),
        (
            {"resources": {"nap": {"memory_mb": 0}}},
            400,
            "invalid_field",
            "'resources.nap.memory_mb' must be at least 1",
        ),
        (
            {"resources": {"nap": {}}},
            400,
            "invalid_field",
            "must set at least 1 field(s): memory_mb, walltime",
        ),
        (
            {"resources": {"nap": {"walltime": "02:00:00"}}},
            400,
            "resources_beyond_limits",
            "step 'nap' asks for 02:00:00 of walltime (your 'resources'); wres-local/debug allows 01:00:00",
        ),
        (
            {"resources": {"nap": {"memory_mb": 4096}}},
            400,
            "resources_beyond_limits",
            "step 'nap' needs 4096 MB per node (your 'resources'); wres-local/debug has 2048 MB",
        ),
        ({"accept_advice": True}, 400, "advice_without_decision", "give its id as 'decision'"),
        (
            {"accept_advice": True, "decision": "0123456789abcdef0123456789abcdef"},
            404,
            "not_found",
            "decision '0123456789abcdef0123456789abcdef' not found in your organization",
        ),
    ],
)
def test_bad_resources_are_refused_and_store_nothing(lab, extra, status, reason, message):
    before = lab.counts()
    r = lab.call(RES, "POST", SUBMIT, {"template": "wres-sleep", "cluster": "wres-local", **extra})
    assert r.status_code == status, r.text
    assert r.json()["reason"] == reason and message in r.json()["message"], r.json()
    assert lab.counts() == before


def test_your_own_walltime_shrinks_the_reservation_and_the_instance_says_so(lab):
    plain = lab.ok(RES, "POST", SUBMIT, {"template": "wres-sleep", "cluster": "wres-local"}, 201)
    # 1 core x 30 min x 3.60/h
    assert plain["reservation"]["predicted"] == "1.80"
    assert plain["resources"] == {
        "nap": {
            "walltime_s": 1800,
            "walltime": "00:30:00",
            "memory_mb": 1024,
            "source": "template",
            "walltime_source": "template",
            "memory_source": "template",
            "template_walltime_s": 1800,
            "template_memory_mb": 1024,
        }
    }
    mine = lab.ok(
        RES,
        "POST",
        SUBMIT,
        {"template": "wres-sleep", "cluster": "wres-local", "resources": {"nap": {"walltime": 600}}},
        201,
    )
    assert mine["reservation"]["predicted"] == "0.60"
    assert (
        mine["reservation"]["basis"]
        == "site price, requested walltime x resources (user walltime and memory)"
    )
    nap = lab.ok(RES, "GET", f"/organization/workflow/instance/{mine['id']}")["resources"]["nap"]
    assert (nap["walltime"], nap["walltime_source"], nap["memory_mb"], nap["memory_source"]) == (
        "00:10:00",
        "user",
        1024,
        "template",
    )


def test_accepting_the_advice_asks_for_what_the_decision_advised(lab):
    d = lab.ok(RES, "POST", "/organization/decision/decide", {"template": "wres-sleep"}, 201)
    rows = {c["key"]: c for c in d["candidates"]}
    advice = rows["wres-local/debug"]["advice"]["nap"]
    # 40 runs peaking at 100 MiB: 100 x 1.2 rounded up to 64 MB, far below the template's 1024 MB;
    # the walltime advice stays at the template's until the organization's history justifies less
    # (AdvisorOptions; the walltime is advised lower in test_resource_overrides_e2e.py)
    assert advice["memory_mb"] == 128 and advice["requested_memory_mb"] == 1024, advice
    assert 60 <= advice["walltime_s"] <= 1800, advice
    assert "advice" not in rows["wres-tiny/small"]  # infeasible: nothing advised there
    # the tiny cluster was not ranked: the decision refuses it as such, before anything else
    r = lab.call(
        RES,
        "POST",
        SUBMIT,
        {"template": "wres-sleep", "cluster": "wres-tiny", "decision": d["decision"], "accept_advice": True},
    )
    assert r.status_code == 400 and r.json()["reason"] == "not_a_candidate", r.text
    assert r.json()["message"].startswith(
        f"wres-tiny/(default queue) was not a ranked candidate of decision {d['decision']} (ranked: wres-local/debug)"
    )
    # the user's own walltime (which wins), the advice's memory
    inst = lab.ok(
        RES,
        "POST",
        SUBMIT,
        {
            "template": "wres-sleep",
            "cluster": "wres-local",
            "queue": "debug",
            "decision": d["decision"],
            "accept_advice": True,
            "resources": {"nap": {"walltime": "00:20:00"}},
        },
        201,
    )
    nap = inst["resources"]["nap"]
    assert (nap["walltime_s"], nap["walltime_source"]) == (1200, "user")
    assert (nap["memory_mb"], nap["memory_source"], nap["source"]) == (128, "advice", "user+advice")
    assert nap["basis"].startswith(advice["basis"]) and "memory: largest recent peak" in nap["basis"]
    # the reservation: the decision's prediction (a run of ~30 s), below the 20 minutes' bound
    res = inst["reservation"]
    assert res["basis"] == "decision prediction" and Decimal(res["predicted"]) < Decimal("1.20"), res
    stored = lab.ok(RES, "GET", f"/organization/decision/{d['decision']}")
    assert stored["instance"] == inst["id"] and stored["accepted"] is True
    with lab.world.db() as s:
        got = s.get(orm.WorkflowInstance, inst["id"]).resource_overrides
    assert got["nap"]["sources"] == {"walltime_s": "user", "memory_mb": "advice"}
    # the run completes, and its view keeps saying what it asked for
    deadline = time.monotonic() + 60
    while (view := lab.ok(RES, "GET", f"/organization/workflow/instance/{inst['id']}"))["state"] not in (
        "completed",
        "failed",
        "cancelled",
    ):
        assert time.monotonic() < deadline, view
        time.sleep(0.3)
    assert view["state"] == "completed" and view["resources"] == inst["resources"], view


def test_accepting_advice_a_ranked_candidate_was_stored_without_is_refused(lab):
    d = lab.ok(RES, "POST", "/organization/decision/decide", {"template": "wres-sleep"}, 201)
    from jupyter_heroes.orm_decision import Decision

    with lab.world.db() as s:  # a decision stored before advice existed (or whose advice failed)
        row = s.get(Decision, d["decision"])
        row.candidates = [{k: v for k, v in c.items() if k != "advice"} for c in row.candidates]
        s.commit()
    before = lab.counts()
    body = {"template": "wres-sleep", "cluster": "wres-local", "queue": "debug", "decision": d["decision"]}
    r = lab.call(RES, "POST", SUBMIT, {**body, "accept_advice": True})
    assert r.status_code == 400 and r.json()["reason"] == "no_advice", r.text
    assert (
        f"decision {d['decision']} has no walltime and memory advice for wres-local/debug"
        in r.json()["message"]
    )
    assert lab.counts() == before  # nothing stored, and the decision can still be followed
    inst = lab.ok(RES, "POST", SUBMIT, body, 201)
    assert inst["resources"]["nap"]["source"] == "template"
