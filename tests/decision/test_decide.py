"""The decision end to end: template + parameters + candidates -> table + recommendation.

Runtime predictions come from :class:`StandInPredictor`, a TEST STAND-IN for the prediction helper's
``jupyter_heroes.decision.predict`` (same interface: ``predict(features)`` returning ``point``,
``q_low``, ``q_high`` in seconds, ``source``, ``model_version``), so these tests pin the decision's
arithmetic independently of any trained model.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal as D
from pathlib import Path

import pandas as pd
import pytest

from jupyter_heroes.decision.candidates import Exclusion, Requirements, WaitEstimate, make_candidate
from jupyter_heroes.decision.cost import Offer
from jupyter_heroes.decision.decide import Predictor, decide, step_features
from jupyter_heroes.decision.energy import MeasuredPower
from jupyter_heroes.decision.ranking import DecisionError, Policy, PolicyError, UnknownStrategy, UserChoice
from jupyter_heroes.workflows.templates import ParameterError, load_template

NOW = datetime(2026, 11, 21, 21, 0, tzinfo=timezone.utc)
TEMPLATES = Path(__file__).parents[2] / "templates"


@dataclass(frozen=True)
class StandInPrediction:
    point: float
    q_low: float
    q_high: float
    source: str = "test stand-in"
    model_version: str = "stand-in-1"


class StandInPredictor:
    """TEST STAND-IN, not a model: a fixed (low, point, high) runtime per step name."""

    def __init__(self, runtimes: dict[str, tuple[float, float, float]]) -> None:
        self.runtimes = runtimes
        self.calls: list[dict] = []

    def predict(self, features):
        self.calls.append(features)
        lo, pt, hi = self.runtimes[features["step"]]
        return StandInPrediction(pt, lo, hi)


ONE = load_template(
    {
        "heroes_template": 1,
        "name": "one",
        "version": 1,
        "application": "solver",
        "parameters": {"n": {"type": "integer", "default": 10}},
        "steps": [
            {
                "name": "run",
                "command": ["solver", "{{ n }}"],
                "resources": {"nodes": 1, "tasks": 4, "memory_mb": 4096, "walltime": "04:00:00"},
            }
        ],
    }
)
LIMITS = dict(max_nodes=4, cpus_per_node=4, mem_per_node_mb=16384, max_walltime_s=86400)


def designed():
    """Fast-expensive-dirty, slow-cheap, frugal on energy, green grid; plus one that cannot run."""
    return [
        make_candidate(
            "sprint",
            "q",
            **LIMITS,
            site={
                "relative_speed": 3,
                "pue": 1.5,
                "grid_zone": "PL",
                "offer": {"currency": "EUR", "core_hour": "1.00"},
                "power": {"idle_w": 200, "max_w": 500, "cores": 4},
            },
        ),
        make_candidate(
            "miser",
            "q",
            **LIMITS,
            site={
                "relative_speed": 0.5,
                "typical_wait_s": 3600,
                "pue": 1.4,
                "grid_zone": "FR",
                "offer": {"currency": "EUR", "core_hour": "0.01"},
                "power": {"tdp_per_core_w": 10},
            },
        ),
        make_candidate(
            "frugal",
            "q",
            **LIMITS,
            site={
                "pue": 1.3,
                "grid_zone": "DE",
                "offer": {"currency": "EUR", "core_hour": "0.20"},
                "power": {"tdp_per_core_w": 2, "mem_w_per_gb": 0},
            },
        ),
        make_candidate(
            "breeze",
            "q",
            **LIMITS,
            site={
                "pue": 1.1,
                "grid_zone": "SE",
                "offer": {"currency": "EUR", "core_hour": "0.30"},
                "power": {"tdp_per_core_w": 8},
            },
        ),
        make_candidate("tiny", "q", max_nodes=1, cpus_per_node=2, max_walltime_s=3600),
    ]


def predictor():
    return StandInPredictor({"run": (3000.0, 3600.0, 4800.0)})


def run(strategy="weighted", **kw):
    kw.setdefault("policy", Policy(strategy=strategy))
    return decide(ONE, {}, kw.pop("candidates", designed()), kw.pop("predictor", predictor()), now=NOW, **kw)


@pytest.mark.parametrize(
    ("strategy", "winner"),
    [
        ("fastest", "sprint"),
        ("cheapest", "miser"),
        ("lowest-energy", "frugal"),
        ("lowest-carbon", "breeze"),
        ("weighted", "frugal"),
    ],
)
def test_each_strategy_recommends_differently(strategy, winner):
    d = run(strategy)
    assert d.recommendation.cluster == winner
    assert d.recommendation.strategy == strategy
    ranked = d.table[d.table["status"] == "ranked"]
    assert list(ranked["rank"]) == [1, 2, 3, 4]
    assert ranked.iloc[0]["cluster"] == winner


def test_figures_of_the_designed_candidates():
    t = run("fastest").table.set_index("cluster")
    # sprint: 3600 s / speed 3, 4 cores at EUR 1.00/core-h, a whole 500 W node, Poland at PUE 1.5
    s = t.loc["sprint"]
    assert s["runtime_s"] == 1200 and (s["runtime_low_s"], s["runtime_high_s"]) == (1000, 1600)
    assert (s["cost"], s["cost_low"], s["cost_high"]) == (D("1.33"), D("1.11"), D("1.78"))
    assert s["energy_kwh"] == pytest.approx(500 * 1200 / 3.6e6)
    assert s["co2e_kg"] == pytest.approx(500 * 1200 / 3.6e6 * 1.5 * 703.49 / 1000)
    assert s["intensity_g_per_kwh"] == 703.49 and "Electricity Maps" in s["intensity_source"]
    assert s["energy_basis"] == "estimated" and s["carbon_basis"] == "estimated"
    assert s["expected_start"] == NOW and s["expected_end"] == NOW + timedelta(seconds=1200)
    assert s["currency"] == "EUR" and s["why"] == "ends first, 40 min before frugal/q"
    # miser waits an hour (site's typical wait), then runs 2 h
    m = t.loc["miser"]
    assert m["expected_start"] == NOW + timedelta(hours=1) and m["expected_end"] == NOW + timedelta(hours=3)
    assert m["cost"] == D("0.08") and m["wait_source"] == "typical wait (site config)"
    assert m["energy_kwh"] == pytest.approx((4 * 10 + 4 * 0.3725) * 7200 / 3.6e6)
    # the infeasible one is listed with its reason and no figures
    tiny = t.loc["tiny"]
    assert tiny["status"] == "infeasible" and tiny["rank"] is pd.NA and tiny["cost"] is None
    assert tiny["why"] == (
        "step 'run' needs 4 cores per node; tiny/q has 2; step 'run' asks for 04:00:00 of walltime; tiny/q allows 01:00:00"
    )


def test_intervals_are_ordered():
    t = run().table
    r = t[t["status"] == "ranked"]
    assert (r["runtime_low_s"] <= r["runtime_s"]).all() and (r["runtime_s"] <= r["runtime_high_s"]).all()
    assert (r["cost_low"] <= r["cost"]).all() and (r["cost"] <= r["cost_high"]).all()
    assert (r["energy_low_kwh"] <= r["energy_kwh"]).all() and (r["energy_kwh"] <= r["energy_high_kwh"]).all()
    assert (r["co2e_low_kg"] <= r["co2e_kg"]).all() and (r["co2e_kg"] <= r["co2e_high_kg"]).all()
    assert (r["expected_end_low"] <= r["expected_end"]).all() and (
        r["expected_end"] <= r["expected_end_high"]
    ).all()


def test_cost_in_another_currency_and_cloud_list_prices():
    aws = make_candidate(
        "aws",
        "hpc",
        site={
            "kind": "cloud",
            "cloud": {"provider": "aws", "instance_type": "hpc6a.48xlarge", "region": "eu-north-1"},
        },
    )
    t = run("cheapest", candidates=[*designed(), aws], currency="USD").table.set_index("cluster")
    assert t.loc["sprint", "cost"] == D("1.44")  # EUR 1.33 x 1.0824 = 1.439592
    assert t.loc["sprint", "currency"] == "USD"
    assert t.loc["aws", "cost"] == D("3.09")  # one instance-hour at USD 3.093
    assert "list price" in t.loc["aws", "price_source"]
    te = run("cheapest", candidates=[aws]).table.set_index("cluster")
    assert te.loc["aws", "cost"] == D("2.85")  # USD 3.09 / 1.0824 = 2.8547...
    # the application's licence fee is added in the decision's currency
    lic = {"name": "solver", "currency": "USD", "fixed": "10", "fixed_per": "run"}
    tl = run("cheapest", candidates=[aws], app_offer=Offer.from_dict(lic)).table.set_index("cluster")
    assert tl.loc["aws", "cost"] == D("2.85") + D("9.24")  # USD 10 -> EUR 9.2387...


def test_data_not_local_is_charged_as_transfer_and_storage():
    site = {
        "offer": {"currency": "EUR", "transfer_gb": "0.09", "storage_gb_month": "0.02"},
        "data_locations": ["s3:here"],
    }
    here = make_candidate("here", "q", **LIMITS, site=site)
    there = make_candidate("there", "q", **LIMITS, site={**site, "data_locations": []})
    req = Requirements(data_location="s3:here", input_gb=100, output_gb=10, storage_months=3)
    t = run("cheapest", candidates=[here, there], requirements=req).table.set_index("cluster")
    assert t.loc["here", "cost"] == D("0.60")  # 30 GB-month x 0.02
    assert t.loc["there", "cost"] == D("9.60")  # + 100 GB x 0.09


def test_measured_power_from_ear_refines_energy():
    mp = {"frugal": MeasuredPower(100.0, 3, "EAR HEROES plugin")}
    t = run(measured_power=mp).table.set_index("cluster")
    assert t.loc["frugal", "energy_kwh"] == pytest.approx(100 * 3600 / 3.6e6)
    assert (
        t.loc["frugal", "energy_basis"] == "measured"
        and "EAR HEROES plugin" in t.loc["frugal", "energy_source"]
    )
    assert t.loc["breeze", "energy_basis"] == "estimated"


def test_deadline_and_budget_exclude_with_reasons_and_warn_on_the_upper_estimate():
    d = run(choice=UserChoice(deadline=NOW + timedelta(seconds=4500), budget=D("1.00")))
    t = d.table.set_index("cluster")
    assert t.loc["miser", "status"] == "over-deadline"
    assert t.loc["miser", "why"] == "ends 2026-11-22 00:00 UTC, after the deadline 2026-11-21 22:15 UTC"
    assert t.loc["sprint", "status"] == "over-budget"
    assert t.loc["sprint", "why"] == "costs 1.33 EUR, over the budget of 1.00 EUR"
    assert t.loc["breeze", "status"] == "over-budget"
    assert t.loc["frugal", "status"] == "ranked" and t.loc["frugal", "rank"] == 1
    assert "may miss the deadline if the run takes as long as the upper estimate" in t.loc["frugal", "why"]
    assert "may exceed the budget (1.07 EUR at the upper estimate)" in t.loc["frugal", "why"]
    assert d.recommendation.cluster == "frugal"
    # a budget in another currency is compared after conversion
    t2 = run(choice=UserChoice(budget=D("1.35"), budget_currency="USD")).table.set_index("cluster")
    assert t2.loc["breeze", "status"] == "ranked"  # EUR 1.20 = USD 1.30
    assert t2.loc["sprint", "why"] == "costs 1.44 USD, over the budget of 1.35 USD"


def test_a_queue_without_price_cannot_pass_a_budget():
    free = make_candidate("unpriced", "q", **LIMITS)
    t = run(candidates=[free], choice=UserChoice(budget=D("5"))).table
    assert t.iloc[0]["status"] == "over-budget" and "no price published" in t.iloc[0]["why"]
    t2 = run("cheapest", candidates=[free, *designed()[:1]]).table.set_index("cluster")
    assert t2.loc["unpriced", "rank"] == 2
    assert t2.loc["unpriced", "why"].startswith("no price published for this queue; ")
    assert t2.loc["unpriced", "cost"] is None


def test_refused_by_slurm_and_not_allowed_by_policy():
    waits = {
        "sprint/q": WaitEstimate(
            NOW, "sbatch --test-only", refused="Slurm refuses the job: QOSMaxWallDurationPerJobLimit"
        ),
        "breeze/q": WaitEstimate(NOW + timedelta(minutes=30), "sbatch --test-only", pending_jobs=12),
    }
    policy = Policy(platforms={"one": ("sprint", "breeze", "frugal")})
    t = run(policy=policy, waits=waits).table.set_index("cluster")
    assert (
        t.loc["sprint", "status"] == "refused" and "QOSMaxWallDurationPerJobLimit" in t.loc["sprint", "why"]
    )
    assert (
        t.loc["miser", "status"] == "not-allowed"
        and t.loc["miser", "why"] == "your organization does not allow miser for one"
    )
    assert (
        t.loc["breeze", "expected_start"] == NOW + timedelta(minutes=30)
        and t.loc["breeze", "pending_jobs"] == 12
    )
    assert t.loc["breeze", "wait_source"] == "sbatch --test-only"


def test_misconfigured_clusters_are_carried_into_the_table():
    bad = Exclusion(
        "broken", "q", ("cluster 'broken' site.offer.core_hour: '-1' is negative",), "misconfigured"
    )
    t = run(exclusions=[bad]).table.set_index("cluster")
    assert t.loc["broken", "status"] == "misconfigured" and "negative" in t.loc["broken", "why"]


def test_nothing_left_explains_why():
    d = run(candidates=[])
    assert d.recommendation is None and "no cluster is enrolled" in d.message and d.table.empty
    d = run(candidates=designed()[-1:])
    assert d.recommendation is None and "infeasible" in d.message and len(d.table) == 1


def test_predictor_is_called_once_per_step_with_the_documented_features():
    p = predictor()
    run(predictor=p, user="alice")
    assert len(p.calls) == 1
    f = p.calls[0]
    assert {
        k: f[k]
        for k in (
            "application",
            "template",
            "step",
            "user",
            "cores",
            "memory_mb",
            "requested_time_s",
            "array_size",
        )
    } == {
        "application": "solver",
        "template": "one",
        "step": "run",
        "user": "alice",
        "cores": 4,
        "memory_mb": 4096,
        "requested_time_s": 14400,
        "array_size": 1,
    }
    assert f["params"] == {"n": 10}
    assert isinstance(p, Predictor)


def test_critical_path_of_a_diamond():
    diamond = load_template(
        {
            "heroes_template": 1,
            "name": "diamond",
            "version": 1,
            "steps": [
                {"name": "a", "command": ["a"]},
                {"name": "b", "command": ["b"], "depends_on": ["a"]},
                {"name": "c", "command": ["c"], "depends_on": ["a"]},
                {"name": "d", "command": ["d"], "depends_on": ["b", "c"]},
            ],
        }
    )
    p = StandInPredictor({"a": (10, 10, 10), "b": (50, 100, 400), "c": (200, 300, 350), "d": (1, 1, 1)})
    c = make_candidate("c", "q", site={"offer": {"core_hour": "3.6"}})
    d = decide(diamond, {}, [c], p, now=NOW)
    row = d.table.iloc[0]
    assert (row["runtime_low_s"], row["runtime_s"], row["runtime_high_s"]) == (211, 311, 411)
    # usage adds up every step, not the path: 10 + 100 + 300 + 1 core-seconds at 3.6/core-h = 0.411
    assert row["cost"] == D("0.41")
    assert [s.step for s in d.steps] == ["a", "b", "c", "d"]


def test_array_tasks_run_as_many_at_a_time_as_the_queue_holds():
    sweep = load_template((TEMPLATES / "parameter-sweep.yaml").read_text())
    p = StandInPredictor({"sweep": (60, 60, 60)})
    narrow = make_candidate("narrow", "q", max_nodes=1, cpus_per_node=2, site={"offer": {"core_hour": "3.6"}})
    wide = make_candidate("wide", "q", site={"offer": {"core_hour": "3.6"}})
    t = decide(sweep, {"points": 8}, [narrow, wide], p, now=NOW).table.set_index("cluster")
    assert t.loc["narrow", "runtime_s"] == 4 * 60  # 8 tasks, 2 at a time
    assert t.loc["wide", "runtime_s"] == 60
    assert t.loc["narrow", "cost"] == t.loc["wide", "cost"] == D("0.48")  # 8 x 60 core-s x 3.6/core-h


def test_carbon_falls_back_to_the_global_average_and_says_so():
    c = make_candidate("nowhere", "q", **LIMITS)
    row = run(candidates=[c]).table.iloc[0]
    assert row["intensity_g_per_kwh"] == 480.0
    assert "no grid zone declared: global average used" in row["why"]
    assert "PUE not declared: 1.58 assumed" in row["why"]
    zoned = make_candidate("x", "q", **LIMITS, site={"grid_zone": "ZZ", "pue": 1.2})
    assert "grid zone ZZ not in the intensity table" in run(candidates=[zoned]).table.iloc[0]["why"]
    declared = make_candidate(
        "y", "q", **LIMITS, site={"grid_intensity_g_per_kwh": 5, "grid_intensity_source": "PPA"}
    )
    r = run(candidates=[declared]).table.iloc[0]
    assert r["intensity_g_per_kwh"] == 5 and "PPA" in r["intensity_source"]


def test_bad_requests_fail_before_any_prediction():
    p = predictor()
    with pytest.raises(UnknownStrategy, match="unknown strategy 'greenest'"):
        run(predictor=p, choice=UserChoice(strategy="greenest"))
    with pytest.raises(PolicyError, match="does not allow user weights"):
        run(predictor=p, choice=UserChoice(weights={"cost": 1}))
    with pytest.raises(ParameterError, match="parameter 'm': unknown parameter"):
        decide(ONE, {"m": 1}, designed(), p, now=NOW)
    with pytest.raises(DecisionError, match="currency GBP: not in the exchange-rate table"):
        run(predictor=p, currency="GBP")
    with pytest.raises(DecisionError, match="timezone-aware"):
        decide(ONE, {}, designed(), p, now=datetime(2026, 1, 1))
    with pytest.raises(DecisionError, match="budget: '-1' is negative"):
        run(predictor=p, choice=UserChoice(budget="-1"))
    with pytest.raises(DecisionError, match="budget currency GBP: not in the exchange-rate table"):
        run(predictor=p, choice=UserChoice(budget=D(1), budget_currency="GBP"))
    with pytest.raises(DecisionError, match="deadline: a timezone-aware datetime"):
        run(predictor=p, choice=UserChoice(deadline=datetime(2026, 12, 1)))
    assert p.calls == []


def test_a_broken_predictor_is_reported():
    class Broken:
        def predict(self, features):
            return StandInPrediction(math.nan, 1, 2)

    with pytest.raises(DecisionError, match="the runtime predictor returned"):
        run(predictor=Broken())


def test_a_step_that_may_outrun_its_walltime_is_flagged():
    p = StandInPredictor({"run": (3000.0, 3600.0, 16000.0)})  # upper estimate above the 4 h asked for
    t = run(predictor=p).table.set_index("cluster")
    assert (
        "step 'run' may outrun its walltime 4 h 00 min here (upper estimate 4 h 26 min)"
        in t.loc["frugal", "why"]
    )
    assert "may outrun" not in t.loc["sprint", "why"]  # 3x faster there: 5333 s


def test_a_swapped_interval_is_widened_to_contain_the_point():
    p = StandInPredictor({"run": (5000.0, 3600.0, 1000.0)})
    row = run(predictor=p, candidates=designed()[2:3]).table.iloc[0]
    assert (row["runtime_low_s"], row["runtime_s"], row["runtime_high_s"]) == (3600, 3600, 3600)


def test_to_dict_is_json_ready():
    d = run()
    out = json.loads(json.dumps(d.to_dict()))
    assert out["recommendation"]["cluster"] == "frugal" and out["recommendation"]["cost"] == "0.80"
    assert out["strategy"] == "weighted" and out["currency"] == "EUR"
    assert {c["status"] for c in out["candidates"]} == {"ranked", "infeasible"}
    tiny = next(c for c in out["candidates"] if c["cluster"] == "tiny")
    assert tiny["rank"] is None and tiny["cost"] is None
    assert d.notes == ["runtimes predicted by test stand-in (stand-in-1)"]


def test_step_features_count_array_tasks():
    sweep = load_template((TEMPLATES / "parameter-sweep.yaml").read_text())
    f = step_features(sweep, sweep.steps[0], sweep.resolve({"points": 5}))
    assert f["array_size"] == 5 and f["application"] == "heroes-parameter-sweep"
