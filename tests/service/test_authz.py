"""Authorization on every endpoint: D3.1 Table 1 roles (403) and organization isolation (404)."""

from __future__ import annotations

import pytest

from jupyter_heroes import roles
from jupyter_heroes.testing.plugin_hub import PLATFORM_ADMIN

from .conftest import ACME, ACME_ROLE_USERS, GLOBEX, World
from .endpoints import Op, all_ops, example

SCOPED = [op for op in all_ops() if op.ep.scope]

#: (user, role, the organization the role is held in)
CALLERS = [(user, role, "client") for role, user in sorted(ACME_ROLE_USERS.items())] + [
    ("tenant-tom", "tenant-admin", "platform"),
    ("infra-ian", "infrastructure-admin", "platform"),
]


def holds(role: str, where: str, op: Op) -> bool:
    """Whether *role* (held in a *where* organization) grants what *op* needs where it needs it."""
    scope = op.ep.scope
    granted = roles.BUILTIN_ROLES[role].scopes
    if op.ep.platform:
        return where == "platform" and scope in granted
    return scope in granted


def test_every_scoped_endpoint_is_covered() -> None:
    ids = {op.id for op in SCOPED}
    assert len(ids) >= 30
    assert {op.id for op in all_ops()} - ids == {"GET /organization/auth/me"}
    assert "GET /heroes/admin/organizations" in ids and "DELETE /organization/admin/users/{username}" in ids


@pytest.mark.parametrize(("user", "role", "where"), CALLERS, ids=[c[1] for c in CALLERS])
def test_roles_get_403_where_table_1_denies(world: World, user: str, role: str, where: str) -> None:
    denied, allowed = [], []
    reach_all = "custom:heroes:organizations:manage" in roles.BUILTIN_ROLES[role].scopes
    # platform staff act in acme if they reach every organization, else in their own (acme unseen)
    org = ACME if (where == "client" or reach_all) else None
    for op in SCOPED:
        path, body = example(world, op)
        if holds(role, where, op):
            if op.method == "get" and (org or "{" not in op.template):  # reading is safe: it must work
                r = world.call(user, "GET", path, org=org if op.ep.org else None)
                assert r.status_code == 200, f"{role} {op.id}: {r.status_code} {r.text}"
                allowed.append(op.id)
            continue
        r = world.call(user, op.method.upper(), path, body, org=org if op.ep.org else None)
        assert r.status_code == 403, f"{role} {op.id}: {r.status_code} {r.text}"
        err = r.json()
        assert err["reason"] == "missing_scope" and op.ep.scope in err["message"], err
        denied.append(op.id)
    # every role is denied something, and the administrators are allowed something
    assert denied, role
    if role in ("org-admin", "tenant-admin"):
        assert allowed


def test_denied_calls_changed_nothing(world: World) -> None:
    names = {u["name"] for u in world.ok("acme-admin", "GET", "/organization/admin/users")}
    assert "val-new-user" not in names and "acme-res" in names
    groups = {g["name"] for g in world.ok("acme-admin", "GET", "/organization/admin/groups")}
    assert "wing" in groups and "val-new-group" not in groups
    orgs = {o["name"] for o in world.ok(PLATFORM_ADMIN, "GET", "/heroes/admin/organizations")}
    assert "val-new-org" not in orgs and ACME in orgs


ORG_OPS = [op for op in SCOPED if op.ep.org]


@pytest.mark.parametrize("op", ORG_OPS, ids=[op.id for op in ORG_OPS])
def test_other_organization_gets_404(world: World, op: Op) -> None:
    """globex's administrator holds every scope these need, in globex: acme stays invisible."""
    path, body = example(world, op)
    # selecting acme
    r = world.call("globex-admin", op.method.upper(), path, body, org=ACME)
    assert r.status_code == 404, r.text
    assert r.json()["reason"] == "not_found"
    # acme's objects named from inside globex
    if "{" in op.template:
        r = world.call("globex-admin", op.method.upper(), path, body, org=GLOBEX)
        assert r.status_code == 404, r.text
        assert ACME not in r.json()["message"]


def test_acme_objects_survived_foreign_attempts(world: World) -> None:
    cluster = world.acme_cluster  # type: ignore[attr-defined]
    template = world.acme_template  # type: ignore[attr-defined]
    assert world.ok("acme-admin", "GET", f"/organization/admin/cluster/{cluster['id']}")["name"] == "acme-hpc"
    assert (
        world.ok("acme-admin", "GET", f"/organization/admin/workflow/template/{template['id']}")["state"]
        == "active"
    )
    assert world.ok("acme-admin", "GET", "/organization/admin/roles/acme-viewer")["builtin"] is False
    res = world.ok("acme-admin", "GET", "/organization/admin/users/acme-res")
    assert res["roles"] == [{"name": "researcher", "source": "local"}] and res["full_name"] == ""
    assert world.ok("acme-admin", "GET", "/organization/admin/groups/wing")["description"] == "wing design"


def test_platform_endpoints_need_the_platform_organization(world: World) -> None:
    """organizations:manage held in a client organization (through a custom role) reaches nothing."""
    r = world.call(
        "acme-admin",
        "POST",
        "/organization/admin/roles",
        {"name": "fake-tenant", "scopes": ["custom:heroes:organizations:manage"]},
    )
    assert r.status_code == 403 and r.json()["reason"] == "scope_escalation"
    r = world.call("acme-admin", "GET", "/heroes/admin/organizations")
    assert r.status_code == 403
