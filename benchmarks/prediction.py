#!/usr/bin/env python
"""Replay real HPC traces through the runtime predictor and the walltime advisor, beside the baselines.

    python benchmarks/prediction.py [TRACE.swf[.gz] ...] [--json] [--limit N] [--data-dir DIR] [--variant V]

With no trace given, every ``*.swf`` / ``*.swf.gz`` in ``--data-dir`` (default ``../shared/data/traces``
next to the repository) is replayed. Each trace is replayed chronologically: before a job's submission the
predictors learn every job that finished (submit + wait + run) at or before it, and nothing else; see
:func:`jupyter_heroes.decision.baselines.replay`.

Jobs that count: known run time > 0 and known requested time > 0, every status (completed, failed,
cancelled). The others are dropped from the replay altogether (they are neither predicted nor learnt
from); this is the selection that reproduces the baselines of the data README.

Figures per trace (``accuracy`` = mean of min(pred, run) / max(pred, run); ``under`` = share of jobs
predicted shorter than they ran):

* the model's accuracy / MAE / under, beside the best no-look-ahead baseline (user request, Tsafrir's
  last-two capped at the request, ALEA's max ratio of the last five times the request) and the ratio;
* the README's ALEA figure reproduced with its look-ahead (for reference only, it is not a yardstick);
* walltime advice: share of jobs it would newly kill (advice < run <= request, target <= 5%) and its
  slack sum(max(0, advice - run)) against the users' own sum(max(0, request - run)) (target <= 0.5);
* coverage of [q_low, q_high] (nominal 80%).

With ``--json`` the last line of output is one JSON object: ``{"traces": {name: {figure: value,
figure_baseline: value, figure_ratio: value, ...}}, "targets_met": bool, "seconds": float}``.
Nothing under the data directory is imported: the traces are only read.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

from jupyter_heroes.decision.advice import WalltimeAdvisor
from jupyter_heroes.decision.baselines import (
    advice_score,
    alea_with_lookahead,
    default_baselines,
    replay,
    score,
)
from jupyter_heroes.decision.predict import RuntimePredictor
from jupyter_heroes.decision.swf import SwfError, SwfTrace, read_swf, to_finished_jobs

#: Targets of issue 5 ("Decision module"), the same for every trace.
ACCURACY_GAIN = 0.05
KILL_LIMIT = 0.05
SLACK_LIMIT = 0.5

DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent / ".." / "shared" / "data" / "traces"


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


#: Held-out variants of a trace (``--variant``), to check that figures do not hinge on one log:
#: its first or second half by submission (the second starts cold: nothing of the first is learnt), or
#: the jobs of one half of its users (split by a hash of the user id, so the same on every run).
VARIANTS = ("full", "first-half", "second-half", "users-a", "users-b")


def select(jobs: list, variant: str) -> list:
    """The jobs of ``variant`` (see :data:`VARIANTS`), in their original order."""
    if variant == "full":
        return jobs
    if variant in ("first-half", "second-half"):
        cut = float(np.median([j.request.submit_time for j in jobs]))
        first = variant == "first-half"
        return [j for j in jobs if (j.request.submit_time < cut) == first]
    side = 0 if variant == "users-a" else 1
    return [j for j in jobs if zlib.crc32(j.request.user.encode()) % 2 == side]


def evaluate(trace: SwfTrace, limit: int | None = None, variant: str = "full") -> dict:
    t0 = time.perf_counter()
    if limit is not None:
        trace = SwfTrace(trace.path, trace.header, trace.jobs[:limit])
    jobs = select(to_finished_jobs(trace), variant)
    if not jobs:
        raise SwfError(f"{trace.path}: no job with a known run time and requested time to replay")
    offset = trace.header_number("UnixStartTime") + trace.header_number("TimeZone")
    predictor = RuntimePredictor(clock_offset=offset)
    advisor = WalltimeAdvisor()
    result = replay(jobs, predictor, advisor=advisor, baselines=default_baselines())
    actual = np.array([j.run_time for j in jobs])
    request = np.array([j.request.requested_time for j in jobs], dtype=float)
    model = score(result.points(), actual)
    base = {name: score(p, actual) for name, p in result.baselines.items()}
    readme_alea = score(alea_with_lookahead(jobs), actual)
    best_name = max(base, key=lambda k: base[k]["accuracy"])
    best = base[best_name]
    adv = np.array([a.walltime if a and a.walltime is not None else np.inf for a in result.advice])
    a_score = advice_score(adv, actual, request)
    users_slack = float(np.sum(np.maximum(0.0, request - actual)))
    lo = np.array([p.q_low for p in result.predictions])
    hi = np.array([p.q_high for p in result.predictions])
    out: dict = {
        "jobs": len(jobs),
        "seconds": round(time.perf_counter() - t0, 1),
        "refits": result.refits,
        "model_version": predictor.model_version,
        "accuracy": model["accuracy"],
        "accuracy_baseline": best["accuracy"],
        "accuracy_baseline_name": best_name,
        "accuracy_ratio": _ratio(model["accuracy"], best["accuracy"]),
        "accuracy_gain": model["accuracy"] - best["accuracy"],
        "accuracy_target": best["accuracy"] + ACCURACY_GAIN,
        "mae": model["mae"],
        "mae_baseline": best["mae"],
        "mae_ratio": _ratio(model["mae"], best["mae"]),
        "under": model["under"],
        "under_baseline": best["under"],
        "under_ratio": _ratio(model["under"], best["under"]),
        "advice_killed": a_score["killed"],
        "advice_killed_baseline": 0.0,  # the users' own requests newly kill nothing
        "advice_killed_limit": KILL_LIMIT,
        "advice_slack_s": a_score["slack"] * users_slack,
        "advice_slack_baseline_s": users_slack,
        "advice_slack_ratio": a_score["slack"],
        "advice_slack_limit": SLACK_LIMIT,
        "coverage": float(np.mean((actual >= lo) & (actual <= hi))),
        "coverage_nominal": predictor.options.quantiles[1] - predictor.options.quantiles[0],
        "sources": dict(Counter(p.source for p in result.predictions)),
        "baselines": {**base, "alea_readme_lookahead": readme_alea},
    }
    out["accuracy_met"] = out["accuracy"] >= out["accuracy_target"]
    out["advice_met"] = out["advice_killed"] <= KILL_LIMIT and out["advice_slack_ratio"] <= SLACK_LIMIT
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def report(name: str, r: dict) -> str:
    b = r["baselines"]
    lines = [
        f"== {name}: {r['jobs']} jobs, {r['seconds']} s, {r['refits']} refits (model v{r['model_version']})",
        f"  {'predictor':<34} {'accuracy':>8} {'MAE s':>9} {'under':>7}",
        f"  {'model':<34} {r['accuracy']:8.3f} {r['mae']:9.0f} {_pct(r['under']):>7}",
    ]
    labels = {
        "request": "user request",
        "last_two": "last-two of user, capped (Tsafrir)",
        "alea": "ALEA max ratio of last 5 x request",
        "alea_readme_lookahead": "ALEA with look-ahead (README)",
    }
    for k, label in labels.items():
        s = b[k]
        lines.append(f"  {label:<34} {s['accuracy']:8.3f} {s['mae']:9.0f} {_pct(s['under']):>7}")
    lines.append(
        f"  accuracy {r['accuracy']:.3f} vs best baseline {r['accuracy_baseline_name']} "
        f"{r['accuracy_baseline']:.3f}: {r['accuracy_gain']:+.3f} (target +{ACCURACY_GAIN}) "
        f"{'MET' if r['accuracy_met'] else 'NOT MET'}"
    )
    lines.append(
        f"  walltime advice: newly killed {_pct(r['advice_killed'])} (limit {_pct(KILL_LIMIT)}), slack "
        f"{r['advice_slack_ratio']:.2f} of the users' own (limit {SLACK_LIMIT}) "
        f"{'MET' if r['advice_met'] else 'NOT MET'}"
    )
    lines.append(
        f"  [q_low, q_high] coverage {_pct(r['coverage'])} (nominal {_pct(r['coverage_nominal'])}); "
        f"sources {r['sources']}"
    )
    return "\n".join(lines)


def _clean(o):
    if isinstance(o, float):
        return None if math.isnan(o) or math.isinf(o) else round(o, 6)
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, np.generic):
        return _clean(o.item())
    return o


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("traces", nargs="*", type=Path, help="SWF traces (.swf or .swf.gz)")
    ap.add_argument("--json", action="store_true", help="end with one line of JSON holding every figure")
    ap.add_argument(
        "--limit", type=int, default=None, help="replay only the first N lines' jobs of each trace"
    )
    ap.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="where to look for *.swf[.gz] when no trace is given (default: ../shared/data/traces "
        "next to the repository)",
    )
    ap.add_argument(
        "--variant",
        choices=VARIANTS,
        default="full",
        help="replay a held-out part of each trace: its first or second half by submission time, or the "
        "jobs of one half of its users (default: the full trace)",
    )
    args = ap.parse_args(argv)
    paths = list(args.traces)
    if not paths:
        paths = sorted(p for p in args.data_dir.glob("*.swf*") if p.name.endswith((".swf", ".swf.gz")))
        if not paths:
            ap.error(f"no trace given and no *.swf[.gz] in {args.data_dir}; pass trace paths or --data-dir")
    if args.limit is not None and args.limit < 1:
        ap.error("--limit must be a positive number of jobs")
    t0 = time.perf_counter()
    results: dict[str, dict] = {}
    for p in paths:
        try:
            trace = read_swf(p)
            r = evaluate(trace, args.limit, args.variant)
        except SwfError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        name = trace.name if args.variant == "full" else f"{trace.name} ({args.variant})"
        results[name] = r
        print(report(name, r), flush=True)
    total = round(time.perf_counter() - t0, 1)
    met = all(r["accuracy_met"] and r["advice_met"] for r in results.values())
    print(f"== {len(results)} trace(s) in {total} s; every target met: {met}")
    if args.json:
        print(json.dumps(_clean({"traces": results, "targets_met": met, "seconds": total}), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
