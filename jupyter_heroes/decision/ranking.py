"""Rank candidates by a strategy: fastest, cheapest, lowest energy, lowest carbon, or weighted.

D3.1 section 4.7.5: an organization's managers choose the optimization strategy (or weights), or let
each user choose their own. :class:`Policy` holds the organization's choice and what users may change;
:class:`UserChoice` what a user asked for, with hard limits (deadline, budget). :func:`resolve_strategy`
refuses a user choice the policy does not allow (:class:`PolicyError`) and an unknown strategy
(:class:`UnknownStrategy`), before anything is computed.

Scoring, on the candidates that passed every hard constraint: each criterion (``time`` = expected end,
``cost``, ``energy``, ``carbon``) is scaled to [0, 1] over the candidates (0 = best, 1 = worst; an
unknown value, such as the cost of a queue with no published price, counts as worst). A single-criterion
strategy's score is its criterion; ``weighted`` sums the criteria times the normalised weights. Lower is
better. Ties go to the equal-weight score of all criteria, then to the candidate's name, so a ranking is
deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

STRATEGIES = ("fastest", "cheapest", "lowest-energy", "lowest-carbon", "weighted")
CRITERIA = ("time", "cost", "energy", "carbon")
COLUMN = {"time": "end_s", "cost": "cost_value", "energy": "energy_kwh", "carbon": "co2e_kg"}
STRATEGY_CRITERION = {
    "fastest": "time",
    "cheapest": "cost",
    "lowest-energy": "energy",
    "lowest-carbon": "carbon",
}
DEFAULT_WEIGHTS = {"time": 1.0, "cost": 1.0, "energy": 0.0, "carbon": 1.0}


class DecisionError(ValueError):
    """A decision request is invalid; ``reason`` is a short machine code for API answers."""

    reason = "invalid-decision"


class UnknownStrategy(DecisionError):
    reason = "unknown-strategy"


class PolicyError(DecisionError):
    """The user asked for something the organization's policy does not allow."""

    reason = "not-allowed-by-policy"


def check_strategy(name: Any) -> str:
    if name not in STRATEGIES:
        raise UnknownStrategy(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    return name


def check_weights(w: Any, where: str = "weights") -> dict[str, float]:
    if not isinstance(w, Mapping) or not w:
        raise DecisionError(f"{where}: a mapping of {list(CRITERIA)} to non-negative numbers")
    bad = sorted(set(w) - set(CRITERIA))
    if bad:
        raise DecisionError(f"{where}: unknown criteria {bad}; use {list(CRITERIA)}")
    out = {}
    for k, v in w.items():
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise DecisionError(f"{where}.{k}: a non-negative number, got {v!r}")
        out[k] = float(v)
    if sum(out.values()) <= 0:
        raise DecisionError(f"{where}: at least one weight must be above 0")
    return {k: out.get(k, 0.0) for k in CRITERIA}


@dataclass(frozen=True)
class Policy:
    """An organization's decision policy. ``platforms`` maps a template name to the clusters its
    managers allow for it (a template not listed may run on every enrolled cluster)."""

    strategy: str = "weighted"
    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    allow_user_strategy: bool = True
    allow_user_weights: bool = False
    platforms: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    currency: str = "EUR"
    intensity_basis: str = "lifecycle"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Policy:
        d = dict(d or {})
        known = set(cls.__dataclass_fields__)
        extra = sorted(set(d) - known)
        if extra:
            raise DecisionError(f"policy: unknown field(s) {extra}; known: {sorted(known)}")
        if "strategy" in d:
            check_strategy(d["strategy"])
        if "weights" in d:
            d["weights"] = check_weights(d["weights"], "policy.weights")
        for k in ("allow_user_strategy", "allow_user_weights"):
            if k in d and not isinstance(d[k], bool):
                raise DecisionError(f"policy.{k}: true or false")
        if "platforms" in d:
            p = d["platforms"]
            if not isinstance(p, Mapping) or not all(
                isinstance(v, list | tuple) and all(isinstance(x, str) for x in v) for v in p.values()
            ):
                raise DecisionError("policy.platforms: a mapping of template name to a list of cluster names")
            d["platforms"] = {k: tuple(v) for k, v in p.items()}
        if d.get("intensity_basis", "lifecycle") not in ("lifecycle", "direct"):
            raise DecisionError("policy.intensity_basis: 'lifecycle' or 'direct'")
        return cls(**d)


@dataclass(frozen=True)
class UserChoice:
    """What a user asks of a decision: a strategy and weights (if the policy allows), and hard limits:
    the run must end by ``deadline`` and cost at most ``budget`` (in ``budget_currency``)."""

    strategy: str | None = None
    weights: Mapping[str, float] | None = None
    deadline: datetime | None = None
    budget: Decimal | str | int | None = None
    budget_currency: str | None = None


def resolve_strategy(policy: Policy, choice: UserChoice | None) -> tuple[str, dict[str, float]]:
    """The strategy and weights in force: the policy's, or the user's where the policy allows."""
    strategy = check_strategy(policy.strategy)
    weights = check_weights(policy.weights, "policy.weights")
    if choice is None:
        return strategy, weights
    if choice.strategy is not None and choice.strategy != strategy:
        check_strategy(choice.strategy)
        if not policy.allow_user_strategy:
            raise PolicyError(
                f"your organization's policy sets the strategy to {strategy!r}; ask an organization "
                "manager to allow users to choose it"
            )
        strategy = choice.strategy
    if choice.weights is not None:
        w = check_weights(choice.weights)
        if w != weights and not policy.allow_user_weights:
            raise PolicyError(
                "your organization's policy does not allow user weights; ask an organization manager "
                "to allow them, or choose a strategy without weights"
            )
        weights = w
    return strategy, weights


def normalise(values: np.ndarray) -> np.ndarray:
    """Scale to [0, 1], 0 = lowest; NaN -> 1 (worst); all equal -> 0."""
    v = np.asarray(values, dtype=float)
    out = np.ones_like(v)
    ok = ~np.isnan(v)
    if ok.any():
        lo, hi = v[ok].min(), v[ok].max()
        out[ok] = 0.0 if hi == lo else (v[ok] - lo) / (hi - lo)
    return out


def _ordinal(n: int) -> str:
    return {1: "best", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")


def fmt_duration(seconds: float) -> str:
    s = int(round(abs(seconds)))
    if s < 60:
        return f"{s} s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m} min"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h} h {m:02d} min"
    d, h = divmod(h, 24)
    return f"{d} d {h} h"


@dataclass(frozen=True)
class Ranking:
    """Result of :func:`rank_arrays`: per input row its score, rank (1 = best) and why; ``order``
    lists the row indices best first."""

    score: np.ndarray
    rank: np.ndarray
    why: list[str]
    order: np.ndarray


def rank_arrays(
    keys: list[str],
    values: Mapping[str, np.ndarray],
    strategy: str,
    weights: Mapping[str, float],
    currency: str,
) -> Ranking:
    """Score and rank candidates from one array per criterion (``values["time"]`` = seconds to the
    expected end, ``"cost"`` in *currency*, ``"energy"`` kWh, ``"carbon"`` kg CO2e; NaN = unknown)."""
    check_strategy(strategy)
    n = len(keys)
    vals = {c: np.asarray(values[c], dtype=float) for c in CRITERIA}
    norm = {c: normalise(vals[c]) for c in CRITERIA}
    equal = sum(norm.values()) / len(CRITERIA)
    if strategy == "weighted":
        total = sum(weights.values())
        score = sum(norm[c] * (weights[c] / total) for c in CRITERIA)
    else:
        score = norm[STRATEGY_CRITERION[strategy]].copy()
    score = np.round(np.asarray(score, dtype=float), 6)
    order = np.lexsort((np.array(keys, dtype=str), equal, score)) if n else np.array([], dtype=int)
    ranks = np.empty(n, dtype=int)
    ranks[order] = np.arange(1, n + 1)
    whys = _explain(keys, vals, norm, score, order, strategy, weights, currency) if n else []
    return Ranking(score, ranks, whys, order)


def rank(df: pd.DataFrame, strategy: str, weights: Mapping[str, float], currency: str) -> pd.DataFrame:
    """Add ``score``, ``rank`` (1 = recommended) and ``why`` to *df* (rows of feasible candidates with
    the columns ``key``, ``end_s``, ``cost_value``, ``energy_kwh``, ``co2e_kg``); returns a copy sorted
    by rank."""
    check_strategy(strategy)
    r = rank_arrays(
        list(df["key"]),
        {c: df[COLUMN[c]].to_numpy(dtype=float) for c in CRITERIA},
        strategy,
        weights,
        currency,
    )
    df = df.copy()
    df["score"] = r.score
    df["rank"] = pd.array(r.rank, dtype="Int64")
    df["why"] = pd.Series(r.why, index=df.index, dtype=object)
    return df.sort_values("rank", kind="stable")


def _explain(
    keys: list[str],
    vals: dict[str, np.ndarray],
    norm: dict[str, np.ndarray],
    score: np.ndarray,
    order: np.ndarray,
    strategy: str,
    weights: Mapping[str, float],
    currency: str,
) -> list[str]:
    n = len(keys)
    best = order[0]
    whys: list[str] = []
    for i in range(n):
        if strategy == "weighted":
            used = [c for c in CRITERIA if weights[c] > 0]
            pos = []
            for c in used:
                r = 1 + int(np.sum(norm[c] < norm[c][i]))
                pos.append(f"{_ordinal(r)} on {c}")
            head = "best weighted score" if i == best else f"weighted score {score[i]:.2f}"
            whys.append(f"{head} ({', '.join(pos)})")
            continue
        crit = STRATEGY_CRITERION[strategy]
        v, b = vals[crit][i], vals[crit][best]
        if math.isnan(v):
            whys.append(
                {"cost": "no price published for this queue", "carbon": "carbon intensity unknown"}.get(
                    crit, f"{crit} unknown"
                )
            )
            continue
        if i == best:
            other = order[1] if n > 1 else None
            if crit == "time":
                s = "ends first"
                if other is not None:
                    s += f", {fmt_duration(vals['time'][other] - v)} before {keys[other]}"
            elif crit == "cost":
                s = f"cheapest at {v:.2f} {currency}"
            elif crit == "energy":
                s = f"lowest energy at {v:.3g} kWh"
            else:
                s = f"lowest carbon at {v:.3g} kg CO2e"
        else:
            d = v - b
            s = {
                "time": f"ends {fmt_duration(d)} after the fastest",
                "cost": f"{d:.2f} {currency} more than the cheapest",
                "energy": f"{d:.3g} kWh more than the lowest",
                "carbon": f"{d:.3g} kg CO2e more than the lowest",
            }[crit]
        whys.append(s)
    return whys
