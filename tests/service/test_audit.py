"""Every mutating call leaves an audit entry (who, action, target, status, outcome) and an ECS line."""

from __future__ import annotations

import json

from jupyter_heroes.testing.plugin_hub import PLATFORM_ADMIN

from .conftest import ACME, GLOBEX, World
from .endpoints import all_ops, example

AUDIT = "/organization/admin/audit"
MUTATING = [op for op in all_ops() if op.mutating]


def test_every_mutating_endpoint_is_audited_even_when_denied(world: World) -> None:
    """acme's researcher tries every mutating endpoint: each attempt is denied and recorded."""
    before = max((e.id for e in world.audit_rows()), default=0)
    calls = []
    for op in MUTATING:
        path, body = example(world, op)
        r = world.call("acme-res", op.method.upper(), path, body)
        assert r.status_code == 403, f"{op.id}: {r.text}"
        calls.append((op, world.hub.api_url.split("://", 1)[1].split("/", 1)[1], path))
    rows = [e for e in world.audit_rows(user="acme-res") if e.id > before]
    assert len(rows) == len(MUTATING)
    for (op, prefix, path), row in zip(calls, rows, strict=True):
        assert row.method == op.method.upper()
        assert row.path == f"/{prefix}{path}"
        assert (row.status, row.outcome) == (403, "denied")
        assert row.action == op.ep.action, op.id
        assert row.detail["reason"] == "missing_scope"
    # organization endpoints are in acme's trail, readable through the API by acme's administrator
    trail = world.ok(
        "acme-admin", "GET", AUDIT, params={"user": "acme-res", "outcome": "denied", "limit": 1000}
    )
    seen = {(e["method"], e["path"]) for e in trail}
    for op, prefix, path in calls:
        if op.ep.org:
            assert (op.method.upper(), f"/{prefix}{path}") in seen, op.id


def test_successful_and_failed_calls_are_audited(world: World) -> None:
    world.ok("acme-admin", "POST", "/organization/admin/groups", {"name": "audited"}, status=201)
    r = world.call("acme-admin", "POST", "/organization/admin/groups", {"name": "audited"})
    assert r.status_code == 409
    r = world.call("acme-admin", "POST", "/organization/admin/groups", data=b"{oops")
    assert r.status_code == 400
    trail = world.ok("acme-admin", "GET", AUDIT, params={"action": "group.create", "user": "acme-admin"})
    latest = trail[:3]
    assert [(e["status"], e["outcome"]) for e in latest] == [
        (400, "failure"),
        (409, "failure"),
        (201, "success"),
    ]
    assert latest[2]["target"] == "audited" and latest[2]["organization"] == ACME
    assert latest[1]["detail"]["reason"] == "exists"
    assert latest[0]["detail"]["reason"] == "invalid_json"
    # the bootstrap left its own entries: the administrator added the researcher
    created = world.ok("acme-admin", "GET", AUDIT, params={"action": "user.create", "limit": 1000})
    assert any(
        e["target"] == "acme-res" and e["user"] == "acme-admin" and e["outcome"] == "success" for e in created
    )


def test_platform_actions_are_audited_against_their_target(world: World) -> None:
    c = world.ok(PLATFORM_ADMIN, "POST", f"/heroes/admin/organizations/{GLOBEX}/clients", {}, status=201)
    trail = world.ok("globex-admin", "GET", AUDIT, params={"action": "client.create"})
    assert trail[0]["target"] == c["client_id"] and trail[0]["user"] == PLATFORM_ADMIN
    assert c["client_secret"] not in json.dumps(trail)


def test_the_trail_is_confined_and_paged(world: World) -> None:
    acme = world.ok("acme-admin", "GET", AUDIT, params={"limit": 1000})
    assert acme and all(e["organization"] == ACME for e in acme)
    globex = world.ok("globex-admin", "GET", AUDIT, params={"limit": 1000})
    # globex sees only its own trail: no acme entry, nothing acme's members did (a globex admin's own
    # denied attempt on a name like "acme-res" is globex's entry, and stays in globex's trail)
    assert globex and all(e["organization"] == GLOBEX for e in globex)
    assert not [e for e in globex if e["user"].startswith("acme-")]
    acme_ids = {e["id"] for e in acme}
    assert not acme_ids & {e["id"] for e in globex}
    ids = [e["id"] for e in acme]
    assert ids == sorted(ids, reverse=True)
    page1 = world.ok("acme-admin", "GET", AUDIT, params={"limit": 3})
    page2 = world.ok("acme-admin", "GET", AUDIT, params={"limit": 3, "before": page1[-1]["id"]})
    assert len(page1) == 3 and page2 and page2[0]["id"] < page1[-1]["id"]
    # platform managers read any organization's trail by selecting it; the project admin reads acme's
    assert world.ok("tenant-tom", "GET", AUDIT, org=ACME, params={"limit": 1000}) == acme
    assert world.ok("acme-padm", "GET", AUDIT, params={"limit": 5})


def test_audit_lines_reach_the_service_log(world: World) -> None:
    lines = world.service_log_lines()
    audit = [d for d in lines if d.get("log", {}).get("logger") == "heroes.audit"]
    assert audit
    for d in audit:
        assert {"@timestamp", "log.level", "message", "event", "http", "url"} <= set(d)
        assert d["event"]["outcome"] in ("success", "failure", "denied") and d["event"]["action"]
        assert d["http"]["request"]["method"] in ("POST", "PATCH", "PUT", "DELETE")
    created = [d for d in audit if d["event"]["action"] == "user.create" and d.get("heroes", {}).get("user")]
    assert any(d["heroes"]["organization"] == ACME and d["user"]["name"] == "acme-admin" for d in created)
