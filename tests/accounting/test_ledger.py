"""The ledger: priced under the versions in force at submission, idempotent, consistent with budgets."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from jupyter_heroes.accounting import budgets as ab
from jupyter_heroes.accounting import ledger
from jupyter_heroes.marketplace import applications as ma
from jupyter_heroes.marketplace import offers as mo
from jupyter_heroes.marketplace.errors import Conflict, NotFound
from jupyter_heroes.marketplace.sample import add_run
from jupyter_heroes.orm import Budget, Cluster, ClusterQueue, Job, WorkflowInstance, utcnow
from jupyter_heroes.orm_market import UsageRecord

V1 = {"currency": "EUR", "fixed": "0.50", "core_hour": "0.012", "gpu_hour": "1.10"}
V2 = {"currency": "EUR", "fixed": "0.50", "core_hour": "1.00", "gpu_hour": "3.00"}
# main step: 1 h on 2 nodes x 8 cores allocated 16 CPUs, the template asks 2 GPUs:
# 0.50 + 16 x 0.012 = 0.19 + 2 x 1.10 = 2.20 -> 2.89; post step: 1 minute on 1 core: 0.50 + 0.00
V1_RUN = Decimal("3.39")


def _offer(db):
    ids = db.ids
    with db.session() as s:
        v1 = mo.publish_offer(
            s,
            ids.orgs["hpc-centre"],
            name="galileo-debug",
            cluster_id=ids.clusters["galileo"],
            queue="debug",
            price=V1,
            visibility=["acme", "globex"],
        )
        mo.enable_offer(s, ids.orgs["acme"], v1.offer_id)
        return v1.offer_id, v1.id


def _finish(db, instance_id: str, state: str = "completed") -> None:
    with db.session() as s:
        for j in s.get(WorkflowInstance, instance_id).jobs:
            j.state = state
        s.get(WorkflowInstance, instance_id).state = state


def test_price_change_between_submission_and_completion(db):
    ids = db.ids
    offer_id, v1_id = _offer(db)
    with db.session() as s:
        pinned = add_run(
            s, ids, org="acme", user="alice", project="cfd", cluster="galileo", queue="debug", state="running"
        )
        for j in pinned.jobs:  # what the engine does at submission
            mo.pin_job(s, j.id)
        unpinned = add_run(
            s, ids, org="acme", user="bob", project="ml", cluster="galileo", queue="debug", state="running"
        )
        pinned_id, unpinned_id = pinned.id, unpinned.id
    with db.session() as s:
        v2 = mo.update_offer(s, offer_id, ids.orgs["hpc-centre"], price=V2, note="new tariff")
        v2_id = v2.id
    with db.session() as s:
        late = add_run(
            s, ids, org="acme", user="alice", project="cfd", cluster="galileo", queue="debug",
            submitted=v2.created + timedelta(seconds=1), state="running",
        )  # fmt: skip
        late_id = late.id
    for i in (pinned_id, unpinned_id, late_id):
        _finish(db, i)
    with db.session() as s:
        recs = {i: ledger.record_instance(s, i) for i in (pinned_id, unpinned_id, late_id)}
        for i in (pinned_id, unpinned_id):  # both submitted under v1: charged under v1
            assert {r.offer_version_id for r in recs[i]} == {v1_id}
            assert ledger.instance_cost(s, i, "EUR") == V1_RUN
        assert {r.offer_version_id for r in recs[late_id]} == {v2_id}
        # 0.50 + 16.00 + 6.00 for main; 0.50 + 1/60 core-hour at 1.00 = 0.02 for post
        assert ledger.instance_cost(s, late_id, "EUR") == Decimal("23.02")
        main = next(r for r in recs[pinned_id] if r.step == "main")
        assert (main.core_hours, main.node_hours, main.gpu_hours, main.mem_gb_hours) == (16.0, 2.0, 2.0, 8.0)
        assert main.cost_cents == 289 and main.currency == "EUR" and main.pricing == "offer"
        assert [(ln["item"], ln["amount"]) for ln in main.breakdown] == [
            ("fixed", "0.50"),
            ("core_hour", "0.19"),
            ("gpu_hour", "2.20"),
        ]
        # the history shows both versions, with the jobs charged under each
        assert [v.version for v in mo.offer_history(s, offer_id, ids.orgs["hpc-centre"])] == [1, 2]
        from jupyter_heroes.accounting.reports import version_usage

        assert version_usage(s, offer_id, ids.orgs["hpc-centre"]) == [
            {"version": 1, "jobs": 4, "revenue": {"EUR": V1_RUN * 2}},
            {"version": 2, "jobs": 2, "revenue": {"EUR": Decimal("23.02")}},
        ]
        with pytest.raises(NotFound):
            version_usage(s, offer_id, ids.orgs["cloudy"])


def test_recording_is_idempotent_even_concurrently(db):
    ids = db.ids
    _offer(db)
    with db.session() as s:
        inst = add_run(
            s, ids, org="acme", user="alice", project="cfd", cluster="galileo", queue="debug", energy_j=7.2e6
        )
        job_id = inst.jobs[0].id
    got: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def rec() -> None:
        try:
            barrier.wait()
            with db.session() as s:
                got.append(ledger.record_job(s, job_id).id)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=rec) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(set(got)) == 1 and len(got) == 8
    with db.session() as s:
        assert ledger.record_job(s, job_id).id == got[0]
        assert s.scalar(select(func.count()).select_from(UsageRecord)) == 1
        r = s.scalar(select(UsageRecord))
        assert r.energy_j == 7.2e6 and r.org_id == ids.orgs["acme"] and r.user_id == ids.users["alice"]
        assert r.project_id == ids.projects["acme/cfd"] and r.template_id == ids.templates["acme"]
        assert r.provider_org_id == ids.orgs["hpc-centre"]


def test_only_finished_jobs_are_recorded(db):
    ids = db.ids
    with db.session() as s:
        inst = add_run(
            s, ids, org="acme", user="alice", project=None, cluster="galileo", queue="debug", state="running"
        )
        with pytest.raises(Conflict, match=r"is running; it is recorded in the ledger once it has finished"):
            ledger.record_job(s, inst.jobs[0].id)
        with pytest.raises(NotFound):
            ledger.record_job(s, (s.scalar(select(func.max(Job.id))) or 0) + 1)


def test_own_cluster_priced_by_site_offer_and_unpriced_otherwise(db):
    ids = db.ids
    acme = ids.orgs["acme"]
    with db.session() as s:
        c = Cluster(
            org_id=acme, name="inhouse", transport="local", scheduler="local",
            site={"offer": {"currency": "CHF", "node_hour": "2.50"}},
        )  # fmt: skip
        c.queues.append(ClusterQueue(name="batch"))
        s.add(c)
        s.flush()
        ids.clusters["inhouse"] = c.id
        own = add_run(s, ids, org="acme", user="alice", project="cfd", cluster="inhouse", queue="batch")
        # galileo without an enabled offer: the job is recorded, unpriced
        stray = add_run(s, ids, org="acme", user="alice", project="cfd", cluster="galileo", queue="debug")
        own_recs, stray_recs = ledger.record_instance(s, own.id), ledger.record_instance(s, stray.id)
    assert {r.pricing for r in own_recs} == {"site"} and {r.currency for r in own_recs} == {"CHF"}
    # 2 node-hours + 1/60 node-hour at 2.50 CHF
    assert sum(r.cost_cents for r in own_recs) == 500 + 4
    assert {(r.pricing, r.cost_cents, r.offer_id) for r in stray_recs} == {("none", 0, None)}


def test_application_licence_charged_once_per_run(db):
    ids = db.ids
    _offer(db)
    with db.session() as s:
        v = ma.publish_application(
            s, ids.orgs["appsoft"], name="cfd-solver", image="ubuntu:22.04",
            price={"currency": "USD", "fixed": "25", "fixed_per": "run", "core_hour": "0.10"},
            visibility=["acme"],
        )  # fmt: skip
        ma.enable_application(s, ids.orgs["acme"], v.application_id)
        inst = add_run(s, ids, org="acme", user="alice", project="cfd", cluster="galileo", queue="debug")
        for j in inst.jobs:
            mo.pin_job(s, j.id, application_id=v.application_id)
        recs = ledger.record_instance(s, inst.id)
        main, post = sorted(recs, key=lambda r: r.step)
        assert (main.licence_currency, main.licence_cents) == ("USD", 2500 + 160)
        assert post.licence_cents == 0  # the per-run fee is charged once, 1/60 core-hour rounds to 0.00
        assert main.app_provider_org_id == ids.orgs["appsoft"] and main.application_version_id == v.id
        # resources in EUR, licence in USD; converted for the budget
        assert ledger.instance_cost(s, inst.id, "EUR") == V1_RUN + Decimal(
            "24.58"
        )  # 26.60 USD / 1.0824 = 24.575...


def test_budget_totals_equal_the_ledger(db):
    """Reserve at submission, record the jobs, settle from the ledger: the budgets' spent equals the
    ledger's total and nothing stays reserved."""
    ids = db.ids
    acme, cfd = ids.orgs["acme"], ids.projects["acme/cfd"]
    _offer(db)
    with db.session() as s:
        org_b = ab.create_budget(s, acme, limit=100).id
        cfd_b = ab.create_budget(s, acme, project_id=cfd, limit=50).id
    reservations = []
    for k in range(5):
        with db.session() as s:
            project = "cfd" if k % 2 == 0 else "ml"
            inst = add_run(s, ids, org="acme", user="alice", project=project, cluster="galileo", queue="debug",
                           elapsed_s=1800.0 * (k + 1), state="running")  # fmt: skip
            r = ab.reserve(s, acme, ids.projects[f"acme/{project}"], "4.00", instance_id=inst.id)
            reservations.append((inst.id, r.id))
    for iid, _ in reservations:
        _finish(db, iid)
    with db.session() as s:
        mid = ab.budget_status(s, s.get(Budget, org_b))
        assert mid["reserved"] == "24.00" and mid["spent"] == "0.00"
        for iid, rid in reservations:
            ledger.record_instance(s, iid)
            ledger.settle_from_ledger(s, rid)
            ledger.settle_from_ledger(s, rid)  # repeated by a retry: not counted twice
    with db.session() as s:
        total = sum(r.cost_cents for r in s.scalars(select(UsageRecord)).all())
        cfd_total = sum(
            r.cost_cents for r in s.scalars(select(UsageRecord).where(UsageRecord.project_id == cfd)).all()
        )
        org, prj = s.get(Budget, org_b), s.get(Budget, cfd_b)
        assert (org.reserved_cents, org.spent_cents) == (0, total)
        assert (prj.reserved_cents, prj.spent_cents) == (0, cfd_total)
        assert total > 0 and cfd_total < total
        for bid in (org_b, cfd_b):
            assert ab.reservation_totals(s, bid)["spent"] == s.get(Budget, bid).spent_cents


def test_records_of_an_organization(db):
    ids = db.ids
    _offer(db)
    with db.session() as s:
        a = add_run(s, ids, org="acme", user="alice", project="cfd", cluster="galileo", queue="debug")
        b = add_run(s, ids, org="globex", user="carol", project="crash", cluster="galileo", queue="debug",
                    submitted=utcnow() - timedelta(days=40))  # fmt: skip
        ledger.record_instance(s, a.id)
        ledger.record_instance(s, b.id)
        acme_recs = ledger.records(s, ids.orgs["acme"])
        assert {r.instance_id for r in acme_recs} == {a.id}
        assert ledger.records(s, ids.orgs["globex"], start=utcnow() - timedelta(days=10)) == []
        assert len(ledger.records(s, ids.orgs["globex"], end=utcnow())) == 2


def test_offer_withdrawn_after_submission_still_charges_the_job(db):
    ids = db.ids
    offer_id, v1_id = _offer(db)
    with db.session() as s:
        inst = add_run(
            s, ids, org="acme", user="alice", project="cfd", cluster="galileo", queue="debug", state="running"
        )
        iid = inst.id
    with db.session() as s:
        mo.update_offer(s, offer_id, ids.orgs["hpc-centre"], price=V2)
        mo.withdraw_offer(s, offer_id, ids.orgs["hpc-centre"])
    _finish(db, iid)
    with db.session() as s:
        assert {r.offer_version_id for r in ledger.record_instance(s, iid)} == {v1_id}
        assert ledger.instance_cost(s, iid, "EUR") == V1_RUN
        with pytest.raises(NotFound, match="offer 999 is not enabled"):
            mo.pin_job(s, s.get(WorkflowInstance, iid).jobs[0].id, offer_id=999)
