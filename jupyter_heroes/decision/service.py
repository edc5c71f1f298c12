"""The decision module inside the HEROES service: per-organization predictors and the decide flow.

:class:`OrgPredictors` keeps one :class:`~.predict.RuntimePredictor` per organization, trained on the
organization's own finished jobs (the workflow :class:`~jupyter_heroes.orm.Job` rows, with the
scheduler's elapsed time). It is incremental: before each decision it observes only the jobs that
finished since the last time (by ``(finished, id)``), so a job that just finished improves the next
prediction; refits (scikit-learn) happen inside :meth:`~.predict.RuntimePredictor.observe` when due
and bump the model version. All of it runs in a small thread pool, never on the tornado loop.

:class:`DecisionService` is what ``POST /organization/decision/decide`` calls:

1. in one short database transaction: the organization's policy, the template, the candidates (its
   own enabled clusters, :func:`~.candidates.candidates_from_orm`, plus the queues of the vendor
   offers it enabled, :func:`~jupyter_heroes.marketplace.offers.offer_candidates`), measured node
   power for the template's application (EAR where ingested, else Slurm's ``ConsumedEnergy`` of
   earlier runs), and the transports of the clusters whose scheduler can
   answer ``sbatch --test-only`` (``live_wait_schedulers``);
2. the parameters and the strategy are validated before anything is asked of a cluster;
3. live queue waits (:class:`~.candidates.SbatchTestOnlyEstimator` over each cluster's transport,
   bounded by ``wait_timeout``; the site's ``typical_wait_s`` otherwise or on failure);
4. :func:`~.decide.decide` in the thread pool;
5. the decision and its predictions are stored (:func:`.store.record_decision`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, sessionmaker
from traitlets import Float, Integer, List, Unicode
from traitlets.config import LoggingConfigurable

from ..dbutil import session_scope
from ..orm import Cluster, Job, User, WorkflowInstance, WorkflowTemplate
from ..workflows.templates import Resources, Template, load_template
from .candidates import (
    CandidateQueue,
    Exclusion,
    Requirements,
    SbatchTestOnlyEstimator,
    WaitEstimate,
    candidates_from_orm,
    check_feasible,
    estimate_waits,
    typical_wait,
)
from .decide import Decision, decide, step_features
from .predict import FinishedJob, JobRequest, PredictionError, RuntimePredictor
from .ranking import Policy, UserChoice, resolve_strategy
from .store import DecisionStoreError, actual_runtime, get_policy, power_measurements, record_decision

log = logging.getLogger("jupyter_heroes.decision")


@dataclass
class _OrgModel:
    predictor: RuntimePredictor
    last_finished: datetime | None = None
    last_job_id: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class OrgPredictors(LoggingConfigurable):
    """One runtime predictor per organization, caught up on its finished jobs before each use."""

    batch = Integer(
        5000,
        help="""Finished jobs read from the database per catch-up step (the predictor observes them in
        completion order; an organization with a longer history is read in several steps).""",
    ).tag(config=True)

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        executor: ThreadPoolExecutor | None = None,
        predictor_factory: Callable[[], RuntimePredictor] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.session_factory = session_factory
        self.executor = executor or ThreadPoolExecutor(2, thread_name_prefix="heroes-decision")
        self.predictor_factory = predictor_factory or (lambda: RuntimePredictor(config=self.config))
        self._models: dict[int, _OrgModel] = {}
        self._guard = threading.Lock()

    def _model(self, org_id: int) -> _OrgModel:
        with self._guard:
            if org_id not in self._models:
                self._models[org_id] = _OrgModel(self.predictor_factory())
            return self._models[org_id]

    async def get(self, org_id: int) -> RuntimePredictor:
        """The organization's predictor, having observed every job finished so far (in a thread)."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.executor, self.catch_up, org_id)
        return self._model(org_id).predictor

    def catch_up(self, org_id: int) -> int:
        """Observe the organization's jobs finished since the last call; returns how many were read
        (those without a known runtime are skipped). Blocking: call it from a thread."""
        m = self._model(org_id)
        total = 0
        with m.lock:
            while True:
                n = self._step(org_id, m)
                total += n
                if n < self.batch:
                    break
        return total

    def _step(self, org_id: int, m: _OrgModel) -> int:
        templates: dict[int, Template | None] = {}
        seen = 0
        with session_scope(self.session_factory) as s:
            q = (
                select(Job, WorkflowInstance, User.name)
                .join(WorkflowInstance, WorkflowInstance.id == Job.instance_id)
                .join(User, User.id == WorkflowInstance.user_id)
                .where(
                    WorkflowInstance.org_id == org_id,
                    Job.state == "completed",
                    Job.finished.is_not(None),
                )
            )
            if m.last_finished is not None:
                q = q.where(
                    or_(
                        Job.finished > m.last_finished,
                        and_(Job.finished == m.last_finished, Job.id > m.last_job_id),
                    )
                )
            rows = s.execute(q.order_by(Job.finished, Job.id).limit(self.batch)).all()
            for job, inst, user in rows:
                seen += 1
                m.last_finished, m.last_job_id = job.finished, job.id
                fj = self._finished(s, job, inst, user, templates)
                if fj is None:
                    continue
                try:
                    m.predictor.observe(fj)
                except PredictionError as e:  # one odd row must not stop learning from the others
                    self.log.warning("decision: job %s not learned from: %s", job.id, e)
        return seen

    def _finished(
        self, s: Session, job: Job, inst: WorkflowInstance, user: str, templates: dict[int, Template | None]
    ) -> FinishedJob | None:
        run = actual_runtime(job)
        if run is None:
            return None
        if inst.template_id not in templates:
            row = s.get(WorkflowTemplate, inst.template_id)
            try:
                templates[inst.template_id] = load_template(row.spec) if row else None
            except ValueError:
                templates[inst.template_id] = None
        t = templates[inst.template_id]
        if t is None:
            return None
        try:
            step = t.step(job.step)
            f = step_features(t, step, dict(inst.params or {}), user)
        except (KeyError, ValueError):
            return None
        end = job.finished.replace(tzinfo=timezone.utc).timestamp()
        sub = job.submitted or job.started
        f["submit_time"] = sub.replace(tzinfo=timezone.utc).timestamp() if sub else end - run
        f["job_id"] = str(job.id)
        return FinishedJob(JobRequest.from_mapping(f), run, end)

    def model_version(self, org_id: int) -> str:
        return self._model(org_id).predictor.model_version

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


class _LiveOrTypical:
    """``sbatch --test-only`` for candidates whose cluster has a runner, the typical wait otherwise."""

    def __init__(self, live: SbatchTestOnlyEstimator) -> None:
        self.live = live

    async def estimate(self, candidate: CandidateQueue, resources: Resources, now: datetime) -> WaitEstimate:
        if candidate.cluster in self.live.runners and candidate.queue:
            return await self.live.estimate(candidate, resources, now)
        return typical_wait(candidate, now)


@dataclass
class DecideRequest:
    """What a user asks (already parsed from the REST body)."""

    org_id: int
    user: User | None
    user_name: str
    template_row: WorkflowTemplate
    params: Mapping[str, Any]
    choice: UserChoice
    requirements: Requirements | None = None
    currency: str | None = None
    admin: bool = False


@dataclass
class DecideResult:
    decision_id: str
    decision: Decision
    model_version: str
    template: Template
    values: dict[str, Any]


class DecisionService(LoggingConfigurable):
    """The decide flow of the service (see the module docstring)."""

    wait_timeout = Float(
        20.0,
        help="""Seconds a decision waits for the live queue-wait estimates (sbatch --test-only through
        each cluster's transport, all clusters at once); candidates still unanswered then use their
        site's typical_wait_s.""",
    ).tag(config=True)

    sbatch_timeout = Float(
        15.0, help="Seconds one sbatch --test-only (or squeue) call may take on a cluster."
    ).tag(config=True)

    live_wait_schedulers = List(
        Unicode(),
        ["slurm"],
        help="""Scheduler entry-point names whose clusters are asked for a live queue-wait estimate
        with sbatch --test-only over their transport; other clusters use their site's typical_wait_s.""",
    ).tag(config=True)

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        backends: Any = None,
        *,
        predictors: OrgPredictors | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.session_factory = session_factory
        self.backends = backends
        self.predictors = predictors or OrgPredictors(session_factory, parent=self)

    # --- gathering ----------------------------------------------------------------------------
    def gather(
        self, s: Session, org_id: int, template: Template
    ) -> tuple[list[CandidateQueue], list[Exclusion], dict[str, Any], dict[str, Any]]:
        """Candidates, exclusions, measured power and wait runners of *org_id* (one transaction)."""
        from ..marketplace.offers import enabled_offers, offer_candidates

        clusters = list(s.scalars(select(Cluster).where(Cluster.org_id == org_id, Cluster.enabled.is_(True))))
        cands, excluded = candidates_from_orm(clusters, org_id)
        for c in clusters:
            if not c.queues:
                excluded.append(
                    Exclusion(
                        c.name,
                        "",
                        (f"cluster {c.name} declares no queue; ask an admin to add its queues (partitions)",),
                        "misconfigured",
                    )
                )
        rows_by_label: dict[str, Cluster] = {c.name: c for c in clusters}
        ocands, oexcl = offer_candidates(s, org_id)
        cands += ocands
        excluded += oexcl
        for e in enabled_offers(s, org_id):
            if e.cluster is not None:
                rows_by_label[e.cluster_label] = e.cluster
        powers = power_measurements(s, org_id, template.application, {c.cluster for c in cands})
        runners: dict[str, Any] = {}
        if self.backends is not None:
            for label in {c.cluster for c in cands}:
                row = rows_by_label.get(label)
                if row is not None and row.scheduler in self.live_wait_schedulers:
                    try:
                        runners[label] = self.backends.get(row)[0]
                    except Exception as e:  # a cluster that cannot be reached still gets a typical wait
                        self.log.warning("decision: no transport for cluster %s: %s", label, e)
        return cands, excluded, powers, runners

    async def waits(
        self, runners: Mapping[str, Any], cands: Sequence[CandidateQueue], resources: Resources, now: datetime
    ) -> dict[str, WaitEstimate]:
        if not runners:
            return {}
        est = _LiveOrTypical(SbatchTestOnlyEstimator(runners, timeout=self.sbatch_timeout))
        try:
            return await asyncio.wait_for(estimate_waits(est, cands, resources, now), self.wait_timeout)
        except asyncio.TimeoutError:
            self.log.warning(
                "decision: live wait estimates took over %ss (c.DecisionService.wait_timeout); "
                "typical waits used",
                self.wait_timeout,
            )
            return {
                c.key: WaitEstimate(
                    typical_wait(c, now).start,
                    f"{typical_wait(c, now).source}; live estimate timed out after {self.wait_timeout:g} s",
                )
                for c in cands
            }

    # --- the flow -------------------------------------------------------------------------------
    async def decide(self, req: DecideRequest) -> DecideResult:
        """Decide and store; raises the domain's ValueErrors (``ParameterError``, ``DecisionError``,
        ``PolicyError``) for bad requests before any cluster is asked, and
        :class:`~.store.DecisionStoreError` (``no_candidate``) when nothing can run it."""
        template = load_template(req.template_row.spec)
        with session_scope(self.session_factory) as s:
            policy = get_policy(s, req.org_id)
            values = template.resolve(dict(req.params), admin=req.admin)
            resolve_strategy(policy, req.choice)  # refuse a disallowed strategy before any work
            cands, excluded, powers, runners = self.gather(s, req.org_id, template)
        now = datetime.now(timezone.utc)
        allowed = policy.platforms.get(template.name)
        asked = [
            c
            for c in cands
            if (allowed is None or c.cluster in allowed) and not check_feasible(c, template, req.requirements)
        ]
        first = template.order()[0].resources if template.steps else Resources()
        waits, predictor = await asyncio.gather(
            self.waits(runners, asked, first, now), self.predictors.get(req.org_id)
        )
        loop = asyncio.get_running_loop()
        decision = await loop.run_in_executor(
            self.predictors.executor,
            lambda: decide(
                template,
                values,
                cands,
                predictor,
                policy=policy,
                choice=req.choice,
                requirements=req.requirements,
                waits=waits,
                now=now,
                currency=req.currency,
                measured_power=powers,
                exclusions=excluded,
                user=req.user_name,
                admin=req.admin,
            ),
        )
        if decision.recommendation is None:
            raise DecisionStoreError(_nothing_message(decision), "no_candidate", 400)
        limits = {
            "deadline": req.choice.deadline.isoformat() if req.choice.deadline else None,
            "budget": None if req.choice.budget is None else str(req.choice.budget),
            "budget_currency": req.choice.budget_currency,
        }
        with session_scope(self.session_factory) as s:
            user = s.get(User, req.user.id) if req.user is not None else req.user_name
            did = record_decision(
                s,
                org_id=req.org_id,
                user=user,
                template=s.get(WorkflowTemplate, req.template_row.id) or template,
                params=values,
                decision=decision,
                policy=policy,
                limits=limits,
                candidates=cands,
            )
        version = ",".join(sorted({st.model_version for st in decision.steps})) or (
            self.predictors.model_version(req.org_id)
        )
        return DecideResult(did, decision, version, template, values)

    def close(self) -> None:
        self.predictors.close()


def _nothing_message(d: Decision) -> str:
    reasons = [f"{r['key']}: {r['why']}" for r in d.to_dict()["candidates"] if r.get("why")]
    text = d.message or "no candidate can run this workflow"
    if reasons:
        text += ". Candidates: " + "; ".join(reasons)
    return text[:4000]


def decision_service(heroes: Any) -> DecisionService:
    """The service's :class:`DecisionService`, made on first use (config from *heroes*, transports
    shared with the workflow engine's backend pool)."""
    svc = getattr(heroes, "_heroes_decisions", None)
    if svc is None:
        backends = getattr(getattr(heroes, "workflows", None), "backends", None)
        svc = DecisionService(heroes.db_factory, backends, parent=heroes)
        heroes._heroes_decisions = svc
    return svc


__all__ = ["DecideRequest", "DecideResult", "DecisionService", "OrgPredictors", "Policy", "decision_service"]
