"""Every marketplace, budget and usage endpoint, table-driven (like ``test_authz``, ``test_validation``
and ``test_audit`` for the administration API): D3.1 Table 1 roles get 403 where the table denies,
other organizations get 404, bad bodies get 400 and change nothing, every mutating call is audited.

The operations come from the service's own declarations, so an endpoint added to these modules is
covered at once (a missing example body fails loudly)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from jupyter_heroes import roles
from jupyter_heroes.service.openapi import endpoints
from jupyter_heroes.testing.plugin_hub import PLATFORM_ADMIN, TEST_MAX_BODY

from .conftest import ACME, ACME_ROLE_USERS, GLOBEX, World
from .endpoints import Op
from .market_world import CLIENT, CLOUD, HPC, SOFT, USERS, Market, market_of

MODULES = {f"jupyter_heroes.service.apihandlers.{m}" for m in ("offers", "applications", "budgets", "usage")}
OPS = [Op(path, method, ep) for path, h, method, ep in endpoints() if h.__module__ in MODULES]
REVENUE = "GET /marketplace/revenue"
#: what the revenue endpoint checks itself (either scope shows the matching part of the revenue)
VENDOR_SCOPES = {roles.SCOPE_PREFIX + "resources:publish", roles.SCOPE_PREFIX + "apps:publish"}
_PARAM = re.compile(r"\{([a-z_]+)\}")

#: a valid body per (template, method), unique names; never created by these tests
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("/marketplace/offers", "post"): {
        "name": "val-offer",
        "cluster": "hpc-one",
        "queue": "debug",
        "price": {"currency": "EUR", "fixed": "1"},
    },
    ("/marketplace/offers/{offer_id}", "patch"): {"terms": "val terms"},
    ("/marketplace/applications", "post"): {
        "name": "val-app",
        "image": "docker://registry.example.org/val:1",
    },
    ("/marketplace/applications/{application_id}", "patch"): {"licence": "val licence"},
    ("/organization/budgets", "post"): {
        "period_start": "2095-01-01T00:00:00Z",
        "limit": "10",
        "period_end": "2096-01-01T00:00:00Z",
    },
    ("/organization/budgets/{budget_id}", "patch"): {"on_exhausted": "cancel"},
    ("/organization/budgets/{budget_id}/credits", "post"): {"reference": "val-po", "amount": "1"},
}


@pytest.fixture
def market(world: World) -> Market:
    return market_of(world)


def params_for(
    m: Market, offer: str = "hpc-debug", app: str = "cfd-solver", budget: str = ACME
) -> dict[str, str]:
    return {
        "offer_id": str(m.offers[offer]["id"]),
        "application_id": str(m.apps[app]["id"]),
        "budget_id": str(m.budgets[budget]["id"]),
    }


def example(m: Market, op: Op, params: dict[str, str]) -> tuple[str, Any]:
    path = _PARAM.sub(lambda x: params[x.group(1)], op.template)
    if op.ep.body is None:
        return path, None
    assert (op.template, op.method) in BODIES, f"add an example body for {op.id}"
    return path, BODIES[(op.template, op.method)]


def test_every_endpoint_is_covered() -> None:
    ids = {op.id for op in OPS}
    assert len(OPS) >= 24
    assert {op.id for op in OPS if op.ep.body is not None} == {f"{m.upper()} {t}" for t, m in BODIES}
    assert {op.id for op in OPS if op.ep.scope is None} == {
        "GET /marketplace/offers",
        "GET /marketplace/offers/{offer_id}",
        "GET /marketplace/applications",
        "GET /marketplace/applications/{application_id}",
        REVENUE,
    }
    assert all(op.ep.action for op in OPS if op.mutating), [
        op.id for op in OPS if op.mutating and not op.ep.action
    ]
    assert "POST /organization/admin/offers/{offer_id}/enable" in ids


def allowed(scopes: frozenset[str], op: Op) -> bool:
    if op.id == REVENUE:
        return bool(scopes & VENDOR_SCOPES)
    return op.ep.scope is None or op.ep.scope in scopes


#: (user, roles' organization kind, organization to act in, which objects to name)
CALLERS: list[tuple[str, str, str | None, dict[str, str]]] = [
    *[(u, "client", ACME, {}) for _r, u in sorted(ACME_ROLE_USERS.items())],
    ("tenant-tom", "platform", ACME, {}),  # reaches acme with the platform's scopes
    ("infra-ian", "platform", None, {}),  # its own (platform) organization, which sees every item
    ("hpc-pub", "provider", None, {"app": "cloud-viz"}),
    ("cloud-pub", "provider", None, {"offer": "cloud-c5", "app": "cloud-viz"}),
    ("soft-pub", "provider", None, {"offer": "cloud-c5"}),
]


def role_names(user: str) -> list[str]:
    if user in USERS:
        return USERS[user][1]
    return [r for r, u in ACME_ROLE_USERS.items() if u == user] or {
        "tenant-tom": ["tenant-admin"],
        "infra-ian": ["infrastructure-admin"],
    }[user]


@pytest.mark.parametrize(("user", "kind", "org", "objects"), CALLERS, ids=[c[0] for c in CALLERS])
def test_roles_get_403_where_table_1_denies(
    market: Market, user: str, kind: str, org: str | None, objects: dict[str, str]
) -> None:
    scopes = frozenset(roles.scopes_for_roles(role_names(user)))
    params = params_for(market, **objects)
    denied, granted = [], []
    for op in OPS:
        path, body = example(market, op, params)
        if allowed(scopes, op):
            if op.method == "get":
                r = market.call(user, "GET", path, org=org)
                assert r.status_code == 200, f"{user} {op.id}: {r.status_code} {r.text}"
                granted.append(op.id)
            continue
        r = market.call(user, op.method.upper(), path, body, org=org)
        assert r.status_code == 403, f"{user} {op.id}: {r.status_code} {r.text}"
        err = r.json()
        assert err["reason"] == "missing_scope", err
        assert (op.ep.scope or "custom:heroes:resources:publish") in err["message"], err
        denied.append(op.id)
    assert denied and granted, user  # everyone browses the marketplace; nobody does everything
    if user in ("acme-admin", "acme-bill", "tenant-tom"):
        assert "GET /organization/usage" in granted and "GET /organization/budgets/{budget_id}" in granted
    if user in ("hpc-pub", "cloud-pub", "soft-pub"):
        assert REVENUE in granted and "GET /organization/budgets" in denied


#: who holds each scope in an organization of their own (to try it on another organization's objects)
FOREIGN = {
    None: ("globex-admin", GLOBEX),
    "billing": ("globex-admin", GLOBEX),
    "submit": ("globex-res", GLOBEX),
    "resources:publish": ("cloud-pub", CLOUD),
    "apps:publish": ("cloud-pub", CLOUD),
}


@pytest.mark.parametrize("op", OPS, ids=[op.id for op in OPS])
def test_other_organizations_get_404(market: Market, op: Op) -> None:
    """The objects: hpc's offer (published to the client and acme), soft's application (likewise),
    the client's project budget; the callers hold the scope the operation needs in their own."""
    short = (op.ep.scope or "").removeprefix(roles.SCOPE_PREFIX) or None
    if op.id == REVENUE:
        short = "resources:publish"
    user, own = FOREIGN[short]
    owner = {"resources:publish": HPC, "apps:publish": SOFT}.get(short or "", CLIENT)
    path, body = example(market, op, params_for(market, budget="lab"))
    r = market.call(user, op.method.upper(), path, body, org=owner)
    assert r.status_code == 404 and r.json()["reason"] == "not_found", r.text
    if "{" in op.template:
        r = market.call(user, op.method.upper(), path, body, org=own)
        assert r.status_code == 404, r.text
        assert owner not in r.text and "hpc-debug" not in r.text and "cfd-solver" not in r.text


def test_objects_survived_foreign_attempts(market: Market) -> None:
    hpc = market.ok("hpc-pub", "GET", f"/marketplace/offers/{market.offers['hpc-debug']['id']}")
    assert hpc["terms"] == "Best effort." and hpc["state"] == "active"
    app = market.ok("soft-pub", "GET", f"/marketplace/applications/{market.apps['cfd-solver']['id']}")
    assert app["licence"] == "One run per fee." and app["state"] == "active"
    lab = market.ok("mkt-bill", "GET", f"/organization/budgets/{market.budgets['lab']['id']}")
    assert (lab["limit"], lab["on_exhausted"], lab["credits"]) == ("500.00", "hold", "0.00")
    enabled = {e["name"] for e in market.ok("mkt-admin", "GET", "/organization/admin/offers")}
    assert {"hpc-debug", "cloud-c5"} <= enabled


BODY_OPS = [op for op in OPS if op.ep.body is not None]


def caller(m: Market, op: Op) -> tuple[str, dict[str, str]]:
    """A user allowed to call *op* (so only the input is wrong), and objects they own."""
    if op.ep.scope and op.ep.scope.endswith("resources:publish"):
        return "hpc-pub", params_for(m)
    if op.ep.scope and op.ep.scope.endswith("apps:publish"):
        return "soft-pub", params_for(m)
    return "mkt-bill", params_for(m, budget="lab")


def wrong_type(value: Any) -> Any:
    return 12345 if not isinstance(value, int) or isinstance(value, bool) else "not-a-number"


@pytest.mark.parametrize("op", BODY_OPS, ids=[op.id for op in BODY_OPS])
def test_bad_bodies_are_400_with_a_message(market: Market, op: Op) -> None:
    user, params = caller(market, op)
    path, body = example(market, op, params)
    call = op.method.upper()

    def bad(reason: str, *words: str, **kw: Any) -> None:
        r = market.call(user, call, path, **kw)
        assert r.status_code == 400, r.text
        err = r.json()
        assert set(err) == {"message", "reason"} and err["reason"] == reason, err
        for w in words:
            assert w in err["message"], err

    bad("invalid_json", "malformed JSON", "line 1", data=b'{"name": ')
    bad("invalid_json", "empty", data=b"")
    bad("invalid_field", "object", data=b"[1, 2]")
    bad("invalid_json", data=b'{"limit": NaN}')
    bad("invalid_field", "unknown field", "'bogus_field'", json={**body, "bogus_field": 1})
    first = next(iter(body))
    bad("invalid_field", f"'{first}'", json={**body, first: wrong_type(body[first])})
    bad("invalid_field", f"'{first}'", json={**body, first: "a\u0000b"})
    bad(
        "body_too_large",
        str(TEST_MAX_BODY),
        data=json.dumps({**body, "pad": "x" * (TEST_MAX_BODY + 1)}).encode(),
    )
    bad("unsupported_content_type", "application/json", data=b"a=b", headers={"Content-Type": "text/plain"})


def test_nothing_was_created_by_refused_bodies(market: Market) -> None:
    assert "val-offer" not in {o["name"] for o in market.ok("hpc-pub", "GET", "/marketplace/offers")}
    assert "val-app" not in {a["name"] for a in market.ok("soft-pub", "GET", "/marketplace/applications")}
    hpc = market.offers["hpc-debug"]
    assert all(
        v["terms"] != "val terms"
        for v in market.ok("hpc-pub", "GET", f"/marketplace/offers/{hpc['id']}/versions")
    )
    budgets = market.ok("mkt-bill", "GET", "/organization/budgets")
    assert all(b["period_start"] != "2095-01-01T00:00:00Z" and b["on_exhausted"] == "hold" for b in budgets)
    assert market.ok("mkt-bill", "GET", f"/organization/budgets/{market.budgets['lab']['id']}/credits") == []


def test_every_mutating_call_is_audited_even_when_denied(market: Market) -> None:
    """acme's researcher tries every mutating endpoint: each attempt is refused and recorded."""
    mutating = [op for op in OPS if op.mutating]
    before = max((e.id for e in market.world.audit_rows()), default=0)
    prefix = market.world.hub.api_url.split("://", 1)[1].split("/", 1)[1]
    paths = []
    for op in mutating:
        path, body = example(market, op, params_for(market))
        r = market.call("acme-res", op.method.upper(), path, body)
        assert r.status_code == 403, f"{op.id}: {r.text}"
        paths.append(f"/{prefix}{path}")
    rows = [e for e in market.world.audit_rows(user="acme-res") if e.id > before]
    assert [(e.method, e.path, e.action) for e in rows] == [
        (op.method.upper(), p, op.ep.action) for op, p in zip(mutating, paths, strict=True)
    ]
    assert all((e.status, e.outcome, e.detail["reason"]) == (403, "denied", "missing_scope") for e in rows)
    trail = market.ok(
        "acme-admin", "GET", "/organization/admin/audit", params={"user": "acme-res", "limit": 1000}
    )
    assert {e["path"] for e in trail} >= set(paths)


#: a client organization of its own: the fuzzer creates budgets and enables offers there
FUZZ = "mkt-fuzz"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.mark.timeout(300)
def test_schemathesis_finds_no_server_error(market: Market) -> None:
    """Bounded, deterministic property-based calls of every operation as the platform admin (who
    passes authorization, so the input reaches the domain layer), in an organization of its own."""
    if not market.world.audit_rows(action="organization.create", target=FUZZ):
        market.ok(PLATFORM_ADMIN, "POST", "/heroes/admin/organizations", {"name": FUZZ}, status=201)
    doc = requests.get(f"{market.world.hub.api_url}/openapi.json", timeout=30).json()
    schema = schemathesis.openapi.from_dict(doc)
    headers = {"Authorization": f"token {market.world.tokens[PLATFORM_ADMIN]}", "X-Heroes-Organization": FUZZ}
    mine = {op.template for op in OPS}
    failures: list[str] = []
    statuses: list[int] = []
    t0 = time.monotonic()

    def run(operation: Any, mode: GenerationMode, examples: int, checks: list[Any]) -> None:
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
            print_blob=False,
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def exercise(case: schemathesis.Case) -> None:
            case.headers = {**(case.headers or {}), "X-Heroes-Organization": FUZZ}
            case.query = {k: v for k, v in (case.query or {}).items() if k != "organization"}
            response = case.call(base_url=market.world.hub.api_url, headers=headers, timeout=30)
            statuses.append(response.status_code)
            case.validate_response(response, checks=checks, headers=headers)

        try:
            exercise()
        except Unsatisfiable:
            if mode is GenerationMode.POSITIVE:
                failures.append(f"{operation.label}: no valid example could be generated")
        except Exception as e:  # collect every operation's failure, then report them together
            failures.append(f"{operation.label} ({mode.value}): {str(e)[:1500]}")

    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path not in mine:
            continue
        # CSV answers are documented in the description only (openapi.py declares JSON answers)
        declared = doc["paths"][operation.path][operation.method.lower()]["parameters"]
        checks = CHECKS[:2] if any(p["name"] == "format" for p in declared) else CHECKS
        run(operation, GenerationMode.POSITIVE, 6, checks)
        run(operation, GenerationMode.NEGATIVE, 3, checks)
    assert not failures, "\n\n".join(failures)
    assert len(statuses) >= len(OPS) * 2, len(statuses)
    assert sum(200 <= c < 300 for c in statuses) >= len(OPS), sorted(statuses)  # not only refusals
    assert time.monotonic() - t0 < 120


def test_docs_list_every_endpoint_action_and_reason() -> None:
    root = Path(__file__).resolve().parents[2]
    api = (root / "docs" / "api.md").read_text()
    for op in OPS:
        row = next((ln for ln in api.splitlines() if f"`{op.template}`" in ln), None)
        assert row is not None and op.method.upper() in row, f"docs/api.md: no {op.id} row"
    billing = (root / "docs" / "admin" / "billing.md").read_text()
    for action in {op.ep.action for op in OPS if op.ep.action}:
        assert f"`{action}`" in billing, f"docs/admin/billing.md does not name the audit action {action}"
    src = "\n".join(
        (root / "jupyter_heroes" / "service" / "apihandlers" / f"{m}.py").read_text()
        for m in ("_market", "offers", "applications", "budgets", "usage")
    )
    reasons = set(re.findall(r'ApiError\(\s*\d{3},.*?"([a-z_]+)",?\s*\)', src, re.S))
    assert {"terms_changed", "budget_in_use", "unknown_cluster", "invalid_currency"} <= reasons
    for reason in reasons | {"not_found", "missing_scope", "unknown_project", "not_a_member"}:
        assert f"`{reason}`" in billing, f"docs/admin/billing.md does not explain reason {reason}"
