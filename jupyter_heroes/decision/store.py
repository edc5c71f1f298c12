"""The decision module's memory: decisions, their predictions beside the outcomes, policies, EAR power.

Functions for the service and the workflow engine (they take a SQLAlchemy session, flush but never
commit: the caller owns the transaction):

- :func:`record_decision` stores a :class:`~.decide.Decision` (the table as shown, the
  recommendation, the policy in force) and, per candidate, what was predicted: one
  :class:`~jupyter_heroes.orm_decision.DecisionPrediction` row per step (its runtime on that
  candidate) and one for the whole workflow (``step == ""``: runtime, cost, energy, carbon);
- :func:`link_submission` records the user's pick when the workflow is submitted (the
  recommendation accepted, or another ranked candidate);
- :func:`predicted_cost` is what the submission reserves from the budget;
- :func:`performance` sets predictions beside outcomes: the actual runtime of each finished job is
  read from the workflow's :class:`~jupyter_heroes.orm.Job` rows (``accounting.elapsed_s`` from the
  scheduler's accounting, else ``finished - started``), grouped per model version;
- :func:`get_policy` / :func:`set_policy`: the organization's :class:`~.ranking.Policy`;
- :func:`ingest_ear` / :func:`measured_powers`: EAR signatures per organization, cluster and
  application; :func:`power_measurements` the measured node power later decisions use
  (``energy_basis == "measured"``): EAR's, else Slurm's ``ConsumedEnergy`` of earlier runs.

Errors are :class:`DecisionStoreError` with ``message`` (says what to do), ``reason`` and ``status``;
a decision of another organization is :class:`DecisionNotFound` (404), never "forbidden".
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..accounting.money import check_currency
from ..errors import DomainError
from ..orm import Cluster, Job, Organization, User, WorkflowInstance, WorkflowTemplate, utcnow
from ..orm_decision import Decision as DecisionRow
from ..orm_decision import DecisionPolicy, DecisionPrediction, EarRecord
from ..orm_market import UsageRecord
from .candidates import CandidateQueue
from .cost import PriceError, default_rates
from .decide import Decision
from .ear import EarRecord as EarSignature
from .energy import MeasuredPower
from .ranking import DecisionError, Policy

#: ``DecisionPrediction.step`` of the row about the whole workflow
WORKFLOW = ""


class DecisionStoreError(DomainError):
    """A request about a stored decision cannot be carried out. ``message`` is for the user,
    ``reason`` a short machine code, ``status`` the HTTP status the REST layer answers with."""

    status = 400
    reason = "decision_error"


class DecisionNotFound(DecisionStoreError, LookupError):
    """No such decision *for the caller's organization* (it may exist in another)."""

    status = 404
    reason = "not_found"


class NotACandidate(DecisionStoreError, ValueError):
    """The cluster/queue submitted to was not a ranked candidate of the decision."""

    status = 400
    reason = "not_a_candidate"


class DecisionAlreadyUsed(DecisionStoreError):
    """The decision was already linked to another workflow instance."""

    status = 409
    reason = "decision_already_used"


class InvalidPolicy(DecisionStoreError, ValueError):
    status = 400
    reason = "invalid_policy"


# --- policies -----------------------------------------------------------------------------------


def policy_to_dict(p: Policy) -> dict[str, Any]:
    """A policy as JSON (the inverse of :meth:`Policy.from_dict`)."""
    return {
        "strategy": p.strategy,
        "weights": dict(p.weights),
        "allow_user_strategy": p.allow_user_strategy,
        "allow_user_weights": p.allow_user_weights,
        "platforms": {k: list(v) for k, v in p.platforms.items()},
        "currency": p.currency,
        "intensity_basis": p.intensity_basis,
    }


def parse_policy(d: Any) -> Policy:
    """A validated :class:`Policy` from JSON; :class:`InvalidPolicy` names the field."""
    if not isinstance(d, Mapping):
        raise InvalidPolicy("policy: a JSON object with strategy, weights, allow_user_strategy, ...")
    try:
        p = Policy.from_dict(d)
        check_currency(p.currency, "policy.currency")
        if p.currency not in default_rates().rates:
            raise InvalidPolicy(
                f"policy.currency: {p.currency} is not in the exchange-rate table "
                f"({', '.join(sorted(default_rates().rates))})"
            )
    except (DecisionError, PriceError) as e:
        raise InvalidPolicy(str(e)) from None
    return p


def get_policy(session: Session, org_id: int) -> Policy:
    """The organization's decision policy (the defaults of :class:`Policy` until one is set)."""
    row = session.get(DecisionPolicy, org_id)
    if row is None:
        return Policy()
    try:
        return Policy.from_dict(row.policy)
    except DecisionError:  # a stored policy is validated when set; never let an old one break decide
        return Policy()


def policy_row(session: Session, org_id: int) -> DecisionPolicy | None:
    return session.get(DecisionPolicy, org_id)


def set_policy(
    session: Session, org_id: int, policy: Policy | Mapping[str, Any], *, updated_by: str = ""
) -> Policy:
    """Replace the organization's policy (validated; :class:`InvalidPolicy` changes nothing)."""
    p = policy if isinstance(policy, Policy) else parse_policy(policy)
    if isinstance(policy, Policy):
        p = parse_policy(policy_to_dict(policy))
    row = session.get(DecisionPolicy, org_id)
    if row is None:
        row = DecisionPolicy(org_id=org_id)
        session.add(row)
    row.policy = policy_to_dict(p)
    row.updated_by = updated_by
    row.updated = utcnow()
    session.flush()
    return p


# --- decisions ----------------------------------------------------------------------------------


def _cents(v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, Decimal):
        return int((v * 100).to_integral_value())
    try:
        return int((Decimal(str(v)) * 100).to_integral_value())
    except ArithmeticError:
        return None


def _num(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _model_version(decision: Decision) -> str:
    return ",".join(sorted({s.model_version for s in decision.steps})) if decision.steps else ""


def record_decision(
    session: Session,
    *,
    org_id: int,
    user: User | str | None,
    template: Any,
    params: Mapping[str, Any] | None,
    decision: Decision,
    policy: Policy | None = None,
    limits: Mapping[str, Any] | None = None,
    candidates: Sequence[CandidateQueue] = (),
    template_id: int | None = None,
    decision_id: str | None = None,
    advice: Mapping[str, Mapping[str, Any]] | None = None,
) -> str:
    """Store *decision* and its predictions; returns the decision id.

    *template* is a :class:`~jupyter_heroes.workflows.templates.Template` or a
    :class:`~jupyter_heroes.orm.WorkflowTemplate` row; *params* the resolved values; *candidates*
    (the :class:`.candidates.CandidateQueue` objects decided on) give each candidate's
    ``relative_speed``, so per-step predictions are stored as they apply on that candidate (1.0 for
    a candidate not given). *advice* (``cluster/queue`` -> step -> walltime and memory advice, see
    :meth:`.service.DecisionService.advise`) is kept in each candidate's row as ``advice``.
    """
    if isinstance(template, WorkflowTemplate):
        template_id = template.id if template_id is None else template_id
    user_obj = user if isinstance(user, User) else None
    user_name = user_obj.name if user_obj is not None else (user or "")
    d = decision.to_dict()
    for cand in d["candidates"]:
        if advice and cand.get("key") in advice:
            cand["advice"] = dict(advice[cand["key"]])
    row = DecisionRow(
        org_id=org_id,
        user_id=user_obj.id if user_obj is not None else None,
        user_name=user_name,
        template_id=template_id,
        template_name=template.name,
        template_version=int(template.version),
        params=dict(params or {}),
        strategy=decision.strategy,
        weights=dict(decision.weights),
        policy=policy_to_dict(policy) if policy is not None else {},
        limits={k: v for k, v in dict(limits or {}).items() if v is not None},
        currency=decision.currency,
        model_version=_model_version(decision),
        candidates=d["candidates"],
        message=decision.message or "",
        recommended=decision.recommendation.key if decision.recommendation else "",
    )
    if decision_id:
        row.id = decision_id
    session.add(row)
    session.flush()
    speeds = {c.key: c.relative_speed for c in candidates}
    sources = ",".join(sorted({s.source for s in decision.steps}))
    for cand in d["candidates"]:
        if _num(cand.get("runtime_s")) is None:
            continue  # excluded before any figure was computed
        key = f"{cand['cluster']}/{cand['queue']}"
        session.add(
            DecisionPrediction(
                decision_id=row.id,
                cluster=cand["cluster"],
                queue=cand["queue"],
                step=WORKFLOW,
                runtime_s=float(cand["runtime_s"]),
                runtime_low_s=_num(cand.get("runtime_low_s")) or float(cand["runtime_s"]),
                runtime_high_s=_num(cand.get("runtime_high_s")) or float(cand["runtime_s"]),
                cost_cents=_cents(cand.get("cost")),
                currency=decision.currency,
                energy_kwh=_num(cand.get("energy_kwh")),
                co2e_kg=_num(cand.get("co2e_kg")),
                energy_basis=str(cand.get("energy_basis") or ""),
                source=sources[:64],
                model_version=row.model_version,
            )
        )
        speed = speeds.get(key, 1.0) or 1.0
        for s in decision.steps:
            session.add(
                DecisionPrediction(
                    decision_id=row.id,
                    cluster=cand["cluster"],
                    queue=cand["queue"],
                    step=s.step,
                    runtime_s=s.point / speed,
                    runtime_low_s=s.low / speed,
                    runtime_high_s=s.high / speed,
                    currency=decision.currency,
                    source=s.source[:64],
                    model_version=s.model_version,
                )
            )
    session.flush()
    return row.id


def get_decision(session: Session, org_id: int, decision_id: str) -> DecisionRow:
    """The decision *decision_id* of *org_id*; :class:`DecisionNotFound` otherwise."""
    row = session.get(DecisionRow, decision_id) if isinstance(decision_id, str) else None
    if row is None or row.org_id != org_id:
        raise DecisionNotFound(
            f"decision '{str(decision_id)[:64]}' not found in your organization; "
            "ask for a new one with POST /organization/decision/decide"
        )
    return row


def _ranked(row: DecisionRow) -> list[tuple[str, str]]:
    return [(c["cluster"], c["queue"]) for c in row.candidates or [] if c.get("status") == "ranked"]


def _resolve_queue(row: DecisionRow, cluster: str, queue: str) -> tuple[str, str]:
    ranked = _ranked(row)
    if (cluster, queue) in ranked:
        return cluster, queue
    if not queue:
        mine = [(c, q) for c, q in ranked if c == cluster]
        if len(mine) == 1:
            return mine[0]
    listed = ", ".join(f"{c}/{q}" for c, q in ranked) or "none"
    raise NotACandidate(
        f"{cluster}/{queue or '(default queue)'} was not a ranked candidate of decision {row.id} "
        f"(ranked: {listed}); submit to one of them, or ask for a new decision"
    )


def link_submission(
    session: Session, *, org_id: int, decision_id: str, instance_id: str | None, cluster: str, queue: str
) -> None:
    """Record that *instance_id* was submitted to *cluster*/*queue* following decision *decision_id*
    (the recommendation accepted, or overridden by another ranked candidate). With *instance_id*
    None, only check that it could be (a submission does so before anything else about it, so a
    placement the decision did not rank is refused as such).

    Raises :class:`DecisionNotFound` (404) for an unknown decision or one of another organization,
    :class:`NotACandidate` (400) if *cluster*/*queue* was not ranked by it (an empty *queue*, the
    cluster's default, matches when the decision ranked exactly one queue of that cluster), and
    :class:`DecisionAlreadyUsed` (409) if it was already linked to another instance.
    """
    row = get_decision(session, org_id, decision_id)
    cluster, queue = _resolve_queue(row, cluster, queue)
    if row.instance_id and row.instance_id != instance_id:
        raise DecisionAlreadyUsed(
            f"decision {row.id} was already followed by workflow {row.instance_id}; ask for a new "
            "decision for another submission"
        )
    if instance_id is None:
        return
    key = f"{cluster}/{queue}"
    row.chosen = key
    row.accepted = key == row.recommended
    row.chosen_at = utcnow()
    row.instance_id = instance_id
    session.flush()


def predicted_cost(
    session: Session, decision_id: str, cluster: str, queue: str, *, org_id: int | None = None
) -> tuple[int, str] | None:
    """The predicted cost of running the decision's workflow on *cluster*/*queue*, as (cents,
    currency), or None when the decision (of *org_id*, when given), the candidate, or its price is
    unknown. :func:`link_submission` checks the organization too."""
    row = session.get(DecisionRow, decision_id) if isinstance(decision_id, str) else None
    if row is None or (org_id is not None and row.org_id != org_id):
        return None
    try:
        cluster, queue = _resolve_queue(row, cluster, queue)
    except NotACandidate:
        return None
    p = session.scalar(
        select(DecisionPrediction).where(
            DecisionPrediction.decision_id == row.id,
            DecisionPrediction.cluster == cluster,
            DecisionPrediction.queue == queue,
            DecisionPrediction.step == WORKFLOW,
        )
    )
    if p is None or p.cost_cents is None:
        return None
    return int(p.cost_cents), p.currency


def advice_for(
    session: Session, decision_id: str, cluster: str, queue: str, *, org_id: int
) -> dict[str, dict[str, Any]] | None:
    """The submission advice decision *decision_id* (of *org_id*) gave for *cluster*/*queue*: step ->
    ``{walltime_s, memory_mb, basis, ...}``, or None (unknown decision, candidate not ranked, or a
    decision stored without advice). For a submission that accepts the advice."""
    row = session.get(DecisionRow, decision_id) if isinstance(decision_id, str) else None
    if row is None or row.org_id != org_id:
        return None
    try:
        cluster, queue = _resolve_queue(row, cluster, queue)
    except NotACandidate:
        return None
    for c in row.candidates or []:
        if (c.get("cluster"), c.get("queue")) == (cluster, queue) and isinstance(c.get("advice"), dict):
            return {k: dict(v) for k, v in c["advice"].items()}
    return None


def decision_view(row: DecisionRow) -> dict[str, Any]:
    """A stored decision as JSON (the REST answer of ``GET /organization/decision/{id}``)."""
    return {
        "decision": row.id,
        "user": row.user_name,
        "template": row.template_name,
        "template_version": row.template_version,
        "params": dict(row.params or {}),
        "strategy": row.strategy,
        "weights": dict(row.weights or {}),
        "policy": dict(row.policy or {}),
        "limits": dict(row.limits or {}),
        "currency": row.currency,
        "model_version": row.model_version,
        "message": row.message,
        "recommended": row.recommended or None,
        "chosen": row.chosen or None,
        "accepted": row.accepted,
        "chosen_at": _iso(row.chosen_at),
        "instance": row.instance_id,
        "created": _iso(row.created),
        "candidates": list(row.candidates or []),
    }


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.replace(tzinfo=timezone.utc).isoformat()


# --- performance: predictions beside outcomes -----------------------------------------------------


def actual_runtime(job: Job) -> float | None:
    """A finished job's run time in seconds: the scheduler's accounting (``elapsed_s``), else the
    times the engine recorded; None when neither is known."""
    acct = job.accounting or {}
    v = _num(acct.get("elapsed_s"))
    if v is not None and v > 0:
        return v
    if job.started and job.finished and job.finished > job.started:
        return (job.finished - job.started).total_seconds()
    return None


def _accuracy(pred: float, actual: float) -> float:
    if pred <= 0 or actual <= 0:
        return 0.0
    return min(pred, actual) / max(pred, actual)


def performance_rows(
    session: Session, org_id: int, *, since: datetime | None = None, decision_id: str | None = None
) -> list[dict[str, Any]]:
    """One row per finished job of a workflow submitted from a decision: the runtime predicted for
    its step on the candidate it ran on, and the actual one (see :func:`actual_runtime`)."""
    q = (
        select(Job, DecisionRow, DecisionPrediction)
        .join(DecisionRow, DecisionRow.instance_id == Job.instance_id)
        .join(
            DecisionPrediction,
            (DecisionPrediction.decision_id == DecisionRow.id)
            & (DecisionPrediction.step == Job.step)
            & (DecisionPrediction.cluster + "/" + DecisionPrediction.queue == DecisionRow.chosen),
        )
        .where(DecisionRow.org_id == org_id, Job.state == "completed", Job.finished.is_not(None))
    )
    if since is not None:
        q = q.where(Job.finished >= _naive(since))
    if decision_id is not None:
        q = q.where(DecisionRow.id == decision_id)
    q = q.order_by(Job.finished, Job.id)
    out = []
    for job, d, p in session.execute(q).all():
        actual = actual_runtime(job)
        if actual is None:
            continue
        usage = session.scalar(select(UsageRecord).where(UsageRecord.job_id == job.id))
        acct = job.accounting or {}
        out.append(
            {
                "decision": d.id,
                "instance": job.instance_id,
                "job_id": job.scheduler_job_id,
                "step": job.step,
                "array_index": job.array_index,
                "user": d.user_name,
                "template": d.template_name,
                "cluster": p.cluster,
                "queue": p.queue,
                "accepted": d.accepted,
                "model_version": p.model_version,
                "source": p.source,
                "predicted_s": round(p.runtime_s, 3),
                "predicted_low_s": round(p.runtime_low_s, 3),
                "predicted_high_s": round(p.runtime_high_s, 3),
                "actual_s": round(actual, 3),
                "accuracy": round(_accuracy(p.runtime_s, actual), 6),
                "error_s": round(p.runtime_s - actual, 3),
                "under_predicted": p.runtime_s < actual,
                "within_interval": p.runtime_low_s <= actual <= p.runtime_high_s,
                "actual_energy_j": _num(acct.get("consumed_energy_j")),
                "actual_cost": None if usage is None else f"{Decimal(usage.cost_cents) / 100:.2f}",
                "actual_currency": None if usage is None else usage.currency,
                "finished": _iso(job.finished),
            }
        )
    return out


def performance(session: Session, org_id: int, *, since: datetime | None = None) -> list[dict[str, Any]]:
    """Predicted vs actual runtime of every finished job of the organization submitted from a
    decision, per model version (newest first): ``count``, ``accuracy`` (mean of
    min(predicted, actual) / max(predicted, actual)), ``mae_s`` (mean absolute error),
    ``under_predicted_share`` (jobs that ran longer than predicted), ``coverage`` (actual within
    the predicted interval), and the per-job rows (``jobs``). Only completed jobs count: a failed
    run's length says nothing about the prediction."""
    rows = performance_rows(session, org_id, since=since)
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[r["model_version"]].append(r)
    out = []
    for version, jobs in groups.items():
        n = len(jobs)
        out.append(
            {
                "model_version": version,
                "count": n,
                "accuracy": round(sum(j["accuracy"] for j in jobs) / n, 6),
                "mae_s": round(sum(abs(j["error_s"]) for j in jobs) / n, 3),
                "under_predicted_share": round(sum(j["under_predicted"] for j in jobs) / n, 6),
                "coverage": round(sum(j["within_interval"] for j in jobs) / n, 6),
                "first_finished": jobs[0]["finished"],
                "last_finished": jobs[-1]["finished"],
                "jobs": jobs,
            }
        )
    out.sort(key=lambda g: (g["last_finished"] or "", g["model_version"]), reverse=True)
    return out


def _naive(t: datetime) -> datetime:
    return t.astimezone(timezone.utc).replace(tzinfo=None) if t.tzinfo else t


# --- EAR: measured power per cluster and application ---------------------------------------------


@dataclasses.dataclass(frozen=True)
class IngestResult:
    added: int
    duplicates: int
    applications: dict[str, MeasuredPower]

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "duplicates": self.duplicates,
            "applications": {
                app: {"node_power_w": round(mp.node_power_w, 3), "runs": mp.runs, "source": mp.source}
                for app, mp in sorted(self.applications.items())
            },
        }


def ingest_ear(
    session: Session,
    *,
    org_id: int,
    org_name: str,
    cluster: str,
    records: Iterable[EarSignature],
    source: str,
    application: str | None = None,
    user: str = "",
) -> IngestResult:
    """Store EAR signature rows of *cluster* for *org_id* (a row already stored, same job, step and
    node, is skipped). The application of a row is *application* if given, else the template of the
    HEROES instance or template id the plugin wrote, else EAR's ``APPID``; a row the plugin marked
    with another organization's name is refused (:class:`DecisionStoreError`, nothing stored)."""
    records = list(records)
    if not records:
        raise DecisionStoreError(
            "the EAR file has a header but no rows; nothing to ingest", "invalid_ear_csv"
        )
    templates: dict[str, str] = {}
    apps: list[str] = []
    for i, r in enumerate(records, start=2):
        if r.organization_name and r.organization_name != org_name:
            raise DecisionStoreError(
                f"line {i}: the row belongs to organization {r.organization_name!r}, not {org_name!r}; "
                "ingest each organization's files into that organization",
                "invalid_ear_csv",
            )
        app = application or _app_of(session, org_id, r, templates)
        if not app:
            raise DecisionStoreError(
                f"line {i}: cannot tell the row's application (no HEROES ids, no APPID); "
                "pass ?application=<the template's application id>",
                "invalid_ear_csv",
            )
        apps.append(app[:128])
    existing = {
        (j, s, n)
        for j, s, n in session.execute(
            select(EarRecord.job_id, EarRecord.step_id, EarRecord.node).where(
                EarRecord.org_id == org_id, EarRecord.cluster == cluster
            )
        ).all()
    }
    added = dup = 0
    for r, app in zip(records, apps, strict=True):
        k = (r.job_id[:64], r.step_id[:64], r.node[:255])
        if k in existing:
            dup += 1
            continue
        existing.add(k)
        session.add(
            EarRecord(
                org_id=org_id,
                cluster=cluster,
                application=app,
                job_id=k[0],
                step_id=k[1],
                node=k[2],
                time_s=r.time_s,
                dc_node_power_w=r.dc_node_power_w,
                energy_j=r.energy_j,
                source=source[:32],
                ingested_by=user,
            )
        )
        added += 1
    session.flush()
    powers = {app: measured_powers(session, org_id, app, [cluster]).get(cluster) for app in set(apps)}
    return IngestResult(added, dup, {a: p for a, p in powers.items() if p is not None})


def _app_of(session: Session, org_id: int, r: EarSignature, cache: dict[str, str]) -> str:
    if r.instance_id:
        key = f"i:{r.instance_id}"
        if key not in cache:
            inst = session.get(WorkflowInstance, r.instance_id[:32])
            t = session.get(WorkflowTemplate, inst.template_id) if inst and inst.org_id == org_id else None
            cache[key] = (t.application_id or t.name) if t else ""
        if cache[key]:
            return cache[key]
    if r.template_id:
        key = f"t:{r.template_id}"
        if key not in cache:
            t = None
            if r.template_id.isdigit() and len(r.template_id) < 10:
                t = session.get(WorkflowTemplate, int(r.template_id))
            if t is None or t.org_id != org_id:
                t = session.scalar(
                    select(WorkflowTemplate)
                    .where(WorkflowTemplate.org_id == org_id, WorkflowTemplate.name == r.template_id)
                    .limit(1)
                )
            cache[key] = (t.application_id or t.name) if t else r.template_id
        return cache[key]
    return r.app_id


def measured_powers(
    session: Session, org_id: int, application: str, clusters: Iterable[str]
) -> dict[str, MeasuredPower]:
    """Mean DC node power of *application* per cluster label, from the EAR rows ingested for
    *org_id* (``sum energy / sum node-seconds``; each job step counts as one run)."""
    clusters = list(clusters)
    if not clusters:
        return {}
    rows = session.execute(
        select(
            EarRecord.cluster, EarRecord.job_id, EarRecord.step_id, EarRecord.energy_j, EarRecord.time_s
        ).where(
            EarRecord.org_id == org_id,
            EarRecord.application == application,
            EarRecord.cluster.in_(clusters),
        )
    ).all()
    energy: dict[str, float] = defaultdict(float)
    seconds: dict[str, float] = defaultdict(float)
    runs: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for cluster, job, step, e, t in rows:
        energy[cluster] += e
        seconds[cluster] += t
        runs[cluster].add((job, step))
    return {
        c: MeasuredPower(energy[c] / seconds[c], len(runs[c]), f"EAR measurements of {application}")
        for c in energy
        if seconds[c] > 0
    }


def slurm_measured_powers(
    session: Session, org_id: int, application: str, clusters: Iterable[str]
) -> dict[str, MeasuredPower]:
    """Mean node power of *application* per cluster label from Slurm's ``ConsumedEnergy`` of the
    organization's completed jobs (``sum energy / sum elapsed x nodes``), for clusters whose
    accounting measures energy; a cluster of another organization (a vendor offer) is labelled
    ``provider/cluster``."""
    wanted = set(clusters)
    if not wanted:
        return {}
    q = (
        select(Job.accounting, Cluster.name, Cluster.org_id)
        .join(WorkflowInstance, WorkflowInstance.id == Job.instance_id)
        .join(WorkflowTemplate, WorkflowTemplate.id == WorkflowInstance.template_id)
        .join(Cluster, Cluster.id == Job.cluster_id)
        .where(
            WorkflowInstance.org_id == org_id,
            WorkflowTemplate.application_id == application,
            Job.state == "completed",
        )
        .order_by(Job.finished.desc())
        .limit(2000)
    )
    providers: dict[int, str] = {}
    energy: dict[str, float] = defaultdict(float)
    node_s: dict[str, float] = defaultdict(float)
    runs: dict[str, int] = defaultdict(int)
    for acct, name, cluster_org in session.execute(q).all():
        acct = acct or {}
        e, t = _num(acct.get("consumed_energy_j")), _num(acct.get("elapsed_s"))
        nodes = _num(acct.get("nnodes")) or 1.0
        if not e or not t or e <= 0 or t <= 0:
            continue
        if cluster_org == org_id:
            label = name
        else:
            if cluster_org not in providers:
                o = session.get(Organization, cluster_org)
                providers[cluster_org] = o.name if o else "?"
            label = f"{providers[cluster_org]}/{name}"
        if label not in wanted:
            continue
        energy[label] += e
        node_s[label] += t * nodes
        runs[label] += 1
    return {
        c: MeasuredPower(energy[c] / node_s[c], runs[c], f"Slurm ConsumedEnergy of {application}")
        for c in energy
        if node_s[c] > 0
    }


def power_measurements(
    session: Session, org_id: int, application: str, clusters: Iterable[str]
) -> dict[str, MeasuredPower]:
    """Measured node power per cluster label: EAR's where ingested, else Slurm's ``ConsumedEnergy``."""
    clusters = list(clusters)
    out = slurm_measured_powers(session, org_id, application, clusters)
    out.update(measured_powers(session, org_id, application, clusters))
    return out
