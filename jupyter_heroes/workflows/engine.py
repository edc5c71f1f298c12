"""The workflow engine: from a submitted instance to finished jobs, without losing or duplicating one.

Rules it keeps:

1. **Persist before send.** :meth:`WorkflowEngine.create_instance` writes the instance and one job row
   per step (state ``new``) and commits before anything reaches a cluster.
2. **Mark, send, record.** Before a step is handed to the scheduler its row is committed as
   ``submitting`` (with the job name ``h<instance>-<step>``); the scheduler's id is committed right after.
   A crash in between leaves a ``submitting`` row with no id: :meth:`recover` asks the scheduler for
   jobs of that name and adopts the one it finds instead of submitting again.
3. **Dependencies on the scheduler.** All steps of an instance run on its cluster; a step's
   ``depends_on`` becomes ``afterok`` on the earlier steps' job ids, so the whole DAG is handed over
   at once and runs even while the service is down.
4. **One poll per cluster.** :class:`ClusterMonitor` asks each cluster about all of its live jobs in one
   batched poll per cycle (the scheduler turns it into one ``squeue`` plus at most one ``sacct``), with
   jitter, and backs off while the cluster does not answer. A failed poll marks jobs ``unknown``;
   it never marks them finished or failed.
5. **Commit before every await**: database work happens in short synchronous transactions between
   awaits, never across one.
6. **Money follows the jobs.** :meth:`WorkflowEngine.admit` prices a new instance (an upper bound:
   requested walltime x resources under the offer version in force, or the decision's prediction),
   reserves it on the organization's and project's budgets and pins every job to that offer version,
   in the transaction that creates the instance. A submission's own walltime and memory (or the
   decision's advice, :mod:`.overrides`) replace the template's in one place,
   :meth:`WorkflowEngine.instance_template`, which both the jobs and the price are built from.
   Each finished job gets one ledger row
   (:func:`~jupyter_heroes.accounting.ledger.record_job`, idempotent) once the scheduler's accounting
   has its elapsed time; a terminal instance's reservation is settled from the ledger
   (:func:`~jupyter_heroes.accounting.ledger.settle_from_ledger`). Both are re-tried by the
   recovery sweep, so a restart at any point neither loses nor duplicates a charge.
7. **Exhausted budgets** (D3.1 4.6.6): after a settlement, and at every sweep, instances under an
   exhausted budget get the budget's policy: ``hold`` (pending jobs held on the scheduler, running
   ones continue; released when the budget has room again) or ``cancel``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from traitlets import Float, Integer
from traitlets.config import LoggingConfigurable

from ..accounting import budgets as budget_ops
from ..accounting.ledger import record_job, settle_from_ledger, site_offer, upper_bound_cost
from ..accounting.money import convert_cents, from_cents
from ..background import spawn
from ..clusters.registry import backend_for
from ..clusters.scheduler import JobState, Scheduler, SchedulerError, SubmitError
from ..clusters.spec import JobSpec
from ..clusters.transport import Transport, TransportError
from ..dbutil import session_scope
from ..decision.cost import Offer, PriceError, Usage
from ..log import ecs
from ..marketplace.applications import EnabledApplication, enabled_applications
from ..marketplace.applications import version_at as app_version_at
from ..marketplace.common import naive_utc
from ..marketplace.errors import MarketError
from ..marketplace.offers import EnabledOffer, pin_job, version_at
from ..orm import Cluster, Job, Organization, Project, User, WorkflowInstance, WorkflowTemplate, utcnow
from ..orm_market import BudgetReservation, UsageRecord
from .events import EventBus
from .heroesfs import InstanceDirs
from .overrides import (
    ResourceError,
    advice_resources,
    check_limits,
    effective_template,
    merge,
    parse_resources,
)
from .staging import StageContext, Stager, StagingError
from .templates import Template, load_template

log = logging.getLogger("jupyter_heroes.workflows")

#: job states stored in the database beyond the scheduler's (before it has an id)
SUBMITTING = "submitting"
FINAL_JOB_STATES = {s.value for s in JobState if s.final}
LIVE_JOB_STATES = {s.value for s in JobState if not s.final} | {SUBMITTING}
FINAL_INSTANCE_STATES = {"completed", "failed", "cancelled"}


class WorkflowError(Exception):
    """A request about a workflow cannot be carried out; ``reason`` is a short machine code."""

    def __init__(self, message: str, reason: str = "workflow_error", status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.status = status


def job_name(instance_id: str, step: str) -> str:
    """The scheduler-side name of a step: how recovery finds a job whose id was never recorded."""
    return f"h{instance_id}-{step}"


def instance_state(jobs: list[Job], cancel_requested: bool = False) -> str:
    """The state of an instance from its jobs' states."""
    states = [j.state for j in jobs]
    if states and all(s == JobState.COMPLETED.value for s in states):
        return "completed"
    if all(s in FINAL_JOB_STATES for s in states):
        return (
            "cancelled"
            if cancel_requested or all(s == JobState.CANCELLED.value for s in states)
            else "failed"
        )
    if any(
        s in FINAL_JOB_STATES and s not in (JobState.COMPLETED.value, JobState.CANCELLED.value)
        for s in states
    ):
        return "failing"  # a step failed; the rest are being cancelled or will never start
    if any(s in (JobState.RUNNING.value, JobState.COMPLETING.value) for s in states):
        return "running"
    if any(s == SUBMITTING or s == JobState.NEW.value for s in states):
        return "submitting"
    return "queued"


class BackendPool:
    """One transport + scheduler per cluster, kept for the cluster's lifetime (the transport holds
    the pooled SSH connection). *key_loader* returns a cluster's decrypted private key."""

    def __init__(self, key_loader: Callable[[Cluster], str | None] | None = None, **config: Any) -> None:
        """*config* (e.g. ``parent=`` a configurable, or ``config=``) is passed to every transport and
        scheduler, so ``c.SSHTransport.*`` / ``c.SlurmScheduler.*`` settings apply."""
        self.key_loader = key_loader or (lambda c: None)
        self.config = config
        self._backends: dict[int, tuple[Transport, Scheduler]] = {}

    def get(self, cluster: Cluster) -> tuple[Transport, Scheduler]:
        if cluster.id not in self._backends:
            self._backends[cluster.id] = backend_for(cluster, self.key_loader(cluster), **self.config)
        return self._backends[cluster.id]

    def scheduler(self, cluster: Cluster) -> Scheduler:
        return self.get(cluster)[1]

    def forget(self, cluster_id: int) -> None:
        pair = self._backends.pop(cluster_id, None)
        if pair:
            spawn(pair[0].close(), f"closing the connection of cluster {cluster_id}", log)

    async def close(self) -> None:
        pairs, self._backends = list(self._backends.values()), {}
        for transport, _ in pairs:
            with contextlib.suppress(Exception):
                await transport.close()


@dataclass
class PollStats:
    cluster_id: int
    jobs: int = 0
    changed: int = 0
    unknown: int = 0
    seconds: float = 0.0
    commands: int = 0
    #: finished jobs whose accounting (exit code) was asked for again
    backlog: int = 0
    errors: list[str] = field(default_factory=list)


class WorkflowEngine(LoggingConfigurable):
    """Submits, watches, cancels and recovers workflow instances."""

    poll_interval = Float(
        5.0,
        config=True,
        help="""Seconds between two polls of one cluster (each poll asks about all of that cluster's live
        jobs at once). Each wait is randomised by ±poll_jitter.""",
    )
    poll_jitter = Float(
        0.2,
        config=True,
        help="Fraction (0-1) by which each poll interval is randomly shortened or lengthened, so clusters are not polled in lockstep.",
    )
    max_poll_backoff = Float(
        120.0,
        config=True,
        help="""Longest wait, in seconds, between polls of a cluster that does not answer; the wait doubles
        from poll_interval after each failed poll and returns to poll_interval after a good one.""",
    )
    sweep_interval = Float(
        30.0,
        config=True,
        help="""Seconds between two sweeps over unfinished instances that re-send steps whose launch
        failed transiently (cluster unreachable, staging interrupted). 0 disables the sweep.""",
    )
    accounting_retries = Integer(
        10,
        config=True,
        help="""How many polls ask the scheduler's accounting again for a finished job whose exit code it
        did not have yet (sacct lags behind the controller by a few seconds).""",
    )
    accounting_retry_window = Float(
        3600.0,
        config=True,
        help="Seconds after a job finished during which missing accounting is asked for again.",
    )
    log_tail_bytes = Integer(
        65536,
        config=True,
        help="At most this many bytes from the end of a step's stdout/stderr are returned by tail().",
    )

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        backends: BackendPool,
        stager: Stager | None = None,
        events: EventBus | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.session_factory = session_factory
        self.backends = backends
        self.stager = stager
        self.events = events or EventBus()
        self._locks: dict[str, asyncio.Lock] = {}
        self._monitors: dict[int, asyncio.Task] = {}
        self._wake: dict[int, asyncio.Event] = {}
        self._cancel_requested: set[str] = set()
        self._running = False
        self._sweeper: asyncio.Future | None = None
        #: exhausted-budget actions from settlements, applied by :meth:`enforce_budgets`
        self._budget_actions: list[budget_ops.BudgetAction] = []

    # --- creating and launching ----------------------------------------------------------------------
    def create_instance(
        self,
        session: Session,
        *,
        org: Organization,
        user: User,
        template_row: WorkflowTemplate,
        params: dict[str, Any] | None,
        cluster: Cluster,
        queue: str = "",
        project_id: int | None = None,
        admin: bool = False,
        offer: EnabledOffer | None = None,
        resources: Mapping[str, Any] | None = None,
        advice: Mapping[str, Any] | None = None,
    ) -> WorkflowInstance:
        """Validate and persist an instance with one ``new`` job per step. The caller commits.

        *cluster* is one of the organization's own, or another provider's reached through *offer*
        (an enabled, usable offer of the organization on that cluster and queue): the instance,
        its files and its jobs still belong to *org*.

        *resources* (the user's ``{step: {"walltime", "memory_mb"}}``) and *advice* (a decision's
        advice for this cluster and queue, ``{step: {"walltime_s", "memory_mb", ...}}``) override the
        template's walltime and memory, the user's values first (see :mod:`.overrides`); they are
        checked against the queue's limits and stored on the instance. Raises
        :class:`~.overrides.ResourceError` (400) before anything is added."""
        reachable = cluster.org_id == org.id or (
            offer is not None and offer.cluster is not None and offer.cluster.id == cluster.id
        )
        if template_row.org_id != org.id or not reachable:
            raise WorkflowError("template or cluster not found in your organization", "not_found", 404)
        if template_row.state != "active":
            raise WorkflowError(
                f"template {template_row.name} v{template_row.version} is retired", "template_retired", 409
            )
        if not cluster.enabled:
            raise WorkflowError(f"cluster {cluster.name} is disabled by its admin", "cluster_disabled", 409)
        template = load_template(template_row.spec)
        values = template.resolve(params, admin=admin)
        for step in template.steps:  # validate every rendered piece now, not at submission time
            template.render_list(step.inputs, values)
            template.render_list(step.outputs, values)
            template.array_size(step, values)
        advised = advice_resources(template, advice or {})
        if advice and not advised:
            raise ResourceError(
                f"the decision's advice covers none of the steps of {template.name} "
                f"({', '.join(s.name for s in template.steps)}): was it made for another template? Ask "
                "for a decision on this one, or leave accept_advice out",
                "no_advice",
            )
        overrides = merge(template, parse_resources(template, resources), advised)
        limits = self._queue_row(cluster, queue, offer)
        if limits is not None:
            check_limits(template, overrides, where=f"{cluster.name}/{limits.name}", queue=limits)
        inst = WorkflowInstance(
            org_id=org.id,
            user_id=user.id,
            project_id=project_id,
            template_id=template_row.id,
            cluster_id=cluster.id,
            params=values,
            resource_overrides=overrides,
            state="submitting",
        )
        session.add(inst)
        session.flush()
        for step in template.order():
            session.add(
                Job(
                    instance_id=inst.id,
                    step=step.name,
                    cluster_id=cluster.id,
                    queue=queue,
                    state=JobState.NEW.value,
                )
            )
        session.flush()
        return inst

    @staticmethod
    def _queue_row(cluster: Cluster, queue: str, offer: EnabledOffer | None) -> Any:
        """The queue (with its limits) a submission goes to: the offer's, the named one of the
        cluster, or the cluster's only queue when none is named; None when unknown."""
        if offer is not None:
            return offer.queue
        queues = list(cluster.queues)
        if queue:
            return next((q for q in queues if q.name == queue), None)
        return queues[0] if len(queues) == 1 else None

    def instance_template(self, session: Session, inst: WorkflowInstance) -> Template:
        """The template an instance runs, with its resource overrides applied: what its jobs are
        rendered from and its reservation priced with (the one place overrides take effect)."""
        trow = session.get(WorkflowTemplate, inst.template_id)
        if trow is None:
            raise WorkflowError(f"instance {inst.id} refers to a deleted template", "orphaned", 409)
        return effective_template(load_template(trow.spec), inst.resource_overrides)

    # --- budgets and the ledger -----------------------------------------------------------------------
    def price_instance(
        self, session: Session, inst: WorkflowInstance, offer: EnabledOffer | None, at: Any = None
    ) -> tuple[int, str, str]:
        """(cents, currency, basis): an upper bound of what *inst* costs — every step's requested
        walltime x resources (with the instance's resource overrides) priced under the offer version
        in force at *at* (default now), or under the own cluster's ``site.offer``; (0, EUR) when
        nothing prices it."""
        price: Offer | None = None
        basis = "unpriced"
        if offer is not None:
            v = version_at(session, offer.offer.id, at)
            if v is not None:
                price, basis = Offer.from_dict(v.price), f"offer {offer.offer.name} v{v.version}"
        else:
            cluster = session.get(Cluster, inst.cluster_id)
            jobs = list(inst.jobs)
            price = site_offer(cluster, jobs[0].queue if jobs else "") if cluster is not None else None
            basis = "site price" if price is not None else basis
        template = self.instance_template(session, inst)
        values = dict(inst.params or {})
        cents, currency = upper_bound_cost(template, values, price) if price is not None else (0, "EUR")
        app = self.enabled_application(session, inst)
        licence_version = app_version_at(session, app.application.id, at) if app is not None else None
        if licence_version is not None:
            lic, lic_currency = upper_bound_cost(template, values, Offer.from_dict(licence_version.price))
            if price is None:
                cents, currency, basis = 0, lic_currency, "no resource price"
            try:
                cents += convert_cents(lic, lic_currency, currency)
            except PriceError as e:  # an unknown rate: the ledger still charges the licence
                self.log.warning("licence of %s not reserved: %s", app.application.name, e)
            else:
                basis += f" + licence {app.application.name} v{licence_version.version}"
        if price is None and licence_version is None:
            return 0, "EUR", basis
        sources = sorted({o.get("source", "") for o in (inst.resource_overrides or {}).values()} - {""})
        what = f" ({'/'.join(sources)} walltime and memory)" if sources else ""
        return cents, currency, f"{basis}, requested walltime x resources{what}"

    def enabled_application(self, session: Session, inst: WorkflowInstance) -> EnabledApplication | None:
        """The marketplace application the instance's template runs, if its organization enabled it:
        the template's ``application`` is the application's name, or ``provider/name`` (a plain
        name enabled from several providers is not guessed)."""
        trow = session.get(WorkflowTemplate, inst.template_id)
        name = (trow.application_id or (trow.spec or {}).get("application") or "") if trow else ""
        if not name:
            return None
        apps = enabled_applications(session, inst.org_id)
        exact = [e for e in apps if f"{e.provider.name}/{e.application.name}" == name]
        named = exact or [e for e in apps if e.application.name == name]
        return named[0] if len(named) == 1 else None

    def admit(
        self,
        session: Session,
        inst: WorkflowInstance,
        *,
        offer: EnabledOffer | None = None,
        predicted: tuple[int, str] | None = None,
        at: Any = None,
    ) -> BudgetReservation:
        """Pin the new instance's jobs to the offer version (and the enabled application's licence
        version, see :meth:`enabled_application`) in force and reserve its predicted cost
        (*predicted* ``(cents, currency)`` from the decision, capped by :meth:`price_instance` when
        the submission set its own walltime; else :meth:`price_instance`) x each budget's margin on the organization's and project's active budgets. Runs in the caller's
        transaction (the one that created the instance); raises
        :class:`~jupyter_heroes.accounting.budgets.BudgetExceeded` with the numbers, after which the
        caller rolls back and nothing is left."""
        when = naive_utc(at)
        app = self.enabled_application(session, inst)
        if offer is not None or app is not None:
            for job in inst.jobs:
                pin_job(
                    session,
                    job.id,
                    offer_id=offer.offer.id if offer is not None else None,
                    application_id=app.application.id if app is not None else None,
                    at=when,
                )
        if predicted is not None:
            cents, currency = predicted
            basis = "decision prediction"
            if inst.resource_overrides:
                # a walltime set at submission bounds what the run can cost: never reserve more
                bound, bound_currency, bound_basis = self.price_instance(session, inst, offer, when)
                if bound_currency == currency and 0 < bound < cents:
                    cents, basis = bound, f"{bound_basis} (below the decision's prediction)"
        else:
            cents, currency, basis = self.price_instance(session, inst, offer, when)
        return budget_ops.reserve(
            session,
            inst.org_id,
            inst.project_id,
            from_cents(cents),
            currency=currency,
            instance_id=inst.id,
            user_id=inst.user_id,
            at=when,
            note=f"workflow {inst.id}: {basis}",
        )

    def _ledger_ready(self, job: Job) -> bool:
        """A finished job is recorded once the scheduler's accounting gave its elapsed time (or
        stopped being asked for it). Jobs that never reached the scheduler are not recorded."""
        if job.state not in FINAL_JOB_STATES or not job.scheduler_job_id:
            return False
        acct = job.accounting or {}
        if acct.get("elapsed_s") is not None:
            return True
        if int(acct.get("accounting_attempts", 0)) >= self.accounting_retries:
            return True
        return job.finished is not None and job.finished < utcnow() - timedelta(
            seconds=self.accounting_retry_window
        )

    def _record(self, s: Session, job: Job) -> None:
        """The ledger row of *job* (idempotent). A job cancelled before it ran is charged nothing."""
        acct = job.accounting or {}
        never_ran = job.state == JobState.CANCELLED.value and not float(acct.get("elapsed_s") or 0)
        never_ran = never_ran and (job.started is None or acct.get("elapsed_s") is not None)
        try:
            record_job(s, job.id, usage=Usage(jobs=0, runs=0) if never_ran else None)
        except MarketError as e:
            self.log.warning("ledger record of job %s (%s) failed: %s", job.id, job.step, e)

    def _settle_if_done(self, s: Session, instance_id: str) -> None:
        """Settle a terminal instance's reservation from the ledger once every job that reached the
        scheduler is recorded (recording those whose accounting is ready). Idempotent."""
        inst = s.get(WorkflowInstance, instance_id)
        if inst is None or inst.state not in FINAL_INSTANCE_STATES:
            return
        r = s.scalar(
            select(BudgetReservation).where(
                BudgetReservation.instance_id == instance_id, BudgetReservation.state == "held"
            )
        )
        if r is None:
            return
        for job in inst.jobs:
            if job.state not in FINAL_JOB_STATES:
                return
            if not job.scheduler_job_id:
                continue
            if s.scalar(select(UsageRecord.id).where(UsageRecord.job_id == job.id)) is None:
                if not self._ledger_ready(job):
                    return  # accounting lags: the backlog or the sweep comes back
                self._record(s, job)
        ran = s.scalar(select(UsageRecord.id).where(UsageRecord.instance_id == instance_id).limit(1))
        try:
            st = settle_from_ledger(s, r) if ran is not None else budget_ops.release(s, r)
        except MarketError as e:
            self.log.warning("settling the budget of %s failed: %s", instance_id, e)
            return
        if not st.already_settled:
            self.log.info(
                "settled the budget of workflow %s: %s %s (reserved on %d budget(s))",
                instance_id,
                st.actual,
                st.currency,
                len(st.charged),
                extra=ecs("budget.settle", workflow=instance_id),
            )
        self._budget_actions.extend(st.actions)

    def _settle_pending(self) -> None:
        """Every terminal instance whose reservation is still held (after a restart, or when the
        ledger was waiting for accounting)."""
        with session_scope(self.session_factory) as s:
            iids = list(
                s.scalars(
                    select(WorkflowInstance.id)
                    .join(BudgetReservation, BudgetReservation.instance_id == WorkflowInstance.id)
                    .where(
                        BudgetReservation.state == "held",
                        WorkflowInstance.state.in_(FINAL_INSTANCE_STATES),
                    )
                )
            )
        for iid in iids:
            with session_scope(self.session_factory) as s:
                self._settle_if_done(s, iid)

    async def enforce_budgets(self) -> dict[str, int]:
        """Apply exhausted budgets' policies (see the module docstring, rule 7): pending settlement
        actions plus every live instance under an exhausted budget; release budget holds whose
        budgets have room again. Returns counts."""
        with session_scope(self.session_factory) as s:
            actions = {a.instance_id: a for a in budget_ops.exhausted_actions(s)}
        for a in self._budget_actions:
            old = actions.get(a.instance_id)
            if old is None or (old.action == "hold" and a.action == "cancel"):
                actions[a.instance_id] = a
        self._budget_actions = []
        counts = {"cancelled": 0, "held": 0, "released": 0}
        for a in actions.values():
            if a.action == "cancel":
                with session_scope(self.session_factory) as s:
                    inst = s.get(WorkflowInstance, a.instance_id)
                    live = inst is not None and inst.state not in FINAL_INSTANCE_STATES
                if live:
                    self.log.warning(
                        "cancelling workflow %s: %s",
                        a.instance_id,
                        a.reason,
                        extra=ecs("budget.cancel", workflow=a.instance_id),
                    )
                    self._cancel_requested.add(a.instance_id)
                    async with self._lock(a.instance_id):
                        await self._cancel_live(a.instance_id, a.reason, requested=True)
                    counts["cancelled"] += 1
            else:
                counts["held"] += await self._hold(a.instance_id, a.budget_id, a.reason)
        counts["released"] = await self._release_holds(set(actions))
        return counts

    async def _hold(self, instance_id: str, budget_id: int, reason: str) -> int:
        """Hold the pending (queued) jobs of an instance on the scheduler; running ones go on."""
        with session_scope(self.session_factory) as s:
            inst = s.get(WorkflowInstance, instance_id)
            if inst is None or inst.state in FINAL_INSTANCE_STATES:
                return 0
            cluster = s.get(Cluster, inst.cluster_id)
            todo = {
                j.id: j.scheduler_job_id
                for j in inst.jobs
                if j.state == JobState.QUEUED.value
                and j.scheduler_job_id
                and "budget_hold" not in (j.accounting or {})
            }
        if not todo or cluster is None:
            return 0
        try:
            supported = await self.backends.scheduler(cluster).hold(list(todo.values()))
        except SchedulerError as e:
            self.log.warning("holding jobs of %s failed (%s); the next sweep retries", instance_id, e)
            return 0
        if not supported:
            self.log.warning(
                "cluster %s cannot hold pending jobs; workflow %s keeps running (%s)",
                cluster.name,
                instance_id,
                reason,
            )
        with session_scope(self.session_factory) as s:
            for jid in todo:
                job = s.get(Job, jid)
                job.accounting = {**(job.accounting or {}), "budget_hold": budget_id if supported else 0}
                job.reason = f"held: {reason}" if supported else job.reason
                self._publish_job(s.get(WorkflowInstance, instance_id).org_id, instance_id, job)
        self.log.warning(
            "held %d pending job(s) of workflow %s: %s",
            len(todo),
            instance_id,
            reason,
            extra=ecs("budget.hold", workflow=instance_id),
        )
        return len(todo) if supported else 0

    async def _release_holds(self, still_exhausted: set[str]) -> int:
        """Release jobs held for a budget that is no longer exhausted (limit raised, credit added)."""
        with session_scope(self.session_factory) as s:
            held = [
                (j.id, j.instance_id, j.scheduler_job_id, j.cluster_id, (j.accounting or {})["budget_hold"])
                for j in s.scalars(select(Job).where(Job.state.in_(LIVE_JOB_STATES)))
                if (j.accounting or {}).get("budget_hold") and j.instance_id not in still_exhausted
            ]
            clusters = {cid: s.get(Cluster, cid) for cid in {h[3] for h in held}}
        done = 0
        for jid, iid, sid, cid, _bid in held:
            try:
                await self.backends.scheduler(clusters[cid]).release([sid])
            except SchedulerError as e:
                self.log.warning("releasing job %s of %s failed (%s); will retry", sid, iid, e)
                continue
            with session_scope(self.session_factory) as s:
                job = s.get(Job, jid)
                acct = dict(job.accounting or {})
                acct.pop("budget_hold", None)
                job.accounting = acct
            self.log.info(
                "released job %s of workflow %s: its budget has room again",
                sid,
                iid,
                extra=ecs("budget.release", workflow=iid),
            )
            done += 1
        return done

    def _lock(self, instance_id: str) -> asyncio.Lock:
        return self._locks.setdefault(instance_id, asyncio.Lock())

    async def launch(self, instance_id: str) -> None:
        """Hand every step that is still ``new`` to the scheduler (with afterok on earlier steps)."""
        async with self._lock(instance_id):
            await self._launch(instance_id)
        self._ensure_monitor_for(instance_id)

    async def _launch(self, instance_id: str) -> None:
        with session_scope(self.session_factory) as s:
            inst = s.get(WorkflowInstance, instance_id)
            if inst is None or inst.state in FINAL_INSTANCE_STATES:
                return
            ctx = self._context(s, inst)
        template: Template = ctx["template"]
        values = ctx["values"]
        transport, scheduler = self.backends.get(ctx["cluster"])
        dirs: InstanceDirs = ctx["dirs"]
        stage_ctx = StageContext(ctx["org"].name, ctx["user"].name, instance_id, dirs)
        try:
            for d in (dirs.work, dirs.logs):
                await transport.makedirs(d)
        except TransportError as e:
            self.log.warning("cannot create the directories of %s yet (%s); will retry", instance_id, e)
            return
        for step in template.order():
            with session_scope(self.session_factory) as s:
                job = s.scalars(
                    select(Job).where(Job.instance_id == instance_id, Job.step == step.name)
                ).one()
                if job.state != JobState.NEW.value:
                    continue
                deps = {
                    j.step: j
                    for j in s.scalars(
                        select(Job).where(Job.instance_id == instance_id, Job.step.in_(step.depends_on))
                    )
                }
                bad = [
                    d
                    for d in deps.values()
                    if d.state in FINAL_JOB_STATES and d.state != JobState.COMPLETED.value
                ]
                if bad:
                    job.state = JobState.CANCELLED.value
                    job.reason = f"not started: step {bad[0].step} ended {bad[0].state}"
                    job.finished = utcnow()
                    self._publish_job(ctx["org"].id, instance_id, job)
                    continue
                missing = [
                    d for d in deps.values() if not d.scheduler_job_id and d.state != JobState.COMPLETED.value
                ]
                if missing:
                    return  # an earlier step has no id yet (recovery will come back)
                afterok = [d.scheduler_job_id for d in deps.values() if d.state != JobState.COMPLETED.value]
                queue = job.queue
            # stage inputs, then mark, send, record
            inputs = template.render_list(step.inputs, values)
            if inputs:
                if self.stager is None:
                    await self._fail_job(
                        instance_id, step.name, "this platform has no storage configured for inputs"
                    )
                    return
                try:
                    await self.stager.stage_in(stage_ctx, transport, inputs)
                except (StagingError, TransportError) as e:
                    if getattr(e, "transient", False):
                        self.log.warning(
                            "staging inputs of %s/%s failed, will retry: %s", instance_id, step.name, e
                        )
                        return
                    await self._fail_job(instance_id, step.name, f"staging inputs failed: {e}")
                    return
            spec = self._spec(ctx, step, queue, afterok)
            with session_scope(self.session_factory) as s:
                job = s.scalars(
                    select(Job).where(Job.instance_id == instance_id, Job.step == step.name)
                ).one()
                job.state = SUBMITTING
                job.submitted = utcnow()
            try:
                job_id = await scheduler.submit(spec)
            except SubmitError as e:
                if e.maybe_submitted or e.transient:
                    # the answer was lost or the cluster is away: recovery decides (by job name) later
                    self.log.warning(
                        "submission of %s/%s uncertain (%s); will reconcile", instance_id, step.name, e
                    )
                    return
                await self._fail_job(instance_id, step.name, e.message)
                return
            with session_scope(self.session_factory) as s:
                job = s.scalars(
                    select(Job).where(Job.instance_id == instance_id, Job.step == step.name)
                ).one()
                job.scheduler_job_id = job_id
                job.state = JobState.QUEUED.value
                self._publish_job(ctx["org"].id, instance_id, job)
                self._update_instance(s, instance_id)

    def _context(self, s: Session, inst: WorkflowInstance) -> dict[str, Any]:
        trow = s.get(WorkflowTemplate, inst.template_id)
        cluster = s.get(Cluster, inst.cluster_id)
        org = s.get(Organization, inst.org_id)
        user = s.get(User, inst.user_id)
        if trow is None or cluster is None or org is None or user is None:
            raise WorkflowError(
                f"instance {inst.id} refers to a deleted template, cluster or user", "orphaned", 409
            )
        project = None
        if inst.project_id is not None:
            p = s.get(Project, inst.project_id)
            project = p.name if p else None
        template = effective_template(load_template(trow.spec), inst.resource_overrides)
        scratch = cluster.scratch_root or ""
        if not scratch:
            scratch = self.backends.scheduler(cluster).scratch_root
        dirs = InstanceDirs.for_instance(scratch, org.name, project, user.name, inst.id)
        return {
            "template": template,
            "template_row": trow,
            "values": dict(inst.params),
            "cluster": cluster,
            "org": org,
            "user": user,
            "dirs": dirs,
        }

    def _spec(self, ctx: dict[str, Any], step: Any, queue: str, afterok: list[str]) -> JobSpec:
        template: Template = ctx["template"]
        values = ctx["values"]
        dirs: InstanceDirs = ctx["dirs"]
        inst_id = dirs.root.rsplit("/", 1)[-1]
        n = template.array_size(step, values)
        env = {
            "HEROES_TEMPLATE_WORKFLOW_ID": str(ctx["template_row"].id),
            "HEROES_INSTANCE_WORKFLOW_ID": inst_id,
            "HEROES_USER_ID": ctx["user"].name,
            "HEROES_ORGANIZATION_NAME": ctx["org"].name,
            "HEROES_ORGANIZATION_ID": str(ctx["org"].id),
            "HEROES_LOGS_PATH": dirs.logs,
            "HEROES_STEP": step.name,
            **template.environment(values),
        }
        r = step.resources
        return JobSpec(
            name=job_name(inst_id, step.name),
            comment=f"heroes instance={inst_id} step={step.name}",
            command=template.render_argv(step, values),
            workdir=dirs.work,
            env=env,
            stdout=dirs.log(step.name, "out", array=n is not None),
            stderr=dirs.log(step.name, "err", array=n is not None),
            partition=queue,
            nodes=r.nodes,
            ntasks=r.tasks,
            cpus_per_task=r.cpus_per_task,
            mem_mb=r.memory_mb,
            gpus=r.gpus,
            walltime_s=r.walltime_s,
            array=f"0-{n - 1}" if n else "",
            afterok=afterok,
            container_image=step.container or "",
        )

    async def _fail_job(self, instance_id: str, step: str, reason: str) -> None:
        with session_scope(self.session_factory) as s:
            job = s.scalars(select(Job).where(Job.instance_id == instance_id, Job.step == step)).one()
            job.state = JobState.FAILED.value
            job.reason = reason
            job.finished = utcnow()
            inst = s.get(WorkflowInstance, instance_id)
            self._publish_job(inst.org_id, instance_id, job)
        await self._cancel_live(instance_id, f"step {step} failed")

    # --- cancelling ---------------------------------------------------------------------------------
    async def cancel(self, instance_id: str) -> None:
        """Cancel every live step of an instance; steps not yet sent are marked cancelled."""
        self._cancel_requested.add(instance_id)
        async with self._lock(instance_id):
            await self._cancel_live(instance_id, "cancelled by the user", requested=True)

    async def _cancel_live(self, instance_id: str, reason: str, *, requested: bool = False) -> None:
        """Cancel the instance's live jobs on the scheduler. The request is first kept with each job
        (``cancel`` in its accounting: the reason, and whether the user or a budget asked for it), so
        polls send it again until it takes, also after a restart (:meth:`_resend_cancels`)."""
        with session_scope(self.session_factory) as s:
            inst = s.get(WorkflowInstance, instance_id)
            if inst is None:
                return
            cluster = s.get(Cluster, inst.cluster_id)
            ids = []
            for job in inst.jobs:
                if job.state in (JobState.NEW.value,):
                    job.state = JobState.CANCELLED.value
                    job.reason = f"not started: {reason}"
                    job.finished = utcnow()
                    self._publish_job(inst.org_id, instance_id, job)
                elif job.state in LIVE_JOB_STATES and job.scheduler_job_id:
                    ids.append(job.scheduler_job_id)
                    job.accounting = {
                        **(job.accounting or {}),
                        "cancel": {"reason": reason, "requested": requested},
                    }
            self._update_instance(s, instance_id)
        if ids and cluster is not None:
            try:
                await self.backends.scheduler(cluster).cancel(ids)
            except SchedulerError as e:
                self.log.warning(
                    "cancelling %s on %s failed (%s); the next polls will send it again", ids, cluster.name, e
                )
        self._wake_monitor(inst.cluster_id)

    # --- monitoring ---------------------------------------------------------------------------------
    async def poll_cluster(self, cluster_id: int) -> PollStats:
        """One batched poll of every live job on a cluster; updates states, accounting and outputs."""
        stats = PollStats(cluster_id)
        t0 = time.perf_counter()
        with session_scope(self.session_factory) as s:
            cluster = s.get(Cluster, cluster_id)
            if cluster is None:
                return stats
            rows = s.execute(
                select(Job.id, Job.scheduler_job_id, Job.state, Job.accounting).where(
                    Job.cluster_id == cluster_id, Job.state.in_(LIVE_JOB_STATES), Job.scheduler_job_id != ""
                )
            ).all()
            backlog = self._accounting_backlog(s, cluster_id)
        if backlog:
            stats.backlog = len(backlog)
            await self._record_accounting(cluster_id, backlog)
        if not rows:
            if self._budget_actions:
                await self.enforce_budgets()
            return stats
        transport, scheduler = self.backends.get(cluster)
        before = transport.stats["run"]
        stats.jobs = len(rows)
        statuses = await scheduler.poll([r.scheduler_job_id for r in rows])
        stats.commands = transport.stats["run"] - before
        finished: list[int] = []
        touched: set[str] = set()
        with session_scope(self.session_factory) as s:
            for r in rows:
                st = statuses.get(r.scheduler_job_id)
                if st is None:
                    continue
                if st.state is JobState.UNKNOWN:
                    stats.unknown += 1
                job = s.get(Job, r.id)
                if job.state == st.state.value and job.reason == st.reason:
                    continue
                stats.changed += 1
                job.state = st.state.value
                job.reason = st.reason
                if st.exit_code is not None:
                    job.exit_code = st.exit_code
                elif st.state is JobState.COMPLETED:
                    job.exit_code = 0  # completed means every process exited 0; accounting may lag
                if st.state is JobState.RUNNING and job.started is None:
                    job.started = utcnow()
                if st.state.final:
                    job.finished = utcnow()
                    finished.append(job.id)
                touched.add(job.instance_id)
                self._publish_job(s.get(WorkflowInstance, job.instance_id).org_id, job.instance_id, job)
        await self._resend_cancels(cluster, rows, statuses)
        if finished:
            # accounting and outputs first: an instance is "completed" only once its results are back
            await self._finish_jobs(cluster_id, finished)
        with session_scope(self.session_factory) as s:
            for iid in touched:
                self._update_instance(s, iid)
        for iid in touched:
            await self._after_change(iid)
        if self._budget_actions:
            await self.enforce_budgets()
        stats.seconds = time.perf_counter() - t0
        return stats

    async def _resend_cancels(
        self, cluster: Cluster, rows: Sequence[Any], statuses: Mapping[str, Any]
    ) -> None:
        """Cancel again the jobs a cancel was asked for (``cancel`` in their accounting) that this poll
        still found alive: the scheduler may have missed it (unreachable), or the service restarted
        before sending it."""
        again = [
            r.scheduler_job_id
            for r in rows
            if (r.accounting or {}).get("cancel")
            and (st := statuses.get(r.scheduler_job_id)) is not None
            and not st.state.final
        ]
        if not again:
            return
        try:
            await self.backends.scheduler(cluster).cancel(again)
        except SchedulerError as e:
            self.log.warning("cancelling %s on %s failed again (%s)", again, cluster.name, e)

    async def _finish_jobs(self, cluster_id: int, job_ids: list[int]) -> None:
        """Record accounting and copy outputs of jobs that just reached a final state."""
        await self._record_accounting(cluster_id, job_ids)
        with session_scope(self.session_factory) as s:
            done = [
                (j.instance_id, j.step)
                for j in (s.get(Job, i) for i in job_ids)
                if j.state == JobState.COMPLETED.value
            ]
        for iid, step in done:
            await self._stage_out(iid, step)

    async def _record_accounting(self, cluster_id: int, job_ids: list[int]) -> None:
        """Store the scheduler's accounting beside each job, and its exit code when the poll had none.
        Accounting lags behind the controller (sacct may not have a just-finished job yet): a job still
        without an exit code is asked about again at the next polls (see :meth:`_accounting_backlog`)."""
        with session_scope(self.session_factory) as s:
            cluster = s.get(Cluster, cluster_id)
            sids = {j.id: j.scheduler_job_id for j in (s.get(Job, i) for i in job_ids) if j.scheduler_job_id}
        if not sids:
            return
        try:
            acct = await self.backends.scheduler(cluster).accounting(list(sids.values()))
        except SchedulerError as e:
            self.log.warning("accounting of %d jobs on %s unavailable: %s", len(sids), cluster.name, e)
            acct = {}
        with session_scope(self.session_factory) as s:
            for jid, sid in sids.items():
                job = s.get(Job, jid)
                previous = dict(job.accounting or {})
                record = acct[sid].to_dict() if sid in acct else {}
                if job.exit_code is None and sid in acct and acct[sid].exit_code is not None:
                    job.exit_code = acct[sid].exit_code
                keep = {k: previous[k] for k in ("outputs", "budget_hold") if k in previous}
                attempts = int(previous.get("accounting_attempts", 0)) + 1
                job.accounting = {**previous, **record, **keep, "accounting_attempts": attempts}
                if self._ledger_ready(job):
                    self._record(s, job)
            for iid in {s.get(Job, jid).instance_id for jid in sids}:
                self._settle_if_done(s, iid)

    def _accounting_backlog(self, s: Session, cluster_id: int) -> list[int]:
        """Recently finished jobs of a cluster whose exit code or elapsed time accounting has not
        given yet (so they are not in the ledger yet)."""
        since = utcnow() - timedelta(seconds=self.accounting_retry_window)
        rows = s.scalars(
            select(Job)
            .outerjoin(UsageRecord, UsageRecord.job_id == Job.id)
            .where(
                Job.cluster_id == cluster_id,
                Job.state.in_(FINAL_JOB_STATES),
                Job.exit_code.is_(None) | UsageRecord.id.is_(None),
                Job.scheduler_job_id != "",
                Job.finished >= since,
            )
            .limit(500)
        )
        return [
            j.id
            for j in rows
            if int((j.accounting or {}).get("accounting_attempts", 0)) < self.accounting_retries
        ]

    async def _stage_out(self, instance_id: str, step_name: str) -> None:
        if self.stager is None:
            return
        with session_scope(self.session_factory) as s:
            ctx = self._context(s, s.get(WorkflowInstance, instance_id))
        template: Template = ctx["template"]
        outputs = template.render_list(template.step(step_name).outputs, ctx["values"])
        if not outputs:
            return
        transport, _ = self.backends.get(ctx["cluster"])
        try:
            keys = await self.stager.stage_out(
                StageContext(ctx["org"].name, ctx["user"].name, instance_id, ctx["dirs"]), transport, outputs
            )
        except (StagingError, TransportError) as e:
            self.log.warning("staging outputs of %s/%s failed: %s", instance_id, step_name, e)
            keys = []
            with session_scope(self.session_factory) as s:
                job = s.scalars(
                    select(Job).where(Job.instance_id == instance_id, Job.step == step_name)
                ).one()
                job.reason = f"outputs not copied back: {e}"
        with session_scope(self.session_factory) as s:
            job = s.scalars(select(Job).where(Job.instance_id == instance_id, Job.step == step_name)).one()
            job.accounting = {**(job.accounting or {}), "outputs": keys}

    async def _after_change(self, instance_id: str) -> None:
        with session_scope(self.session_factory) as s:
            inst = s.get(WorkflowInstance, instance_id)
            state = inst.state if inst else None
            pending_new = inst is not None and any(j.state == JobState.NEW.value for j in inst.jobs)
        if state == "failing":
            async with self._lock(instance_id):
                await self._cancel_live(instance_id, "an earlier step failed")
        elif pending_new and state not in FINAL_INSTANCE_STATES:
            await self.launch(instance_id)

    def _update_instance(self, s: Session, instance_id: str) -> None:
        inst = s.get(WorkflowInstance, instance_id)
        if inst is None:
            return
        s.flush()
        requested = instance_id in self._cancel_requested or any(
            ((j.accounting or {}).get("cancel") or {}).get("requested") for j in inst.jobs
        )
        new = instance_state(list(inst.jobs), requested)
        if new != inst.state:
            inst.state = new
            self.events.publish(
                {"type": "instance", "instance": instance_id, "org_id": inst.org_id, "state": new}
            )
            if new in FINAL_INSTANCE_STATES:
                s.flush()
                self._settle_if_done(s, instance_id)

    def _publish_job(self, org_id: int, instance_id: str, job: Job) -> None:
        self.events.publish(
            {
                "type": "job",
                "instance": instance_id,
                "org_id": org_id,
                "step": job.step,
                "state": job.state,
                "reason": job.reason,
                "job_id": job.scheduler_job_id,
                "exit_code": job.exit_code,
            }
        )

    # --- recovery -----------------------------------------------------------------------------------
    async def recover(self, *, restarted: bool = False) -> dict[str, int]:
        """Reconcile every unfinished instance: after a (re)start (*restarted*: also finish what the
        previous process left half done, :meth:`_finish_interrupted`), and periodically for instances
        whose launch failed transiently. Each instance is handled under its lock, so a launch in
        progress in this process is never mistaken for a lost one. Returns counts of what was done."""
        counts = {"adopted": 0, "resubmitted": 0, "duplicates_cancelled": 0, "instances": 0, "finished": 0}
        with session_scope(self.session_factory) as s:
            instances = list(
                s.scalars(
                    select(WorkflowInstance.id).where(WorkflowInstance.state.not_in(FINAL_INSTANCE_STATES))
                )
            )
        for iid in instances:
            counts["instances"] += 1
            async with self._lock(iid):
                await self._reconcile_submitting(iid, counts)
                if restarted:
                    try:
                        counts["finished"] += await self._finish_interrupted(iid)
                    except Exception:  # one broken instance must not stop the recovery of the others
                        self.log.exception("finishing workflow %s after the restart failed", iid)
                await self._launch(iid)
            self._ensure_monitor_for(iid)
        with session_scope(self.session_factory) as s:
            cluster_ids = set(s.scalars(select(Job.cluster_id).where(Job.state.in_(LIVE_JOB_STATES))))
        for cid in cluster_ids:
            if cid is not None:
                await self.poll_cluster(cid)
        self._settle_pending()
        await self.enforce_budgets()
        return counts

    async def _finish_interrupted(self, instance_id: str) -> int:
        """After a restart: a poll commits the jobs' final states first, then copies the outputs back
        and updates the instance. A process killed in between left completed jobs without their
        outputs (no ``outputs`` in their accounting) and the instance in a state its jobs no longer
        have; do both now (the accounting is asked again by the poll's backlog). Under the
        instance's lock. Returns how many jobs' outputs were copied back."""
        with session_scope(self.session_factory) as s:
            inst = s.get(WorkflowInstance, instance_id)
            if inst is None:
                return 0
            steps = [
                j.step
                for j in inst.jobs
                if j.state == JobState.COMPLETED.value and "outputs" not in (j.accounting or {})
            ]
        for step in steps:
            await self._stage_out(instance_id, step)
        with session_scope(self.session_factory) as s:
            self._update_instance(s, instance_id)
            state = s.get(WorkflowInstance, instance_id).state
        if state == "failing":
            await self._cancel_live(instance_id, "an earlier step failed")
        return len(steps)

    async def _reconcile_submitting(self, instance_id: str, counts: dict[str, int]) -> None:
        """Jobs marked ``submitting`` whose id was never recorded: adopt the job the scheduler has under
        their name, or send them again if it has none."""
        with session_scope(self.session_factory) as s:
            todo = [
                (j.id, j.step, j.cluster_id)
                for j in s.scalars(
                    select(Job).where(
                        Job.instance_id == instance_id, Job.state == SUBMITTING, Job.scheduler_job_id == ""
                    )
                )
            ]
        for jid, step, cluster_id in todo:
            with session_scope(self.session_factory) as s:
                cluster = s.get(Cluster, cluster_id)
            scheduler = self.backends.scheduler(cluster)
            try:
                found = await scheduler.find_by_name(job_name(instance_id, step))
            except SchedulerError as e:
                self.log.warning("cannot reconcile %s/%s yet: %s", instance_id, step, e)
                continue  # unknown: leave it marked, never resubmit blindly
            with session_scope(self.session_factory) as s:
                job = s.get(Job, jid)
                if found:
                    job.scheduler_job_id = found[0]
                    job.state = JobState.QUEUED.value
                    job.reason = "adopted after a restart"
                    counts["adopted"] += 1
                else:
                    job.state = JobState.NEW.value  # never reached the scheduler: safe to send
                    counts["resubmitted"] += 1
            if len(found) > 1:  # should not happen; never leave a twin running
                await scheduler.cancel(found[1:])
                counts["duplicates_cancelled"] += len(found) - 1

    # --- background monitors ------------------------------------------------------------------------
    async def start(self) -> None:
        """Recover, then keep one monitor task per cluster with live jobs."""
        self._running = True
        await self.recover(restarted=True)
        with session_scope(self.session_factory) as s:
            cluster_ids = set(s.scalars(select(Job.cluster_id).where(Job.state.in_(LIVE_JOB_STATES))))
        for cid in cluster_ids:
            if cid is not None:
                self._ensure_monitor(cid)
        if self.sweep_interval > 0:
            self._sweeper = asyncio.ensure_future(self._sweep())

    async def _sweep(self) -> None:
        while self._running:
            await asyncio.sleep(
                self.sweep_interval * (1 + random.uniform(-self.poll_jitter, self.poll_jitter))
            )
            try:
                await self.recover()
            except Exception:
                self.log.exception("sweep over unfinished workflow instances failed")

    async def stop(self) -> None:
        self._running = False
        tasks = list(self._monitors.values())
        if self._sweeper is not None:
            tasks.append(self._sweeper)
            self._sweeper = None
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._monitors.clear()

    def _ensure_monitor_for(self, instance_id: str) -> None:
        with session_scope(self.session_factory) as s:
            inst = s.get(WorkflowInstance, instance_id)
            cid = inst.cluster_id if inst else None
        if cid is not None:
            self._ensure_monitor(cid)

    def _ensure_monitor(self, cluster_id: int) -> None:
        if not self._running:
            return
        task = self._monitors.get(cluster_id)
        if task is None or task.done():
            self._wake[cluster_id] = asyncio.Event()
            self._monitors[cluster_id] = asyncio.ensure_future(self._monitor(cluster_id))

    def _wake_monitor(self, cluster_id: int | None) -> None:
        if cluster_id in self._wake:
            self._wake[cluster_id].set()

    async def _monitor(self, cluster_id: int) -> None:
        delay = self.poll_interval
        while self._running:
            try:
                stats = await self.poll_cluster(cluster_id)
            except Exception:  # a bug or a dead database must not kill the monitor silently
                self.log.exception("poll of cluster %s failed", cluster_id)
                stats = PollStats(cluster_id, jobs=1, unknown=1)
            if stats.jobs == 0 and stats.backlog == 0:
                self._monitors.pop(cluster_id, None)
                return
            delay = (
                min(delay * 2, self.max_poll_backoff) if stats.unknown == stats.jobs else self.poll_interval
            )
            wait = delay * (1 + random.uniform(-self.poll_jitter, self.poll_jitter))
            event = self._wake.get(cluster_id)
            if event is None:
                await asyncio.sleep(wait)
            else:
                event.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(event.wait(), wait)

    # --- logs ---------------------------------------------------------------------------------------
    async def tail(self, instance_id: str, step: str, stream: str = "out", task: int | None = None) -> str:
        """The end of a step's stdout or stderr (at most log_tail_bytes)."""
        with session_scope(self.session_factory) as s:
            inst = s.get(WorkflowInstance, instance_id)
            if inst is None:
                raise WorkflowError("no such workflow instance", "not_found", 404)
            ctx = self._context(s, inst)
        template: Template = ctx["template"]
        try:
            st = template.step(step)
        except KeyError:
            raise WorkflowError(f"this workflow has no step {step!r}", "not_found", 404) from None
        is_array = st.array is not None
        path = ctx["dirs"].log(step, stream, array=is_array)
        if is_array:
            path = path.replace("%a", str(task or 0))
        transport, _ = self.backends.get(ctx["cluster"])
        try:
            result = await transport.run(["tail", "-c", str(self.log_tail_bytes), path], timeout=30)
        except TransportError as e:
            raise WorkflowError(f"the cluster did not answer: {e}", "cluster_unavailable", 503) from e
        if not result.ok:
            return ""
        return result.stdout
