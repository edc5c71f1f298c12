"""Budgets and the ledger driven by the workflow engine, on the local backend (real processes): the
reservation at submission, one ledger row per finished job, settlement from the ledger, restart
safety, and the exhausted-budget policies. The same on Slurm through the REST API is in
test_market_e2e.py."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from jupyter_heroes import dbutil
from jupyter_heroes.accounting import budgets
from jupyter_heroes.accounting.budgets import BudgetExceeded
from jupyter_heroes.accounting.ledger import upper_bound_cost
from jupyter_heroes.decision.cost import Offer
from jupyter_heroes.orm import Budget, Cluster, Job, Organization, User, WorkflowInstance, WorkflowTemplate
from jupyter_heroes.orm_market import BudgetReservation, UsageRecord
from jupyter_heroes.workflows.templates import load_template

SITE_PRICE = {"currency": "EUR", "fixed": "1.00", "core_hour": "3.60"}


@pytest.fixture
def priced(world):
    """The world's local cluster with a site price, and an organization budget of 100 EUR."""
    with dbutil.session_scope(world.factory) as s:
        c = s.scalar(select(Cluster).where(Cluster.name == "local"))
        c.site = {"offer": SITE_PRICE}
        org = s.scalar(select(Organization).where(Organization.name == "orga"))
        b = budgets.create_budget(s, org.id, limit="100.00", margin=1.0, on_exhausted="cancel")
        world.budget_id = b.id
    return world


def submit(world, script: str, **admit) -> str:
    with dbutil.session_scope(world.factory) as s:
        org = s.scalar(select(Organization).where(Organization.name == "orga"))
        user = s.scalar(select(User).where(User.name == "alice"))
        cluster = s.scalar(select(Cluster).where(Cluster.name == "local"))
        trow = s.scalar(select(WorkflowTemplate).where(WorkflowTemplate.name == "run-python"))
        inst = world.engine.create_instance(
            s, org=org, user=user, template_row=trow, params={"script": script}, cluster=cluster
        )
        world.engine.admit(s, inst, **admit)
        return inst.id


async def settled(world, iid: str, timeout: float = 60) -> BudgetReservation:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with dbutil.session_scope(world.factory) as s:
            cid = s.scalar(select(Cluster.id).where(Cluster.name == "local"))
        await world.engine.poll_cluster(cid)
        with dbutil.session_scope(world.factory) as s:
            r = s.scalar(select(BudgetReservation).where(BudgetReservation.instance_id == iid))
            if r.state != "held":
                s.expunge(r)
                return r
        await asyncio.sleep(0.2)
    raise AssertionError(f"reservation of {iid} not settled after {timeout}s")


def ledger_rows(world, iid: str) -> list[UsageRecord]:
    with dbutil.session_scope(world.factory) as s:
        rows = list(s.scalars(select(UsageRecord).where(UsageRecord.instance_id == iid)))
        for r in rows:
            s.expunge(r)
        return rows


def budget(world) -> Budget:
    with dbutil.session_scope(world.factory) as s:
        b = s.get(Budget, world.budget_id)
        s.expunge(b)
        return b


async def test_reserve_run_record_settle_and_a_restart_adds_nothing(priced):
    world = priced
    iid = submit(world, "print('hi')")
    with dbutil.session_scope(world.factory) as s:
        r = s.scalar(select(BudgetReservation).where(BudgetReservation.instance_id == iid))
        trow = s.scalar(select(WorkflowTemplate).where(WorkflowTemplate.name == "run-python"))
        bound = upper_bound_cost(load_template(trow.spec), {"script": ""}, Offer.from_dict(SITE_PRICE))
        # 1.00 fixed + 1 core x 10 min x 3.60/h
        assert (r.predicted_cents, r.currency, r.state) == (160, "EUR", "held") == (*bound, "held")
        assert [h.amount_cents for h in r.holds] == [160]
    assert budget(world).reserved_cents == 160
    world.engine._running = True
    await world.engine.launch(iid)
    r = await settled(world, iid)
    (rec,) = ledger_rows(world, iid)
    assert rec.pricing == "site" and rec.elapsed_s >= 0 and rec.cost_cents >= 100
    assert (r.state, r.actual_cents) == ("settled", rec.cost_cents)
    b = budget(world)
    assert (b.reserved_cents, b.spent_cents) == (0, rec.cost_cents)
    # a restarted engine recovers and sweeps: no second row, no second settlement
    await world.engine.stop()
    eng2 = world.new_engine()
    await eng2.recover()
    assert [x.id for x in ledger_rows(world, iid)] == [rec.id]
    assert budget(world).spent_cents == rec.cost_cents
    with dbutil.session_scope(world.factory) as s:
        assert s.scalar(select(func.count()).select_from(UsageRecord)) == 1


async def test_a_refused_reservation_leaves_no_instance(priced):
    world = priced
    with dbutil.session_scope(world.factory) as s:
        budgets.update_budget(s, world.budget_id, s.get(Budget, world.budget_id).org_id, limit="1.50")
    with pytest.raises(BudgetExceeded, match=r"limit 1.50 EUR.*needs 1.60 EUR"):
        submit(world, "print('too dear')")  # session_scope rolls back
    with dbutil.session_scope(world.factory) as s:
        assert s.scalar(select(func.count()).select_from(WorkflowInstance)) == 0
        assert s.scalar(select(func.count()).select_from(Job)) == 0
        assert s.scalar(select(func.count()).select_from(BudgetReservation)) == 0
    assert budget(world).reserved_cents == 0


async def test_decision_prediction_is_reserved_instead_of_the_bound(priced):
    iid = submit(priced, "print(1)", predicted=(42, "EUR"))
    with dbutil.session_scope(priced.factory) as s:
        r = s.scalar(select(BudgetReservation).where(BudgetReservation.instance_id == iid))
        assert (r.predicted_cents, r.note) == (42, f"workflow {iid}: decision prediction")


async def test_exhausted_budget_cancels_running_work_and_refuses_even_free_runs(priced):
    world = priced
    world.engine._running = True
    first = submit(world, "print('paid')")
    await world.engine.launch(first)
    spent = (await settled(world, first)).actual_cents
    long = submit(world, "import time; time.sleep(60)")
    await world.engine.launch(long)
    with dbutil.session_scope(world.factory) as s:  # the billing admin lowers the limit below the spend
        budgets.update_budget(s, world.budget_id, s.get(Budget, world.budget_id).org_id, limit="0.01")
    assert spent > 1
    counts = await world.engine.enforce_budgets()
    assert counts["cancelled"] == 1
    r = await settled(world, long)
    with dbutil.session_scope(world.factory) as s:
        inst = s.get(WorkflowInstance, long)
        assert inst.state == "cancelled"
        assert "budget is exhausted" in inst.jobs[0].reason or inst.jobs[0].state == "cancelled"
    rows = ledger_rows(world, long)
    assert r.actual_cents == sum(x.cost_cents for x in rows)  # what ran is charged, the rest released
    assert budget(world).reserved_cents == 0
    with pytest.raises(BudgetExceeded, match="limit 0.01 EUR"):
        submit(world, "print('free')", predicted=(0, "EUR"))


async def test_hold_on_a_scheduler_that_cannot_hold_leaves_jobs_running(priced, caplog):
    world = priced
    world.engine._running = True
    with dbutil.session_scope(world.factory) as s:
        b = s.get(Budget, world.budget_id)
        budgets.update_budget(s, b.id, b.org_id, on_exhausted="hold")
    first = submit(world, "print('paid')")
    await world.engine.launch(first)
    await settled(world, first)
    iid = submit(world, "import time; time.sleep(2)")
    await world.engine.launch(iid)
    with dbutil.session_scope(world.factory) as s:
        b = s.get(Budget, world.budget_id)
        budgets.update_budget(s, b.id, b.org_id, limit="0.01")
        s.scalar(select(Job).where(Job.instance_id == iid)).state = "queued"  # as if still pending
    counts = await world.engine.enforce_budgets()
    assert counts["held"] == 0 and "cannot hold pending jobs" in caplog.text
    r = await settled(world, iid)
    with dbutil.session_scope(world.factory) as s:
        assert s.get(WorkflowInstance, iid).state == "completed"
    assert Decimal(r.actual_cents) > 0


async def test_a_run_cancelled_before_it_reached_the_cluster_releases_its_reservation(priced):
    world = priced
    iid = submit(world, "print('never')")
    assert budget(world).reserved_cents == 160
    await world.engine.cancel(iid)  # before launch: nothing was sent
    with dbutil.session_scope(world.factory) as s:
        assert s.get(WorkflowInstance, iid).state == "cancelled"
        r = s.scalar(select(BudgetReservation).where(BudgetReservation.instance_id == iid))
        assert (r.state, r.actual_cents) == ("released", 0)
    assert ledger_rows(world, iid) == []
    b = budget(world)
    assert (b.reserved_cents, b.spent_cents) == (0, 0)


async def test_an_enabled_application_licence_is_reserved_pinned_and_charged(priced):
    """The template runs application heroes-run-python; a vendor sells it with a 2.00 EUR fee per
    run and the organization enabled it: reserved with the resources, charged in the ledger."""
    from jupyter_heroes.marketplace import applications

    world = priced
    with dbutil.session_scope(world.factory) as s:
        org = s.scalar(select(Organization).where(Organization.name == "orga"))
        soft = Organization(name="soft", kind="provider")
        s.add(soft)
        s.flush()
        v = applications.publish_application(
            s,
            soft.id,
            name="heroes-run-python",
            image="docker://python:3.11",
            price={"currency": "EUR", "fixed": "2.00", "fixed_per": "run"},
            visibility=["orga"],
        )
        applications.enable_application(s, org.id, v.application_id)
    iid = submit(world, "print('licensed')")
    with dbutil.session_scope(world.factory) as s:
        r = s.scalar(select(BudgetReservation).where(BudgetReservation.instance_id == iid))
        assert r.predicted_cents == 160 + 200
        assert r.note.endswith("site price + licence heroes-run-python v1, requested walltime x resources")
    world.engine._running = True
    await world.engine.launch(iid)
    r = await settled(world, iid)
    (rec,) = ledger_rows(world, iid)
    assert (rec.licence_cents, rec.application_version_id) == (200, v.id)
    assert r.actual_cents == rec.cost_cents + rec.licence_cents
