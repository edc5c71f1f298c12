"""Usage reports, the ledger export and vendor revenue through the real hub + service, on the three
runs of :mod:`.market_world` (A: rita, hpc-debug v1 + cfd-solver licence; B: rob, hpc-debug v2;
C: rita, cloud-c5 in USD)."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from typing import Any

import pytest

from jupyter_heroes.accounting.reports import RECORD_FIELDS, read_records_csv

from .conftest import ACME, World
from .market_world import CLIENT, CLOUD, HPC, SOFT, Market, market_of

USAGE = "/organization/usage"
ME = "/organization/usage/me"
RECORDS = "/organization/usage/records"
REVENUE = "/marketplace/revenue"


@pytest.fixture
def market(world: World) -> Market:
    return market_of(world)


def by(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    return {r[key]: r for r in rows}


def test_a_researcher_sees_only_own_usage(market: Market) -> None:
    (rita,) = market.ok("mkt-rita", "GET", ME, params={"by": "user"})
    assert (rita["user"], rita["jobs"]) == ("mkt-rita", 2)
    assert rita["cost"] == {"EUR": "0.60", "USD": "1.25"} and rita["licence"] == {"EUR": "25.00"}
    assert rita["total"] == {"EUR": "25.60", "USD": "1.25"}
    assert rita["core_hours"] == pytest.approx(20.0) and rita["energy_kwh"] == pytest.approx(4.0)
    projects = by(market.ok("mkt-rita", "GET", ME), "project")  # default: by project
    assert set(projects) == {"lab", "(none)"} and projects["(none)"]["cost"] == {"USD": "1.25"}
    (rob,) = market.ok("mkt-rob", "GET", ME, params={"by": "user,offer"})
    assert (rob["user"], rob["offer"], rob["jobs"], rob["cost"]) == (
        "mkt-rob",
        "hpc-debug",
        1,
        {"EUR": "0.70"},
    )
    # the organization's report, the ledger and other users' figures are for billing
    for path in (USAGE, RECORDS):
        r = market.call("mkt-rita", "GET", path, params={"user": "mkt-rob"})
        assert r.status_code == 403 and r.json()["reason"] == "missing_scope", r.text
    assert market.call("mkt-rita", "GET", ME, params={"user": "mkt-rob"}).json() == market.ok(
        "mkt-rita", "GET", ME
    )  # there is no user filter on one's own report
    # someone who does not submit work has no own report; someone with no jobs has an empty one
    assert market.call("mkt-bill", "GET", ME).status_code == 403
    assert market.ok("acme-res", "GET", ME, params={"start": "2000-01-01", "end": "2001-01-01"}) == []


def test_billing_admin_reports_the_organization(market: Market) -> None:
    users = by(market.ok("mkt-bill", "GET", USAGE, params={"by": "user"}), "user")
    assert set(users) == {"mkt-rita", "mkt-rob"}
    assert users["mkt-rob"]["cost"] == {"EUR": "0.70"} and users["mkt-rita"]["jobs"] == 2
    offers = by(market.ok("mkt-bill", "GET", USAGE, params={"by": "offer,provider"}), "offer")
    assert offers["hpc-debug"]["cost"] == {"EUR": "1.30"} and offers["hpc-debug"]["provider"] == HPC
    assert offers["cloud-c5"]["cost"] == {"USD": "1.25"} and offers["cloud-c5"]["jobs"] == 1
    apps = by(market.ok("mkt-bill", "GET", USAGE, params={"by": "application"}), "application")
    assert apps["cfd-solver"]["licence"] == {"EUR": "25.00"} and apps["(none)"]["jobs"] == 2
    (month,) = market.ok("mkt-bill", "GET", USAGE, params={"by": "template", "period": "month"})
    assert month["template"] == "lab-flow v1" and len(month["period"]) == 7 and month["jobs"] == 3
    (one,) = market.ok(
        "mkt-bill", "GET", USAGE, params={"by": "project", "project": "lab", "currency": "EUR"}
    )
    assert one["total"] == {"EUR": "26.30"}  # 0.60 + 0.70 + 25.00
    (converted,) = market.ok("mkt-bill", "GET", USAGE, params={"by": "template", "currency": "EUR"})
    assert list(converted["cost"]) == ["EUR"] and Decimal(converted["cost"]["EUR"]) > Decimal("1.30")
    assert market.ok("mkt-bill", "GET", USAGE, params={"user": "mkt-rob"})[0]["jobs"] == 1
    assert market.ok("mkt-bill", "GET", USAGE, params={"start": "2000-01-01", "end": "2000-02-01"}) == []
    # the platform's tenant admin reaches the same report by selecting the organization
    assert market.ok("tenant-tom", "GET", USAGE, params={"by": "user"}, org=CLIENT) == list(users.values())

    r = market.call("mkt-bill", "GET", USAGE, params={"by": "user", "format": "csv"})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/csv")
    assert f"{CLIENT}-usage.csv" in r.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert {row["user"]: (row["jobs"], row["cost_EUR"], row["cost_USD"]) for row in rows} == {
        "mkt-rita": ("2", "0.60", "1.25"),
        "mkt-rob": ("1", "0.70", ""),
    }


def test_the_ledger_export_parses_and_keeps_the_price_versions(market: Market) -> None:
    records = market.ok("mkt-bill", "GET", RECORDS)
    assert len(records) == 3 and set(records[0]) == set(RECORD_FIELDS)
    ids = {market.runs[k]: k for k in "ABC"}
    got = {ids[r["instance_id"]]: r for r in records}
    assert (got["A"]["offer"], got["A"]["offer_version"], got["A"]["cost"]) == ("hpc-debug", 1, "0.60")
    assert (got["B"]["offer"], got["B"]["offer_version"], got["B"]["cost"]) == ("hpc-debug", 2, "0.70")
    assert (got["A"]["application"], got["A"]["licence"], got["A"]["licence_currency"]) == (
        "cfd-solver",
        "25.00",
        "EUR",
    )
    assert (got["C"]["currency"], got["C"]["cost"], got["C"]["project"]) == ("USD", "1.25", None)
    assert got["B"]["user"] == "mkt-rob" and got["A"]["core_hours"] == pytest.approx(10.0)

    r = market.call("mkt-bill", "GET", RECORDS, params={"format": "csv"})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/csv")
    parsed = read_records_csv(r.text)
    assert len(parsed) == 3 and r.text.splitlines()[0] == ",".join(RECORD_FIELDS)
    assert {p["instance_id"]: (p["offer_version"], p["cost"]) for p in parsed} == {
        rec["instance_id"]: (rec["offer_version"], Decimal(rec["cost"])) for rec in records
    }
    only_rob = market.ok("mkt-bill", "GET", RECORDS, params={"user": "mkt-rob", "project": "lab"})
    assert [x["instance_id"] for x in only_rob] == [market.runs["B"]]


@pytest.mark.parametrize(
    ("params", "reason", "words"),
    [
        ({"by": "colour"}, "invalid_input", ["unknown dimension", "colour", "project"]),
        ({"by": "organization"}, "invalid_input", ["unknown dimension"]),
        ({"by": "user,user"}, "invalid_field", ["'by'", "twice"]),
        ({"by": "user;drop"}, "invalid_field", ["'by'"]),
        ({"by": "period"}, "invalid_input", ["period", "day", "month"]),
        ({"period": "week"}, "invalid_field", ["'period'", "day, month, year"]),
        ({"start": "yesterday"}, "invalid_field", ["'start'", "ISO 8601"]),
        ({"end": "0001-01-01T00:00:00+01:00"}, "invalid_field", ["'end'"]),
        ({"currency": "XYZ"}, "invalid_currency", ["XYZ", "ISO 4217"]),
        ({"format": "xlsx"}, "invalid_field", ["'format'", "json, csv"]),
        ({"project": "wing"}, "unknown_project", ["wing"]),
        ({"user": "acme-res"}, "not_a_member", ["acme-res"]),
    ],
)
def test_bad_report_parameters_are_400(
    market: Market, params: dict[str, str], reason: str, words: list[str]
) -> None:
    r = market.call("mkt-bill", "GET", USAGE, params=params)
    assert r.status_code == 400, r.text
    assert r.json()["reason"] == reason, r.json()
    for w in words:
        assert w in r.json()["message"], r.json()


def test_vendors_see_their_own_revenue_per_client_organization_only(market: Market) -> None:
    (hpc,) = market.ok("hpc-pub", "GET", REVENUE, params={"by": "item,organization"})
    assert (hpc["kind"], hpc["item"], hpc["organization"], hpc["jobs"]) == ("offer", "hpc-debug", CLIENT, 2)
    assert hpc["revenue"] == {"EUR": "1.30"} and hpc["item_id"] == market.offers["hpc-debug"]["id"]
    (cloud,) = market.ok("cloud-pub", "GET", REVENUE)
    assert (cloud["item"], cloud["revenue"]) == ("cloud-c5", {"USD": "1.25"})
    (soft,) = market.ok("soft-pub", "GET", REVENUE, params={"by": "item,organization", "period": "month"})
    assert (soft["kind"], soft["item"], soft["revenue"], soft["organization"]) == (
        "application",
        "cfd-solver",
        {"EUR": "25.00"},
        CLIENT,
    )
    for row in (hpc, cloud, soft):  # no user, project or template in a vendor's report
        assert not {"user", "project", "template", "user_id", "project_id"} & set(row), row

    # never the clients' users or projects
    for dims in ("user", "project", "item,user", "template"):
        r = market.call("hpc-pub", "GET", REVENUE, params={"by": dims})
        assert r.status_code == 400 and r.json()["reason"] == "invalid_input", r.text
        assert "never their users or projects" in r.json()["message"]
        assert "mkt-rita" not in r.text
    # never another vendor's revenue: its organization does not exist for them
    for org in (CLOUD, SOFT):
        r = market.call("hpc-pub", "GET", REVENUE, org=org)
        assert r.status_code == 404 and r.json()["reason"] == "not_found", r.text
    # clients and vendors do not cross over: no revenue for clients, no usage reports for vendors
    r = market.call("mkt-admin", "GET", REVENUE)
    assert r.status_code == 403 and "resources:publish" in r.json()["message"]
    assert market.call("acme-bill", "GET", REVENUE, org=ACME).status_code == 403
    assert market.call("hpc-pub", "GET", USAGE).status_code == 403
    assert market.call("hpc-pub", "GET", RECORDS).status_code == 403

    r = market.call("hpc-pub", "GET", REVENUE, params={"by": "item,organization", "format": "csv"})
    assert r.headers["Content-Type"].startswith("text/csv")
    (line,) = list(csv.DictReader(io.StringIO(r.text)))
    assert (line["item"], line["organization"], line["revenue_EUR"], line["jobs"]) == (
        "hpc-debug",
        CLIENT,
        "1.30",
        "2",
    )
