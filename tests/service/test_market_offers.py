"""Marketplace REST through the real hub + service: vendors publish and version offers and
applications, client administrators enable them, and nobody sees what is not published to them."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from jupyter_heroes.orm_market import MarketOffer, MarketOfferVersion
from jupyter_heroes.testing.plugin_hub import PLATFORM_ADMIN

from .conftest import ACME, GLOBEX, World
from .market_world import CLIENT, HPC, HPC_V1, HPC_V2, Market, market_of

OFFERS = "/marketplace/offers"
APPS = "/marketplace/applications"


@pytest.fixture
def market(world: World) -> Market:
    return market_of(world)


def names(rows: list[dict[str, Any]]) -> set[str]:
    return {r["name"] for r in rows}


def test_vendor_publishes_and_org_admin_enables(market: Market) -> None:
    hpc = market.offers["hpc-debug"]
    assert (hpc["provider"], hpc["cluster"], hpc["queue"], hpc["version"]) == (HPC, "hpc-one", "debug", 1)
    assert hpc["price"] == {**HPC_V1, "fixed_per": "job"} and hpc["state"] == "active"
    # the publisher sees whom it published to; clients never do
    assert hpc["visibility"] == {"public": False, "organizations": sorted([ACME, CLIENT])}
    assert hpc["queue_limits"]["cpus_per_node"] == 16 and hpc["available_now"] is True

    seen = {o["name"]: o for o in market.ok("mkt-rita", "GET", OFFERS)}  # any member browses
    assert {"hpc-debug", "cloud-c5"} <= set(seen)
    assert all("visibility" not in o for o in seen.values())
    assert seen["hpc-debug"]["enabled"] is True and seen["hpc-debug"]["accepted_version"] == 1
    assert seen["hpc-debug"]["version"] == 2 and seen["hpc-debug"]["price"]["core_hour"] == "0.02"

    # the provider changed the price after it was enabled: the admin sees it and must re-accept
    enabled = {e["name"]: e for e in market.ok("mkt-admin", "GET", "/organization/admin/offers")}
    assert enabled["hpc-debug"]["terms_changed"] is True and enabled["hpc-debug"]["current_version"] == 2
    assert enabled["hpc-debug"]["usable"] is True and enabled["hpc-debug"]["problem"] == ""
    assert enabled["hpc-debug"]["enabled_by"] == "mkt-admin"
    assert enabled["cloud-c5"]["terms_changed"] is False and enabled["cloud-c5"]["price"]["currency"] == "USD"

    enable = f"/organization/admin/offers/{hpc['id']}/enable"
    r = market.call("mkt-admin", "POST", enable, params={"version": 1})
    assert r.status_code == 409 and r.json()["reason"] == "terms_changed", r.text
    assert "version 2" in r.json()["message"]
    r = market.call("mkt-rita", "POST", enable)
    assert r.status_code == 403 and r.json()["reason"] == "missing_scope"
    e = market.ok("mkt-admin", "POST", enable, params={"version": 2})
    assert (e["accepted_version"], e["terms_changed"], e["enabled"]) == (2, False, True)

    # disabling takes it off the organization's list (enabling again puts it back)
    cloud = market.offers["cloud-c5"]
    assert (
        market.call("mkt-bill", "POST", f"/organization/admin/offers/{cloud['id']}/disable").status_code
        == 204
    )
    assert "cloud-c5" not in names(market.ok("mkt-admin", "GET", "/organization/admin/offers"))
    assert market.ok("mkt-rita", "GET", f"{OFFERS}/{cloud['id']}")["enabled"] is False
    market.ok("mkt-bill", "POST", f"/organization/admin/offers/{cloud['id']}/enable")
    assert "cloud-c5" in names(market.ok("mkt-admin", "GET", "/organization/admin/offers"))

    # audited: the client's trail, and the vendor's publication in the vendor's organization
    trail = market.ok(
        "mkt-admin",
        "GET",
        "/organization/admin/audit",
        params={"action": "offer.enable", "user": "mkt-admin"},
    )
    assert [(t["status"], t["target"]) for t in trail[:2]] == [(200, str(hpc["id"])), (409, str(hpc["id"]))]
    assert trail[0]["user"] == "mkt-admin" and trail[0]["detail"]["version"] == 2
    disabled = market.world.audit_rows(action="offer.disable", user="mkt-bill", target=str(cloud["id"]))
    assert [(a.status, a.outcome) for a in disabled] == [(204, "success")]
    published = market.world.audit_rows(action="offer.publish", user="hpc-pub", status=201)
    assert (str(hpc["id"]), "success", "POST") in [(a.target, a.outcome, a.method) for a in published]


def test_a_client_does_not_see_an_offer_not_published_to_it(market: Market) -> None:
    hpc, cloud = market.offers["hpc-debug"], market.offers["cloud-c5"]
    assert names(market.ok("globex-admin", "GET", OFFERS)) >= {"cloud-c5"}  # public
    assert "hpc-debug" not in names(market.ok("globex-admin", "GET", OFFERS))
    assert market.ok("globex-admin", "GET", OFFERS, params={"provider": HPC}) == []
    unknown = market.call("globex-admin", "GET", f"{OFFERS}/2147483000")
    for method, path in [
        ("GET", f"{OFFERS}/{hpc['id']}"),
        ("POST", f"/organization/admin/offers/{hpc['id']}/enable"),
        ("POST", f"/organization/admin/offers/{hpc['id']}/disable"),
    ]:
        r = market.call("globex-admin", method, path)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["reason"] == unknown.json()["reason"] == "not_found"
        assert HPC not in r.text and "hpc-debug" not in r.text
    # another vendor cannot read, change or withdraw it either, nor see its history
    for method, path, body in [
        ("GET", f"{OFFERS}/{hpc['id']}", None),
        ("PATCH", f"{OFFERS}/{hpc['id']}", {"terms": "mine now"}),
        ("DELETE", f"{OFFERS}/{hpc['id']}", None),
        ("GET", f"{OFFERS}/{hpc['id']}/versions", None),
    ]:
        r = market.call("cloud-pub", method, path, body)
        assert r.status_code == 404, (method, path, r.text)
    # nor can hpc's vendor touch the public offer of cloud's: seeing it is not owning it
    assert market.ok("hpc-pub", "GET", f"{OFFERS}/{cloud['id']}")["provider"] == "cloud-vendor"
    r = market.call("hpc-pub", "PATCH", f"{OFFERS}/{cloud['id']}", {"price": HPC_V1})
    assert r.status_code == 404
    assert market.ok("cloud-pub", "GET", f"{OFFERS}/{cloud['id']}")["price"]["currency"] == "USD"
    assert market.ok("hpc-pub", "GET", f"{OFFERS}/{hpc['id']}")["state"] == "active"


def test_a_price_change_is_a_new_version_and_the_history_keeps_both(market: Market) -> None:
    v1 = market.ok(
        "hpc-pub",
        "POST",
        OFFERS,
        {
            "name": "hpc-gpu",
            "cluster": "hpc-one",
            "queue": "gpu",
            "price": {"currency": "EUR", "gpu_hour": "1.10", "core_hour": 0.05},
            "availability": [{"weekdays": ["sat", "sun"], "timezone": "Europe/Rome"}],
            "visibility": [CLIENT],
        },
        status=201,
    )
    assert v1["version"] == 1 and v1["price"]["core_hour"] == "0.05"
    assert "sat,sun" in v1["availability_text"]
    path = f"{OFFERS}/{v1['id']}"
    v2 = market.ok(
        "hpc-pub", "PATCH", path, {"price": {"currency": "EUR", "gpu_hour": "1.25"}, "note": "2026"}
    )
    assert v2["version"] == 2 and v2["price"]["gpu_hour"] == "1.25" and "core_hour" not in v2["price"]
    assert v2["availability"] == v1["availability"]  # carried over
    same = market.ok("hpc-pub", "PATCH", path, {"price": {"currency": "EUR", "gpu_hour": "1.25"}})
    assert same["version"] == 2  # nothing changed: no version
    v3 = market.ok("hpc-pub", "PATCH", path, {"visibility": "public"})
    assert v3["version"] == 3 and v3["price"] == v2["price"]

    history = market.ok("hpc-pub", "GET", f"{path}/versions")
    assert [(h["version"], h["price"].get("gpu_hour"), h["note"]) for h in history] == [
        (1, "1.10", "published"),
        (2, "1.25", "2026"),
        (3, "1.25", ""),
    ]
    assert history[0]["valid_from"] < history[1]["valid_from"] < history[2]["valid_from"]
    assert history[1]["created_by"] == "hpc-pub"
    assert [h["visibility"]["public"] for h in history] == [False, False, True]
    # the platform (the marketplace's mayor) reads it; a client does not (no resources:publish)
    assert market.ok(PLATFORM_ADMIN, "GET", f"{path}/versions") == history
    r = market.call("mkt-admin", "GET", f"{path}/versions")
    assert r.status_code == 403 and "resources:publish" in r.json()["message"]
    assert market.ok("mkt-admin", "GET", path)["version"] == 3
    with market.world.db() as s:
        assert s.scalar(select(func.count()).where(MarketOfferVersion.offer_id == v1["id"])) == 3

    # withdrawn: gone for clients, kept (with its history) for the vendor, and frozen
    gone = market.ok("hpc-pub", "DELETE", path)
    assert gone["state"] == "withdrawn"
    assert market.call("mkt-admin", "GET", path).status_code == 404
    assert (
        market.call("mkt-admin", "POST", f"/organization/admin/offers/{v1['id']}/enable").status_code == 404
    )
    r = market.call("hpc-pub", "PATCH", path, {"terms": "back"})
    assert r.status_code == 409 and r.json()["reason"] == "conflict" and "withdrawn" in r.json()["message"]
    assert len(market.ok("hpc-pub", "GET", f"{path}/versions")) == 3
    assert market.ok("hpc-pub", "GET", path)["state"] == "withdrawn"
    actions = [a.action for a in market.world.audit_rows(user="hpc-pub", target=str(v1["id"]))]
    assert actions == [
        "offer.publish",
        "offer.update",
        "offer.update",
        "offer.update",
        "offer.withdraw",
        "offer.update",
    ]


def test_applications_publish_version_enable_and_disable(market: Market) -> None:
    app = market.apps["cfd-solver"]
    assert app["price"]["fixed"] == "25.00" and app["parameters_schema"]["type"] == "object"
    a = market.ok(
        "soft-pub",
        "POST",
        APPS,
        {
            "name": "post-proc",
            "image": "oras://registry.example.org/soft/post@sha256:" + "a" * 64,
            "price": {"currency": "CHF", "fixed": "3"},
            "visibility": [CLIENT],
        },
        status=201,
    )
    assert (a["version"], a["currency"], a["enabled"]) == (1, "CHF", False)
    path = f"{APPS}/{a['id']}"
    b = market.ok("soft-pub", "PATCH", path, {"licence": "Academic use only.", "note": "licence"})
    assert b["version"] == 2 and b["licence"] == "Academic use only." and b["image"] == a["image"]
    history = market.ok("soft-pub", "GET", f"{path}/versions")
    assert [(h["version"], h["licence"]) for h in history] == [(1, ""), (2, "Academic use only.")]

    assert "post-proc" in names(market.ok("mkt-rob", "GET", APPS))
    for user in ("globex-admin", "hpc-pub"):  # not published to them
        assert "post-proc" not in names(market.ok(user, "GET", APPS))
        assert market.call(user, "GET", path).status_code == 404
    assert "cfd-solver" not in names(market.ok("globex-admin", "GET", APPS))

    enable = f"/organization/admin/applications/{a['id']}/enable"
    r = market.call("mkt-admin", "POST", enable, params={"version": 1})
    assert r.status_code == 409 and r.json()["reason"] == "terms_changed"
    e = market.ok("mkt-bill", "POST", enable, params={"version": 2})  # billing-admin may enable too
    assert (e["kind"], e["accepted_version"], e["enabled_by"]) == ("application", 2, "mkt-bill")
    listed = {x["name"]: x for x in market.ok("mkt-admin", "GET", "/organization/admin/applications")}
    assert set(listed) == {"cfd-solver", "post-proc"} and listed["cfd-solver"]["accepted_version"] == 1
    assert market.ok("mkt-rita", "GET", path)["enabled"] is True
    disable = f"/organization/admin/applications/{a['id']}/disable"
    assert market.call("mkt-admin", "POST", disable).status_code == 204
    r = market.call("mkt-admin", "POST", disable)
    assert r.status_code == 404 and "not enabled" in r.json()["message"]
    assert market.ok("mkt-rita", "GET", path)["enabled"] is False

    gone = market.ok("soft-pub", "DELETE", path)
    assert gone["state"] == "withdrawn" and market.call("mkt-admin", "GET", path).status_code == 404
    rows = market.world.audit_rows(target=str(a["id"]))
    trail = [
        (e.user, e.action, e.status) for e in rows if e.action.startswith("application.") and e.status < 400
    ]
    assert trail == [
        ("soft-pub", "application.publish", 201),
        ("soft-pub", "application.update", 200),
        ("mkt-bill", "application.enable", 200),
        ("mkt-admin", "application.disable", 204),
        ("soft-pub", "application.withdraw", 200),
    ]


def test_client_organizations_do_not_publish(market: Market) -> None:
    r = market.call(
        "mkt-admin", "POST", OFFERS, {"name": "x-offer", "cluster": "c", "queue": "q", "price": HPC_V1}
    )
    assert r.status_code == 403 and r.json()["reason"] == "missing_scope"
    # even with every scope (the platform admin acting in the client organization), the kind decides
    r = market.call(
        PLATFORM_ADMIN,
        "POST",
        APPS,
        {"name": "x-app", "image": "docker://r.example.org/x:1"},
        org=CLIENT,
    )
    assert r.status_code == 403 and r.json()["reason"] == "not_a_provider", r.text
    assert "provider" in r.json()["message"]
    r = market.call(
        PLATFORM_ADMIN,
        "POST",
        OFFERS,
        {"name": "x-offer", "cluster": "c", "queue": "q", "price": HPC_V1},
        org=GLOBEX,
    )
    assert r.status_code == 403 and r.json()["reason"] == "not_a_provider", r.text
    assert "x-app" not in names(market.ok(PLATFORM_ADMIN, "GET", APPS))


BAD_OFFERS: list[tuple[dict[str, Any], str, list[str]]] = [
    ({"price": {"currency": "EUR", "core_hour": "-0.01"}}, "invalid_price", ["price.core_hour", "negative"]),
    ({"price": {"currency": "EUR", "fixed": -1}}, "invalid_price", ["price.fixed", "negative"]),
    ({"price": {"currency": "XYZ", "fixed": "1"}}, "invalid_price", ["price.currency", "ISO 4217"]),
    ({"price": {"currency": "eur", "fixed": "1"}}, "invalid_price", ["did you mean EUR"]),
    (
        {"price": {"currency": "EUR", "core_hour": "cheap"}},
        "invalid_price",
        ["price.core_hour", "not a number"],
    ),
    ({"price": {"currency": "EUR", "core_hour": "1e20"}}, "invalid_field", ["price.core_hour", "too large"]),
    ({"price": {"currency": "EUR", "per_cpu": "1"}}, "invalid_field", ["unknown field", "'price.per_cpu'"]),
    ({"price": {"fixed": "1"}}, "invalid_field", ["missing required field 'price.currency'"]),
    ({"price": {"currency": "EUR", "fixed_per": "hour"}}, "invalid_field", ["'price.fixed_per'", "job, run"]),
    ({"visibility": ["no-such-org"]}, "invalid_input", ["visibility.organizations", "no-such-org"]),
    ({"visibility": "everyone"}, "invalid_field", ["'visibility'"]),
    ({"availability": [{"start": "2025-02-01", "end": "2025-01-01"}]}, "invalid_input", ["availability[0]"]),
    ({"availability": [{"weekdays": ["funday"]}]}, "invalid_input", ["availability[0].weekdays"]),
    ({"queue": "nope"}, "invalid_input", ["queue", "hpc-one has no queue 'nope'", "debug"]),
    ({"cluster": "cloud-one"}, "unknown_cluster", ["no cluster 'cloud-one' in organization hpc-vendor"]),
    ({"name": "Bad Name"}, "invalid_field", ["'name'", "lowercase"]),
    ({"name": "hpc-debug"}, "conflict", ["already publish an offer named hpc-debug"]),
]


@pytest.mark.parametrize(
    ("change", "reason", "words"), BAD_OFFERS, ids=[b[1] + str(i) for i, b in enumerate(BAD_OFFERS)]
)
def test_bad_offers_are_refused_and_nothing_changes(
    market: Market, change: dict[str, Any], reason: str, words: list[str]
) -> None:
    body = {"name": "bad-offer", "cluster": "hpc-one", "queue": "debug", "price": HPC_V2, **change}
    r = market.call("hpc-pub", "POST", OFFERS, body)
    assert r.status_code == (409 if reason == "conflict" else 400), r.text
    assert r.json()["reason"] == reason, r.json()
    for w in words:
        assert w in r.json()["message"], r.json()
    # the same change on an existing offer: refused, no version added
    hpc = market.offers["hpc-debug"]
    before = market.ok("hpc-pub", "GET", f"{OFFERS}/{hpc['id']}/versions")
    patch = {k: v for k, v in change.items() if k in ("price", "visibility", "availability")}
    if patch:
        r = market.call("hpc-pub", "PATCH", f"{OFFERS}/{hpc['id']}", patch)
        assert r.status_code == 400 and r.json()["reason"] == reason, r.text
    assert market.ok("hpc-pub", "GET", f"{OFFERS}/{hpc['id']}/versions") == before
    with market.world.db() as s:
        assert s.scalar(select(MarketOffer.id).where(MarketOffer.name == "bad-offer")) is None


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"image": "docker://registry.example.org/x:1; rm -rf /"}, ["image", "not a container image"]),
        ({"image": "s3://bucket/../etc/passwd.sif"}, ["image"]),
        ({"parameters_schema": {"type": "nonsense"}}, ["parameters_schema"]),
        ({"price": {"currency": "EUR", "fixed": "-25"}}, ["price.fixed", "negative"]),
        ({"price": {"currency": "ZZZ"}}, ["price.currency"]),
    ],
)
def test_bad_applications_are_refused(market: Market, change: dict[str, Any], words: list[str]) -> None:
    body = {"name": "bad-app", "image": "docker://registry.example.org/x:1", **change}
    r = market.call("soft-pub", "POST", APPS, body)
    assert r.status_code == 400, r.text
    for w in words:
        assert w in r.json()["message"], r.json()
    app = market.apps["cfd-solver"]
    r = market.call("soft-pub", "PATCH", f"{APPS}/{app['id']}", change)
    assert r.status_code == 400, r.text
    assert len(market.ok("soft-pub", "GET", f"{APPS}/{app['id']}/versions")) == 1
    assert "bad-app" not in names(market.ok("soft-pub", "GET", APPS))
