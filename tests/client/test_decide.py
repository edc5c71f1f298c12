"""``decide`` against a stand-in that answers in the shape of
:meth:`jupyter_heroes.decision.decide.Decision.to_dict`, to pin how the client and the magic turn
any such answer into a DataFrame (and refuse a service without the endpoint); the real endpoint is
exercised end to end in tests/client/test_cli.py and tests/service/test_decision_api.py."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from IPython.core.error import UsageError

from jupyter_heroes.client import HeroesClient, HeroesError
from jupyter_heroes.magics import HeroesMagics

from .test_errors import stand_in  # noqa: F401  (fixture)

OPENAPI = {"openapi": "3.0.3", "paths": {"/organization/decision/decide": {"post": {}}}}
TEMPLATES = [
    {"name": "monte-carlo-pi", "version": 1, "parameters": {"samples": {"type": "integer"}}, "steps": []}
]
DECISION = {
    "strategy": "cheapest",
    "currency": "EUR",
    "recommendation": {"cluster": "galileo", "queue": "debug"},
    "message": "",
    "candidates": [
        {
            "rank": 1,
            "cluster": "galileo",
            "queue": "debug",
            "status": "ranked",
            "cost": "0.52",
            "why": "cheapest",
        },
        {
            "rank": None,
            "cluster": "tiny",
            "queue": "q",
            "status": "infeasible",
            "cost": None,
            "why": "needs 4 cores",
        },
    ],
}


def answers(*bodies):
    return [(200, "application/json", json.dumps(b).encode()) for b in bodies]


def test_decide_returns_the_candidates_as_a_dataframe(stand_in):  # noqa: F811
    stand_in.answers = answers(OPENAPI, DECISION)
    c = HeroesClient(stand_in.url, "tok", "acme")
    df = c.decide("monte-carlo-pi", {"samples": 1000}, strategy="cheapest", deadline=None)
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["rank", "cluster", "queue", "status", "cost", "why"]
    assert df.loc[0, "cluster"] == "galileo" and df.loc[1, "status"] == "infeasible"
    assert df.attrs["recommendation"] == {"cluster": "galileo", "queue": "debug"}
    assert df.attrs["strategy"] == "cheapest"
    assert stand_in.requests[1][:2] == ("POST", "/services/heroes/api/v1/organization/decision/decide")
    assert json.loads(stand_in.bodies[1]) == {
        "template": "monte-carlo-pi",
        "params": {"samples": 1000},
        "strategy": "cheapest",
    }


def test_the_magic_types_parameters_and_splits_the_budget(stand_in):  # noqa: F811
    stand_in.answers = answers(OPENAPI, TEMPLATES, DECISION)
    magics = HeroesMagics(None, HeroesClient(stand_in.url, "tok"))
    args = magics._decide.parser.parse_intermixed_args(
        ["monte-carlo-pi", "samples=5000", "--budget", "5 eur", "--strategy", "cheapest"]
    )
    df = magics._decide(args)
    assert list(df["rank"].head(1)) == [1]
    assert json.loads(stand_in.bodies[-1]) == {
        "template": "monte-carlo-pi",
        "params": {"samples": 5000},
        "strategy": "cheapest",
        "budget": "5",
        "budget_currency": "EUR",
    }


def test_without_the_endpoint(stand_in):  # noqa: F811
    stand_in.answers = answers({"openapi": "3.0.3", "paths": {}})
    c = HeroesClient(stand_in.url, "tok")
    with pytest.raises(HeroesError, match="has no decision endpoint") as e:
        c.decide("monte-carlo-pi")
    assert e.value.reason == "not_available"
    magics = HeroesMagics(None, c)
    with pytest.raises(UsageError, match=r"choose one yourself with %heroes submit \.\.\. --cluster NAME"):
        magics._decide(magics._decide.parser.parse_intermixed_args(["monte-carlo-pi"]))
