"""The HEROES world the service tests share: organizations, projects and one user per role.

Bootstrapped *through the API* (which tests it): hub users and their tokens come from the hub's REST
API; ``heroes-admin`` is solution-admin of the platform organization through
``c.HeroesService.platform_admins``; it creates the organizations and their first administrators,
who then add their own users with roles (D3.1 Table 1) and projects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import select

from jupyter_heroes import dbutil, orm
from jupyter_heroes.testing.hub import HubTestbed
from jupyter_heroes.testing.plugin_hub import PLATFORM_ADMIN

ACME = "acme-corp"
GLOBEX = "globex-labs"
PLATFORM = "heroes"

#: user -> (organization, roles, projects), added in this order through the API
MEMBERS: dict[str, tuple[str, list[str], list[str]]] = {
    "tenant-tom": (PLATFORM, ["tenant-admin"], []),
    "infra-ian": (PLATFORM, ["infrastructure-admin"], []),
    "acme-admin": (ACME, ["org-admin"], []),
    "acme-res": (ACME, ["researcher"], ["wing"]),
    "acme-wf": (ACME, ["workflow-admin"], ["wing"]),
    "acme-pack": (ACME, ["application-packager"], []),
    "acme-padm": (ACME, ["project-admin"], []),
    "acme-bill": (ACME, ["billing-admin"], []),
    "globex-admin": (GLOBEX, ["org-admin"], []),
    "globex-res": (GLOBEX, ["researcher"], ["rotor"]),
    "multi-mia": (ACME, ["researcher"], []),
}
#: one user per built-in client role, in acme
ACME_ROLE_USERS = {
    "org-admin": "acme-admin",
    "researcher": "acme-res",
    "workflow-admin": "acme-wf",
    "application-packager": "acme-pack",
    "project-admin": "acme-padm",
    "billing-admin": "acme-bill",
}


def ssh_keypair() -> tuple[str, str]:
    """(OpenSSH private key text, 'ssh-ed25519 AAAA...' public key)."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public.decode()


def template_doc(name: str = "hello", version: int = 1) -> dict[str, Any]:
    return {
        "heroes_template": 1,
        "name": name,
        "version": version,
        "description": "one job",
        "parameters": {"n": {"type": "integer", "default": 2, "min": 1, "max": 10}},
        "steps": [{"name": "main", "command": ["echo", "{{ n }}"]}],
    }


@dataclass
class World:
    hub: HubTestbed
    tokens: dict[str, str] = field(default_factory=dict)
    #: secrets handed to the service, which must never come back (responses, logs)
    secrets: dict[str, str] = field(default_factory=dict)

    def call(
        self, user: str | None, method: str, path: str, json: Any = None, **kw: Any
    ) -> requests.Response:
        return self.hub.api(method, path, self.tokens[user] if user else None, json, **kw)

    def ok(self, user: str, method: str, path: str, json: Any = None, status: int = 200, **kw: Any) -> Any:
        r = self.call(user, method, path, json, **kw)
        assert r.status_code == status, f"{method} {path} as {user}: {r.status_code} {r.text}"
        return r.json() if r.content else None

    def found_org(self, org: str, members: dict[str, str], kind: str = "client") -> None:
        """Create organization *org* (of *kind*) as the platform admin, with *members* (user -> role;
        each gets a hub user and token if it has none yet)."""
        self.ok(
            PLATFORM_ADMIN, "POST", "/heroes/admin/organizations", {"name": org, "kind": kind}, status=201
        )
        for name, role in members.items():
            if name not in self.tokens:
                self.tokens[name] = self.hub.create_user(name)
            body = {"username": name, "roles": [role]}
            self.ok(PLATFORM_ADMIN, "POST", "/organization/admin/users", body, 201, org=org)

    def db(self) -> Any:
        """A session on the service's database (to check what the API cannot show)."""
        engine = dbutil.make_engine(self.hub.db_url)
        return dbutil.session_factory(engine)()

    def service_log_lines(self) -> list[dict[str, Any]]:
        """The service's JSON log lines written so far (a line still being written is left out)."""
        text = self.hub.service_log.read_text()
        complete = text[: text.rfind("\n") + 1]
        return [json.loads(ln) for ln in complete.split("\n") if ln.strip()]

    def audit_rows(self, **where: Any) -> list[orm.AuditEntry]:
        with self.db() as s:
            q = select(orm.AuditEntry)
            for k, v in where.items():
                q = q.where(getattr(orm.AuditEntry, k) == v)
            return list(s.scalars(q.order_by(orm.AuditEntry.id)))


class OnWorld:
    """A test module's own view of the session's :class:`World` (its ``world``), with its helpers
    beside ``ok`` and ``call``, which are the world's."""

    world: World

    def ok(self, *a: Any, **kw: Any) -> Any:
        return self.world.ok(*a, **kw)

    def call(self, *a: Any, **kw: Any) -> Any:
        return self.world.call(*a, **kw)


@pytest.fixture(scope="session")
def world(hub: HubTestbed) -> World:
    w = World(hub)
    for name in [PLATFORM_ADMIN, *MEMBERS, "nobody-ned"]:
        w.tokens[name] = hub.create_user(name)
        w.secrets[f"token:{name}"] = w.tokens[name]
    w.secrets["admin_token"] = hub.admin_token
    w.secrets["crypt_key"] = hub.crypt_key
    # the platform admin creates the organizations ...
    for org in (ACME, GLOBEX):
        w.ok(
            PLATFORM_ADMIN,
            "POST",
            "/heroes/admin/organizations",
            {"name": org, "display_name": org.title()},
            status=201,
        )
    # ... adds the platform's own staff, and acme's first administrator
    for name in ("tenant-tom", "infra-ian"):
        _, roles, _ = MEMBERS[name]
        w.ok(
            PLATFORM_ADMIN,
            "POST",
            "/organization/admin/users",
            {"username": name, "roles": roles},
            status=201,
        )
    w.ok(
        PLATFORM_ADMIN,
        "POST",
        "/organization/admin/users",
        {"username": "acme-admin", "roles": ["org-admin"]},
        status=201,
        org=ACME,
    )
    # the tenant admin (cross-organization by organizations:manage) sets up globex's administrator
    w.ok(
        "tenant-tom",
        "POST",
        "/organization/admin/users",
        {"username": "globex-admin", "roles": ["org-admin"]},
        status=201,
        org=GLOBEX,
    )
    # each organization's administrator creates its projects and adds its users
    w.ok(
        "acme-admin",
        "POST",
        "/organization/admin/groups",
        {"name": "wing", "description": "wing design"},
        status=201,
    )
    w.ok("globex-admin", "POST", "/organization/admin/groups", {"name": "rotor"}, status=201)
    for name, (org, roles, projects) in MEMBERS.items():
        if org == PLATFORM or name in ("acme-admin", "globex-admin"):
            continue
        admin = "acme-admin" if org == ACME else "globex-admin"
        w.ok(
            admin,
            "POST",
            "/organization/admin/users",
            {"username": name, "roles": roles, "projects": projects, "email": f"{name}@example.org"},
            status=201,
        )
    w.ok(
        "globex-admin",
        "POST",
        "/organization/admin/users",
        {"username": "multi-mia", "roles": ["researcher"]},
        status=201,
    )
    # an acme cluster, an acme template, and an acme-only custom role: objects other organizations must not see
    private, public = ssh_keypair()
    w.secrets["private_key"] = private
    w.acme_cluster = w.ok(  # type: ignore[attr-defined]
        "acme-admin",
        "POST",
        "/organization/admin/cluster",
        {
            "name": "acme-hpc",
            "host": "127.0.0.1",
            "port": 2222,
            "username": "heroes",
            "host_key": public,
            "private_key": private,
            "scratch_root": "/srv/scratch",
            "queues": [{"name": "debug", "max_nodes": 1, "cpus_per_node": 2}],
        },
        status=201,
    )
    w.acme_template = w.ok(  # type: ignore[attr-defined]
        "acme-admin",
        "POST",
        "/organization/admin/workflow/template",
        {"template": template_doc("acme-flow")},
        status=201,
    )
    w.ok(
        "acme-admin",
        "POST",
        "/organization/admin/roles",
        {"name": "acme-viewer", "scopes": ["custom:heroes:billing"]},
        status=201,
    )
    return w
