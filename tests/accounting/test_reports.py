"""Reports: per organization/project/user/offer/period, vendor revenue without client details, CSV
round trip (with spreadsheet-formula escaping), plotly figures."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from decimal import Decimal

import pytest

from jupyter_heroes.accounting import budgets as ab
from jupyter_heroes.accounting import ledger
from jupyter_heroes.accounting import reports as rp
from jupyter_heroes.marketplace import applications as ma
from jupyter_heroes.marketplace import offers as mo
from jupyter_heroes.marketplace.errors import InvalidInput, NotFound
from jupyter_heroes.marketplace.sample import add_run
from jupyter_heroes.orm import Budget, User

LONG_AGO = datetime(2024, 12, 1)
JAN, FEB = datetime(2025, 1, 15, 10), datetime(2025, 2, 10, 10)
EVIL = '=HYPERLINK("http://evil","x")'


@pytest.fixture
def market(db):
    """hpc-centre sells galileo/debug (EUR) to all, cloudy sells cloud1/c5 (USD) to all, appsoft a
    licence; acme and globex run work in January and February 2025."""
    ids = db.ids
    with db.session() as s:
        g = mo.publish_offer(
            s, ids.orgs["hpc-centre"], name="galileo-debug", cluster_id=ids.clusters["galileo"], queue="debug",
            price={"currency": "EUR", "core_hour": "0.05"}, visibility="public", now=LONG_AGO,
        )  # fmt: skip
        c = mo.publish_offer(
            s, ids.orgs["cloudy"], name="c5", cluster_id=ids.clusters["cloud1"], queue="c5",
            price={"currency": "USD", "node_hour": "3.00"}, visibility="public", now=LONG_AGO,
        )  # fmt: skip
        app = ma.publish_application(
            s, ids.orgs["appsoft"], name="solver", image="ubuntu:22.04", visibility="public", now=LONG_AGO,
            price={"currency": "EUR", "fixed": "10", "fixed_per": "run"},
        )  # fmt: skip
        for org in ("acme", "globex"):
            mo.enable_offer(s, ids.orgs[org], g.offer_id)
            mo.enable_offer(s, ids.orgs[org], c.offer_id)
        ma.enable_application(s, ids.orgs["acme"], app.application_id)
        evil = User(name=EVIL)
        s.add(evil)
        s.flush()
        ids.users[EVIL] = evil.id
        runs = [
            ("acme", "alice", "cfd", "galileo", "debug", JAN, app.application_id),
            ("acme", "alice", "cfd", "galileo", "debug", FEB, None),
            ("acme", "bob", "ml", "cloud1", "c5", FEB, None),
            ("acme", EVIL, "ml", "galileo", "debug", FEB, None),
            ("globex", "carol", "crash", "galileo", "debug", FEB, None),
        ]
        for org, user, project, cluster, queue, when, app_id in runs:
            inst = add_run(
                s, ids, org=org, user=user, project=project, cluster=cluster, queue=queue, submitted=when,
                energy_j=3.6e6 if cluster == "galileo" else None,
            )  # fmt: skip
            for j in inst.jobs:
                mo.pin_job(s, j.id, application_id=app_id)
            ledger.record_instance(s, inst.id)
    return db


# per run on galileo: main 16 core-h x 0.05 = 0.80, post 1/60 core-h = 0.00 -> 0.80 EUR, 1 kWh
# per run on cloud1: main 2 node-h x 3 = 6.00, post 1/60 node-h = 0.05 -> 6.05 USD
GALILEO, CLOUD = Decimal("0.80"), Decimal("6.05")


def test_usage_report_per_project_user_period(market):
    ids = market.ids
    with market.session() as s:
        rows = rp.usage_report(s, ids.orgs["acme"], by=["project"])
        assert [(r["project"], r["jobs"], r["cost"], r["licence"], r["total"]) for r in rows] == [
            ("cfd", 4, {"EUR": GALILEO * 2}, {"EUR": Decimal("10.00")}, {"EUR": GALILEO * 2 + 10}),
            ("ml", 4, {"EUR": GALILEO, "USD": CLOUD}, {}, {"EUR": GALILEO, "USD": CLOUD}),
        ]
        assert rows[0]["core_hours"] == pytest.approx(2 * (16 + 1 / 60))
        assert rows[0]["energy_kwh"] == pytest.approx(2.0) and rows[0]["energy_jobs"] == 4
        assert rows[1]["energy_jobs"] == 2  # cloud1 measured nothing
        # one currency on request
        eur = rp.usage_report(s, ids.orgs["acme"], by=["project"], currency="EUR")
        assert eur[1]["total"] == {"EUR": GALILEO + Decimal("5.59")}  # 6.05 USD / 1.0824
        monthly = rp.usage_report(s, ids.orgs["acme"], by=["user"], period="month")
        assert [(r["user"], r["period"], r["total"]) for r in monthly] == [
            (EVIL, "2025-02", {"EUR": GALILEO}),
            ("alice", "2025-01", {"EUR": GALILEO + 10}),
            ("alice", "2025-02", {"EUR": GALILEO}),
            ("bob", "2025-02", {"USD": CLOUD}),
        ]
        by_offer = rp.usage_report(s, ids.orgs["acme"], by=["offer", "provider"], start=FEB)
        assert [(r["offer"], r["provider"], r["cost"]) for r in by_offer] == [
            ("c5", "cloudy", {"USD": CLOUD}),
            ("galileo-debug", "hpc-centre", {"EUR": GALILEO * 2}),
        ]
        only = rp.usage_report(s, ids.orgs["acme"], by=["template"], user_id=ids.users["bob"])
        assert [(r["template"], r["jobs"]) for r in only] == [("solver v1", 2)]
        # globex sees only its own run
        g = rp.usage_report(s, ids.orgs["globex"], by=["user"])
        assert [(r["user"], r["total"]) for r in g] == [("carol", {"EUR": GALILEO})]
        with pytest.raises(InvalidInput, match=r"unknown dimension\(s\) \['organization'\]"):
            rp.usage_report(s, ids.orgs["acme"], by=["organization"])
        with pytest.raises(InvalidInput, match=r"period: 'week'"):
            rp.usage_report(s, ids.orgs["acme"], period="week")
        with pytest.raises(InvalidInput, match=r"'period' needs period="):
            rp.usage_report(s, ids.orgs["acme"], by=["period"])


def test_vendor_revenue_is_per_offer_and_organization_only(market):
    ids = market.ids
    with market.session() as s:
        rows = rp.vendor_revenue(s, ids.orgs["hpc-centre"], by=["item", "organization"])
        assert [(r["kind"], r["item"], r["organization"], r["jobs"], r["revenue"]) for r in rows] == [
            ("offer", "galileo-debug", "acme", 6, {"EUR": GALILEO * 3}),
            ("offer", "galileo-debug", "globex", 2, {"EUR": GALILEO}),
        ]
        assert all(not ({"user", "project", "template"} & set(r)) for r in rows)
        assert [(r["item"], r["revenue"]) for r in rp.vendor_revenue(s, ids.orgs["cloudy"])] == [
            ("c5", {"USD": CLOUD})
        ]
        assert [(r["kind"], r["item"], r["revenue"]) for r in rp.vendor_revenue(s, ids.orgs["appsoft"])] == [
            ("application", "solver", {"EUR": Decimal("10.00")})
        ]
        monthly = rp.vendor_revenue(s, ids.orgs["hpc-centre"], period="month")
        assert [(r["period"], r["revenue"]) for r in monthly] == [
            ("2025-01", {"EUR": GALILEO}),
            ("2025-02", {"EUR": GALILEO * 3}),
        ]
        with pytest.raises(InvalidInput, match=r"never their users or projects"):
            rp.vendor_revenue(s, ids.orgs["hpc-centre"], by=["user"])
        # usage of one offer: its vendor and the platform only, not another vendor nor a client
        offer_id = next(
            v.offer.id for v in mo.list_offers(s, ids.orgs["acme"]) if v.offer.name == "galileo-debug"
        )
        assert [
            (r["organization"], r["period"]) for r in rp.offer_usage(s, offer_id, ids.orgs["hpc-centre"])
        ] == [
            ("acme", "2025-01"),
            ("acme", "2025-02"),
            ("globex", "2025-02"),
        ]
        assert len(rp.offer_usage(s, offer_id, ids.orgs["heroes"], period=None)) == 2
        for other in ("cloudy", "acme"):
            with pytest.raises(NotFound):
                rp.offer_usage(s, offer_id, ids.orgs[other])


def test_records_csv_round_trips(market):
    ids = market.ids
    with market.session() as s:
        text = rp.records_csv(s, ids.orgs["acme"])
        recs = ledger.records(s, ids.orgs["acme"])
        parsed = rp.read_records_csv(text)
        assert len(parsed) == len(recs) == 8
        for p, r in zip(parsed, recs, strict=True):
            assert p["job_id"] == r.job_id and p["instance_id"] == r.instance_id and p["step"] == r.step
            assert (p["core_hours"], p["node_hours"], p["gpu_hours"], p["energy_j"]) == (
                r.core_hours, r.node_hours, r.gpu_hours, r.energy_j,
            )  # fmt: skip
            assert p["cost"] == Decimal(r.cost_cents) / 100 and p["currency"] == r.currency
            assert p["licence"] == Decimal(r.licence_cents) / 100
            assert p["finished"] == r.finished and p["started"] == r.started
            assert p["offer_version"] == 1 and p["template"] == "solver v1"
        assert {p["user"] for p in parsed} == {"alice", "bob", EVIL}
        # a user name that is a spreadsheet formula is escaped in the file, restored when read back
        assert "'=HYPERLINK" in text
        cells = [row for row in csv.reader(io.StringIO(text))]
        assert not any(c.startswith("=") for row in cells for c in row)
        assert rp.records_csv(s, ids.orgs["acme"], start=FEB, end=datetime(2025, 3, 1)).count("\n") == 1 + 6
        with pytest.raises(InvalidInput, match="not a HEROES ledger export"):
            rp.read_records_csv("a,b\n1,2\n")


def test_report_csv_has_one_column_per_currency(market):
    with market.session() as s:
        rows = rp.usage_report(s, market.ids.orgs["acme"], by=["project"], period="month")
    text = rp.report_csv(rows)
    got = list(csv.DictReader(io.StringIO(text)))
    assert list(got[0])[:4] == ["project", "period", "jobs", "core_hours"]
    assert {k for k in got[0] if k.startswith("total_")} == {"total_EUR", "total_USD"}
    assert [(g["project"], g["period"], g["total_EUR"], g["total_USD"]) for g in got] == [
        ("cfd", "2025-01", "10.80", ""),
        ("cfd", "2025-02", "0.80", ""),
        ("ml", "2025-02", "0.80", "6.05"),
    ]


def test_figures(market):
    ids = market.ids
    with market.session() as s:
        monthly = rp.usage_report(s, ids.orgs["acme"], by=["project"], period="month", currency="EUR")
        fig = rp.cost_over_time_figure(monthly, currency="EUR")
        assert [t.name for t in fig.data] == ["cfd", "ml"]
        assert list(fig.data[0].x) == ["2025-01", "2025-02"] and list(fig.data[0].y) == [10.8, 0.8]
        assert list(fig.data[1].y) == [0.0, pytest.approx(0.8 + 5.59)]
        assert fig.layout.barmode == "stack"
        per_user = rp.usage_report(s, ids.orgs["acme"], by=["user"])
        fig = rp.usage_figure(per_user, dimension="user", metric="core_hours")
        assert list(fig.data[0].x) == [EVIL, "alice", "bob"]
        with pytest.raises(InvalidInput):
            rp.usage_figure(per_user, dimension="user", metric="cpu_time")
        fig = rp.breakdown_figure(
            rp.usage_report(s, ids.orgs["acme"], by=["project"]), dimension="project", currency="EUR"
        )
        assert list(fig.data[0].y) == ["ml", "cfd"] and fig.data[0].orientation == "h"
        b = ab.create_budget(s, ids.orgs["acme"], limit=100)
        ab.reserve(s, ids.orgs["acme"], None, 10)
        fig = rp.budget_figure([ab.budget_status(s, s.get(Budget, b.id))])
        assert [(t.name, list(t.x)) for t in fig.data] == [
            ("spent", [0.0]),
            ("reserved", [12.0]),
            ("available", [88.0]),
        ]
        rev = rp.vendor_revenue(s, ids.orgs["hpc-centre"], period="month")
        fig = rp.revenue_figure(rev, currency="EUR")
        assert list(fig.data[0].y) == [0.8, 2.4]
        fig.to_json()  # serialisable for the dashboards
