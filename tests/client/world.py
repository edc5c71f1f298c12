"""A small HEROES world for the client, magics and widgets tests, built through the API of a real hub
(as ``tests/service/conftest.py`` does): an organization with an administrator, a workflow admin
and a researcher, a second organization the researcher also belongs to, a cluster of the local
backend (real processes on this machine), and two templates published by the workflow admin: the
shipped ``templates/monte-carlo-pi.yaml`` and ``run-python``, whose string parameter ``script`` is
run by ``python3 -c`` (an argument, never shell text) for ``%%heroes submit``; optionally the test
bed's S3 server as the organization's object store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from jupyter_heroes.client import HeroesClient
from jupyter_heroes.testing.hub import HubTestbed
from jupyter_heroes.testing.plugin_hub import PLATFORM_ADMIN

REPO = Path(__file__).resolve().parents[2]
CLUSTER = "local"

RUN_PYTHON = {
    "heroes_template": 1,
    "name": "run-python",
    "version": 1,
    "application": "heroes-run-python",
    "description": "Run the Python code in 'script' (one job).",
    "parameters": {
        "script": {"type": "string", "max_length": 4096, "description": "Python code"},
        "repeat": {"type": "integer", "default": 1, "min": 1, "max": 5},
    },
    "steps": [
        {
            "name": "run",
            "command": ["python3", "-c", "{{ script }}"],
            "resources": {"memory_mb": 128, "walltime": "00:05:00"},
            "outputs": [],
        }
    ],
}


@dataclass
class World:
    hub: HubTestbed
    org: str
    other_org: str
    admin: str
    wf_admin: str
    researcher: str
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def service_url(self) -> str:
        """The service through the hub's proxy (what a browser or a remote client uses)."""
        return self.hub.url + "/services/heroes/"

    def client(self, user: str | None = None, organization: str | None = None, **kw: Any) -> HeroesClient:
        return HeroesClient(self.service_url, self.tokens[user or self.researcher], organization, **kw)

    def ok(self, user: str, method: str, path: str, body: Any = None, status: int = 200, **kw: Any) -> Any:
        r = self.hub.api(method, path, self.tokens[user], body, **kw)
        assert r.status_code == status, f"{method} {path} as {user}: {r.status_code} {r.text}"
        return r.json() if r.content else None


def build_world(hub: HubTestbed, tag: str, scratch: Path, s3_server: Any = None) -> World:
    """Organizations ``<tag>-lab`` and ``<tag>-aux`` and users ``<tag>-admin`` (org-admin and
    researcher in both), ``<tag>-wf`` (workflow-admin in ``-lab``), ``<tag>-res`` (researcher in
    both organizations). With *s3_server* (the test bed's S3 server) ``<tag>-lab`` gets it as its
    object store: the data API works there and workflow outputs go to the researcher's bucket."""
    w = World(
        hub=hub,
        org=f"{tag}-lab",
        other_org=f"{tag}-aux",
        admin=f"{tag}-admin",
        wf_admin=f"{tag}-wf",
        researcher=f"{tag}-res",
    )
    for name in (PLATFORM_ADMIN, w.admin, w.wf_admin, w.researcher):
        w.tokens[name] = hub.create_user(name)
    for org in (w.org, w.other_org):
        w.ok(PLATFORM_ADMIN, "POST", "/heroes/admin/organizations", {"name": org}, status=201)
        if s3_server is not None and org == w.org:
            server = {
                "endpoint": s3_server.endpoint,
                "secure": False,
                "access_key": s3_server.access_key,
                "secret_key": s3_server.secret_key,
            }
            w.ok(PLATFORM_ADMIN, "POST", f"/heroes/admin/organizations/{org}/servers", server, status=201)
        w.ok(
            PLATFORM_ADMIN,
            "POST",
            "/organization/admin/users",
            {"username": w.admin, "roles": ["org-admin", "researcher"]},
            status=201,
            org=org,
        )
        w.ok(
            w.admin,
            "POST",
            "/organization/admin/users",
            {"username": w.researcher, "roles": ["researcher"]},
            status=201,
            org=org,
        )
    w.ok(
        w.admin,
        "POST",
        "/organization/admin/users",
        {"username": w.wf_admin, "roles": ["workflow-admin"]},
        status=201,
        org=w.org,
    )
    w.ok(
        w.admin,
        "POST",
        "/organization/admin/cluster",
        {
            "name": CLUSTER,
            "transport": "local",
            "scheduler": "local",
            "scratch_root": str(scratch),
            "queues": [{"name": "debug"}],
        },
        status=201,
        org=w.org,
    )
    doc = yaml.safe_load((REPO / "templates" / "monte-carlo-pi.yaml").read_text())
    for template in (doc, RUN_PYTHON):
        w.ok(w.wf_admin, "POST", "/organization/admin/workflow/template", {"template": template}, status=201)
    return w
