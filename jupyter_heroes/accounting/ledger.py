"""The usage ledger: one :class:`~jupyter_heroes.orm_market.UsageRecord` per finished job.

:func:`record_job` measures a finished job and prices it:

- **usage** from the scheduler's accounting stored on the job (``elapsed_s``, ``alloc_cpus``,
  ``nnodes``, ``consumed_energy_j``; ``alloc_gpus`` when present), completed by the step's requested
  resources in the workflow template (GPUs, memory per node) where the accounting is silent; callers
  that know better pass ``usage=``;
- **price** under the versions pinned when the job was submitted
  (:func:`jupyter_heroes.marketplace.offers.pin_job`; pinned now from the version in force at the
  job's submission time if the engine did not), else, for a job on the organization's own cluster,
  the cluster's ``site.offer`` (not versioned: the price at recording time), else no price. The
  application licence is priced from the pinned application version. ``fixed_per: run`` fixed parts
  are charged once per workflow run, on the instance's first job.

Recording is idempotent: the first record of a job wins (``INSERT ... ON CONFLICT DO NOTHING`` on
the unique ``job_id``), so recording twice, even concurrently, never double-counts.
:func:`settle_from_ledger` settles a run's budget reservation with what its jobs' records cost.
"""

from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..decision.candidates import CandidateError, make_candidate
from ..decision.cost import ZERO, CostBreakdown, CurrencyRates, Offer, Usage
from ..marketplace.common import insert_if_absent, naive_utc
from ..marketplace.errors import Conflict, NotFound
from ..marketplace.offers import pin_job
from ..orm import Cluster, Job, WorkflowInstance, WorkflowTemplate, utcnow
from ..orm_market import (
    BudgetReservation,
    JobOfferPin,
    MarketApplicationVersion,
    MarketOffer,
    MarketOfferVersion,
    UsageRecord,
)
from .budgets import Settlement, _convert, settle
from .money import HUNDRED, from_cents

J_PER_KWH = 3.6e6


def _template_step(session: Session, inst: WorkflowInstance, step: str) -> Any:
    """The step as the run asked for it: the template's, with the submission's walltime and memory."""
    from ..workflows.overrides import effective_template
    from ..workflows.templates import TemplateError, load_template

    row = session.get(WorkflowTemplate, inst.template_id)
    if row is None:
        return None
    try:
        t = effective_template(load_template(row.spec), inst.resource_overrides)
    except TemplateError:
        return None
    return next((s for s in t.steps if s.name == step), None)


def measure(session: Session, job: Job) -> tuple[Usage, float | None, float]:
    """(usage, energy in J or None, elapsed seconds) of a finished job; see the module docstring."""
    acct = dict(job.accounting or {})
    elapsed = acct.get("elapsed_s")
    if elapsed is None and job.started and job.finished:
        elapsed = (job.finished - job.started).total_seconds()
    elapsed = max(float(elapsed or 0.0), 0.0)
    step = _template_step(session, job.instance, job.step)
    res = step.resources if step is not None else None
    cores = acct.get("alloc_cpus") or (res.cores if res else 1)
    nodes = acct.get("nnodes") or (res.nodes if res else 1)
    gpus = acct.get("alloc_gpus") or (res.gpus if res else 0)
    mem_gb = (res.memory_mb / 1024.0 if res else 0.0) * nodes
    hours = elapsed / 3600.0
    first = session.scalar(select(func.min(Job.id)).where(Job.instance_id == job.instance_id))
    usage = Usage.from_floats(
        jobs=1,
        runs=1 if first == job.id else 0,
        core_hours=cores * hours,
        node_hours=nodes * hours,
        gpu_hours=gpus * hours,
        mem_gb_hours=mem_gb * hours,
    )
    energy = acct.get("consumed_energy_j")
    energy = float(energy) if isinstance(energy, int | float) and math.isfinite(energy) else None
    return usage, energy, elapsed


def site_offer(cluster: Cluster, queue: str) -> Offer | None:
    """The price an organization's own cluster declares for *queue* (``site.offer``), or None."""
    try:
        return make_candidate(cluster.name, queue, site=cluster.site or {}).offer
    except CandidateError:
        return None


def predicted_usages(template: Any, values: dict[str, Any]) -> list[Usage]:
    """One :class:`Usage` per step of a run as if every step used its whole requested walltime
    (x its array size): the most :func:`measure` can find, so pricing these is an upper bound of
    what the ledger will charge (while the scheduler allocates what was asked for). Steps are in
    submission order; the first carries the run's ``fixed_per: run`` part, as in :func:`measure`."""
    out = []
    for i, step in enumerate(template.order()):
        r = step.resources
        hours = r.walltime_s / 3600.0 * (template.array_size(step, values) or 1)
        out.append(
            Usage.from_floats(
                jobs=1,
                runs=1 if i == 0 else 0,
                core_hours=r.cores * hours,
                node_hours=r.nodes * hours,
                gpu_hours=r.gpus * hours,
                mem_gb_hours=r.memory_mb / 1024.0 * r.nodes * hours,
            )
        )
    return out


def upper_bound_cost(template: Any, values: dict[str, Any], price: Offer) -> tuple[int, str]:
    """(cents, currency): what a run of *template* with *values* costs at most under *price*,
    each step priced as the ledger prices a job (so the cents are rounded the same way)."""
    return sum(_cents(price.price(u).total) for u in predicted_usages(template, values)), price.currency


def _lines(bill: CostBreakdown) -> list[dict[str, Any]]:
    return [
        {
            "item": ln.item,
            "quantity": str(ln.quantity),
            "unit": ln.unit,
            "rate": str(ln.rate),
            "amount": str(ln.amount),
            "currency": bill.currency,
        }
        for ln in bill.lines
    ]


def _cents(d: Decimal) -> int:
    return int(d * HUNDRED)


def record_job(
    session: Session,
    job_id: int,
    *,
    usage: Usage | None = None,
    energy_j: float | None = None,
) -> UsageRecord:
    """The ledger record of a finished job, created on first call (see the module docstring).

    Raises :class:`~..marketplace.errors.NotFound` for an unknown job and
    :class:`~..marketplace.errors.Conflict` for a job that has not finished."""
    from ..workflows.engine import FINAL_JOB_STATES

    existing = session.scalar(select(UsageRecord).where(UsageRecord.job_id == job_id))
    if existing is not None:
        return existing
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound.of("job", job_id)
    if job.state not in FINAL_JOB_STATES:
        raise Conflict(f"job {job_id} is {job.state}; it is recorded in the ledger once it has finished")
    inst = job.instance
    measured, measured_energy, elapsed = measure(session, job)
    usage = usage or measured
    energy = energy_j if energy_j is not None else measured_energy

    pin = session.get(JobOfferPin, job_id) or pin_job(session, job_id)
    values: dict[str, Any] = {
        "job_id": job.id,
        "instance_id": inst.id,
        "org_id": inst.org_id,
        "project_id": inst.project_id,
        "user_id": inst.user_id,
        "template_id": inst.template_id,
        "cluster_id": job.cluster_id,
        "queue": job.queue,
        "step": job.step,
        "core_hours": float(usage.core_hours),
        "node_hours": float(usage.node_hours),
        "gpu_hours": float(usage.gpu_hours),
        "mem_gb_hours": float(usage.mem_gb_hours),
        "elapsed_s": elapsed,
        "energy_j": energy,
        "started": job.started,
        "finished": job.finished or utcnow(),
        "recorded": utcnow(),
        "pricing": "none",
        "currency": "EUR",
        "cost_cents": 0,
        "licence_currency": "EUR",
        "licence_cents": 0,
    }
    lines: list[dict[str, Any]] = []
    ov = session.get(MarketOfferVersion, pin.offer_version_id) if pin and pin.offer_version_id else None
    if ov is not None:
        offer = session.get(MarketOffer, ov.offer_id)
        bill = Offer.from_dict(ov.price).price(usage)
        values.update(
            pricing="offer",
            offer_id=ov.offer_id,
            offer_version_id=ov.id,
            provider_org_id=offer.provider_org_id if offer else None,
            currency=bill.currency,
            cost_cents=_cents(bill.total),
        )
        lines += _lines(bill)
    else:
        cluster = session.get(Cluster, job.cluster_id) if job.cluster_id else None
        own = (
            site_offer(cluster, job.queue) if cluster is not None and cluster.org_id == inst.org_id else None
        )
        if own is not None:
            bill = own.price(usage)
            values.update(pricing="site", currency=bill.currency, cost_cents=_cents(bill.total))
            lines += _lines(bill)
    av = (
        session.get(MarketApplicationVersion, pin.application_version_id)
        if pin and pin.application_version_id
        else None
    )
    if av is not None:
        bill = Offer.from_dict(av.price).price(usage)
        values.update(
            application_id=av.application_id,
            application_version_id=av.id,
            app_provider_org_id=av.application.provider_org_id,
            licence_currency=bill.currency,
            licence_cents=_cents(bill.total),
        )
        lines += _lines(bill)
    values["breakdown"] = lines
    insert_if_absent(session, UsageRecord, values, ["job_id"])
    rec = session.scalar(select(UsageRecord).where(UsageRecord.job_id == job_id))
    assert rec is not None
    return rec


def record_instance(session: Session, instance_id: str) -> list[UsageRecord]:
    """Record every finished job of an instance (already recorded ones are returned as they are)."""
    from ..workflows.engine import FINAL_JOB_STATES

    ids = session.scalars(
        select(Job.id).where(Job.instance_id == instance_id, Job.state.in_(FINAL_JOB_STATES)).order_by(Job.id)
    ).all()
    return [record_job(session, i) for i in ids]


def instance_cost(
    session: Session, instance_id: str, currency: str, rates: CurrencyRates | None = None
) -> Decimal:
    """What an instance's recorded jobs cost (resources + licences) in *currency*."""
    total = 0
    for r in session.scalars(select(UsageRecord).where(UsageRecord.instance_id == instance_id)).all():
        total += _convert(r.cost_cents, r.currency, currency, rates)
        total += _convert(r.licence_cents, r.licence_currency, currency, rates)
    return from_cents(total) if total else ZERO


def settle_from_ledger(
    session: Session, reservation: BudgetReservation | str, rates: CurrencyRates | None = None
) -> Settlement:
    """Settle a run's reservation with the cost its jobs' ledger records add up to."""
    r = session.get(BudgetReservation, reservation) if isinstance(reservation, str) else reservation
    if r is None:
        raise NotFound.of("reservation", reservation)
    if r.instance_id is None:
        raise Conflict(f"reservation {r.id} is not linked to a workflow instance; settle it with settle()")
    return settle(session, r, instance_cost(session, r.instance_id, r.currency, rates), rates=rates)


def records(
    session: Session,
    org_id: int,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    project_id: int | None = None,
    user_id: int | None = None,
) -> list[UsageRecord]:
    """The organization's ledger records finished in [start, end), oldest first."""
    q = select(UsageRecord).where(UsageRecord.org_id == org_id)
    if start is not None:
        q = q.where(UsageRecord.finished >= naive_utc(start))
    if end is not None:
        q = q.where(UsageRecord.finished < naive_utc(end))
    if project_id is not None:
        q = q.where(UsageRecord.project_id == project_id)
    if user_id is not None:
        q = q.where(UsageRecord.user_id == user_id)
    return list(session.scalars(q.order_by(UsageRecord.finished, UsageRecord.id)).all())
