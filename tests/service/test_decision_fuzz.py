"""Property-based calls of every decision endpoint (schemathesis) through the real hub and proxy.

An organization of its own (``dec-fuzz``) with a local cluster, a priced one, and a template, so
generated ``decide`` bodies that name the template reach the whole decision flow (prediction,
waits, cost, energy, ranking, advice, the store) rather than stopping at ``unknown_template``.
Calls are made as the platform's solution-admin (every scope, so the input reaches the domain
layer). Bounded and deterministic (``derandomize``), about half a minute. Checks: no 5xx,
documented status codes and content types, answers conforming to their schemas; and the
organization's policy, which generated ``PUT`` bodies change, is restored afterwards.
"""

from __future__ import annotations

import time
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

from jupyter_heroes.service.openapi import endpoints
from jupyter_heroes.testing.plugin_hub import PLATFORM_ADMIN

from .conftest import World

MODULE = "jupyter_heroes.service.apihandlers.decision"
ORG = "dec-fuzz"
DECIDE = "/organization/decision/decide"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
BUDGET = {GenerationMode.POSITIVE: 12, GenerationMode.NEGATIVE: 5}
TEMPLATE = {
    "heroes_template": 1,
    "name": "fuzz-flow",
    "version": 1,
    "application": "fuzz-flow",
    "parameters": {"n": {"type": "integer", "default": 2, "min": 1, "max": 8}},
    "steps": [
        {
            "name": "prep",
            "command": ["echo", "{{ n }}"],
            "resources": {"nodes": 1, "tasks": 1, "memory_mb": 128, "walltime": "00:05:00"},
        },
        {
            "name": "run",
            "command": ["echo", "run"],
            "depends_on": ["prep"],
            "array": "{{ n }}",
            "resources": {"nodes": 1, "tasks": 2, "memory_mb": 256, "walltime": "00:20:00"},
        },
    ],
}


@pytest.fixture(scope="module")
def fuzz_org(world: World, tmp_path_factory: pytest.TempPathFactory) -> str:
    scratch = tmp_path_factory.mktemp("dec-fuzz")
    world.ok(PLATFORM_ADMIN, "POST", "/heroes/admin/organizations", {"name": ORG}, status=201)
    for name, site in (
        (
            "fuzz-cheap",
            {"offer": {"currency": "EUR", "core_hour": "0.05"}, "grid_zone": "PL", "typical_wait_s": 60},
        ),
        ("fuzz-fast", {"offer": {"currency": "USD", "node_hour": "3"}, "relative_speed": 2.0, "pue": 1.2}),
    ):
        world.ok(
            PLATFORM_ADMIN,
            "POST",
            "/organization/admin/cluster",
            {
                "name": name,
                "transport": "local",
                "scheduler": "local",
                "scratch_root": str(scratch / name),
                "queues": [{"name": "q", "max_nodes": 2, "cpus_per_node": 4, "max_walltime_s": 7200}],
                "site": site,
            },
            status=201,
            org=ORG,
        )
    world.ok(
        PLATFORM_ADMIN,
        "POST",
        "/organization/admin/workflow/template",
        {"template": TEMPLATE},
        status=201,
        org=ORG,
    )
    return ORG


def _steer(case: schemathesis.Case, mode: GenerationMode) -> None:
    """Positive decide bodies name the real template (else nearly all stop at unknown_template)."""
    case.headers = {**(case.headers or {}), "X-Heroes-Organization": ORG}
    case.query = {k: v for k, v in (case.query or {}).items() if k != "organization"} or None
    if mode is GenerationMode.POSITIVE and case.path == DECIDE and isinstance(case.body, dict):
        case.body["template"] = TEMPLATE["name"]
        case.body.pop("version", None)
        if not set(case.body.get("params") or {}) <= {"n"}:
            case.body.pop("params")


@pytest.mark.timeout(240)
def test_schemathesis_finds_no_server_error_in_the_decision_api(world: World, fuzz_org: str) -> None:
    doc = requests.get(f"{world.hub.api_url}/openapi.json", timeout=30).json()
    schema = schemathesis.openapi.from_dict(doc)
    headers = {"Authorization": f"token {world.tokens[PLATFORM_ADMIN]}", "X-Heroes-Organization": fuzz_org}
    mine = {path for path, h, _m, _ep in endpoints() if h.__module__ == MODULE}
    failures: list[str] = []
    statuses: dict[str, list[int]] = {}
    t0 = time.monotonic()

    def run(operation: Any, mode: GenerationMode) -> None:
        @settings(
            max_examples=BUDGET[mode],
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
            print_blob=False,
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def exercise(case: schemathesis.Case) -> None:
            _steer(case, mode)
            response = case.call(base_url=world.hub.api_url, headers=headers, timeout=60)
            statuses.setdefault(operation.label, []).append(response.status_code)
            case.validate_response(response, checks=CHECKS, headers=headers)

        try:
            exercise()
        except Unsatisfiable:
            if mode is GenerationMode.POSITIVE:
                failures.append(f"{operation.label}: no valid example could be generated")
        except Exception as e:  # collect every operation's failure, then report them together
            failures.append(f"{operation.label} ({mode.value}): {str(e)[:1500]}")

    try:
        for result in schema.get_all_operations():
            operation = result.ok()
            if operation.path in mine:
                for mode in BUDGET:
                    run(operation, mode)
    finally:
        world.ok(PLATFORM_ADMIN, "PUT", "/organization/decision/policies", {}, org=fuzz_org)
    elapsed = time.monotonic() - t0
    assert not failures, "\n\n".join(failures)
    assert {op for op in statuses} >= {f"{m.upper()} {p}" for p, _h, m, _ep in endpoints() if p in mine}
    decided = statuses[f"POST {DECIDE}"]
    assert 201 in decided, decided  # generated bodies did reach a decision, not only refusals
    assert elapsed < 90, f"schemathesis took {elapsed:.0f}s"
