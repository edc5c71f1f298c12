"""Budgets and credits through the real hub + service: scope ``billing``, confined to the organization,
bad input refused with nothing changed, every change audited."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from jupyter_heroes import orm
from jupyter_heroes.accounting import budgets as domain

from .conftest import ACME, GLOBEX, World
from .market_world import CLIENT, Market, market_of

BUDGETS = "/organization/budgets"


@pytest.fixture
def market(world: World) -> Market:
    return market_of(world)


def budget_count(market: Market) -> int:
    with market.world.db() as s:
        return int(s.scalar(select(func.count()).select_from(orm.Budget)) or 0)


def test_budget_lifecycle_with_credits(market: Market) -> None:
    lab = market.budgets["lab"]
    assert (lab["project"], lab["limit"], lab["currency"], lab["spent"], lab["organization"]) == (
        "lab",
        "500.00",
        "EUR",
        "0.00",
        CLIENT,
    )
    b = market.ok(
        "mkt-bill",
        "POST",
        BUDGETS,
        {
            "limit": 1000,
            "currency": "CHF",
            "period_start": "2030-01-01T00:00:00Z",
            "period_end": "2031-01-01T01:00:00+01:00",
            "on_exhausted": "cancel",
            "margin": 1.5,
        },
        status=201,
    )
    assert (b["limit"], b["currency"], b["project"], b["on_exhausted"], b["margin"]) == (
        "1000.00",
        "CHF",
        None,
        "cancel",
        1.5,
    )
    assert (b["period_start"], b["period_end"]) == ("2030-01-01T00:00:00Z", "2031-01-01T00:00:00Z")
    path = f"{BUDGETS}/{b['id']}"
    assert market.ok("mkt-admin", "GET", path) == b  # org-admin holds billing too
    listed = market.ok("mkt-bill", "GET", BUDGETS)
    assert {x["id"] for x in listed} == {lab["id"], b["id"]}
    assert [x["id"] for x in market.ok("mkt-bill", "GET", BUDGETS, params={"project": "lab"})] == [lab["id"]]

    changed = market.ok("mkt-bill", "PATCH", path, {"limit": "1200.5", "on_exhausted": "hold"})
    assert (changed["limit"], changed["on_exhausted"], changed["margin"]) == ("1200.50", "hold", 1.5)
    credit = market.ok("mkt-bill", "POST", f"{path}/credits", {"amount": "250", "reference": "PO-17"}, 201)
    assert (credit["amount"], credit["currency"], credit["created_by"]) == ("250.00", "CHF", "mkt-bill")
    after = market.ok("mkt-bill", "GET", path)
    assert (after["limit"], after["credits"], after["available"]) == ("1450.50", "250.00", "1450.50")
    assert market.ok("mkt-bill", "GET", f"{path}/credits") == [credit]

    assert market.call("mkt-bill", "DELETE", path).status_code == 204
    assert market.call("mkt-bill", "GET", path).status_code == 404
    with market.world.db() as s:
        assert s.get(orm.Budget, b["id"]) is None

    trail = market.ok(
        "mkt-admin", "GET", "/organization/admin/audit", params={"user": "mkt-bill", "limit": 1000}
    )
    mine = [(t["action"], t["status"]) for t in trail if t["target"] == str(b["id"])]
    assert mine == [
        ("budget.delete", 204),
        ("budget.credit", 201),
        ("budget.update", 200),
        ("budget.create", 201),
    ]


def test_a_budget_holding_reservations_is_not_deleted(market: Market) -> None:
    b = market.ok("mkt-bill", "POST", BUDGETS, {"limit": "50"}, status=201)  # the whole organization, always
    with market.world.db() as s:
        org_id = s.scalar(select(orm.Organization.id).where(orm.Organization.name == CLIENT))
        reservation = domain.reserve(s, org_id, None, "10.00", currency="EUR", margin=1.0).id
        s.commit()
    status = market.ok("mkt-bill", "GET", f"{BUDGETS}/{b['id']}")
    assert (status["reserved"], status["available"]) == ("10.00", "40.00")
    r = market.call("mkt-bill", "DELETE", f"{BUDGETS}/{b['id']}")
    assert r.status_code == 409 and r.json()["reason"] == "budget_in_use", r.text
    assert "10.00 EUR" in r.json()["message"]
    assert market.ok("mkt-bill", "GET", f"{BUDGETS}/{b['id']}")["reserved"] == "10.00"
    with market.world.db() as s:
        domain.release(s, reservation)
        s.commit()
    assert market.call("mkt-bill", "DELETE", f"{BUDGETS}/{b['id']}").status_code == 204


#: (body, reason, words in the message, whether the same bad value is also tried as a PATCH and a credit)
BAD_BUDGETS: list[tuple[dict[str, Any], str, list[str], bool]] = [
    ({"limit": 0}, "invalid_input", ["limit", "budget of zero"], True),
    ({"limit": "0.00"}, "invalid_input", ["limit", "positive amount"], True),
    ({"limit": "-100"}, "invalid_input", ["limit", "negative"], True),
    ({"limit": "lots"}, "invalid_input", ["limit", "not a number"], True),
    ({"limit": "1e15"}, "invalid_field", ["'limit'", "too large"], True),
    ({"limit": True}, "invalid_field", ["'limit'"], True),
    ({"limit": "10", "currency": "EURO"}, "invalid_currency", ["currency", "ISO 4217"], False),
    ({"limit": "10", "currency": "usd"}, "invalid_currency", ["did you mean USD"], False),
    ({"limit": "10", "margin": 0.5}, "invalid_field", ["'margin'", "at least 1"], False),
    ({"limit": "10", "on_exhausted": "explode"}, "invalid_field", ["'on_exhausted'", "hold, cancel"], False),
    ({"limit": "10", "project": "no-such-project"}, "unknown_project", ["no-such-project"], False),
    ({"limit": "10", "project": "wing"}, "unknown_project", ["wing", CLIENT], False),  # acme's project
    ({"limit": "10", "period_start": "next week"}, "invalid_field", ["period_start", "ISO 8601"], False),
    (
        {"limit": "10", "period_start": "2030-02-01", "period_end": "2030-01-01"},
        "invalid_input",
        ["period", "not before"],
        False,
    ),
    ({"limit": "10", "project": "lab"}, "budget_overlap", ["overlaps budget"], False),
    ({"limit": "10", "colour": "red"}, "invalid_field", ["unknown field", "'colour'"], False),
    ({"currency": "EUR"}, "invalid_field", ["missing required field 'limit'"], False),
]
KEPT = ("limit", "credits", "currency", "project", "on_exhausted", "margin", "period_start", "period_end")


@pytest.mark.parametrize(
    ("body", "reason", "words", "everywhere"), BAD_BUDGETS, ids=[str(i) for i in range(len(BAD_BUDGETS))]
)
def test_bad_budgets_are_refused_and_nothing_changes(
    market: Market, body: dict[str, Any], reason: str, words: list[str], everywhere: bool
) -> None:
    before = budget_count(market)
    r = market.call("mkt-bill", "POST", BUDGETS, body)
    assert r.status_code == 400, r.text
    assert r.json()["reason"] == reason, r.json()
    for w in words:
        assert w in r.json()["message"], r.json()
    assert budget_count(market) == before
    lab = market.budgets["lab"]
    if everywhere:  # the same amount as a new limit and as a credit
        r = market.call("mkt-bill", "PATCH", f"{BUDGETS}/{lab['id']}", {"limit": body["limit"]})
        assert r.status_code == 400 and r.json()["reason"] == reason, r.text
        r = market.call("mkt-bill", "POST", f"{BUDGETS}/{lab['id']}/credits", {"amount": body["limit"]})
        assert r.status_code == 400 and r.json()["reason"] == reason, r.text
    elif "margin" in body or "on_exhausted" in body:
        patch = {k: v for k, v in body.items() if k in ("margin", "on_exhausted")}
        r = market.call("mkt-bill", "PATCH", f"{BUDGETS}/{lab['id']}", patch)
        assert r.status_code == 400 and r.json()["reason"] == reason, r.text
    now = market.ok("mkt-bill", "GET", f"{BUDGETS}/{lab['id']}")
    assert {k: now[k] for k in KEPT} == {k: lab[k] for k in KEPT}
    assert market.ok("mkt-bill", "GET", f"{BUDGETS}/{lab['id']}/credits") == []


def test_budgets_are_for_billing_and_confined(market: Market) -> None:
    lab = market.budgets["lab"]
    for user in ("mkt-rita", "hpc-pub"):
        r = market.call(user, "GET", BUDGETS)
        assert r.status_code == 403 and "custom:heroes:billing" in r.json()["message"], r.text
    # another organization's billing admin: the organization and its budgets do not exist
    for method, path, body in [
        ("GET", f"{BUDGETS}/{lab['id']}", None),
        ("PATCH", f"{BUDGETS}/{lab['id']}", {"limit": "1"}),
        ("DELETE", f"{BUDGETS}/{lab['id']}", None),
        ("POST", f"{BUDGETS}/{lab['id']}/credits", {"amount": "1"}),
        ("GET", f"{BUDGETS}/{lab['id']}/credits", None),
    ]:
        for org in (GLOBEX, CLIENT):
            r = market.call("globex-admin", method, path, body, org=org)
            assert r.status_code == 404, (method, path, org, r.text)
            assert CLIENT not in r.text or org == CLIENT
    assert lab["id"] not in {b["id"] for b in market.ok("acme-bill", "GET", BUDGETS, org=ACME)}
    assert market.ok("mkt-bill", "GET", f"{BUDGETS}/{lab['id']}")["limit"] == "500.00"
