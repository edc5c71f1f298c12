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
import dataclasses
import itertools
import logging
import math
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pandas as pd
from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import Session, sessionmaker
from traitlets import Float, Integer, List, TraitError, Unicode, validate
from traitlets.config import LoggingConfigurable

from ..dbutil import session_scope
from ..log import ecs
from ..orm import Cluster, Job, User, WorkflowInstance, WorkflowTemplate
from ..workflows.overrides import effective_template
from ..workflows.templates import Resources, Template, load_template
from . import saved
from .advice import AdvisorOptions, WalltimeAdvisor, memory_advice
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
from .cost import Offer
from .decide import Decision, Prediction, decide, step_features
from .predict import FinishedJob, JobRequest, PredictionError, Prepared, RuntimePredictor, option_values
from .predict import Prediction as RuntimePrediction
from .ranking import Policy, UserChoice, resolve_strategy
from .store import DecisionStoreError, actual_runtime, get_policy, power_measurements, record_decision

log = logging.getLogger("jupyter_heroes.decision")


#: peak memories (MB per node) kept per (template, step) for the memory advice
PEAKS_KEPT = 50
#: finished jobs whose predictions a catch-up scores in one scikit-learn call (see _advise_and_observe)
ADVICE_BATCH = 256
#: a decision that does not wait for its organization's rebuild predicts from the user's last runs
STANDIN_RUNS = 64
#: the advice's reason while the organization's predictor is rebuilt
REBUILDING_KEEPS = "your organization's runtime model is being rebuilt: keep the request"
#: the jobs a predictor learns from: completed, with an end time
LEARNT = (Job.state == "completed", Job.finished.is_not(None))


def _learnt_jobs(org_id: int) -> Select[tuple[Job, WorkflowInstance, str]]:
    """The organization's jobs a predictor learns from (:data:`LEARNT`), with their instance and
    user's name."""
    return (
        select(Job, WorkflowInstance, User.name)
        .join(WorkflowInstance, WorkflowInstance.id == Job.instance_id)
        .join(User, User.id == WorkflowInstance.user_id)
        .where(WorkflowInstance.org_id == org_id, *LEARNT)
    )


@dataclass
class _OrgModel:
    predictor: RuntimePredictor
    last_finished: datetime | None = None
    last_job_id: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: finished jobs read by catch-ups so far (the progress of a rebuild)
    read: int = 0
    #: ``read`` when last saved to (or restored from) c.OrgPredictors.state_dir
    saved_read: int = 0
    #: whether a saved state was looked for (once, at the first catch-up)
    restore_tried: bool = False
    #: the organization's walltime advisor, its risk aversion adapted on every finished job
    advisor: WalltimeAdvisor = field(default_factory=WalltimeAdvisor)
    #: (template, step) -> recent (user, peak memory in MB per node) of finished jobs
    peaks: dict[tuple[str, str], deque[tuple[str, float]]] = field(default_factory=dict)


class OrgPredictors(LoggingConfigurable):
    """One runtime predictor per organization, caught up on its finished jobs before each use.

    At most ``max_orgs`` predictors are kept (least recently used first out); an organization whose
    predictor was evicted gets a new one, rebuilt from its whole history on its next decision.
    """

    max_orgs = Integer(
        64,
        help="""Organizations whose runtime predictor is kept in memory (default 64). When one more is
        needed, the least recently used is dropped: saved to state_dir (if set) and restored at its
        next decision, else rebuilt then from the organization's finished jobs (one pass over its
        history, in a thread; slower for a long history). Each predictor holds about the last
        train_window jobs (c.PredictorOptions).""",
    ).tag(config=True)

    @validate("max_orgs")
    def _at_least_one(self, proposal: Any) -> int:
        if proposal["value"] < 1:
            raise TraitError(f"c.OrgPredictors.max_orgs must be at least 1, got {proposal['value']}")
        return proposal["value"]

    warm_orgs = Integer(
        8,
        help="""At service start, rebuild in the background the runtime predictors of this many
        organizations (those whose jobs finished most recently), so that their first decision after a
        restart does not wait for a pass over their history (about 3 minutes per 100,000 finished
        jobs). The others are rebuilt on their first decision. 0: none at start. At most max_orgs.""",
    ).tag(config=True)

    @validate("warm_orgs")
    def _not_negative(self, proposal: Any) -> int:
        if proposal["value"] < 0:
            raise TraitError(f"c.OrgPredictors.warm_orgs must be 0 or more, got {proposal['value']}")
        return proposal["value"]

    decision_wait = Float(
        10.0,
        help="""Seconds a decision waits for its organization's runtime predictor to catch up on the
        jobs finished since it was last used (usually milliseconds). After a restart an organization
        not rebuilt at start (see warm_orgs) needs one pass over its whole history, about 3 minutes
        per 100,000 finished jobs. A decision still waiting after this long goes on without the model:
        its runtimes come from the user's last runs (the requests for a user without any), its walltime
        and memory advice keep the requests, and its notes say so; the rebuild carries on, and later decisions use the model. Keep it under the
        clients' 30 s timeout, like c.DecisionService.wait_timeout, which runs at the same time.""",
    ).tag(config=True)

    state_dir = Unicode(
        None,
        allow_none=True,
        help="""Directory where each organization's runtime predictor is saved (<organization
        id>.predictor: what it learnt, its walltime advisor and memory peaks, as a zlib-compressed
        pickle of a few MB, about 10 MB at the default c.PredictorOptions.train_window) every
        save_interval seconds and when the service stops. A predictor is restored from it when first needed, so after a restart only the
        jobs finished since the save are read instead of the organization's whole history. Created with
        mode 0700; a directory or file that another user owns or can write is not loaded (pickles run
        code). A saved predictor is not used, and the organization's is rebuilt from its history, when
        it was written by another version of HEROES, scikit-learn, numpy or Python, with other
        c.PredictorOptions or c.AdvisorOptions, from another database (URL), or when the last job it
        learnt is no longer in the database. Empty: never saved. The service's default:
        heroes-predictors beside a SQLite database, else ./heroes-predictors.""",
    ).tag(config=True)

    save_interval = Float(
        600.0,
        help="""Seconds between saves to state_dir of the predictors that learnt something since their
        last save (they are saved when the service stops too; a crash loses at most this much learning,
        which the next catch-up reads again from the database).""",
    ).tag(config=True)

    @validate("decision_wait", "save_interval")
    def _positive_seconds(self, proposal: Any) -> float:
        if not proposal["value"] > 0:
            raise TraitError(
                f"c.OrgPredictors.{proposal['trait'].name} must be more than 0 s, got {proposal['value']}"
            )
        return proposal["value"]

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
        advisor_options: AdvisorOptions | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.session_factory = session_factory
        self.executor = executor or ThreadPoolExecutor(2, thread_name_prefix="heroes-decision")
        #: saves predictors dropped from memory (max_orgs)
        self._saver = ThreadPoolExecutor(1, thread_name_prefix="heroes-predictor-save")
        self.predictor_factory = predictor_factory or (lambda: RuntimePredictor(config=self.config))
        self.advisor_options = advisor_options or AdvisorOptions(parent=self)
        self._models: OrderedDict[int, _OrgModel] = OrderedDict()
        self._guard = threading.Lock()
        self._closed = threading.Event()
        self.evictions = 0
        #: per organization, the catch-up running in the pool for :meth:`get` and when it started
        self._inflight: dict[int, tuple[int, asyncio.Future[int]]] = {}
        self._ticks = 0
        #: predictors restored from state_dir so far
        self.restored = 0

    def _model(self, org_id: int) -> _OrgModel:
        with self._guard:
            m = self._models.get(org_id)
            if m is not None:
                self._models.move_to_end(org_id)
                return m
            m = self._models[org_id] = _OrgModel(
                self.predictor_factory(), advisor=WalltimeAdvisor(self.advisor_options)
            )
            while len(self._models) > self.max_orgs:
                old, dropped = self._models.popitem(last=False)
                self.evictions += 1
                self.log.info(
                    "decision: runtime predictor of organization %s dropped from memory "
                    "(c.OrgPredictors.max_orgs=%d); it is %s when next needed",
                    old,
                    self.max_orgs,
                    "saved, and restored" if self.state_dir else "rebuilt from its history",
                )
                if self.state_dir:  # in a thread of its own: this runs on the event loop
                    self._saver.submit(self._save_logged, old, dropped)
            return m

    def cached(self) -> list[int]:
        """The organizations whose predictor is in memory, least recently used first."""
        with self._guard:
            return list(self._models)

    async def get(self, org_id: int) -> RuntimePredictor:
        """The organization's predictor, having observed every job finished so far (in a thread).

        Concurrent calls for one organization share its catch-up: a call that finds one running
        waits for it instead of taking a second thread of the pool to wait for the lock, and returns
        once a pass that started after it arrived has ended (so it has seen the jobs finished until
        then). Runs on the event loop only."""
        self._ticks += 1
        arrived = self._ticks
        while True:
            running = self._inflight.get(org_id)
            if running is not None and not running[1].done():
                await asyncio.shield(running[1])
                if running[0] > arrived:
                    return self._model(org_id).predictor
                continue
            self._ticks += 1
            fut = asyncio.get_running_loop().run_in_executor(self.executor, self.catch_up, org_id)
            self._inflight[org_id] = (self._ticks, fut)
            await asyncio.shield(fut)
            return self._model(org_id).predictor

    async def for_decision(self, org_id: int, user: str | None = None) -> tuple[Any, str | None]:
        """The organization's predictor caught up (:meth:`get`) and ``None``; or, when that takes
        longer than ``decision_wait`` (a rebuild over a long history), a stand-in that knows only
        *user*'s last ``STANDIN_RUNS`` finished jobs (so runtimes follow the fallback order: the
        user's recent runs, else the requests) and a note for the user saying so. The rebuild goes on
        either way. Runs on the event loop only."""
        task = asyncio.ensure_future(self.get(org_id))
        done, _ = await asyncio.wait({task}, timeout=self.decision_wait)
        if task in done:
            return task.result(), None
        task.add_done_callback(self._rebuilt)
        read = self._model(org_id).read
        total, standin = await asyncio.to_thread(
            lambda: (self.finished_jobs(org_id), self._standin(org_id, user))
        )
        self.log.info(
            "decision: organization %s decided without its runtime model, still being rebuilt "
            "(%d of %d finished jobs read; c.OrgPredictors.decision_wait=%g s)",
            org_id,
            read,
            total,
            self.decision_wait,
            extra=ecs("decision.rebuilding", "success"),
        )
        note = (
            "the runtime model of your organization is being rebuilt from its history "
            f"({read:,} of {total:,} finished jobs read so far): these runtimes come from your own "
            "recent runs (the requested walltimes where you have none) and the advice keeps the "
            "requests. Compare again in a few minutes for predictions learnt from your organization's "
            "runs."
        )
        return _Rebuilding(standin), note

    def _standin(self, org_id: int, user: str | None) -> RuntimePredictor:
        """A new predictor that learnt *user*'s last ``STANDIN_RUNS`` finished jobs in the
        organization (in completion order). Blocking."""
        p = self.predictor_factory()
        if not user:
            return p
        templates: dict[int, Template | None] = {}
        with session_scope(self.session_factory) as s:
            rows = s.execute(
                _learnt_jobs(org_id)
                .where(User.name == user)
                .order_by(Job.finished.desc(), Job.id.desc())
                .limit(STANDIN_RUNS)
            ).all()
            for job, inst, name in reversed(rows):
                fj = self._finished(s, job, inst, name, templates)
                if fj is not None:
                    p.observe(fj)
        return p

    def _rebuilt(self, task: asyncio.Future[RuntimePredictor]) -> None:
        """Log a rebuild that no decision waited for to its end, if it failed."""
        if not task.cancelled() and task.exception() is not None:
            self.log.error("decision: rebuilding a runtime predictor failed: %s", task.exception())

    def finished_jobs(self, org_id: int) -> int:
        """How many completed jobs of the organization a full rebuild reads. Blocking."""
        with session_scope(self.session_factory) as s:
            return (
                s.scalar(
                    select(func.count(Job.id))
                    .join(WorkflowInstance, WorkflowInstance.id == Job.instance_id)
                    .where(WorkflowInstance.org_id == org_id, *LEARNT)
                )
                or 0
            )

    def catch_up(self, org_id: int) -> int:
        """Observe the organization's jobs finished since the last call; returns how many were read
        (those without a known runtime are skipped). Blocking: call it from a thread."""
        m = self._model(org_id)
        total = 0
        with m.lock:
            if not m.restore_tried:
                m.restore_tried = True
                self._restore(org_id, m)
            while not self._closed.is_set():
                n = self._step(org_id, m)
                total += n
                if n < self.batch:
                    break
        return total

    def _restore(self, org_id: int, m: _OrgModel) -> bool:
        """Replace *m*'s learning by the state saved in ``state_dir`` if there is a usable one (see
        its help); logs why one is not used. Call with ``m.lock`` held, before *m* learnt anything."""
        if not self.state_dir:
            return False
        try:
            state = saved.read(self.state_dir, org_id)
            if state is None:
                return False
            predictor, advisor = state["predictor"], state["advisor"]
            if state.get("org_id") != org_id:
                raise saved.SavedStateError(f"it was saved for organization {state.get('org_id')}")
            if state.get("database") != self._database():
                raise saved.SavedStateError(f"it was saved from another database ({state.get('database')})")
            if option_values(predictor.options) != option_values(m.predictor.options):
                raise saved.SavedStateError("it was saved with other c.PredictorOptions")
            if option_values(advisor.options) != option_values(m.advisor.options):
                raise saved.SavedStateError("it was saved with other c.AdvisorOptions")
            last_finished, last_job_id = state["cursor"]
            if last_job_id and not self._still_there(org_id, last_job_id, last_finished):
                raise saved.SavedStateError(
                    f"the last job it learnt ({last_job_id}) is no longer a finished job of the organization "
                    "in the database"
                )
        except (saved.SavedStateError, KeyError, AttributeError, TypeError, ValueError) as e:
            self.log.warning(
                "decision: saved runtime predictor of organization %s not used, rebuilt from its history: %s",
                org_id,
                e,
                extra=ecs("decision.restore", "failure", reason=str(e)[:500]),
            )
            return False
        m.predictor, m.advisor, m.peaks = predictor, advisor, state["peaks"]
        m.last_finished, m.last_job_id = last_finished, last_job_id
        m.read = m.saved_read = int(state["read"])
        self.restored += 1
        self.log.info(
            "decision: runtime predictor of organization %s restored from %s (%d finished jobs learnt, "
            "model version %s)",
            org_id,
            saved.path_for(self.state_dir, org_id),
            m.read,
            predictor.model_version,
            extra=ecs("decision.restore", "success"),
        )
        return True

    def _database(self) -> str:
        """The database the predictors learn from (its URL without the password)."""
        bind = self.session_factory.kw.get("bind")
        return bind.url.render_as_string(hide_password=True) if bind is not None else ""

    def _still_there(self, org_id: int, job_id: int, finished: datetime | None) -> bool:
        with session_scope(self.session_factory) as s:
            got = s.execute(
                select(Job.finished)
                .join(WorkflowInstance, WorkflowInstance.id == Job.instance_id)
                .where(Job.id == job_id, WorkflowInstance.org_id == org_id, *LEARNT)
            ).scalar_one_or_none()
        return got is not None and got == finished

    def save(self, org_id: int) -> bool:
        """Save the organization's predictor to ``state_dir`` if it learnt something since it was last
        saved or restored; returns whether it wrote. Blocking (waits for a catch-up in progress)."""
        with self._guard:
            m = self._models.get(org_id)
        return m is not None and self._save(org_id, m)

    def _save(self, org_id: int, m: _OrgModel) -> bool:
        if not self.state_dir:
            return False
        with m.lock:
            if m.read == m.saved_read:
                return False
            state = {
                "org_id": org_id,
                "database": self._database(),
                "cursor": (m.last_finished, m.last_job_id),
                "read": m.read,
                "predictor": m.predictor,
                "advisor": m.advisor,
                "peaks": m.peaks,
            }
            saved.write(self.state_dir, org_id, state)
            m.saved_read = m.read
        return True

    def save_all(self) -> int:
        """Save every predictor in memory that learnt something since its last save; returns how many
        were written. A failure is logged (with the fix), never raised. Blocking."""
        with self._guard:
            models = list(self._models.items())
        return sum(self._save_logged(org_id, m) for org_id, m in models)

    def _save_logged(self, org_id: int, m: _OrgModel) -> bool:
        try:
            return self._save(org_id, m)
        except Exception as e:  # the service goes on (and stops) without it
            self.log.error(
                "decision: runtime predictor of organization %s not saved to c.OrgPredictors.state_dir "
                "%s: %s (check the directory's owner, mode and free space)",
                org_id,
                self.state_dir,
                e,
            )
            return False

    async def keep_saved(self) -> None:
        """:meth:`save_all` every ``save_interval`` seconds, in a thread, until cancelled."""
        while self.state_dir:
            await asyncio.sleep(self.save_interval)
            await asyncio.to_thread(self.save_all)

    def warm(self) -> dict[int, int]:
        """Catch up the predictors of the ``warm_orgs`` organizations whose jobs finished most
        recently (the most recent one last, so it is the last to be dropped from memory); returns
        how many finished jobs each read. Stops early once closed. Blocking: call it from a thread."""
        n = min(self.warm_orgs, self.max_orgs)
        if n <= 0:
            return {}
        latest = func.max(Job.finished)
        with session_scope(self.session_factory) as s:
            orgs = s.scalars(
                select(WorkflowInstance.org_id)
                .join(Job, Job.instance_id == WorkflowInstance.id)
                .where(*LEARNT)
                .group_by(WorkflowInstance.org_id)
                .order_by(latest.desc(), WorkflowInstance.org_id)
                .limit(n)
            ).all()
        read: dict[int, int] = {}
        for org_id in reversed(orgs):
            if self._closed.is_set():
                break
            read[org_id] = self.catch_up(org_id)
        return read

    async def warm_up(self) -> dict[int, int]:
        """:meth:`warm` in a thread of its own: the predictors' pool stays free for decisions (a
        decision for an organization being rebuilt waits for that organization only)."""
        return await asyncio.to_thread(self.warm)

    def _step(self, org_id: int, m: _OrgModel) -> int:
        templates: dict[int, Template | None] = {}
        seen = 0
        with session_scope(self.session_factory) as s:
            q = _learnt_jobs(org_id)
            if m.last_finished is not None:
                q = q.where(
                    or_(
                        Job.finished > m.last_finished,
                        and_(Job.finished == m.last_finished, Job.id > m.last_job_id),
                    )
                )
            rows = s.execute(q.order_by(Job.finished, Job.id).limit(self.batch)).all()
            pending: list[tuple[Prepared, Any, FinishedJob]] = []
            for job, inst, user in rows:
                if self._closed.is_set():
                    break  # the service is stopping: the cursor stays at the last job learnt
                seen += 1
                m.read += 1
                m.last_finished, m.last_job_id = job.finished, job.id
                self._peak(s, m, job, inst, user, templates)
                fj = self._finished(s, job, inst, user, templates)
                if fj is None:
                    continue
                try:
                    if fj.request.requested_time is not None:
                        prep, model = m.predictor.prepare_now(dataclasses.replace(fj.request, job_id=None))
                        pending.append((prep, model, fj))
                    m.predictor.observe(fj)
                except PredictionError as e:  # one odd row must not stop learning from the others
                    self.log.warning("decision: job %s not learned from: %s", job.id, e)
                if len(pending) >= ADVICE_BATCH:
                    self._advise_and_observe(m, pending)
            self._advise_and_observe(m, pending)
        return seen

    @staticmethod
    def _advise_and_observe(m: _OrgModel, pending: list[tuple[Prepared, Any, FinishedJob]]) -> None:
        """Let the advisor learn, job by job in completion order, how the advice it would have given
        fares on each finished job (the replay of :func:`.baselines.replay`, one job late): its risk
        aversion tracks ``c.AdvisorOptions.target_kill_rate``. Each job was prepared just before it
        was learnt; the predictions are scored here in one call per model version, which is what
        makes a catch-up over a long history fast. Empties *pending*."""
        for _, group in itertools.groupby(pending, key=lambda entry: id(entry[1])):
            batch = list(group)
            predictions = m.predictor.finish([prep for prep, _, _ in batch], batch[0][1])
            for p, (_, _, fj) in zip(predictions, batch, strict=True):
                m.advisor.observe(m.advisor.advise(p), fj.run_time, fj.request.requested_time)
        pending.clear()

    def advisor(self, org_id: int) -> WalltimeAdvisor:
        """The organization's walltime advisor."""
        return self._model(org_id).advisor

    @staticmethod
    def _template(
        s: Session, inst: WorkflowInstance, templates: dict[int, Template | None]
    ) -> Template | None:
        """The template as *inst* asked for it (with the submission's walltime and memory, so the
        advisor learns against what was really requested); *templates* caches the parsed rows."""
        if inst.template_id not in templates:
            row = s.get(WorkflowTemplate, inst.template_id)
            try:
                templates[inst.template_id] = load_template(row.spec) if row else None
            except ValueError:
                templates[inst.template_id] = None
        t = templates[inst.template_id]
        return effective_template(t, inst.resource_overrides) if t is not None else None

    def _peak(
        self,
        s: Session,
        m: _OrgModel,
        job: Job,
        inst: WorkflowInstance,
        user: str,
        templates: dict[int, Template | None],
    ) -> None:
        """Keep the job's peak memory per node (the scheduler's largest task RSS times the tasks
        per node: conservative where the RSS already covers the node)."""
        rss = (job.accounting or {}).get("max_rss_bytes")
        if not isinstance(rss, int | float) or isinstance(rss, bool) or not rss > 0:
            return
        t = self._template(s, inst, templates)
        if t is None:
            return
        try:
            r = t.step(job.step).resources
        except KeyError:
            return
        per_node = float(rss) / 2**20 * math.ceil(r.tasks / r.nodes)
        m.peaks.setdefault((t.name, job.step), deque(maxlen=PEAKS_KEPT)).append((user, per_node))

    def peaks(self, org_id: int, template: str, step: str, user: str) -> tuple[list[float], str]:
        """Recent peak memories (MB per node) of *template*'s *step*: the user's own if any, else
        everyone's in the organization; and which of the two."""
        got = list(self._model(org_id).peaks.get((template, step), ()))
        own = [p for u, p in got if u == user]
        if own:
            return own, "your"
        return [p for _u, p in got], "your organization's"

    def _finished(
        self, s: Session, job: Job, inst: WorkflowInstance, user: str, templates: dict[int, Template | None]
    ) -> FinishedJob | None:
        run = actual_runtime(job)
        if run is None:
            return None
        t = self._template(s, inst, templates)
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
        """Stop catching up (a catch-up in progress stops at its next job) and save the predictors
        (``state_dir``). Blocking."""
        self._closed.set()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self._saver.shutdown(wait=True)  # predictors dropped from memory are saved first
        if self.state_dir:
            self.save_all()


def enabled_application_for(s: Session, org_id: int, application: str) -> tuple[Any, str]:
    """The marketplace application *org_id* enabled that a template with this ``application`` runs
    (an :class:`~jupyter_heroes.marketplace.applications.EnabledApplication`, or None), and a note.

    The rule: the template's ``application`` is the application's name, or ``provider/name`` (needed
    when the organization enabled applications of that name from several providers; a plain name
    matching several is not guessed: None, and the note says what to write)."""
    from ..marketplace.applications import enabled_applications

    apps = enabled_applications(s, org_id)
    exact = [e for e in apps if f"{e.provider.name}/{e.application.name}" == application]
    named = exact or [e for e in apps if e.application.name == application]
    if len(named) == 1:
        return named[0], ""
    if len(named) > 1:
        names = ", ".join(sorted(f"{e.provider.name}/{e.application.name}" for e in named))
        return None, (
            f"application {application} is enabled from several providers ({names}): no licence fee is "
            "included; name the one it runs as provider/name in the template's application field"
        )
    return None, ""


class _Rebuilding:
    """A predictor standing in while the organization's own is rebuilt (it knows only the user's
    last runs): its predictions carry the model version ``rebuilding``, so the decision performance
    keeps them apart from the model's."""

    VERSION = "rebuilding"

    def __init__(self, predictor: RuntimePredictor) -> None:
        self.predictor = predictor

    def predict(self, features: Mapping[str, Any]) -> RuntimePrediction:
        return dataclasses.replace(self.predictor.predict(features), model_version=self.VERSION)


class _Recording:
    """A predictor that keeps what it answered per step (the advice needs the whole prediction:
    its walltime options and sample, not only the point and interval the table shows)."""

    def __init__(self, predictor: Any) -> None:
        self.predictor = predictor
        self.by_step: dict[str, Any] = {}

    def predict(self, features: Mapping[str, Any]) -> Prediction:
        p = self.predictor.predict(features)
        self.by_step[str(features.get("step", ""))] = p
        return p

    def predict_many(self, feats: Sequence[Mapping[str, Any]]) -> list[Prediction]:
        many = getattr(self.predictor, "predict_many", None)
        preds = list(many(feats)) if callable(many) else [self.predictor.predict(f) for f in feats]
        for f, p in zip(feats, preds, strict=True):
            self.by_step[str(f.get("step", ""))] = p
        return preds


def _fmt_s(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


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
    #: ranked candidate (``cluster/queue``) -> step -> walltime and memory advice
    advice: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The decision as JSON, each ranked row with its ``advice``."""
        d = self.decision.to_dict()
        for row in d["candidates"]:
            if row.get("key") in self.advice:
                row["advice"] = self.advice[row["key"]]
        return d


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

    advice_memory_margin = Float(
        0.2,
        help="""Memory advice: the largest recent peak (MB per node) of the same template step times
        1 + this margin (default 0.2, i.e. +20%), rounded up to advice_memory_granularity_mb, never
        above the template's request nor the queue's memory per node.""",
    ).tag(config=True)

    advice_memory_granularity_mb = Integer(
        64, help="Memory advice is rounded up to a multiple of this many MB (default 64)."
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

    # --- licences -------------------------------------------------------------------------------
    def licence(self, s: Session, org_id: int, template: Template) -> tuple[Offer | None, str]:
        """The licence price of the enabled application *template* runs
        (:func:`enabled_application_for`), and a note when that is ambiguous."""
        app, note = enabled_application_for(s, org_id, template.application)
        return (app.price if app is not None else None), note

    @staticmethod
    def _with_licence(decision: Decision, app_offer: Offer) -> None:
        """Say in each priced row that its cost includes the licence fee (decide added it)."""
        t = decision.table
        if t.empty:
            return
        priced = t["cost"].map(lambda v: v is not None and v is not pd.NA)
        t.loc[priced, "price_source"] = t.loc[priced, "price_source"].map(
            lambda src: f"{src} + {app_offer.source}"
        )
        decision.notes.append(f"costs include the {app_offer.source}")

    # --- submission advice ----------------------------------------------------------------------
    def advise(
        self,
        org_id: int,
        user: str,
        template: Template,
        decision: Decision,
        predictions: Mapping[str, Any],
        cands: Sequence[CandidateQueue],
        rebuilding: bool = False,
    ) -> dict[str, dict[str, dict[str, Any]]]:
        """Per ranked candidate (``cluster/queue``) and step: the walltime and memory to ask for.

        Walltime: the :class:`~.advice.WalltimeAdvisor`'s choice among the prediction's walltime
        options (upper quantiles of similar recent runs plus a margin), never below the predicted
        upper quantile, divided by the candidate's ``relative_speed``, rounded up to whole minutes,
        and capped by the template's walltime and the queue's limit. When the advisor keeps the
        request (little history, or none justifying less) it is the template's walltime. Memory: :func:`~.advice.memory_advice` over the recent peaks of the
        same step (the user's, else the organization's), capped by the request and the queue's
        memory per node. *rebuilding*: the organization's predictor is being rebuilt (see
        :meth:`OrgPredictors.for_decision`), so the request is kept and its lock is not waited for.
        Blocking (reads the peaks under the predictor's lock): call from a thread.
        """
        by_key = {c.key: c for c in cands}
        ranked = [r for r in decision.to_dict()["candidates"] if r.get("status") == "ranked"]
        out: dict[str, dict[str, dict[str, Any]]] = {}
        steps: dict[str, dict[str, Any]] = {}
        m = self.predictors._model(org_id)
        opts = m.advisor.options
        peaks: dict[str, tuple[list[float], str]] = {s.name: ([], "") for s in template.steps}
        if not rebuilding:
            with m.lock:
                peaks = {
                    s.name: self.predictors.peaks(org_id, template.name, s.name, user) for s in template.steps
                }
        for s in template.order():
            r = s.resources
            p = predictions.get(s.name)
            if rebuilding:
                keep, base = True, float(r.walltime_s)
                why = REBUILDING_KEEPS
            elif isinstance(p, RuntimePrediction):
                with m.lock:
                    a = m.advisor.advise(p)
                keep = a.walltime is None or a.walltime >= r.walltime_s
                base = float(r.walltime_s) if keep else max(float(a.walltime), float(p.q_high))
                why = a.reason if keep else f"upper quantile of similar runs ({a.reason})"
            else:
                keep, base = True, float(r.walltime_s)
                why = "no walltime options from the predictor: keep the request"
            mem_peaks, whose = peaks[s.name]
            mem = memory_advice(
                mem_peaks,
                float(r.memory_mb),
                margin=self.advice_memory_margin,
                granularity=self.advice_memory_granularity_mb,
            )
            mem_why = (
                f"largest recent peak of {whose} runs of this step + {self.advice_memory_margin:.0%}"
                if mem_peaks
                else REBUILDING_KEEPS
                if rebuilding
                else "no peak memory recorded for this step yet: keep the request"
            )
            point = float(p.point) if p is not None else None
            steps[s.name] = dict(keep=keep, base=base, why=why, mem=mem, mem_why=mem_why, point=point)
        for row in ranked:
            c = by_key.get(row["key"])
            speed = (c.relative_speed if c else 1.0) or 1.0
            per: dict[str, dict[str, Any]] = {}
            for s in template.order():
                r, st = s.resources, steps[s.name]
                wall = st["base"]
                if not st["keep"]:  # the request is kept as it is; advice runs at this queue's speed
                    wall /= speed
                    if opts.round_to > 0:
                        wall = math.ceil(wall / opts.round_to) * opts.round_to
                    wall = max(wall, opts.min_walltime)
                caps = [(float(r.walltime_s), "the template's walltime")]
                if c is not None and c.max_walltime_s:
                    caps.append((float(c.max_walltime_s), f"the limit of {c.key}"))
                why = st["why"]
                for cap, name in caps:
                    if wall > cap:
                        wall, why = cap, f"{why}; capped at {name}"
                point = st["point"] / speed if st["point"] is not None else None
                if point is not None and point > wall:
                    why += f"; the predicted runtime {_fmt_s(point)} exceeds it: the job may be killed"
                mem = float(st["mem"] if st["mem"] is not None else r.memory_mb)
                mem_why = st["mem_why"]
                if c is not None and c.mem_per_node_mb and mem > c.mem_per_node_mb:
                    mem, mem_why = float(c.mem_per_node_mb), f"{mem_why}; capped at the memory of {c.key}"
                per[s.name] = {
                    "walltime_s": int(wall),
                    "walltime": _fmt_s(wall),
                    "requested_walltime_s": int(r.walltime_s),
                    "memory_mb": int(math.ceil(mem)),
                    "requested_memory_mb": int(r.memory_mb),
                    "basis": why,
                    "memory_basis": mem_why,
                }
            out[row["key"]] = per
        return out

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
            app_offer, app_note = self.licence(s, req.org_id, template)
        now = datetime.now(timezone.utc)
        allowed = policy.platforms.get(template.name)
        asked = [
            c
            for c in cands
            if (allowed is None or c.cluster in allowed) and not check_feasible(c, template, req.requirements)
        ]
        first = template.order()[0].resources if template.steps else Resources()
        waits, (predictor, rebuild_note) = await asyncio.gather(
            self.waits(runners, asked, first, now), self.predictors.for_decision(req.org_id, req.user_name)
        )
        loop = asyncio.get_running_loop()
        recording = _Recording(predictor)
        # while a rebuild holds a thread of the predictors' pool, a decision without the model does
        # not queue behind it (nor behind a second organization's rebuild)
        executor = None if rebuild_note else self.predictors.executor
        decision = await loop.run_in_executor(
            executor,
            lambda: decide(
                template,
                values,
                cands,
                recording,
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
                app_offer=app_offer,
            ),
        )
        if app_offer is not None:
            self._with_licence(decision, app_offer)
        if app_note:
            decision.notes.append(app_note)
        if rebuild_note:
            decision.notes.append(rebuild_note)
        if decision.recommendation is None:
            raise DecisionStoreError(_nothing_message(decision), "no_candidate", 400)
        advice = await loop.run_in_executor(
            executor,
            self.advise,
            req.org_id,
            req.user_name,
            template,
            decision,
            recording.by_step,
            cands,
            rebuild_note is not None,
        )
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
                advice=advice,
            )
        version = ",".join(sorted({st.model_version for st in decision.steps})) or (
            self.predictors.model_version(req.org_id)
        )
        return DecideResult(did, decision, version, template, values, advice)

    def close(self) -> None:
        self.predictors.close()


def _nothing_message(d: Decision) -> str:
    reasons = [f"{r['key']}: {r['why']}" for r in d.to_dict()["candidates"] if r.get("why")]
    text = d.message or "no candidate can run this workflow"
    if reasons:
        text += ". Candidates: " + "; ".join(reasons)
    return text[:4000]


__all__ = [
    "DecideRequest",
    "DecideResult",
    "DecisionService",
    "OrgPredictors",
    "Policy",
    "enabled_application_for",
]
