"""Benchmark: one decision over 20 candidates for a 3-step workflow, in process.

Measures :func:`jupyter_heroes.decision.decide.decide` (target: p50 under 50 ms) against a baseline
doing the same work the naive way: a pandas ``DataFrame.apply`` over the candidates that asks the
predictor for every (candidate, step), computes each row's figures with the same cost, energy and
carbon code, then ranks with pandas. Both must recommend the same candidate.

The runtime model (``--model runtime``, the default) is the platform's
:class:`jupyter_heroes.decision.predict.RuntimePredictor`, trained in process before timing on a
synthetic history (``--history`` past runs of the template's steps, observed in completion order, then
refitted so that its gradient-boosting scorer and walltime-risk model answer). ``--model lsq`` uses a
BENCHMARK-ONLY per-step least-squares fit of log(runtime) on log(requested walltime), log(cores) and
log(work) instead, which says so in the output.

    python benchmarks/decide.py [--candidates 20] [--repeat 200] [--history 3000] [--model runtime|lsq] [--json]

``--json`` prints one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jupyter_heroes.decision.candidates import CandidateQueue, make_candidate, typical_wait
from jupyter_heroes.decision.carbon import carbon_kg, default_table
from jupyter_heroes.decision.cost import Usage, default_rates
from jupyter_heroes.decision.decide import decide, step_features
from jupyter_heroes.decision.predict import FinishedJob, JobRequest, RuntimePredictor
from jupyter_heroes.decision.ranking import Policy
from jupyter_heroes.workflows.templates import Template, load_template

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 11, 21, 21, 0, tzinfo=timezone.utc)
ZONES = ["FR", "DE", "SE", "PL", "ES", "IT", "NO", "FI", "NL", "CH", "AT", "BE", "CZ", "DK"]
CLOUD = [
    ("aws", "hpc6a.48xlarge", "eu-north-1", "SE-SE3"),
    ("aws", "hpc7a.96xlarge", "eu-west-1", "IE"),
    ("aws", "c6i.32xlarge", "eu-central-1", "DE"),
    ("aws", "c5n.metal", "eu-west-3", "FR"),
    ("oci", "VM.Standard.E4.Flex$_64_256", "eu", "NL"),
    ("aws", "hpc6a.48xlarge", "us-east-2", "US-MIDA-PJM"),
]


# --- BENCHMARK-ONLY runtime model ---------------------------------------------------------------


@dataclass(frozen=True)
class BenchPrediction:
    point: float
    q_low: float
    q_high: float
    source: str
    model_version: str


class LeastSquaresModel:
    """BENCHMARK-ONLY stand-in for the prediction helper's predictor (see the module docstring)."""

    source = "benchmark least-squares model (stand-in)"

    def __init__(self) -> None:
        self.coef: dict[str, np.ndarray] = {}
        self.resid: dict[str, tuple[float, float]] = {}
        self.model_version = "bench-lsq-1"

    @staticmethod
    def x(f: dict[str, Any]) -> np.ndarray:
        work = (
            float(f["params"].get("cells", 1)) * float(f["params"].get("steps", 1))
            if f["step"] == "simulate"
            else 1.0
        )
        return np.array([1.0, math.log(f["requested_time_s"]), math.log(f["cores"]), math.log(work)])

    def fit(self, history: list[tuple[dict[str, Any], float]]) -> LeastSquaresModel:
        by_step: dict[str, list[tuple[np.ndarray, float]]] = {}
        for f, runtime in history:
            by_step.setdefault(f["step"], []).append((self.x(f), math.log(runtime)))
        for step, rows in by_step.items():
            X = np.stack([r[0] for r in rows])
            y = np.array([r[1] for r in rows])
            coef, *_ = np.linalg.lstsq(X, y, rcond=None)
            res = y - X @ coef
            self.coef[step] = coef
            self.resid[step] = (float(np.quantile(res, 0.1)), float(np.quantile(res, 0.9)))
        return self

    def predict(self, f: dict[str, Any]) -> BenchPrediction:
        mu = float(self.x(f) @ self.coef[f["step"]])
        lo, hi = self.resid[f["step"]]
        return BenchPrediction(
            math.exp(mu), math.exp(mu + lo), math.exp(mu + hi), self.source, self.model_version
        )


def synthetic_history(
    template: Template, n: int, rng: np.random.Generator
) -> list[tuple[dict[str, Any], float]]:
    """Synthetic past runs of *template*: the simulate step scales with cells x steps, the others are
    short; multiplicative log-normal noise."""
    out = []
    for _ in range(n):
        params = {"cells": int(rng.integers(10, 5000)), "steps": int(rng.integers(100, 200000))}
        values = template.resolve(params)
        for step in template.steps:
            f = step_features(template, step, values)
            base = 2e-6 * params["cells"] * params["steps"] + 5.0 if step.name == "simulate" else 3.0
            out.append((f, base * math.exp(rng.normal(0, 0.25))))
    return out


def runtime_predictor(history: list[tuple[dict[str, Any], float]]) -> RuntimePredictor:
    """The platform's predictor trained on *history* (one user; runs observed in completion order)."""
    model = RuntimePredictor(auto_refit=False)  # one fit at the end is enough here
    t = 0.0
    for i, (f, runtime) in enumerate(history):
        t += 60.0
        req = JobRequest.from_mapping({**f, "user": "bench", "submit_time": t, "job_id": str(i)})
        model.observe(FinishedJob(req, runtime, end_time=t + runtime))
    model.refit()
    return model


# --- candidates -----------------------------------------------------------------------------------


def candidates(n: int, rng: np.random.Generator) -> list[CandidateQueue]:
    out = []
    n_cloud = min(len(CLOUD), n // 3)
    for i in range(n - n_cloud):
        site = {
            "pue": round(float(rng.uniform(1.05, 1.7)), 2),
            "grid_zone": ZONES[i % len(ZONES)],
            "relative_speed": round(float(rng.uniform(0.5, 2.0)), 2),
            "typical_wait_s": int(rng.integers(0, 4 * 3600)),
            "offer": {
                "currency": "EUR",
                "fixed": "0.10",
                "core_hour": f"{rng.uniform(0.005, 0.05):.4f}",
                "gb_hour": "0.0015",
            },
            "power": {"idle_w": 90, "max_w": int(rng.integers(250, 600)), "cores": 64},
        }
        out.append(
            make_candidate(
                f"hpc{i:02d}",
                "batch",
                max_nodes=64,
                cpus_per_node=64,
                mem_per_node_mb=256000,
                max_walltime_s=2 * 86400,
                site=site,
            )
        )
    for provider, itype, region, zone in CLOUD[:n_cloud]:
        site = {
            "kind": "cloud",
            "cloud": {"provider": provider, "instance_type": itype, "region": region},
            "grid_zone": zone,
            "pue": 1.15,
            "power": {"tdp_per_core_w": 4},
        }
        out.append(
            make_candidate(f"{provider}-{region}-{itype.split('.')[0].lower()}", "ondemand", site=site)
        )
    return out


# --- baseline: the naive pandas-apply implementation -------------------------------------------


def naive_decide(
    template: Template, params: dict, cands: list[CandidateQueue], model: Any, policy: Policy
) -> pd.DataFrame:
    values = template.resolve(params)
    rates = default_rates()
    table = default_table()
    df = pd.DataFrame({"c": cands})

    def evaluate(row: pd.Series) -> pd.Series:
        c: CandidateQueue = row["c"]
        finish: dict[str, float] = {}
        usage = Usage(jobs=0)
        energy_j = 0.0
        for step in template.order():
            p = model.predict(step_features(template, step, values))  # once per candidate and step
            t = p.point / c.relative_speed
            finish[step.name] = max((finish[d] for d in step.depends_on), default=0.0) + t
            r = step.resources
            usage = usage + Usage.from_floats(
                core_hours=r.cores * t / 3600,
                mem_gb_hours=r.memory_mb / 1024 * t / 3600,
                node_hours=r.nodes * t / 3600,
            )
            energy_j += c.power.node_power_w(r.cores, r.memory_mb / 1024) * r.nodes * t
        cost = (
            rates.convert_cents(c.offer.price(usage).total, c.offer.currency, "EUR") if c.offer else math.nan
        )
        zone = table.lookup(c.grid_zone or "GLOBAL")
        kwh = energy_j / 3.6e6
        start = typical_wait(c, NOW).start
        end = start + timedelta(seconds=max(finish.values()))
        return pd.Series(
            {
                "key": c.key,
                "end_s": (end - NOW).total_seconds(),
                "cost": float(cost),
                "energy_kwh": kwh,
                "co2e_kg": carbon_kg(kwh, c.pue, zone.g_per_kwh),
            }
        )

    out = df.apply(evaluate, axis=1)
    w = policy.weights
    score = sum(
        ((out[col] - out[col].min()) / ((out[col].max() - out[col].min()) or 1.0))
        * (w[crit] / sum(w.values()))
        for crit, col in (
            ("time", "end_s"),
            ("cost", "cost"),
            ("energy", "energy_kwh"),
            ("carbon", "co2e_kg"),
        )
    )
    return out.assign(score=score).sort_values(["score", "key"])


# --- main ---------------------------------------------------------------------------------------


def timed(fn, repeat: int) -> list[float]:
    fn()  # warm-up
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1000.0)
    return ts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--candidates", type=int, default=20, help="number of candidate queues (default 20)")
    ap.add_argument(
        "--repeat", type=int, default=200, help="timed decisions per implementation (default 200)"
    )
    ap.add_argument(
        "--history", type=int, default=3000, help="synthetic past runs to train on (default 3000)"
    )
    ap.add_argument(
        "--template",
        type=Path,
        default=ROOT / "templates" / "heat-pipeline.yaml",
        help="workflow template (YAML)",
    )
    ap.add_argument(
        "--model",
        choices=("runtime", "lsq"),
        default="runtime",
        help="runtime model: the platform's RuntimePredictor (default) or the benchmark-only least squares",
    )
    ap.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    a = ap.parse_args(argv)

    rng = np.random.default_rng(a.seed)
    template = load_template(a.template.read_text())
    t0 = time.perf_counter()
    history = synthetic_history(template, a.history, rng)
    model: Any
    if a.model == "runtime":
        model = runtime_predictor(history)
        source = f"RuntimePredictor v{model.model_version}"
    else:
        model = LeastSquaresModel().fit(history)
        source = model.source
    train_ms = (time.perf_counter() - t0) * 1000.0
    cands = candidates(a.candidates, rng)
    params = {"cells": 800, "steps": 50000}
    policy = Policy()

    ours = decide(template, params, cands, model, policy=policy, now=NOW)
    base = naive_decide(template, params, cands, model, policy)
    same = ours.recommendation is not None and ours.recommendation.key == base.iloc[0]["key"]

    t_ours = timed(lambda: decide(template, params, cands, model, policy=policy, now=NOW), a.repeat)
    t_base = timed(lambda: naive_decide(template, params, cands, model, policy), max(10, a.repeat // 4))
    p50, p95 = statistics.median(t_ours), float(np.percentile(t_ours, 95))
    b50 = statistics.median(t_base)
    result = {
        "benchmark": "decide",
        "candidates": len(cands),
        "feasible": int((ours.table["status"] == "ranked").sum()),
        "steps": len(template.steps),
        "repeat": a.repeat,
        "p50_ms": round(p50, 3),
        "p95_ms": round(p95, 3),
        "target_p50_ms": 50,
        "pass": p50 < 50,
        "baseline": "naive pandas DataFrame.apply: predict per candidate x step, row-wise point figures only (no intervals, limits or explanations), pandas ranking",
        "baseline_p50_ms": round(b50, 3),
        "ratio": round(b50 / p50, 2),
        "same_recommendation": bool(same),
        "recommendation": ours.recommendation.key if ours.recommendation else None,
        "model": f"{source}, trained on {a.history} synthetic runs x {len(template.steps)} steps in {train_ms:.0f} ms",
        "python": sys.version.split()[0],
        "pandas": pd.__version__,
    }
    print(
        f"decide(): {len(cands)} candidates x {len(template.steps)} steps: p50 {p50:.2f} ms, p95 {p95:.2f} ms (target < 50 ms)"
    )
    print(
        f"baseline (naive pandas apply): p50 {b50:.2f} ms; ratio {b50 / p50:.1f}x; same recommendation: {same}"
    )
    print(f"recommended: {result['recommendation']}; model: {result['model']}")
    if a.json:
        print(json.dumps(result))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
