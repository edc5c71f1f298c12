"""``/heroes/admin/organizations``: organizations, their API clients and object-store servers."""

from __future__ import annotations

import pytest

from jupyter_heroes import orm
from jupyter_heroes.crypt import SecretBox, verify_secret
from jupyter_heroes.testing.plugin_hub import PLATFORM_ADMIN

from .conftest import ACME, PLATFORM, World

ORGS = "/heroes/admin/organizations"


def test_organization_lifecycle(world: World) -> None:
    o = world.ok(
        PLATFORM_ADMIN,
        "POST",
        ORGS,
        {"name": "initech", "display_name": "Initech", "kind": "provider"},
        status=201,
    )
    assert (o["name"], o["display_name"], o["kind"], o["members"], o["projects"]) == (
        "initech",
        "Initech",
        "provider",
        0,
        0,
    )
    assert world.call(PLATFORM_ADMIN, "POST", ORGS, {"name": "initech"}).status_code == 409
    assert "initech" in {x["name"] for x in world.ok(PLATFORM_ADMIN, "GET", ORGS)}
    acme = world.ok("tenant-tom", "GET", f"{ORGS}/{ACME}")
    assert acme["members"] >= 7 and acme["projects"] >= 1
    assert world.call(PLATFORM_ADMIN, "GET", f"{ORGS}/no-such-org").status_code == 404

    # a provider organization holds provider roles only
    world.hub.create_user("prov-pam")
    r = world.call(
        PLATFORM_ADMIN,
        "POST",
        "/organization/admin/users",
        {"username": "prov-pam", "roles": ["org-admin"]},
        org="initech",
    )
    assert r.status_code == 400 and r.json()["reason"] == "invalid_role"
    world.ok(
        PLATFORM_ADMIN,
        "POST",
        "/organization/admin/users",
        {"username": "prov-pam", "roles": ["resource-provider"]},
        org="initech",
        status=201,
    )
    world.ok(
        PLATFORM_ADMIN, "POST", "/organization/admin/groups", {"name": "offers"}, org="initech", status=201
    )

    # deleting cascades to everything the organization holds
    assert world.call("tenant-tom", "DELETE", f"{ORGS}/initech").status_code == 204
    assert world.call(PLATFORM_ADMIN, "GET", f"{ORGS}/initech").status_code == 404
    pam = world.hub.create_user("prov-pam")
    assert world.hub.api("GET", "/organization/auth/me", pam).json()["organizations"] == []
    with world.db() as s:
        assert s.query(orm.Project).filter_by(name="offers").count() == 0


def test_the_platform_organization_cannot_be_deleted(world: World) -> None:
    r = world.call(PLATFORM_ADMIN, "DELETE", f"{ORGS}/{PLATFORM}")
    assert r.status_code == 409 and r.json()["reason"] == "platform_org"
    assert world.ok(PLATFORM_ADMIN, "GET", f"{ORGS}/{PLATFORM}")["kind"] == "platform"


def test_client_secret_is_shown_once_and_stored_hashed(world: World) -> None:
    c = world.ok(PLATFORM_ADMIN, "POST", f"{ORGS}/{ACME}/clients", {"description": "CI pipeline"}, status=201)
    secret = c["client_secret"]
    world.secrets["client_secret"] = secret
    assert c["client_id"].startswith(f"{ACME}-") and len(secret) >= 40
    listed = world.ok(PLATFORM_ADMIN, "GET", f"{ORGS}/{ACME}/clients")
    assert c["client_id"] in {x["client_id"] for x in listed}
    assert all("client_secret" not in x for x in listed) and secret not in str(listed)
    with world.db() as s:
        row = s.query(orm.OrgClient).filter_by(client_id=c["client_id"]).one()
        assert secret not in row.secret_hash and verify_secret(secret, row.secret_hash)
        assert not verify_secret(secret + "x", row.secret_hash)
    assert world.call(PLATFORM_ADMIN, "DELETE", f"{ORGS}/{ACME}/clients/{c['client_id']}").status_code == 204
    assert world.call(PLATFORM_ADMIN, "DELETE", f"{ORGS}/{ACME}/clients/{c['client_id']}").status_code == 404


def test_server_secret_is_encrypted_and_never_returned(world: World) -> None:
    secret = "S3cr3t-Key-For-Acme-0123456789"
    world.secrets["s3_secret"] = secret
    sv = world.ok(
        PLATFORM_ADMIN,
        "POST",
        f"{ORGS}/{ACME}/servers",
        {"endpoint": "127.0.0.1:9000", "secure": False, "access_key": "acme-ak", "secret_key": secret},
        status=201,
    )
    assert sv["has_secret_key"] is True and "secret_key" not in sv and sv["region"] == "us-east-1"
    assert sv["id"] in {x["id"] for x in world.ok(PLATFORM_ADMIN, "GET", f"{ORGS}/{ACME}/servers")}
    with world.db() as s:
        blob = bytes(s.get(orm.OrgServer, sv["id"]).secret_key_enc)
    assert secret.encode() not in blob and SecretBox(world.hub.crypt_key).decrypt(blob) == secret
    # a server of acme is not found under another organization
    assert world.call(PLATFORM_ADMIN, "DELETE", f"{ORGS}/globex-labs/servers/{sv['id']}").status_code == 404
    assert world.call(PLATFORM_ADMIN, "DELETE", f"{ORGS}/{ACME}/servers/{sv['id']}").status_code == 204


@pytest.mark.hub
@pytest.mark.timeout(240)
def test_without_an_encryption_key_secrets_are_refused(hub_factory: object) -> None:
    """A hub whose service has no HEROES_CRYPT_KEY: it runs, but refuses to store secrets (503)."""
    tb = hub_factory(crypt_key="")  # type: ignore[operator]
    admin = tb.create_user(PLATFORM_ADMIN)
    r = tb.api(
        "POST",
        f"{ORGS}/{PLATFORM}/servers",
        admin,
        {"endpoint": "127.0.0.1:9000", "access_key": "a", "secret_key": "never-stored"},
    )
    assert r.status_code == 503, r.text
    assert r.json()["reason"] == "no_crypt_key" and "HEROES_CRYPT_KEY" in r.json()["message"]
    assert tb.api("GET", f"{ORGS}/{PLATFORM}/servers", admin).json() == []
    log = tb.service_log.read_text()
    assert "no encryption key" in log and "never-stored" not in log
