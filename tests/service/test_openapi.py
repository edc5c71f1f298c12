"""The OpenAPI document: complete, valid, and the one the running service serves."""

from __future__ import annotations

import re

import schemathesis

from jupyter_heroes.service import apihandlers
from jupyter_heroes.service.openapi import build_openapi, endpoints

from .conftest import World

D36 = [  # the Organization admin and HEROES admin lists of D3.6 section 2, plus auth/me
    ("get", "/organization/auth/me"),
    ("get", "/organization/admin/users"),
    ("post", "/organization/admin/users"),
    ("get", "/organization/admin/users/{username}"),
    ("delete", "/organization/admin/users/{username}"),
    ("patch", "/organization/admin/users/{username}"),
    ("get", "/organization/admin/groups"),
    ("post", "/organization/admin/groups"),
    ("get", "/organization/admin/groups/{groupname}"),
    ("delete", "/organization/admin/groups/{groupname}"),
    ("patch", "/organization/admin/groups/{groupname}"),
    ("get", "/organization/admin/roles"),
    ("post", "/organization/admin/roles"),
    ("get", "/organization/admin/roles/{rolename}"),
    ("delete", "/organization/admin/roles/{rolename}"),
    ("get", "/organization/admin/cluster"),
    ("post", "/organization/admin/cluster"),
    ("get", "/organization/admin/cluster/{cluster_id}"),
    ("delete", "/organization/admin/cluster/{cluster_id}"),
    ("post", "/organization/admin/workflow/template"),
    ("delete", "/organization/admin/workflow/template/{template_id}"),
    ("get", "/heroes/admin/organizations"),
    ("post", "/heroes/admin/organizations"),
    ("get", "/heroes/admin/organizations/{org}"),
    ("delete", "/heroes/admin/organizations/{org}"),
    ("get", "/heroes/admin/organizations/{org}/clients"),
    ("post", "/heroes/admin/organizations/{org}/clients"),
    ("get", "/heroes/admin/organizations/{org}/servers"),
    ("post", "/heroes/admin/organizations/{org}/servers"),
]


def test_document_lists_the_d36_api_with_schemas() -> None:
    doc = build_openapi()
    for method, path in D36:
        op = doc["paths"][path][method]
        assert op["summary"] and op["responses"], (method, path)
        ok = [c for c in op["responses"] if c.startswith("2")]
        assert ok, (method, path)
        if method in ("post", "patch"):
            assert op["requestBody"]["content"]["application/json"]["schema"], (method, path)
        if ok[0] != "204":
            assert op["responses"][ok[0]]["content"]["application/json"]["schema"], (method, path)
        for code in ("400", "401", "403"):
            assert code in op["responses"], (method, path, code)


def test_every_route_is_documented_and_every_document_path_routed() -> None:
    routed = {h.path for _regex, h in apihandlers.default_handlers}
    assert routed == set(build_openapi()["paths"])
    for path, handler, _m, _ep in endpoints():
        regex = next(r for r, h in apihandlers.default_handlers if h is handler)
        concrete = re.sub(r"\{[a-z_]+\}", "x1", path)
        assert re.fullmatch(regex, concrete) and re.fullmatch(regex, concrete + "/")


def test_document_is_valid_openapi() -> None:
    schema = schemathesis.openapi.from_dict(build_openapi())
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) == len(endpoints())


def test_served_document_matches(world: World) -> None:
    r = world.call(None, "GET", "/openapi.json")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    assert r.json() == build_openapi("/services/heroes/api/v1")
    index = world.call(None, "GET", "/")
    assert index.status_code == 200 and index.json()["openapi"] == "/services/heroes/api/v1/openapi.json"
