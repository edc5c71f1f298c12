"""``/organization/admin/groups`` (projects) and ``/organization/admin/roles``."""

from __future__ import annotations

from jupyter_heroes import roles

from .conftest import World

GROUPS = "/organization/admin/groups"
ROLES = "/organization/admin/roles"
USERS = "/organization/admin/users"


def test_group_lifecycle_and_members(world: World) -> None:
    g = world.ok("acme-admin", "POST", GROUPS, {"name": "crash-sim", "members": ["acme-wf"]}, status=201)
    assert g["members"] == [{"name": "acme-wf", "source": "local"}] and g["description"] == ""
    r = world.call("acme-admin", "POST", GROUPS, {"name": "crash-sim"})
    assert r.status_code == 409 and r.json()["reason"] == "exists"
    r = world.call("acme-admin", "POST", GROUPS, {"name": "other", "members": ["globex-res"]})
    assert (
        r.status_code == 400 and r.json()["reason"] == "not_a_member" and "globex-res" in r.json()["message"]
    )

    g = world.ok("acme-admin", "PATCH", f"{GROUPS}/crash-sim", {"add_members": ["acme-pack", "acme-bill"]})
    assert [m["name"] for m in g["members"]] == ["acme-bill", "acme-pack", "acme-wf"]
    g = world.ok(
        "acme-admin", "PATCH", f"{GROUPS}/crash-sim", {"remove_members": ["acme-wf"], "description": "CAE"}
    )
    assert [m["name"] for m in g["members"]] == ["acme-bill", "acme-pack"] and g["description"] == "CAE"
    g = world.ok("acme-admin", "PATCH", f"{GROUPS}/crash-sim", {"members": ["acme-res"]})
    assert [m["name"] for m in g["members"]] == ["acme-res"]
    # the member's own view shows the project
    projects = world.ok("acme-admin", "GET", f"{USERS}/acme-res")["projects"]
    assert {p["name"] for p in projects} == {"crash-sim", "wing"}
    r = world.call("acme-admin", "PATCH", f"{GROUPS}/crash-sim", {})
    assert r.status_code == 400 and "at least 1" in r.json()["message"]

    assert world.call("acme-admin", "DELETE", f"{GROUPS}/crash-sim").status_code == 204
    assert world.call("acme-admin", "GET", f"{GROUPS}/crash-sim").status_code == 404
    assert {p["name"] for p in world.ok("acme-admin", "GET", f"{USERS}/acme-res")["projects"]} == {"wing"}


def test_builtin_roles_follow_the_organization_kind(world: World) -> None:
    acme = {r["name"]: r for r in world.ok("acme-admin", "GET", ROLES)}
    expected = {n for n, r in roles.BUILTIN_ROLES.items() if "client" in r.kinds}
    assert expected <= set(acme) and "solution-admin" not in acme and "tenant-admin" not in acme
    assert acme["researcher"]["scopes"] == sorted(roles.BUILTIN_ROLES["researcher"].scopes)
    assert acme["researcher"]["builtin"] and not acme["acme-viewer"]["builtin"]
    platform = {r["name"] for r in world.ok("heroes-admin", "GET", ROLES)}
    assert {"solution-admin", "tenant-admin", "infrastructure-admin"} <= platform
    r = world.call("acme-admin", "GET", f"{ROLES}/solution-admin")
    assert r.status_code == 404


def test_custom_role_grants_its_scopes_and_goes_away(world: World) -> None:
    world.ok("acme-admin", "POST", USERS, {"username": "role-rob", "roles": ["researcher"]}, status=201)
    rob = world.hub.create_user("role-rob")
    r = world.hub.api("GET", "/organization/admin/audit", rob)
    assert r.status_code == 403

    role = world.ok(
        "acme-admin",
        "POST",
        ROLES,
        {"name": "auditor", "description": "reads the trail", "scopes": ["custom:heroes:audit:read"]},
        status=201,
    )
    assert role == {
        "name": "auditor",
        "description": "reads the trail",
        "scopes": ["custom:heroes:audit:read"],
        "builtin": False,
    }
    r = world.call("acme-admin", "POST", ROLES, {"name": "auditor", "scopes": ["custom:heroes:submit"]})
    assert r.status_code == 409
    r = world.call("acme-admin", "POST", ROLES, {"name": "researcher", "scopes": ["custom:heroes:submit"]})
    assert r.status_code == 409 and "built-in" in r.json()["message"]

    a = world.ok("acme-admin", "POST", ROLES, {"username": "role-rob", "role": "auditor"}, status=201)
    assert a == {"username": "role-rob", "role": "auditor", "organization": "acme-corp", "source": "local"}
    r = world.call("acme-admin", "POST", ROLES, {"username": "role-rob", "role": "auditor"})
    assert r.status_code == 409
    assert world.hub.api("GET", "/organization/admin/audit", rob).status_code == 200
    me = world.hub.api("GET", "/organization/auth/me", rob).json()
    assert "custom:heroes:audit:read" in me["organizations"][0]["scopes"]
    assert world.ok("acme-admin", "GET", f"{ROLES}/auditor")["users"] == [
        {"name": "role-rob", "source": "local"}
    ]

    r = world.call("acme-admin", "POST", ROLES, {"username": "globex-res", "role": "auditor"})
    assert r.status_code == 404
    r = world.call("acme-admin", "POST", ROLES, {"username": "role-rob", "scopes": ["x"]})
    assert r.status_code == 400 and "'scopes'" in r.json()["message"]
    r = world.call("acme-admin", "POST", ROLES, {"name": "bad-scope", "scopes": ["admin:users"]})
    assert r.status_code == 400 and "'scopes[0]'" in r.json()["message"]

    assert world.call("acme-admin", "DELETE", f"{ROLES}/auditor").status_code == 204
    assert world.call("acme-admin", "GET", f"{ROLES}/auditor").status_code == 404
    assert world.hub.api("GET", "/organization/admin/audit", rob).status_code == 403
    assert world.ok("acme-admin", "GET", f"{USERS}/role-rob")["roles"] == [
        {"name": "researcher", "source": "local"}
    ]


def test_builtin_roles_cannot_be_deleted_and_escalation_is_refused(world: World) -> None:
    r = world.call("acme-admin", "DELETE", f"{ROLES}/researcher")
    assert r.status_code == 400 and r.json()["reason"] == "builtin_role"
    # a project admin may create roles from ordinary scopes and those they hold, nothing more
    world.ok("acme-padm", "POST", ROLES, {"name": "runner", "scopes": ["custom:heroes:submit"]}, status=201)
    r = world.call("acme-padm", "POST", ROLES, {"name": "payer", "scopes": ["custom:heroes:billing"]})
    assert r.status_code == 403 and r.json()["reason"] == "scope_escalation"
    r = world.call("acme-padm", "DELETE", f"{ROLES}/acme-viewer")  # holds billing, which acme-padm lacks
    assert r.status_code == 403
    assert world.ok("acme-admin", "GET", f"{ROLES}/acme-viewer")["scopes"] == ["custom:heroes:billing"]
