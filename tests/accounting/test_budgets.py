"""Budgets: validation, atomic reservations under concurrency, settlement, credits, exhausted policy."""

from __future__ import annotations

import random
import threading
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from jupyter_heroes.accounting import budgets as ab
from jupyter_heroes.marketplace.errors import Conflict, InvalidInput, NotFound
from jupyter_heroes.marketplace.sample import add_run
from jupyter_heroes.orm import Budget, WorkflowInstance
from jupyter_heroes.orm_market import BudgetReservation


def _budget(db, bid):
    with db.session() as s:
        b = s.get(Budget, bid)
        return b.amount_cents, b.reserved_cents, b.spent_cents


def test_fifty_concurrent_submissions_exactly_ten_accepted(db):
    """50 threads, each with its own session, reserve a predicted 8.33 x margin 1.2 = 9.996, rounded up
    to 10.00, against a 100.00 budget: exactly 10 are accepted, the 40 others refused with the numbers."""
    acme = db.ids.orgs["acme"]
    with db.session() as s:
        bid = ab.create_budget(s, acme, limit="100.00", currency="EUR").id
    n = 50
    barrier = threading.Barrier(n)
    accepted: list[str] = []
    refused: list[ab.BudgetExceeded] = []
    other: list[BaseException] = []
    lock = threading.Lock()

    def submit() -> None:
        try:
            barrier.wait()
            with db.session() as s:
                # as the engine does: the instance is written first, then the budget reserved
                inst = add_run(s, db.ids, org="acme", user="alice", project=None, cluster="galileo",
                               queue="debug", state="submitting")  # fmt: skip
                r = ab.reserve(s, acme, None, "8.33", currency="EUR", instance_id=inst.id)
                rid = r.id
            with lock:
                accepted.append(rid)
        except ab.BudgetExceeded as e:
            with lock:
                refused.append(e)
        except BaseException as e:
            with lock:
                other.append(e)

    threads = [threading.Thread(target=submit) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert other == []
    assert len(accepted) == 10 and len(refused) == 40
    assert _budget(db, bid) == (10000, 10000, 0)
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(BudgetReservation)) == 10
        # a refused submission rolled back its instance too: nothing half-done is left
        assert s.scalar(select(func.count()).select_from(WorkflowInstance)) == 10
        assert ab.reservation_totals(s, bid) == {"held": 10000, "spent": 0}
    e = refused[-1]
    assert (e.limit, e.spent, e.reserved, e.requested, e.available) == (
        Decimal("100.00"),
        Decimal("0.00"),
        Decimal("100.00"),
        Decimal("10.00"),
        Decimal("0.00"),
    )
    assert e.status == 409 and e.reason == "budget_exceeded"


def test_refusal_says_the_numbers_and_what_to_do(db):
    ids = db.ids
    acme = ids.orgs["acme"]
    with db.session() as s:
        bid = ab.create_budget(s, acme, limit=50, margin=1.5).id
        r = ab.reserve(s, acme, None, 20)  # holds 30.00
        ab.settle(s, r, "12.34")
        ab.reserve(s, acme, None, 10)  # holds 15.00
    with db.session() as s:
        with pytest.raises(
            ab.BudgetExceeded,
            match=(
                r"The organization acme budget cannot cover this run: limit 50.00 EUR, spent 12.34 EUR, "
                r"reserved by running work 15.00 EUR, available 22.66 EUR; this run needs 30.00 EUR "
                r"\(predicted cost 20.00 EUR x margin 1.5\)\. Choose a cheaper option.*raise the budget or add credit"
            ),
        ):
            ab.reserve(s, acme, None, 20)
    assert _budget(db, bid) == (5000, 1500, 1234)


def test_project_and_organization_budgets_both_apply_and_refusal_leaves_nothing_held(db):
    ids = db.ids
    acme, cfd, ml = ids.orgs["acme"], ids.projects["acme/cfd"], ids.projects["acme/ml"]
    with db.session() as s:
        org_b = ab.create_budget(s, acme, limit=100, margin=1).id
        cfd_b = ab.create_budget(s, acme, project_id=cfd, limit=30, margin=1).id
    with db.session() as s:
        r = ab.reserve(s, acme, cfd, 25)
        assert sorted((h.budget_id, h.amount_cents) for h in r.holds) == [(org_b, 2500), (cfd_b, 2500)]
        ab.reserve(s, acme, ml, 60)  # the ml project has no budget of its own: only the organization's
    with db.session() as s:
        # the project budget refuses after the organization's accepted: its hold is given back
        with pytest.raises(ab.BudgetExceeded, match=r"project acme/cfd budget cannot cover"):
            ab.reserve(s, acme, cfd, 10)
        # the session is still usable and commits nothing held
    assert _budget(db, org_b) == (10000, 8500, 0)
    assert _budget(db, cfd_b) == (3000, 2500, 0)
    with db.session() as s, pytest.raises(ab.BudgetExceeded, match=r"organization acme budget"):
        ab.reserve(s, acme, ml, 16)
    # another organization is not limited by acme's budgets
    with db.session() as s:
        ab.reserve(s, ids.orgs["globex"], None, 10_000)


def test_settle_release_and_idempotency(db):
    acme = db.ids.orgs["acme"]
    with db.session() as s:
        bid = ab.create_budget(s, acme, limit=100).id
        r1 = ab.reserve(s, acme, None, 10)  # 12.00 held
        r2 = ab.reserve(s, acme, None, 10)
        rid1, rid2 = r1.id, r2.id
    assert _budget(db, bid) == (10000, 2400, 0)
    with db.session() as s:
        st = ab.settle(s, rid1, "9.87")
        assert st.actual == Decimal("9.87") and st.charged == {bid: 987} and not st.already_settled
    assert _budget(db, bid) == (10000, 1200, 987)
    with db.session() as s:
        again = ab.settle(s, rid1, "9.87")  # a retried settlement does not count twice
        assert again.already_settled
        with pytest.raises(Conflict, match=r"already settled with 9.87 EUR"):
            ab.settle(s, rid1, "5")
        ab.release(s, rid2)
    assert _budget(db, bid) == (10000, 0, 987)
    with db.session() as s:
        assert s.get(BudgetReservation, rid2).state == "released"
        assert ab.reservation_totals(s, bid) == {"held": 0, "spent": 987}
        # costing more than reserved is recorded in full
        r3 = ab.reserve(s, acme, None, 1)
        ab.settle(s, r3, 50)
    assert _budget(db, bid) == (10000, 0, 5987)


def test_settle_in_another_currency(db):
    acme = db.ids.orgs["acme"]
    with db.session() as s:
        bid = ab.create_budget(s, acme, limit=100, currency="EUR", margin=1).id
        r = ab.reserve(s, acme, None, "10.824", currency="USD")  # 10.82 USD = 10.00 EUR at 1.0824
        assert r.holds[0].amount_cents == 1000
        ab.settle(s, r, "21.65", currency="USD")
        assert r.actual_cents == 2165 and r.currency == "USD"
    assert _budget(db, bid) == (10000, 0, 2000)
    with db.session() as s, pytest.raises(InvalidInput, match=r"no exchange rate for CHF"):
        ab.reserve(s, acme, None, 1, currency="CHF")


def test_exhausted_budget_lists_work_to_hold_or_cancel(db):
    ids = db.ids
    acme, cfd = ids.orgs["acme"], ids.projects["acme/cfd"]
    with db.session() as s:
        org_b = ab.create_budget(s, acme, limit=100, on_exhausted="hold").id
        cfd_b = ab.create_budget(s, acme, project_id=cfd, limit=20, on_exhausted="cancel").id
        live_cfd = add_run(
            s, ids, org="acme", user="alice", project="cfd", cluster="galileo", queue="debug", state="running"
        ).id
        live_ml = add_run(
            s, ids, org="acme", user="bob", project="ml", cluster="galileo", queue="debug", state="running"
        ).id
        done = add_run(s, ids, org="acme", user="bob", project="cfd", cluster="galileo", queue="debug").id
        add_run(
            s,
            ids,
            org="globex",
            user="carol",
            project="crash",
            cluster="galileo",
            queue="debug",
            state="running",
        )
        assert ab.exhausted_actions(s, acme) == []
        r = ab.reserve(s, acme, cfd, 10, margin=1)
        st = ab.settle(s, r, 20)
    # the project budget is exhausted: its live run is cancelled, nothing else
    assert [(a.instance_id, a.action, a.budget_id) for a in st.actions] == [(live_cfd, "cancel", cfd_b)]
    assert "project acme/cfd budget is exhausted: spent 20.00 EUR of 20.00 EUR" in st.actions[0].reason
    with db.session() as s:
        r = ab.reserve(s, acme, None, 70, margin=1)
        ab.settle(s, r, 80)
        acts = {a.instance_id: a.action for a in ab.exhausted_actions(s, acme)}
    # both exhausted: the cfd run stays "cancel" (stronger), the ml run is held, the finished one untouched
    assert acts == {live_cfd: "cancel", live_ml: "hold"}
    assert done not in acts
    with db.session() as s:
        status = ab.budget_status(s, s.get(Budget, org_b))
        assert status["exhausted"] and status["spent"] == "100.00" and status["available"] == "0.00"
        with pytest.raises(ab.BudgetExceeded):
            ab.reserve(s, acme, None, "0.01")


def test_credits_raise_the_limit_and_are_tracked(db):
    acme = db.ids.orgs["acme"]
    with db.session() as s:
        bid = ab.create_budget(s, acme, limit=10, margin=1).id
        with pytest.raises(ab.BudgetExceeded):
            ab.reserve(s, acme, None, 15)
        ab.add_credit(s, bid, acme, "500.00", reference="PO-2025-001", created_by="billing")
        ab.reserve(s, acme, None, 15)
        st = ab.budget_status(s, s.get(Budget, bid))
    assert (st["limit"], st["credits"], st["reserved"], st["available"]) == (
        "510.00",
        "500.00",
        "15.00",
        "495.00",
    )
    with db.session() as s:
        with pytest.raises(InvalidInput, match="positive amount"):
            ab.add_credit(s, bid, acme, 0)
        with pytest.raises(NotFound):  # another organization's budget
            ab.add_credit(s, bid, db.ids.orgs["globex"], 10)


def test_bad_input_is_refused_clearly(db):
    ids = db.ids
    acme = ids.orgs["acme"]
    with db.session() as s:
        cases = [
            ({"limit": 0}, r"limit: 0 is not a usable budget; a budget of zero would refuse every run"),
            ({"limit": "-5"}, r"limit: '-5' is negative"),
            ({"limit": "lots"}, r"'lots' is not a number"),
            ({"limit": 10, "currency": "XYZ"}, r"currency: 'XYZ' is not an ISO 4217 currency code in use"),
            ({"limit": 10, "currency": "usd"}, r"did you mean USD\?"),
            ({"limit": 10, "on_exhausted": "panic"}, r"on_exhausted: 'panic'; one of 'hold'"),
            ({"limit": 10, "margin": 0.5}, r"margin: 0.5 must be a number from 1"),
            ({"limit": 10, "margin": float("nan")}, r"margin: nan"),
            (
                {"limit": 10, "period_start": datetime(2025, 2, 1), "period_end": datetime(2025, 1, 1)},
                r"period: start 2025-02-01 00:00:00 is not before end",
            ),
        ]
        for kw, msg in cases:
            with pytest.raises(InvalidInput, match=msg) as e:
                ab.create_budget(s, acme, **kw)
            assert isinstance(e.value, ValueError)
        with pytest.raises(NotFound, match="project"):
            ab.create_budget(s, acme, project_id=ids.projects["globex/crash"], limit=10)
        ab.create_budget(
            s, acme, limit=10, period_start=datetime(2025, 1, 1), period_end=datetime(2025, 2, 1)
        )
        with pytest.raises(InvalidInput, match=r"overlaps budget \d+ of the same scope"):
            ab.create_budget(s, acme, limit=10, period_start=datetime(2025, 1, 15))
        # the next period and a project's budget do not overlap it
        ab.create_budget(
            s, acme, limit=10, period_start=datetime(2025, 2, 1), period_end=datetime(2025, 3, 1)
        )
        ab.create_budget(s, acme, project_id=ids.projects["acme/cfd"], limit=10)
        with pytest.raises(InvalidInput, match=r"predicted cost: '-1' is negative"):
            ab.reserve(s, acme, None, "-1")
        with pytest.raises(InvalidInput, match=r"'EURO' is not an ISO 4217"):
            ab.reserve(s, acme, None, 1, currency="EURO")
        with pytest.raises(NotFound):
            ab.reserve(s, acme, ids.projects["globex/crash"], 1)


def test_periods_select_the_budget_in_force(db):
    acme = db.ids.orgs["acme"]
    jan, feb, mar = datetime(2025, 1, 1), datetime(2025, 2, 1), datetime(2025, 3, 1)
    with db.session() as s:
        b1 = ab.create_budget(s, acme, limit=10, margin=1, period_start=jan, period_end=feb).id
        b2 = ab.create_budget(s, acme, limit=20, margin=1, period_start=feb, period_end=mar).id
        r = ab.reserve(s, acme, None, 8, at=jan + timedelta(days=3))
        assert [h.budget_id for h in r.holds] == [b1]
        r = ab.reserve(s, acme, None, 15, at=feb)
        assert [h.budget_id for h in r.holds] == [b2]
        assert ab.reserve(s, acme, None, 1000, at=mar).holds == []  # no budget in force: not limited


def test_reserved_and_settled_totals_always_match(db):
    """A random mix of reservations, settlements and releases: the budgets' counters always equal
    the sums over the reservations' holds."""
    ids = db.ids
    acme = ids.orgs["acme"]
    rng = random.Random(7)
    with db.session() as s:
        org_b = ab.create_budget(s, acme, limit=1000).id
        cfd_b = ab.create_budget(s, acme, project_id=ids.projects["acme/cfd"], limit=300, margin=1.1).id
    open_: list[str] = []
    for _ in range(60):
        with db.session() as s:
            op = rng.random()
            if op < 0.5 or not open_:
                project = rng.choice([None, ids.projects["acme/cfd"], ids.projects["acme/ml"]])
                try:
                    open_.append(ab.reserve(s, acme, project, Decimal(rng.randint(1, 4000)) / 100).id)
                except ab.BudgetExceeded:
                    pass
            elif op < 0.85:
                ab.settle(s, open_.pop(rng.randrange(len(open_))), Decimal(rng.randint(0, 5000)) / 100)
            else:
                ab.release(s, open_.pop(rng.randrange(len(open_))))
        with db.session() as s:
            for bid in (org_b, cfd_b):
                b = s.get(Budget, bid)
                assert ab.reservation_totals(s, bid) == {"held": b.reserved_cents, "spent": b.spent_cents}
