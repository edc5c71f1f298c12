"""Strategies rank a designed set of candidates differently; policies gate user choices."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from jupyter_heroes.decision.ranking import (
    STRATEGIES,
    DecisionError,
    Policy,
    PolicyError,
    UnknownStrategy,
    UserChoice,
    check_weights,
    fmt_duration,
    normalise,
    rank,
    resolve_strategy,
)

# Five designed candidates, each best on exactly one criterion, or (middle) on none but good on all:
#   sprint: fast, expensive, dirty grid       miser: slow, cheap, middling
#   frugal: lowest energy (efficient nodes)   breeze: green grid, average otherwise
#   middle: second-best on everything
CANDIDATES = pd.DataFrame(
    {
        "key": ["sprint/q", "miser/q", "frugal/q", "breeze/q", "middle/q"],
        "end_s": [1800.0, 20000.0, 9000.0, 8000.0, 5000.0],
        "cost_value": [40.0, 2.0, 12.0, 15.0, 6.0],
        "energy_kwh": [9.0, 7.0, 3.0, 6.0, 4.0],
        "co2e_kg": [5.4, 2.0, 1.2, 0.1, 0.6],
    }
)


@pytest.mark.parametrize(
    ("strategy", "winner"),
    [
        ("fastest", "sprint/q"),
        ("cheapest", "miser/q"),
        ("lowest-energy", "frugal/q"),
        ("lowest-carbon", "breeze/q"),
    ],
)
def test_each_single_criterion_strategy_picks_its_own_winner(strategy, winner):
    out = rank(CANDIDATES, strategy, Policy().weights, "EUR")
    assert out.iloc[0]["key"] == winner
    assert list(out["rank"]) == [1, 2, 3, 4, 5]
    assert out.iloc[0]["score"] == 0.0


def test_the_winners_differ_across_strategies():
    winners = {s: rank(CANDIDATES, s, Policy().weights, "EUR").iloc[0]["key"] for s in STRATEGIES}
    assert winners["weighted"] == "middle/q"  # best on nothing, second on everything
    assert len(set(winners.values())) == 5  # five strategies, five different recommendations
    # weights change the outcome: on cost and energy only, frugal (best on energy) edges out middle
    w = {"time": 0, "cost": 1, "energy": 1, "carbon": 0}
    out = rank(CANDIDATES, "weighted", check_weights(w), "EUR")
    assert list(out["key"][:2]) == ["frugal/q", "middle/q"]
    assert out.iloc[0]["why"] == "best weighted score (3rd on cost, best on energy)"
    # all weight on time: the weighted strategy agrees with fastest
    assert rank(CANDIDATES, "weighted", check_weights({"time": 1}), "EUR").iloc[0]["key"] == "sprint/q"


def test_why_is_a_short_sentence():
    fast = rank(CANDIDATES, "fastest", Policy().weights, "EUR").set_index("key")["why"]
    assert fast["sprint/q"] == "ends first, 53 min before middle/q"
    assert fast["miser/q"] == "ends 5 h 03 min after the fastest"
    cheap = rank(CANDIDATES, "cheapest", Policy().weights, "EUR").set_index("key")["why"]
    assert cheap["miser/q"] == "cheapest at 2.00 EUR"
    assert cheap["sprint/q"] == "38.00 EUR more than the cheapest"
    carbon = rank(CANDIDATES, "lowest-carbon", Policy().weights, "EUR").set_index("key")["why"]
    assert carbon["breeze/q"] == "lowest carbon at 0.1 kg CO2e"
    weighted = rank(CANDIDATES, "weighted", Policy().weights, "EUR").set_index("key")["why"]
    assert weighted.str.contains("on time").all() and not weighted.str.contains("on energy").any()


def test_unknown_values_rank_last_and_say_so():
    df = CANDIDATES.copy()
    df.loc[1, "cost_value"] = math.nan  # miser publishes no price
    out = rank(df, "cheapest", Policy().weights, "EUR")
    assert out.iloc[-1]["key"] == "miser/q"
    assert out.iloc[-1]["why"] == "no price published for this queue"


def test_ties_are_deterministic():
    df = pd.DataFrame(
        {
            "key": ["b/q", "a/q", "c/q"],
            "end_s": [1.0] * 3,
            "cost_value": [1.0, 1.0, 0.5],
            "energy_kwh": [1.0] * 3,
            "co2e_kg": [1.0] * 3,
        }
    )
    out = rank(df, "fastest", Policy().weights, "EUR")
    # equal on time: the tie goes to the overall equal-weight score (c is cheaper), then to the name
    assert list(out["key"]) == ["c/q", "a/q", "b/q"]


def test_normalise():
    assert list(normalise(np.array([2.0, 4.0, math.nan, 3.0]))) == [0.0, 1.0, 1.0, 0.5]
    assert list(normalise(np.array([5.0, 5.0]))) == [0.0, 0.0]
    assert list(normalise(np.array([math.nan]))) == [1.0]


def test_empty_ranking():
    out = rank(CANDIDATES.iloc[0:0], "fastest", Policy().weights, "EUR")
    assert out.empty and "rank" in out.columns


# --- policy ------------------------------------------------------------------------------------


def test_policy_defaults_and_user_choices():
    p = Policy()
    assert resolve_strategy(p, None) == ("weighted", {"time": 1.0, "cost": 1.0, "energy": 0.0, "carbon": 1.0})
    assert resolve_strategy(p, UserChoice(strategy="cheapest"))[0] == "cheapest"
    locked = Policy(strategy="lowest-carbon", allow_user_strategy=False)
    assert resolve_strategy(locked, UserChoice(strategy="lowest-carbon"))[0] == "lowest-carbon"
    with pytest.raises(
        PolicyError, match="policy sets the strategy to 'lowest-carbon'; ask an organization manager"
    ):
        resolve_strategy(locked, UserChoice(strategy="fastest"))
    open_w = Policy(allow_user_weights=True)
    assert resolve_strategy(open_w, UserChoice(weights={"carbon": 2}))[1] == {
        "time": 0.0,
        "cost": 0.0,
        "energy": 0.0,
        "carbon": 2.0,
    }


def test_user_weights_not_allowed():
    with pytest.raises(PolicyError, match="does not allow user weights") as e:
        resolve_strategy(Policy(), UserChoice(weights={"cost": 5}))
    assert e.value.reason == "not-allowed-by-policy"
    # sending the policy's own weights back is not a change
    assert resolve_strategy(Policy(), UserChoice(weights=dict(Policy().weights)))[0] == "weighted"


def test_unknown_strategy():
    with pytest.raises(
        UnknownStrategy, match="unknown strategy 'greenest'; choose one of fastest, cheapest"
    ) as e:
        resolve_strategy(Policy(), UserChoice(strategy="greenest"))
    assert e.value.reason == "unknown-strategy"
    with pytest.raises(UnknownStrategy):
        rank(CANDIDATES, "random", Policy().weights, "EUR")
    with pytest.raises(UnknownStrategy):
        Policy.from_dict({"strategy": "best"})


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"time": -1}, r"weights.time: a non-negative number"),
        ({"speed": 1}, r"unknown criteria \['speed'\]"),
        ({"time": 0, "cost": 0}, "at least one weight must be above 0"),
        ({"time": float("nan")}, "non-negative number"),
        ({"time": True}, "non-negative number"),
        ({}, "a mapping"),
        ([1], "a mapping"),
    ],
)
def test_bad_weights(weights, message):
    with pytest.raises(DecisionError, match=message):
        check_weights(weights)


def test_policy_from_dict():
    p = Policy.from_dict(
        {
            "strategy": "cheapest",
            "weights": {"cost": 1},
            "platforms": {"heat-pipeline": ["hpc1"]},
            "allow_user_weights": True,
        }
    )
    assert p.platforms == {"heat-pipeline": ("hpc1",)} and p.allow_user_weights
    for bad, msg in [
        ({"colour": 1}, "unknown field"),
        ({"allow_user_weights": "yes"}, "true or false"),
        ({"platforms": {"t": "hpc1"}}, "platforms"),
        ({"intensity_basis": "average"}, "intensity_basis"),
    ]:
        with pytest.raises(DecisionError, match=msg):
            Policy.from_dict(bad)


def test_fmt_duration():
    assert [fmt_duration(s) for s in (5, 125, 3 * 3600 + 60, 3 * 86400)] == [
        "5 s",
        "2 min",
        "3 h 01 min",
        "3 d 0 h",
    ]
