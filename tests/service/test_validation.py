"""Bad input on every endpoint with a body: a 400 whose message names the problem, and no change."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jupyter_heroes.testing.plugin_hub import PLATFORM_ADMIN, TEST_MAX_BODY

from .conftest import ACME, World
from .endpoints import Op, all_ops, example

BODY_OPS = [op for op in all_ops() if op.ep.body is not None]


def caller(op: Op) -> tuple[str, str | None]:
    """A user allowed to call *op* (so that only the input is wrong)."""
    return (PLATFORM_ADMIN, None) if op.ep.platform else ("acme-admin", ACME)


def wrong_type(value: Any) -> Any:
    return 12345 if not isinstance(value, int) or isinstance(value, bool) else "not-a-number"


def assert_400(r: Any, reason: str, *words: str) -> None:
    assert r.status_code == 400, r.text
    err = r.json()
    assert set(err) == {"message", "reason"}, err
    assert err["reason"] == reason, err
    for w in words:
        assert w in err["message"], err
    assert "Traceback" not in r.text


@pytest.mark.parametrize("op", BODY_OPS, ids=[op.id for op in BODY_OPS])
def test_bad_bodies_are_refused_with_a_clear_message(world: World, op: Op) -> None:
    user, org = caller(op)
    path, body = example(world, op)
    call = op.method.upper()

    r = world.call(user, call, path, data=b'{"name": ', org=org)
    assert_400(r, "invalid_json", "malformed JSON", "line 1")

    r = world.call(user, call, path, data=b"", org=org)
    assert_400(r, "invalid_json", "empty")

    r = world.call(user, call, path, data=b"[1, 2]", org=org)
    assert_400(r, "invalid_field", "object")

    r = world.call(user, call, path, data=b'{"a": NaN}', org=org)
    assert r.status_code == 400, r.text

    r = world.call(user, call, path, {**body, "bogus_field": 1}, org=org)
    assert_400(r, "invalid_field", "unknown field", "'bogus_field'")

    field = next(iter(body))
    r = world.call(user, call, path, {**body, field: wrong_type(body[field])}, org=org)
    assert_400(r, "invalid_field", f"'{field}'")

    text_field = next((k for k, v in body.items() if isinstance(v, str)), None)
    if text_field:
        r = world.call(user, call, path, {**body, text_field: "a\u0000b"}, org=org)
        assert_400(r, "invalid_field", f"'{text_field}'")

    big = json.dumps({**body, "padding": "x" * (TEST_MAX_BODY + 1)}).encode()
    r = world.call(user, call, path, data=big, org=org)
    assert_400(r, "body_too_large", str(TEST_MAX_BODY), "max_body_size")

    r = world.call(user, call, path, data=b"name=x", org=org, headers={"Content-Type": "text/plain"})
    assert_400(r, "unsupported_content_type", "application/json")


def test_nothing_was_created_by_refused_bodies(world: World) -> None:
    names = {u["name"] for u in world.ok("acme-admin", "GET", "/organization/admin/users")}
    assert "val-new-user" not in names
    groups = {g["name"] for g in world.ok("acme-admin", "GET", "/organization/admin/groups")}
    assert "val-new-group" not in groups
    orgs = {o["name"] for o in world.ok(PLATFORM_ADMIN, "GET", "/heroes/admin/organizations")}
    assert "val-new-org" not in orgs


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"username": "Bad Name"}, ["'username'", "lowercase"]),
        ({"username": "ok-name", "roles": "researcher"}, ["'roles'", "array"]),
        ({"username": "ok-name", "roles": ["researcher", "researcher"]}, ["'roles'", "duplicate"]),
        (
            {"username": "ok-name", "projects": ["no-such-project"]},
            ["no-such-project", "POST /organization/admin/groups"],
        ),
        (
            {"username": "ok-name", "roles": ["no-such-role"]},
            ["no-such-role", "GET /organization/admin/roles"],
        ),
        ({"username": "ok-name", "roles": ["solution-admin"]}, ["solution-admin", "client organization"]),
        ({}, ["missing required field 'username'"]),
    ],
)
def test_user_fields_are_checked(world: World, body: dict, words: list[str]) -> None:
    r = world.call("acme-admin", "POST", "/organization/admin/users", body)
    assert r.status_code == 400, r.text
    for w in words:
        assert w in r.json()["message"], r.json()
    assert "ok-name" not in {u["name"] for u in world.ok("acme-admin", "GET", "/organization/admin/users")}


@pytest.mark.parametrize(
    "name",
    ["ab", "Upper", "1starts-with-digit", "ends-", "has_underscore", "has.dot", "x" * 64, "spa ce", "ünï"],
)
def test_names_must_be_dns_and_s3_safe(world: World, name: str) -> None:
    r = world.call(PLATFORM_ADMIN, "POST", "/heroes/admin/organizations", {"name": name})
    assert r.status_code == 400, r.text
    assert "'name'" in r.json()["message"] and "lowercase" in r.json()["message"]
    r = world.call("acme-admin", "POST", "/organization/admin/groups", {"name": name})
    assert r.status_code == 400, r.text


def test_unknown_paths_and_methods_answer_json(world: World) -> None:
    for method in ("GET", "POST", "DELETE"):
        r = world.call("acme-admin", method, "/no/such/endpoint", {})
        assert r.status_code == 404 and r.json()["reason"] == "not_found", r.text
        assert "openapi.json" in r.json()["message"]
    r = world.call("acme-admin", "PUT", "/organization/admin/users", {})
    assert r.status_code == 405, r.text
    assert r.json()["reason"] == "method_not_allowed"
    assert r.headers["Allow"] == "GET, POST" and "GET, POST" in r.json()["message"]
    r = world.call("acme-admin", "DELETE", "/organization/admin/audit")
    assert r.status_code == 405 and r.headers["Allow"] == "GET"


def test_bad_path_and_query_values_are_not_found_or_400(world: World) -> None:
    r = world.call("acme-admin", "GET", "/organization/admin/cluster/not-a-number")
    assert r.status_code == 404 and r.json()["reason"] == "not_found"
    r = world.call("acme-admin", "GET", "/organization/admin/users/%00bad")
    assert r.status_code == 404
    r = world.call("acme-admin", "GET", "/organization/admin/audit", params={"limit": "ten"})
    assert r.status_code == 400 and "'limit'" in r.json()["message"]
    r = world.call("acme-admin", "GET", "/organization/admin/audit", params={"limit": "0"})
    assert r.status_code == 400 and "at least 1" in r.json()["message"]
    # tornado strips control characters from query values: a NUL never reaches the database
    r = world.call("acme-admin", "GET", "/organization/admin/audit", params={"user": "acme-\x00admin"})
    assert r.status_code == 200 and all(e["user"] == "acme-admin" for e in r.json())
