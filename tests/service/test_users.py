"""``/organization/admin/users``: members, their roles and projects; Keycloak-owned rows stay put."""

from __future__ import annotations

from jupyter_heroes import dbutil, identity

from .conftest import ACME, World

USERS = "/organization/admin/users"


def test_add_get_update_remove_a_member(world: World) -> None:
    world.hub.create_user("user-uma")
    view = world.ok(
        "acme-admin",
        "POST",
        USERS,
        {"username": "user-uma", "roles": ["researcher"], "projects": ["wing"], "full_name": "Uma U"},
        status=201,
    )
    assert view == {
        "name": "user-uma",
        "email": "",
        "full_name": "Uma U",
        "organization": ACME,
        "source": "local",
        "roles": [{"name": "researcher", "source": "local"}],
        "projects": [{"name": "wing", "source": "local"}],
    }
    assert world.ok("acme-admin", "GET", f"{USERS}/user-uma") == view
    assert "user-uma" in {u["name"] for u in world.ok("acme-admin", "GET", USERS)}

    r = world.call("acme-admin", "POST", USERS, {"username": "user-uma"})
    assert r.status_code == 409 and r.json()["reason"] == "exists" and "PATCH" in r.json()["message"]

    view = world.ok(
        "acme-admin",
        "PATCH",
        f"{USERS}/user-uma",
        {"roles": ["workflow-admin", "billing-admin"], "projects": [], "email": "uma@example.org"},
    )
    assert [r["name"] for r in view["roles"]] == ["billing-admin", "workflow-admin"]
    assert view["projects"] == [] and view["email"] == "uma@example.org"
    me = world.ok("acme-admin", "GET", f"{USERS}/user-uma")
    assert me == view

    assert world.call("acme-admin", "DELETE", f"{USERS}/user-uma").status_code == 204
    assert world.call("acme-admin", "GET", f"{USERS}/user-uma").status_code == 404
    wing = world.ok("acme-admin", "GET", "/organization/admin/groups/wing")
    assert "user-uma" not in {m["name"] for m in wing["members"]}
    # the hub account and the HEROES user record stay: the user can be added again
    world.ok("acme-admin", "POST", USERS, {"username": "user-uma"}, status=201)
    assert world.ok("acme-admin", "GET", f"{USERS}/user-uma")["roles"] == []


def test_project_admin_cannot_grant_or_revoke_more_than_they_hold(world: World) -> None:
    world.ok("acme-padm", "POST", USERS, {"username": "user-pat", "roles": ["researcher"]}, status=201)
    r = world.call("acme-padm", "POST", USERS, {"username": "user-pia", "roles": ["org-admin"]})
    assert r.status_code == 403 and r.json()["reason"] == "scope_escalation"
    assert "clusters:manage" in r.json()["message"]
    r = world.call("acme-padm", "PATCH", f"{USERS}/user-pat", {"roles": ["billing-admin"]})
    assert r.status_code == 403 and r.json()["reason"] == "scope_escalation"
    # nor take the organization administrator's role away
    r = world.call("acme-padm", "PATCH", f"{USERS}/acme-admin", {"roles": []})
    assert r.status_code == 403
    r = world.call("acme-padm", "DELETE", f"{USERS}/acme-admin")
    assert r.status_code == 403
    assert world.ok("acme-admin", "GET", f"{USERS}/acme-admin")["roles"] == [
        {"name": "org-admin", "source": "local"}
    ]
    assert world.call("acme-padm", "GET", f"{USERS}/user-pia").status_code == 404


def test_rows_from_the_identity_provider_are_kept(world: World) -> None:
    """A Keycloak login (provisioning by jupyter_heroes.identity) writes ``idp`` rows; the API only
    changes ``local`` ones and refuses to remove what Keycloak owns."""
    factory = dbutil.session_factory(dbutil.make_engine(world.hub.db_url))
    identity.provision_user(
        factory, "kc-kim", "kim@example.org", "Kim K", groups=[f"/{ACME}/wing"], roles=["researcher"]
    )
    kim = world.ok("acme-admin", "GET", f"{USERS}/kc-kim")
    assert kim["source"] == "idp"
    assert kim["roles"] == [{"name": "researcher", "source": "idp"}]
    assert kim["projects"] == [{"name": "wing", "source": "idp"}]

    kim = world.ok("acme-admin", "PATCH", f"{USERS}/kc-kim", {"roles": ["billing-admin"], "projects": []})
    assert kim["roles"] == [
        {"name": "billing-admin", "source": "local"},
        {"name": "researcher", "source": "idp"},
    ]
    assert kim["projects"] == [{"name": "wing", "source": "idp"}]
    kim = world.ok("acme-admin", "PATCH", f"{USERS}/kc-kim", {"roles": []})
    assert kim["roles"] == [{"name": "researcher", "source": "idp"}]

    r = world.call("acme-admin", "DELETE", f"{USERS}/kc-kim")
    assert r.status_code == 409 and r.json()["reason"] == "idp_managed" and "Keycloak" in r.json()["message"]
    r = world.call("acme-admin", "PATCH", "/organization/admin/groups/wing", {"remove_members": ["kc-kim"]})
    assert r.status_code == 409 and r.json()["reason"] == "idp_managed"
    r = world.call("acme-admin", "DELETE", "/organization/admin/groups/wing")
    assert r.status_code == 409
    assert world.ok("acme-admin", "GET", f"{USERS}/kc-kim")["source"] == "idp"

    # a later login replaces idp rows and leaves the local ones made through the API
    world.ok("acme-admin", "PATCH", f"{USERS}/kc-kim", {"roles": ["application-packager"]})
    identity.provision_user(factory, "kc-kim", groups=[f"/{ACME}"], roles=["workflow-admin"])
    kim = world.ok("acme-admin", "GET", f"{USERS}/kc-kim")
    assert kim["roles"] == [
        {"name": "application-packager", "source": "local"},
        {"name": "workflow-admin", "source": "idp"},
    ]
    assert kim["projects"] == []


def test_users_of_other_organizations_are_not_listed(world: World) -> None:
    names = {u["name"] for u in world.ok("acme-admin", "GET", USERS)}
    assert "globex-res" not in names and "globex-admin" not in names and "heroes-admin" not in names
    assert {"acme-res", "multi-mia"} <= names
