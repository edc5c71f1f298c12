"""Property-based run of schemathesis against the served OpenAPI document, through the real proxy.

Bounded (a dozen valid and a few invalid examples per operation, about half a minute) and
deterministic (``derandomize``). It calls as a platform solution-admin, so every operation gets past
authorization and reaches its input handling and database work. Checks: no 5xx, documented status
codes and content types, answers conforming to their schemas.
"""

from __future__ import annotations

import time

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

from jupyter_heroes.testing.plugin_hub import PLATFORM_ADMIN

from .conftest import World
from .endpoints import admin_paths

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
BUDGET = {GenerationMode.POSITIVE: 12, GenerationMode.NEGATIVE: 5}


@pytest.mark.timeout(300)
def test_schemathesis_finds_no_server_error(world: World) -> None:
    doc = requests.get(f"{world.hub.api_url}/openapi.json", timeout=30).json()
    schema = schemathesis.openapi.from_dict(doc)
    headers = {"Authorization": f"token {world.tokens[PLATFORM_ADMIN]}"}
    base_url = world.hub.api_url
    failures: list[str] = []
    calls = 0
    unsatisfiable: list[str] = []
    t0 = time.monotonic()
    mine = admin_paths()
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path not in mine:
            continue  # other modules' endpoints are fuzzed by their own tests
        for mode, examples in BUDGET.items():

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
                nonlocal calls
                response = case.call(base_url=base_url, headers=headers, timeout=30)
                calls += 1
                case.validate_response(response, checks=CHECKS, headers=headers)

            try:
                exercise()
            except Unsatisfiable:
                # hypothesis found no way to make this operation's input invalid (e.g. no parameters)
                if mode is GenerationMode.POSITIVE:
                    failures.append(f"{operation.label}: no valid example could be generated")
                unsatisfiable.append(operation.label)
            except Exception as e:  # collect every operation's failure, then report them together
                failures.append(f"{operation.label} ({mode.value}): {str(e)[:1500]}")
    elapsed = time.monotonic() - t0
    assert not failures, "\n\n".join(failures)
    assert calls >= len(mine) * 2, calls
    assert len(unsatisfiable) <= 4, unsatisfiable
    assert elapsed < 120, f"schemathesis took {elapsed:.0f}s for {calls} calls"
