"""Decide where a workflow should run: template + parameters + candidates -> a table and a recommendation.

:func:`decide` is the decision module's entry point (D3.1 section 4.7.5, steps 2 and 3):

1. validate the parameters and the strategy (the policy's, or the user's where allowed) before
   anything is computed;
2. drop the clusters the policy does not list for this template and the candidates that break a hard
   constraint (:func:`.candidates.check_feasible`), keeping every reason;
3. predict each step's runtime once (the :class:`Predictor` protocol; interval ``q_low``-``q_high``) and
   scale it by each candidate's ``relative_speed``;
4. per candidate: queue wait (a live :class:`.candidates.WaitEstimate` or the site's typical wait),
   the workflow's critical path (array tasks run as many at a time as the queue holds), usage, cost
   (:mod:`.cost`, in the decision's currency), energy (:mod:`.energy`, EAR-measured power when known),
   carbon (:mod:`.carbon`), each for the runtime's low, point and high estimates;
5. exclude candidates past the deadline or over the budget (point estimates; the ``why`` warns when
   only the upper estimate is past a limit);
6. rank (:mod:`.ranking`) and recommend.

The intervals carried from the runtime are conservative: a workflow's low/high runtime is the sum of
its steps' ``q_low``/``q_high`` along the critical path, not a quantile of the sum.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from ..workflows.templates import Step, Template
from .candidates import CandidateQueue, Exclusion, Requirements, WaitEstimate, check_feasible, typical_wait
from .carbon import CarbonError, Intensity, IntensityTable, carbon_kg, default_table
from .cost import CurrencyRates, Offer, PriceError, Usage, default_rates, nodes_needed, parse_amount
from .energy import ESTIMATED, J_PER_KWH, MEASURED, MeasuredPower
from .ranking import DecisionError, Policy, UserChoice, fmt_duration, rank_arrays, resolve_strategy

VARIANTS = ("low", "point", "high")


class Prediction(Protocol):
    """What the prediction helper's ``predict`` returns (seconds)."""

    point: float
    q_low: float
    q_high: float
    source: str
    model_version: str


@runtime_checkable
class Predictor(Protocol):
    def predict(self, features: Mapping[str, Any]) -> Prediction: ...


def step_features(
    template: Template, step: Step, values: Mapping[str, Any], user: str = ""
) -> dict[str, Any]:
    """The features a predictor gets for one step (independent of the candidate)."""
    r = step.resources
    n = template.array_size(step, dict(values)) or 1
    return {
        "application": template.application,
        "template": template.name,
        "template_version": template.version,
        "step": step.name,
        "user": user,
        "nodes": r.nodes,
        "tasks": r.tasks,
        "cpus_per_task": r.cpus_per_task,
        "cores": r.cores,
        "memory_mb": r.memory_mb,
        "gpus": r.gpus,
        "requested_time_s": r.walltime_s,
        "array_size": n,
        "params": dict(values),
    }


@dataclass(frozen=True)
class StepRuntime:
    step: str
    point: float
    low: float
    high: float
    source: str
    model_version: str


def _predict_steps(predictor: Predictor, feats: list[dict[str, Any]]) -> list[StepRuntime]:
    many = getattr(predictor, "predict_many", None)
    preds = list(many(feats)) if callable(many) else [predictor.predict(f) for f in feats]
    out = []
    for f, p in zip(feats, preds, strict=True):
        vals = [float(p.point), float(p.q_low), float(p.q_high)]
        if not all(math.isfinite(v) and v >= 0 for v in vals):
            raise DecisionError(
                f"the runtime predictor returned {vals} s for step {f['step']!r}; expected finite seconds >= 0"
            )
        pt = vals[0]
        out.append(
            StepRuntime(
                f["step"], pt, min(vals[1], pt), max(vals[2], pt), str(p.source), str(p.model_version)
            )
        )
    return out


@dataclass(frozen=True)
class Recommendation:
    cluster: str
    queue: str
    strategy: str
    why: str
    expected_start: datetime
    expected_end: datetime
    runtime_s: float
    cost: Decimal | None
    currency: str
    energy_kwh: float
    co2e_kg: float

    @property
    def key(self) -> str:
        return f"{self.cluster}/{self.queue}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "queue": self.queue,
            "strategy": self.strategy,
            "why": self.why,
            "expected_start": self.expected_start.isoformat(),
            "expected_end": self.expected_end.isoformat(),
            "runtime_s": round(self.runtime_s, 1),
            "cost": None if self.cost is None else str(self.cost),
            "currency": self.currency,
            "energy_kwh": round(self.energy_kwh, 6),
            "co2e_kg": round(self.co2e_kg, 6),
        }


@dataclass
class Decision:
    """The outcome: ``table`` (one row per candidate, ranked ones first) and the recommendation
    (``None`` when no candidate is left; ``message`` then says why)."""

    table: pd.DataFrame
    recommendation: Recommendation | None
    strategy: str
    weights: dict[str, float]
    currency: str
    steps: list[StepRuntime]
    message: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form for the API."""
        rows = []
        for rec in self.table.to_dict(orient="records"):
            row = {}
            for k, v in rec.items():
                if isinstance(v, Decimal):
                    v = str(v)
                elif isinstance(v, datetime | pd.Timestamp):
                    v = v.isoformat()
                elif v is pd.NA or (isinstance(v, float) and math.isnan(v)):
                    v = None
                elif isinstance(v, np.integer):
                    v = int(v)
                elif isinstance(v, np.floating):
                    v = float(v)
                row[k] = v
            rows.append(row)
        return {
            "strategy": self.strategy,
            "weights": self.weights,
            "currency": self.currency,
            "recommendation": self.recommendation.to_dict() if self.recommendation else None,
            "message": self.message,
            "steps": [s.__dict__ for s in self.steps],
            "candidates": rows,
        }


def _intensity(c: CandidateQueue, table: IntensityTable, basis: str) -> tuple[Intensity, str]:
    """The candidate's grid intensity and a note when it had to fall back to the global average."""
    if c.grid_intensity is not None:
        return c.grid_intensity, ""
    if c.grid_zone:
        try:
            return table.lookup(c.grid_zone, basis), ""
        except CarbonError:
            note = f"grid zone {c.grid_zone} not in the intensity table: global average used"
    else:
        note = "no grid zone declared: global average used"
    return table.lookup("GLOBAL", basis), note


def _slots(c: CandidateQueue, step: Step) -> float:
    """How many array tasks of *step* the queue runs at once (inf when the queue sets no node limit)."""
    r = step.resources
    if c.max_nodes is None:
        return math.inf
    if r.nodes > 1 or not c.cpus_per_node:
        return max(1.0, float(c.max_nodes // r.nodes))
    per_node = max(1, c.cpus_per_node // max(1, r.cores))
    return float(c.max_nodes * per_node)


def decide(
    template: Template,
    params: Mapping[str, Any] | None,
    candidates: Sequence[CandidateQueue],
    predictor: Predictor,
    *,
    policy: Policy | None = None,
    choice: UserChoice | None = None,
    requirements: Requirements | None = None,
    waits: Mapping[str, WaitEstimate] | None = None,
    now: datetime | None = None,
    rates: CurrencyRates | None = None,
    currency: str | None = None,
    measured_power: Mapping[str, MeasuredPower] | None = None,
    intensity_table: IntensityTable | None = None,
    app_offer: Offer | None = None,
    exclusions: Sequence[Exclusion] = (),
    user: str = "",
    admin: bool = False,
) -> Decision:
    """Rank *candidates* for running *template* with *params*; see the module docstring.

    *measured_power* maps ``cluster/queue`` or ``cluster`` to EAR/Slurm-measured node power for this
    application; *exclusions* (e.g. misconfigured clusters from
    :func:`.candidates.candidates_from_orm`) are carried into the table.
    """
    policy = policy or Policy()
    strategy, weights = resolve_strategy(policy, choice)
    values = template.resolve(dict(params or {}), admin=admin)
    now = now or datetime.now(timezone.utc)
    if now.tzinfo is None:
        raise DecisionError("now: a timezone-aware datetime is required")
    rates = rates or default_rates()
    currency = currency or policy.currency
    if currency not in rates.rates:
        raise DecisionError(f"currency {currency}: not in the exchange-rate table ({sorted(rates.rates)})")
    table = intensity_table or default_table()
    requirements = requirements or Requirements()
    measured_power = measured_power or {}
    waits = waits or {}
    deadline = choice.deadline if choice else None
    if deadline is not None:
        if deadline.tzinfo is None:
            raise DecisionError("deadline: a timezone-aware datetime is required")
        deadline = deadline.astimezone(timezone.utc)
    budget = choice.budget if choice else None
    budget_currency = (choice.budget_currency if choice else None) or currency
    if budget is not None:
        try:
            budget = parse_amount(budget, "budget")
        except PriceError as e:
            raise DecisionError(str(e)) from None
        if budget_currency not in rates.rates:
            raise DecisionError(
                f"budget currency {budget_currency}: not in the exchange-rate table ({sorted(rates.rates)})"
            )

    excluded: list[Exclusion] = list(exclusions)
    allowed = policy.platforms.get(template.name)
    feasible: list[CandidateQueue] = []
    for c in candidates:
        if allowed is not None and c.cluster not in allowed:
            excluded.append(
                Exclusion(
                    c.cluster,
                    c.queue,
                    (f"your organization does not allow {c.cluster} for {template.name}",),
                    "not-allowed",
                )
            )
            continue
        reasons = check_feasible(c, template, requirements)
        if reasons:
            excluded.append(Exclusion(c.cluster, c.queue, tuple(reasons), "infeasible"))
        else:
            feasible.append(c)

    order = template.order()
    feats = [step_features(template, s, values, user) for s in order]
    runtimes = _predict_steps(predictor, feats) if feasible else []
    rt = {s.step: np.array([s.low, s.point, s.high]) for s in runtimes}
    arrays = {f["step"]: f["array_size"] for f in feats}

    ctx = _Context(
        order, rt, arrays, now, requirements, rates, currency, measured_power, table, policy, app_offer
    )
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for c in feasible:
        w = waits.get(c.key) or typical_wait(c, now)
        if w.refused:
            excluded.append(Exclusion(c.cluster, c.queue, (w.refused,), "refused"))
            continue
        rows.append(_evaluate(c, w, ctx))

    ok_rows, limit_rows = [], []
    for row in rows:
        why = []
        if deadline is not None:
            if row["expected_end"] > deadline:
                why.append(
                    f"ends {row['expected_end']:%Y-%m-%d %H:%M} UTC, after the deadline {deadline:%Y-%m-%d %H:%M} UTC"
                )
                row["status"] = "over-deadline"
            elif row["expected_end_high"] > deadline:
                row["_warn"].append("may miss the deadline if the run takes as long as the upper estimate")
        if budget is not None:
            if row["cost"] is None:
                why.append("no price published for this queue, so the budget cannot be checked")
                row["status"] = row.get("status") or "over-budget"
            else:
                c_b = rates.convert_cents(row["cost"], currency, budget_currency)
                hi_b = rates.convert_cents(row["cost_high"], currency, budget_currency)
                if c_b > budget:
                    why.append(
                        f"costs {c_b} {budget_currency}, over the budget of {budget} {budget_currency}"
                    )
                    row["status"] = row.get("status") or "over-budget"
                elif hi_b > budget:
                    row["_warn"].append(
                        f"may exceed the budget ({hi_b} {budget_currency} at the upper estimate)"
                    )
        if why:
            row["why"] = "; ".join(why)
            limit_rows.append(row)
        else:
            ok_rows.append(row)

    if ok_rows:
        r = rank_arrays(
            [row["key"] for row in ok_rows],
            {c: np.array([row[RANK_COLUMN[c]] for row in ok_rows], dtype=float) for c in RANK_COLUMN},
            strategy,
            weights,
            currency,
        )
        for i, row in enumerate(ok_rows):
            row.update(
                status="ranked",
                score=float(r.score[i]),
                rank=int(r.rank[i]),
                why="; ".join([r.why[i], *row["_warn"]]),
            )
        ok_rows = [ok_rows[i] for i in r.order]
    excluded_rows = [
        {"key": e.key, "cluster": e.cluster, "queue": e.queue, "status": e.kind, "why": "; ".join(e.reasons)}
        for e in excluded
    ]
    out = _frame([*ok_rows, *limit_rows, *excluded_rows], currency)
    if runtimes:
        notes.append(
            "runtimes predicted by "
            + ", ".join(sorted({f"{s.source} ({s.model_version})" for s in runtimes}))
        )

    rec = None
    message = ""
    if ok_rows:
        top = ok_rows[0]
        rec = Recommendation(
            cluster=top["cluster"],
            queue=top["queue"],
            strategy=strategy,
            why=top["why"],
            expected_start=top["expected_start"],
            expected_end=top["expected_end"],
            runtime_s=float(top["runtime_s"]),
            cost=top["cost"],
            currency=currency,
            energy_kwh=float(top["energy_kwh"]),
            co2e_kg=float(top["co2e_kg"]),
        )
    else:
        message = _nothing_left(candidates, excluded, limit_rows)
    return Decision(out, rec, strategy, weights, currency, runtimes, message, notes)


def _nothing_left(
    candidates: Sequence[CandidateQueue], excluded: list[Exclusion], limit_rows: list[dict]
) -> str:
    if not candidates and not excluded:
        return "no cluster is enrolled for your organization; ask an organization admin to enrol one"
    kinds = sorted({e.kind for e in excluded} | {r["status"] for r in limit_rows})
    return (
        "no candidate can run this workflow (" + ", ".join(kinds) + "); see each candidate's reason and "
        "change the parameters, the limits, or ask an admin to enrol a suitable queue"
    )


@dataclass(frozen=True)
class _Context:
    """What every candidate's evaluation shares."""

    order: list[Step]
    rt: dict[str, np.ndarray]  # step -> [low, point, high] seconds on a relative_speed 1 cluster
    arrays: dict[str, int]  # step -> array tasks (1 for a plain job)
    now: datetime
    req: Requirements
    rates: CurrencyRates
    currency: str
    measured_power: Mapping[str, MeasuredPower]
    table: IntensityTable
    policy: Policy
    app_offer: Offer | None


def _evaluate(c: CandidateQueue, wait: WaitEstimate, ctx: _Context) -> dict[str, Any]:
    """Figures of one feasible candidate, for the low / point / high runtime estimates."""
    order, rt, arrays, now, req = ctx.order, ctx.rt, ctx.arrays, ctx.now, ctx.req
    rates, currency, app_offer = ctx.rates, ctx.currency, ctx.app_offer
    finish: dict[str, np.ndarray] = {}
    core_h = node_h = gpu_h = mem_gbh = np.zeros(3)
    energy_j = np.zeros(3)
    jobs = 0
    mp = ctx.measured_power.get(c.key) or ctx.measured_power.get(c.cluster)
    over: list[str] = []
    for step in order:
        r = step.resources
        per_task = rt[step.name] / c.relative_speed
        if per_task[2] > r.walltime_s:
            over.append(
                f"step '{step.name}' may outrun its walltime {fmt_duration(r.walltime_s)} here "
                f"(upper estimate {fmt_duration(per_task[2])})"
            )
        n = arrays[step.name]
        waves = 1.0 if n == 1 else math.ceil(n / min(n, _slots(c, step)))
        start = np.maximum.reduce([finish[d] for d in step.depends_on]) if step.depends_on else np.zeros(3)
        finish[step.name] = start + per_task * waves
        nodes = r.nodes
        if c.kind == "cloud" and c.cpus_per_node and c.mem_per_node_mb:
            nodes = (
                nodes_needed(
                    r.nodes, r.cores, r.memory_mb, r.gpus, c.cpus_per_node, c.mem_per_node_mb, c.gpus_per_node
                )
                or r.nodes
            )
        hours = per_task * n / 3600.0
        core_h = core_h + r.cores * hours
        node_h = node_h + nodes * hours
        gpu_h = gpu_h + r.gpus * hours
        mem_gbh = mem_gbh + r.memory_mb / 1024.0 * r.nodes * hours
        jobs += 1
        if mp is not None:
            node_w = mp.node_power_w
        else:
            cpn = math.ceil(r.cores / r.nodes)
            node_w = c.power.node_power_w(cpn, r.memory_mb / 1024.0, math.ceil(r.gpus / r.nodes))
        energy_j = energy_j + node_w * nodes * per_task * n
    makespan = np.max(np.stack(list(finish.values())), axis=0)
    transfer = 0.0 if req.data_is_local(c) else req.input_gb
    storage = req.output_gb * req.storage_months

    costs: list[Decimal | None] = []
    for i in range(3):
        if c.offer is None:
            costs.append(None)
            continue
        usage = Usage.from_floats(
            jobs=jobs,
            core_hours=float(core_h[i]),
            node_hours=float(node_h[i]),
            gpu_hours=float(gpu_h[i]),
            mem_gb_hours=float(mem_gbh[i]),
            storage_gb_month=storage,
            transfer_gb=transfer,
        )
        bill = c.offer.price(usage)
        total = rates.convert_cents(bill.total, bill.currency, currency)
        if app_offer is not None:
            app_bill = app_offer.price(usage)
            total += rates.convert_cents(app_bill.total, app_bill.currency, currency)
        costs.append(total)
    intensity, inote = _intensity(c, ctx.table, ctx.policy.intensity_basis)
    kwh = energy_j / J_PER_KWH
    co2 = carbon_kg(kwh, c.pue, intensity.g_per_kwh)
    start_at = max(wait.start, now).astimezone(timezone.utc)
    ends = [start_at + timedelta(seconds=float(s)) for s in makespan]
    warn = [*over, inote] if inote else over
    if not c.pue_declared:
        warn.append(f"PUE not declared: {c.pue:g} assumed")
    return {
        "key": c.key,
        "cluster": c.cluster,
        "queue": c.queue,
        "kind": c.kind,
        "status": "",
        "expected_start": start_at,
        "wait_source": wait.source,
        "pending_jobs": wait.pending_jobs,
        "runtime_s": float(makespan[1]),
        "runtime_low_s": float(makespan[0]),
        "runtime_high_s": float(makespan[2]),
        "expected_end": ends[1],
        "expected_end_low": ends[0],
        "expected_end_high": ends[2],
        "end_s": (ends[1] - now).total_seconds(),
        "cost": costs[1],
        "cost_low": costs[0],
        "cost_high": costs[2],
        "cost_value": float(costs[1]) if costs[1] is not None else math.nan,
        "currency": currency,
        "price_source": _price_source(c),
        "energy_kwh": float(kwh[1]),
        "energy_low_kwh": float(kwh[0]),
        "energy_high_kwh": float(kwh[2]),
        "energy_basis": MEASURED if mp is not None else ESTIMATED,
        "energy_source": mp.describe() if mp is not None else c.power.describe(),
        "co2e_kg": float(co2[1]),
        "co2e_low_kg": float(co2[0]),
        "co2e_high_kg": float(co2[2]),
        "carbon_basis": MEASURED if mp is not None else ESTIMATED,
        "pue": c.pue,
        "intensity_g_per_kwh": intensity.g_per_kwh,
        "intensity_source": intensity.describe(),
        "_warn": warn,
    }


def _price_source(c: CandidateQueue) -> str:
    if c.offer is None:
        return "no price published"
    return c.offer.source or f"offer of {c.cluster} ({c.offer.currency})"


COLUMNS = [
    "rank",
    "cluster",
    "queue",
    "status",
    "why",
    "score",
    "expected_start",
    "runtime_s",
    "runtime_low_s",
    "runtime_high_s",
    "expected_end",
    "expected_end_low",
    "expected_end_high",
    "cost",
    "cost_low",
    "cost_high",
    "currency",
    "energy_kwh",
    "energy_low_kwh",
    "energy_high_kwh",
    "energy_basis",
    "co2e_kg",
    "co2e_low_kg",
    "co2e_high_kg",
    "carbon_basis",
    "kind",
    "wait_source",
    "pending_jobs",
    "price_source",
    "energy_source",
    "pue",
    "intensity_g_per_kwh",
    "intensity_source",
    "key",
]


RANK_COLUMN = {"time": "end_s", "cost": "cost_value", "energy": "energy_kwh", "carbon": "co2e_kg"}
FLOAT_COLUMNS = (
    "score",
    "runtime_s",
    "runtime_low_s",
    "runtime_high_s",
    "energy_kwh",
    "energy_low_kwh",
    "energy_high_kwh",
    "co2e_kg",
    "co2e_low_kg",
    "co2e_high_kg",
    "pue",
    "intensity_g_per_kwh",
)
TIME_COLUMNS = ("expected_start", "expected_end", "expected_end_low", "expected_end_high")


def _frame(rows: list[dict[str, Any]], currency: str) -> pd.DataFrame:
    """The decision table from row dicts, built once, with stable dtypes: floats (NaN when unknown),
    nullable integers for rank and pending jobs, UTC timestamps, Decimal or None for money."""
    cols: dict[str, Any] = {}
    for col in COLUMNS:
        vals = [row.get(col) for row in rows]
        if col in FLOAT_COLUMNS:
            cols[col] = np.array([math.nan if v is None else v for v in vals], dtype=float)
        elif col in ("rank", "pending_jobs"):
            cols[col] = pd.array(vals, dtype="Int64")
        elif col in TIME_COLUMNS:
            cols[col] = pd.DatetimeIndex([pd.NaT if v is None else v for v in vals], tz="UTC")
        elif col == "currency":
            cols[col] = [currency] * len(rows)
        else:
            cols[col] = pd.array(vals, dtype=object)
    return pd.DataFrame(cols, columns=COLUMNS)
