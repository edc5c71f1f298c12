"""The researcher flows' world, built through the REST API of a real hub: an organization whose object
store is the test bed's S3 server, an org-admin who enrols its clusters and publishes the *shipped*
templates (``templates/monte-carlo-pi.yaml``, ``templates/run-python.yaml``), and a researcher who only
holds the researcher role. Clusters: ``local`` (the local backend: real processes on this machine) and,
given the ``slurm_cluster`` fixture, ``testbed`` (the test bed's Slurm over its real sshd, host key
pinned)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from jupyter_heroes.client import HeroesClient
from jupyter_heroes.testing.hub import HubTestbed
from jupyter_heroes.testing.plugin_hub import PLATFORM_ADMIN

REPO = Path(__file__).resolve().parents[2]
SHIPPED = ("monte-carlo-pi", "run-python")


def shipped_template(name: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / "templates" / f"{name}.yaml").read_text())


@dataclass
class FlowWorld:
    hub: HubTestbed
    org: str
    admin: str
    researcher: str
    clusters: list[str] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def service_url(self) -> str:
        return self.hub.url + "/services/heroes/"

    def client(self, user: str | None = None) -> HeroesClient:
        return HeroesClient(self.service_url, self.tokens[user or self.researcher], self.org)

    def kernel_env(self) -> dict[str, str]:
        """What a JupyterHub single-user server's kernel of the researcher sees."""
        return {
            "HEROES_SERVICE_URL": self.service_url,
            "JUPYTERHUB_API_TOKEN": self.tokens[self.researcher],
            "HEROES_API_TOKEN": "",
            "HEROES_ORGANIZATION": self.org,
        }

    def ok(self, user: str, method: str, path: str, body: Any = None, status: int = 200, **kw: Any) -> Any:
        r = self.hub.api(method, path, self.tokens[user], body, org=self.org, **kw)
        assert r.status_code == status, f"{method} {path} as {user}: {r.status_code} {r.text}"
        return r.json() if r.content else None


def slurm_cluster_body(slurm_cluster: Any, name: str = "testbed", subdir: str = "flows") -> dict[str, Any]:
    ssh = slurm_cluster.ssh
    return {
        "name": name,
        "description": "the test bed's Slurm, over SSH",
        "host": ssh.host,
        "port": ssh.port,
        "username": ssh.username,
        "host_key": ssh.host_key,
        "private_key": ssh.private_key,
        "scratch_root": f"{ssh.scratch_root}/{subdir}",
        "queues": [{"name": p} for p in slurm_cluster.partitions],
    }


def build_flow_world(
    hub: HubTestbed, tag: str, scratch: Path, s3_server: Any, slurm_cluster: Any = None, *, local: bool = True
) -> FlowWorld:
    w = FlowWorld(hub=hub, org=f"{tag}-lab", admin=f"{tag}-admin", researcher=f"{tag}-res")
    w.tokens[PLATFORM_ADMIN] = hub.create_user(PLATFORM_ADMIN)
    for name in (w.admin, w.researcher):
        w.tokens[name] = hub.create_user(name)
    w.ok(PLATFORM_ADMIN, "POST", "/heroes/admin/organizations", {"name": w.org}, status=201)
    store = {
        "endpoint": s3_server.endpoint,
        "secure": False,
        "access_key": s3_server.access_key,
        "secret_key": s3_server.secret_key,
    }
    w.ok(PLATFORM_ADMIN, "POST", f"/heroes/admin/organizations/{w.org}/servers", store, status=201)
    w.ok(
        PLATFORM_ADMIN,
        "POST",
        "/organization/admin/users",
        {"username": w.admin, "roles": ["org-admin"]},
        status=201,
    )
    w.ok(
        w.admin,
        "POST",
        "/organization/admin/users",
        {"username": w.researcher, "roles": ["researcher"]},
        status=201,
    )
    if local:
        body = {
            "name": "local",
            "transport": "local",
            "scheduler": "local",
            "scratch_root": str(scratch),
            "queues": [{"name": "debug"}],
        }
        w.ok(w.admin, "POST", "/organization/admin/cluster", body, status=201)
        w.clusters.append("local")
    if slurm_cluster is not None:
        body = slurm_cluster_body(slurm_cluster, subdir=tag)
        w.ok(w.admin, "POST", "/organization/admin/cluster", body, status=201)
        w.clusters.append("testbed")
    for name in SHIPPED:
        w.ok(
            w.admin,
            "POST",
            "/organization/admin/workflow/template",
            {"template": shipped_template(name)},
            status=201,
        )
    return w
