"""Every declared API operation with a concrete path and a valid example body, for table-driven tests.

The list comes from the service's own declarations (:func:`jupyter_heroes.service.openapi.endpoints`)
of the identity and administration modules, so an endpoint added to them is covered by the
authorization, validation and audit tests at once; a missing example makes :func:`example` fail
loudly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from jupyter_heroes.service.handlers import Endpoint
from jupyter_heroes.service.openapi import endpoints

from .conftest import ACME, World, template_doc

_PARAM = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True)
class Op:
    template: str
    method: str
    ep: Endpoint

    @property
    def id(self) -> str:
        return f"{self.method.upper()} {self.template}"

    @property
    def mutating(self) -> bool:
        return self.method in ("post", "put", "patch", "delete")


#: the resource modules of the identity and administration API (tested here); other modules bring
#: their own tests
MODULES = {
    f"jupyter_heroes.service.apihandlers.{m}"
    for m in ("me", "users", "groups", "roles", "clusters", "templates", "organizations", "audit")
}


def all_ops() -> list[Op]:
    return [Op(path, method, ep) for path, h, method, ep in endpoints() if h.__module__ in MODULES]


def admin_paths() -> set[str]:
    return {op.template for op in all_ops()}


#: a valid body per (template, method); names are unique so nothing collides with the world
BODIES: dict[tuple[str, str], Any] = {
    ("/organization/admin/users", "post"): {"username": "val-new-user", "roles": ["researcher"]},
    ("/organization/admin/users/{username}", "patch"): {"full_name": "Renamed"},
    ("/organization/admin/groups", "post"): {"name": "val-new-group", "description": "x"},
    ("/organization/admin/groups/{groupname}", "patch"): {"description": "changed"},
    ("/organization/admin/roles", "post"): {"name": "val-new-role", "scopes": ["custom:heroes:submit"]},
    ("/organization/admin/cluster", "post"): {
        "name": "val-new-cluster",
        "transport": "local",
        "scheduler": "local",
    },
    ("/organization/admin/workflow/template", "post"): {"template": template_doc("val-new-flow")},
    ("/heroes/admin/organizations", "post"): {"name": "val-new-org"},
    ("/heroes/admin/organizations/{org}/clients", "post"): {"description": "val client"},
    ("/heroes/admin/organizations/{org}/servers", "post"): {
        "endpoint": "127.0.0.1:9000",
        "secure": False,
        "access_key": "val-access",
        "secret_key": "val-secret-key-never-shown",
    },
}


def acme_params(world: World) -> dict[str, str]:
    """Path parameters naming objects of acme (that other organizations must not reach)."""
    return {
        "username": "acme-res",
        "groupname": "wing",
        "rolename": "acme-viewer",
        "cluster_id": str(world.acme_cluster["id"]),  # type: ignore[attr-defined]
        "template_id": str(world.acme_template["id"]),  # type: ignore[attr-defined]
        "org": ACME,
        "client_id": f"{ACME}-000000000000",
        "server_id": "999999",
    }


def example(world: World, op: Op, params: dict[str, str] | None = None) -> tuple[str, Any]:
    """(concrete path, valid body or None) for *op*."""
    values = params or acme_params(world)
    path = _PARAM.sub(lambda m: values[m.group(1)], op.template)
    if op.ep.body is None:
        return path, None
    key = (op.template, op.method)
    assert key in BODIES, f"tests/service/endpoints.py: add an example body for {op.id}"
    return path, BODIES[key]
