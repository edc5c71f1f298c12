"""The dashboards' world on the session's hub: a client organization with an org admin and a
researcher, a provider organization with a resource provider and a local cluster, and the platform
administrator (``PLATFORM_ADMIN``)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from jupyter_heroes.client import HeroesClient
from jupyter_heroes.dashboards import DashboardAPI
from jupyter_heroes.testing.plugin_hub import PLATFORM_ADMIN

ORG = "dashu-corp"
PROVIDER = "dashu-hpc"


@pytest.fixture(scope="session")
def dash_world(hub, tmp_path_factory):
    work = tmp_path_factory.mktemp("dashu")
    users = {
        "padmin": PLATFORM_ADMIN,
        "admin": "dashu-ada",
        "researcher": "dashu-rob",
        "vendor": "dashu-vera",
        "member": "dashu-tim",
    }
    tokens = {k: hub.create_user(v) for k, v in users.items()}

    def ok(r):
        assert r.status_code in (200, 201), r.text
        return r.json()

    padmin = tokens["padmin"]
    ok(hub.api("POST", "/heroes/admin/organizations", padmin, {"name": ORG}))
    ok(hub.api("POST", "/heroes/admin/organizations", padmin, {"name": PROVIDER, "kind": "provider"}))
    for who, org, role in (
        ("admin", ORG, "org-admin"),
        ("researcher", ORG, "researcher"),
        ("member", ORG, "researcher"),
        ("vendor", PROVIDER, "resource-provider"),
    ):
        ok(
            hub.api(
                "POST",
                "/organization/admin/users",
                padmin,
                {"username": users[who], "roles": [role]},
                org=org,
            )
        )
    local = {
        "name": "local",
        "transport": "local",
        "scheduler": "local",
        "scratch_root": str(work / "provider-scratch"),
        "queues": [{"name": "debug"}],
    }
    ok(hub.api("POST", "/organization/admin/cluster", padmin, local, org=PROVIDER))

    def client(who: str, org: str | None = None) -> HeroesClient:
        return HeroesClient(hub.url + "/services/heroes/", tokens[who], org)

    return SimpleNamespace(
        hub=hub,
        users=users,
        tokens=tokens,
        work=work,
        client=client,
        api=lambda who, org=None: DashboardAPI(client(who, org)),
    )
