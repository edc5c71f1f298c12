"""``auth/me``, authentication, and how a caller selects an organization."""

from __future__ import annotations

from jupyter_heroes import roles
from jupyter_heroes.testing.plugin_hub import PLATFORM_ADMIN

from .conftest import ACME, GLOBEX, PLATFORM, World

ME = "/organization/auth/me"


def test_me_lists_organizations_roles_projects_and_scopes(world: World) -> None:
    me = world.ok("acme-res", "GET", ME)
    assert me["name"] == "acme-res"
    assert me["email"] == "acme-res@example.org"
    assert me["platform_scopes"] == []
    [acme] = me["organizations"]
    assert acme["name"] == ACME and acme["kind"] == "client"
    assert acme["roles"] == [{"name": "researcher", "source": "local"}]
    assert acme["projects"] == [{"name": "wing", "source": "local"}]
    assert set(acme["scopes"]) == set(roles.BUILTIN_ROLES["researcher"].scopes)


def test_me_of_a_platform_admin_has_platform_scopes(world: World) -> None:
    me = world.ok(PLATFORM_ADMIN, "GET", ME)
    assert [o["name"] for o in me["organizations"]] == [PLATFORM]
    assert "custom:heroes:organizations:manage" in me["platform_scopes"]
    tom = world.ok("tenant-tom", "GET", ME)
    assert set(tom["platform_scopes"]) == set(roles.BUILTIN_ROLES["tenant-admin"].scopes)


def test_me_of_a_user_in_no_organization(world: World) -> None:
    me = world.ok("nobody-ned", "GET", ME)
    assert me["organizations"] == [] and me["platform_scopes"] == []


def test_unauthenticated_calls_get_401_json(world: World) -> None:
    for method, path in [
        ("GET", ME),
        ("GET", "/organization/admin/users"),
        ("POST", "/heroes/admin/organizations"),
    ]:
        r = world.call(None, method, path, {"name": "x"})
        assert r.status_code == 401, r.text
        assert r.json()["reason"] == "not_authenticated"
        assert "Authorization: token" in r.json()["message"]
    r = world.hub.api("GET", ME, "not-a-real-token-0123456789abcdef")
    assert r.status_code == 401


def test_a_token_without_access_to_the_service_is_refused(world: World) -> None:
    token = world.hub.create_user("acme-res", scopes=["read:users:name!user=acme-res"])
    r = world.hub.api("GET", ME, token)
    assert r.status_code in (401, 403), r.text
    assert r.json()["reason"] in ("hub_scope_missing", "not_authenticated")


def test_single_membership_needs_no_selection(world: World) -> None:
    users = world.ok("acme-admin", "GET", "/organization/admin/users")
    assert {u["organization"] for u in users} == {ACME}


def test_several_memberships_need_a_selection(world: World) -> None:
    r = world.call("multi-mia", "GET", "/organization/admin/audit")
    assert r.status_code == 400
    body = r.json()
    assert body["reason"] == "organization_required"
    assert (
        ACME in body["message"] and GLOBEX in body["message"] and "X-Heroes-Organization" in body["message"]
    )
    # with a selection the call is authorized in that organization only (researcher: no audit:read)
    r = world.call("multi-mia", "GET", "/organization/admin/audit", org=GLOBEX)
    assert r.status_code == 403 and r.json()["reason"] == "missing_scope"
    assert GLOBEX in r.json()["message"]


def test_header_and_query_selection_agree(world: World) -> None:
    a = world.ok("acme-admin", "GET", "/organization/admin/groups", params={"organization": ACME})
    b = world.ok("acme-admin", "GET", "/organization/admin/groups", org=ACME)
    assert a == b and "wing" in [g["name"] for g in a]
    r = world.call(
        "acme-admin", "GET", "/organization/admin/groups", org=ACME, params={"organization": GLOBEX}
    )
    assert r.status_code == 400 and r.json()["reason"] == "organization_conflict"


def test_unknown_and_foreign_organizations_look_the_same(world: World) -> None:
    foreign = world.call("acme-admin", "GET", "/organization/admin/users", org=GLOBEX)
    missing = world.call("acme-admin", "GET", "/organization/admin/users", org="no-such-org")
    invalid = world.call("acme-admin", "GET", "/organization/admin/users", org="Not A Name!")
    for r in (foreign, missing, invalid):
        assert r.status_code == 404, r.text
        assert r.json()["reason"] == "not_found"
    assert foreign.json()["message"].replace(GLOBEX, "X") == missing.json()["message"].replace(
        "no-such-org", "X"
    )


def test_user_without_organization_is_told_what_to_do(world: World) -> None:
    r = world.call("nobody-ned", "GET", "/organization/admin/users")
    assert r.status_code == 403
    assert r.json()["reason"] == "no_organization"
    assert "administrator" in r.json()["message"]


def test_platform_manager_reaches_any_organization(world: World) -> None:
    users = world.ok("tenant-tom", "GET", "/organization/admin/users", org=ACME)
    assert "acme-res" in {u["name"] for u in users}
    # infrastructure-admin holds no organizations:manage: other organizations stay invisible
    r = world.call("infra-ian", "GET", "/organization/admin/cluster", org=ACME)
    assert r.status_code == 404
