"""Runtime prediction learned online from accounting history, with quantiles.

:class:`RuntimePredictor` learns from finished jobs (:meth:`~RuntimePredictor.observe`) and predicts the
run time of a job about to be submitted (:meth:`~RuntimePredictor.predict`), using only what is known at
submission: the request (time, processors, memory, queue), the user, the application/template, the time
of day, and the jobs that have *finished* so far.

How a point prediction is made
------------------------------
Each request gets a handful of **candidate** values built from history (:data:`CANDIDATES`): the
request, the user's last run, the mean of the last two (Tsafrir 2007), the last run with the same
request / shape (request, processors, memory) / processors / application, kernel medoids of the user's
recent runs (the run with the highest weighted accuracy against the others), the user's max run/request
ratio times the request (ALEA), the last ratio times the request, the shortest and longest of the
user's last five runs, the application's medoid, the population's median ratio times the request, and
the finished run the user submitted last (overall, and with the same request and processors). A
gradient-boosting model (scikit-learn
``HistGradientBoostingRegressor``) scores every candidate with the accuracy ``min(c, run) / max(c, run)``
it is expected to reach, from features of the job (request, processors, memory, queue, time of day, the
user's recent run statistics, and the user's other submissions: jobs in flight, time since the previous
submission, same-request streak), of the candidate, and of how well that kind of candidate did for this
user lately (cheap per-user statistics, updated on every finished job). The best-scored candidate is the
point. Picking among values that really occurred, instead of regressing to a mean, is what suits a ratio
metric: a user's runs are often bimodal (a crash after seconds, or the full computation), and the middle
is wrong for both.

The model is refitted on the most recent ``train_window`` finished jobs every time ``refit_fraction``
more jobs (at least ``refit_min_jobs``, at most ``refit_max_jobs``) have finished; each refit bumps
:attr:`~RuntimePredictor.model_version`. Between refits the per-user statistics keep it current.

Fallback order (``Prediction.source``) while history is thin
-------------------------------------------------------------
1. ``model``: the scorer is fitted (at least ``min_train_jobs`` finished jobs seen) and the job has a
   history candidate (user, application or population);
2. ``user-history``: no model yet, the user has at least ``min_user_history`` finished jobs: the kernel
   medoid of their recent runs;
3. ``app-default``: the application/template has at least ``min_app_history`` finished runs (any user):
   their medoid;
4. ``request``: the requested time;
5. ``default``: nothing known: ``default_runtime``.

Quantiles and walltime options
------------------------------
``q_low``/``q_high`` are weighted quantiles of the job's reference sample (the user's recent runs
weighted by recency and similarity to the request, else the application's, else the population's
run/request ratios times the request), widened or narrowed by factors adapted online so that the
observed coverage matches ``quantiles`` (adaptive conformal inference, Gibbs & Candes 2021). ``q_low <= point <= q_high`` always
holds; with an enforced request, ``q_high`` never exceeds it.

``Prediction.walltimes`` lists walltime options for :mod:`.advice` (:func:`walltime_options`): upper
quantiles of the same sample plus a margin, a geometric ladder up to the request, fixed fractions of the
request (``advice_grid``), and the request, each with its expected slack and its risk
of killing the job. The risk comes from a second gradient-boosting model (a classifier trained at every
refit on whether each option would have killed the finished jobs), or from the sample itself before the
first fit.

No look-ahead
-------------
The predictor only knows what it was told through :meth:`observe`; the replay in
``benchmarks/prediction.py`` calls it for a job only once that job has finished before the next
submission, so a prediction never uses a later job. Submissions (requests predicted with a ``job_id``)
are registered as they come, so the in-flight features only count earlier ones. Features cached at prediction time are the ones the
model trains on when the job finishes, so training and serving see the same information.

Thread safety: one lock guards the state; :meth:`refit` fits outside the lock and swaps the model in.
In the tornado service, call :meth:`observe`/:meth:`refit` from a thread pool (a refit takes seconds).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController
from traitlets import Bool, Enum, Float, Int, TraitError, Tuple, validate
from traitlets.config import LoggingConfigurable

#: Candidate kinds, in a fixed order (the scorer's categorical feature is the index).
CANDIDATES: tuple[str, ...] = (
    "request",
    "last",
    "last-two-mean",
    "last-same-request",
    "last-same-shape",
    "last-same-procs",
    "last-same-app",
    "user-medoid",
    "user-medoid-broad",
    "same-shape-medoid",
    "user-max-ratio",
    "last-ratio",
    "app-medoid",
    "population-ratio",
    "recent-min",
    "recent-max",
    "last-submitted",
    "last-submitted-same-shape",
)
_K = len(CANDIDATES)
(
    _REQUEST,
    _LAST,
    _LAST2,
    _SREQ,
    _SSHAPE,
    _SPROC,
    _SAPP,
    _UMED,
    _UBROAD,
    _SHAPEMED,
    _UMAX,
    _LRATIO,
    _AMED,
    _POP,
    _RMIN,
    _RMAX,
    _LSUB,
    _LSUBSHAPE,
) = range(_K)

#: ``Prediction.source`` values, in fallback order.
SOURCES: tuple[str, ...] = ("model", "user-history", "app-default", "request", "default")

_NAN = float("nan")
_LOG = math.log


def _lg(x: float) -> float:
    return _LOG(x if x > 1.0 else 1.0)


def _acc(a: float, b: float) -> float:
    """The accuracy ``min/max`` of two positive durations."""
    return a / b if a < b else (b / a if a > 0 else 0.0)


class PredictionError(ValueError):
    """Bad input to the predictor; the message says which field to fix."""


@dataclass(frozen=True, slots=True)
class JobRequest:
    """What is known about a job when it is submitted (never its outcome).

    ``submit_time`` is in seconds (Unix epoch, or the trace's relative clock); ``requested_time`` in
    seconds; ``requested_memory`` in any consistent unit (it is only compared with itself).
    ``app`` is the application or workflow-template id (``None``: unknown).
    """

    user: str
    submit_time: float = 0.0
    requested_time: float | None = None
    requested_procs: int | None = None
    requested_memory: float | None = None
    app: str | None = None
    queue: str | None = None
    job_id: str | None = None

    def __post_init__(self) -> None:
        if not self.user:
            raise PredictionError("a job request needs a user (give 'user')")
        for name in ("requested_time", "requested_memory"):
            v = getattr(self, name)
            if v is not None and not (v > 0 and math.isfinite(v)):
                raise PredictionError(f"{name} must be a positive number of seconds/units or None, got {v!r}")
        if self.requested_procs is not None and self.requested_procs < 1:
            raise PredictionError(f"requested_procs must be >= 1 or None, got {self.requested_procs!r}")
        if not math.isfinite(self.submit_time):
            raise PredictionError(f"submit_time must be a finite number of seconds, got {self.submit_time!r}")

    @classmethod
    def from_mapping(cls, f: Mapping[str, Any]) -> JobRequest:
        """Build from the decision module's step features (:func:`.decide.step_features`) or any dict.

        Recognised keys: ``user``, ``application``/``template``/``step`` (the app key is
        ``application`` if set, else ``template:step``), ``app``, ``cores``/``requested_procs``,
        ``memory_mb``/``requested_memory``, ``requested_time_s``/``requested_time``, ``queue``,
        ``submit_time`` (default: now), ``job_id``.
        """
        app = f.get("app")
        if app is None:
            if f.get("application"):
                app = str(f["application"])
            elif f.get("template"):
                app = f"{f['template']}:{f.get('step', '')}"
        procs = f.get("requested_procs", f.get("cores"))
        mem = f.get("requested_memory", f.get("memory_mb"))
        req = f.get("requested_time", f.get("requested_time_s"))
        return cls(
            user=str(f.get("user") or "anonymous"),
            submit_time=float(f["submit_time"]) if f.get("submit_time") is not None else time.time(),
            requested_time=float(req) if req else None,
            requested_procs=int(procs) if procs else None,
            requested_memory=float(mem) if mem else None,
            app=app,
            queue=str(f["queue"]) if f.get("queue") else None,
            job_id=str(f["job_id"]) if f.get("job_id") is not None else None,
        )


@dataclass(frozen=True, slots=True)
class FinishedJob:
    """A job's request and outcome. ``end_time`` defaults to ``submit_time + run_time``."""

    request: JobRequest
    run_time: float
    end_time: float | None = None

    def __post_init__(self) -> None:
        if not (self.run_time > 0 and math.isfinite(self.run_time)):
            raise PredictionError(f"run_time must be a positive number of seconds, got {self.run_time!r}")

    @property
    def end(self) -> float:
        return self.end_time if self.end_time is not None else self.request.submit_time + self.run_time


@dataclass(frozen=True, slots=True)
class Prediction:
    """A runtime prediction in seconds, ``q_low <= point <= q_high``.

    ``source`` is the fallback level used (:data:`SOURCES`), ``basis`` the candidate or rule behind the
    point, ``model_version`` the predictor's version when it answered (``"0"``: no model fitted yet),
    ``levels`` the nominal quantile levels of ``q_low``/``q_high``, ``support`` the weighted runtime
    sample the quantiles come from (value seconds, weight), ``request`` the requested time if any, and
    ``walltimes`` the walltime options for :mod:`.advice`: ``(seconds, expected slack in seconds,
    probability that this walltime kills the job)``, increasing, the last one the request (risk 0).
    """

    point: float
    q_low: float
    q_high: float
    source: str
    model_version: str
    basis: str = ""
    levels: tuple[float, float] = (0.1, 0.9)
    support: tuple[tuple[float, float], ...] = ()
    request: float | None = None
    walltimes: tuple[tuple[float, float, float], ...] = ()


@dataclass(slots=True)
class _Run:
    run: float
    req: float | None
    procs: int | None
    app: str | None
    mem: float | None
    submit: float = _NAN


@dataclass(slots=True)
class _Sub:
    job_id: str | None
    submit: float
    req: float | None
    procs: int | None


@dataclass(slots=True)
class _User:
    runs: deque[_Run]
    count: int = 0
    last_end: float = _NAN
    skill: list[float] = field(default_factory=lambda: [_NAN] * _K)  # EMA accuracy per candidate
    last_skill: list[float] = field(default_factory=lambda: [_NAN] * _K)  # accuracy on the last job
    surprise: float = _NAN  # moving share of runs longer than anything in their reference sample


@dataclass(slots=True)
class Prepared:
    """A request with everything the model needs, computed from history at prediction time."""

    request: JobRequest
    cands: list[float]  # candidate values (nan: absent)
    rows: np.ndarray  # one feature row per present candidate
    sample: list[tuple[float, float]]  # weighted reference sample (seconds, weight)
    fallback: tuple[float, str, str]  # (value, source, basis) when the model is not used
    q_low: float  # sample quantiles at the levels current at preparation (nan: no sample)
    q_high: float
    walltimes: list[tuple[float, float, float]]  # walltime options: (seconds, expected slack, raw risk)
    wrows: np.ndarray  # one feature row per walltime option below the request


@dataclass(slots=True)
class _Model:
    version: int
    estimator: Any  # candidate scorer (HistGradientBoostingRegressor), or None
    n_train: int
    risk: Any = None  # walltime kill-risk classifier (HistGradientBoostingClassifier), or None
    nan_cols: Any = None  # columns unknown in all training rows (set to 0 before scoring)
    risk_nan_cols: Any = None


class PredictorOptions(LoggingConfigurable):
    """Options of :class:`RuntimePredictor` (``c.PredictorOptions.<name>`` in a config file)."""

    min_train_jobs = Int(
        300, help="Finished jobs needed before the first model fit; until then the fallback order applies."
    ).tag(config=True)
    refit_fraction = Float(
        0.25,
        help="Refit when this fraction more jobs than at the last fit have finished (bounded by "
        "refit_min_jobs and refit_max_jobs).",
    ).tag(config=True)
    refit_min_jobs = Int(500, help="At least this many newly finished jobs between two refits.").tag(
        config=True
    )
    refit_max_jobs = Int(
        4000, help="At most this many newly finished jobs between two refits (keeps the model current)."
    ).tag(config=True)
    train_window = Int(
        10000, help="The model trains on the most recent this-many finished jobs (older ones are dropped)."
    ).tag(config=True)
    max_iter = Int(60, help="Boosting iterations of the candidate scorer.").tag(config=True)
    max_leaf_nodes = Int(15, help="Leaves per tree of the candidate scorer.").tag(config=True)
    min_samples_leaf = Int(100, help="Minimum training rows per leaf of the candidate scorer.").tag(
        config=True
    )
    n_threads = Int(
        1,
        help="OpenMP threads for fitting and scoring (default 1: on a shared or busy host more threads "
        "spin against each other and are slower, not faster).",
    ).tag(config=True)
    l2_regularization = Float(0.0, help="L2 regularization of the candidate scorer's leaf values.").tag(
        config=True
    )
    history_length = Int(24, help="Finished jobs remembered per user (and per application).").tag(config=True)
    recency_decay = Float(
        0.85, help="Weight ratio between a user's consecutive finished runs in the reference sample (0-1)."
    ).tag(config=True)
    similarity_weight = Float(
        2.0,
        help="Weight multiplier of a past run per matching attribute of the request (processors, "
        "application, memory; the requested time counts twice).",
    ).tag(config=True)
    advice_margin = Float(
        0.10, help="Walltime options are sample run times times (1 + advice_margin); 0.10 adds 10%."
    ).tag(config=True)
    advice_prior_weight = Float(
        1.0,
        help="Weight (in runs) of the uniform prior over [0, request] in the raw kill risk of a walltime "
        "option; larger is more cautious with short histories.",
    ).tag(config=True)
    advice_grid = Int(
        12,
        help="Walltime options at fixed fractions of the request, request * 2**(-k/2) for k = 1 .. "
        "advice_grid (12: down to 1/64), beside the sample's upper quantiles; the risk model scores "
        "them all. 0: sample-based options only.",
    ).tag(config=True)
    skill_rate = Float(
        0.3, help="Weight of the newest job in the per-user moving accuracy of each candidate kind (0-1)."
    ).tag(config=True)
    quantiles = Tuple(
        Float(),
        Float(),
        default_value=(0.1, 0.9),
        help="Nominal levels of q_low and q_high, default (0.1, 0.9); the sample quantiles at these levels "
        "are widened or narrowed online so that the observed coverage matches them.",
    ).tag(config=True)
    coverage_rate = Float(
        0.05,
        help="Step (log scale, per finished job) of the online widening of q_low/q_high (adaptive "
        "conformal inference).",
    ).tag(config=True)
    min_user_history = Int(1, help="Finished runs of a user before 'user-history' is used.").tag(config=True)
    min_app_history = Int(3, help="Finished runs of an application before 'app-default' is used.").tag(
        config=True
    )
    default_runtime = Float(
        3600.0, help="Seconds predicted when nothing is known (no request, no history)."
    ).tag(config=True)
    request_limit = Enum(
        ["auto", "enforced", "soft"],
        "auto",
        help="Whether a job can outlive its requested time: 'enforced' caps every prediction at the "
        "request (Slurm kills at the limit), 'soft' does not, 'auto' caps while fewer than 5% of "
        "finished jobs ran over 110% of their request.",
    ).tag(config=True)
    clock_offset = Float(
        0.0, help="Seconds added to submit_time to get local time (time-of-day feature); 0 for UTC epoch."
    ).tag(config=True)
    auto_refit = Bool(
        True, help="observe() refits when due; if False the caller schedules refit() (e.g. in a thread)."
    ).tag(config=True)
    cache_size = Int(
        20_000, help="Predictions remembered (by job_id) until their job finishes; oldest dropped first."
    ).tag(config=True)
    random_state = Int(0, help="Seed of the gradient boosting (fits are deterministic).").tag(config=True)

    @validate("quantiles")
    def _check_quantiles(self, proposal: Any) -> tuple[float, float]:
        lo, hi = proposal["value"]
        if not 0 < lo < hi < 1:
            raise TraitError(
                f"PredictorOptions.quantiles must be two levels 0 < low < high < 1, got {lo}, {hi}"
            )
        return (lo, hi)

    @validate(
        "train_window", "min_train_jobs", "refit_min_jobs", "refit_max_jobs", "history_length", "max_iter"
    )
    def _check_positive(self, proposal: Any) -> int:
        if proposal["value"] < 1:
            raise TraitError(
                f"PredictorOptions.{proposal['trait'].name} must be at least 1, got {proposal['value']}"
            )
        return proposal["value"]


def option_values(options: LoggingConfigurable) -> dict[str, Any]:
    """The configurable values of an options object (to save and compare them)."""
    return {name: getattr(options, name) for name in sorted(options.trait_names(config=True))}


class RuntimePredictor:
    """Online runtime predictor; see the module docstring.

    Options come from ``options`` (a :class:`PredictorOptions`), or are built from ``config`` and
    keyword overrides: ``RuntimePredictor(train_window=5000)``.
    """

    def __init__(
        self, options: PredictorOptions | None = None, *, config: Any = None, **overrides: Any
    ) -> None:
        if options is None:
            options = (
                PredictorOptions(config=config, **overrides)
                if config is not None
                else PredictorOptions(**overrides)
            )
        elif overrides:
            raise PredictionError("give either options or keyword overrides, not both")
        self.options = o = options
        self.log = o.log
        self._lock = threading.RLock()
        self._fit_lock = threading.Lock()
        self._users: dict[str, _User] = {}
        self._apps: dict[str, deque[_Run]] = {}
        self._pop: deque[float] = deque(maxlen=512)  # recent run/request ratios
        self._pop_median = _NAN
        self._queues: dict[str, int] = {}
        self._skill_global = [0.5] * _K
        self._train: deque[tuple[np.ndarray, list[float]]] = deque(maxlen=self.options.train_window)
        self._wtrain: deque[tuple[np.ndarray, list[float]]] = deque(maxlen=self.options.train_window)
        self._cache: OrderedDict[str, Prepared] = OrderedDict()
        # Submissions seen (requests predicted with a job_id), per user, and those not finished yet: what
        # is known at a submission about the user's other jobs (in flight, just submitted), not their runs.
        self._subs: dict[str, deque[_Sub]] = {}
        self._in_flight: OrderedDict[str, str] = OrderedDict()  # job_id -> user
        self._observed = 0
        self._overruns = 0
        self._with_request = 0
        self._last_fit_n = 0
        self._model = _Model(0, None, 0)
        self._widen_low = self._widen_high = 0.0  # log-scale widening of q_low / q_high

    # ----------------------------------------------------------------- saving (pickle)
    def __getstate__(self) -> dict[str, Any]:
        """Everything learnt (history, submissions in flight, the fitted models), with the options
        as plain values; the locks and the logger are not kept."""
        with self._lock:
            state = {
                k: v for k, v in self.__dict__.items() if k not in ("options", "log", "_lock", "_fit_lock")
            }
            state["_cache"] = OrderedDict(self._cache)
            state["_train"], state["_wtrain"] = deque(self._train), deque(self._wtrain)
        state["options"] = option_values(self.options)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        self.options = PredictorOptions(**state.pop("options"))
        self.log = self.options.log
        self._lock = threading.RLock()
        self._fit_lock = threading.Lock()
        self.__dict__.update(state)

    # ----------------------------------------------------------------- public interface
    @property
    def model_version(self) -> str:
        """``"0"`` before the first fit, then the number of fits so far."""
        return str(self._model.version)

    @property
    def observed(self) -> int:
        """Finished jobs seen."""
        return self._observed

    @property
    def request_enforced(self) -> bool:
        if self.options.request_limit != "auto":
            return self.options.request_limit == "enforced"
        return self._with_request == 0 or self._overruns / self._with_request < 0.05

    def predict(self, job: JobRequest | Mapping[str, Any]) -> Prediction:
        """Predict the run time of ``job`` (a :class:`JobRequest` or a features mapping)."""
        req = job if isinstance(job, JobRequest) else JobRequest.from_mapping(job)
        with self._lock:
            prep = self.prepare(req)
            return self.finish([prep], self._model)[0]

    def prepare_now(self, job: JobRequest) -> tuple[Prepared, _Model]:
        """What :meth:`predict` would compute for ``job`` now, without the model's scoring: the
        prepared request and the model current now. ``finish(preps, model)`` later, on many of them
        at once, answers as :meth:`predict` would have (one scikit-learn call for the lot)."""
        with self._lock:
            return self.prepare(job), self._model

    def observe(self, job: FinishedJob) -> None:
        """Learn from a finished job (call in completion order); refits when due if ``auto_refit``."""
        with self._lock:
            self._observe(job)
            due = self.options.auto_refit and self.refit_due
        if due:
            self.refit()

    @property
    def refit_due(self) -> bool:
        n = self._observed
        if self._model.estimator is None:
            return n >= self.options.min_train_jobs
        step = min(
            self.options.refit_max_jobs,
            max(self.options.refit_min_jobs, int(self._last_fit_n * self.options.refit_fraction)),
        )
        return n - self._last_fit_n >= step

    def refit(self) -> bool:
        """Fit the candidate scorer (and the walltime risk model) on the training window.

        Returns False if there is too little data. The fit runs outside the lock; the new model is
        swapped in at the end and :attr:`model_version` goes up by one.
        """
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

        if not self._fit_lock.acquire(blocking=False):
            return False  # another thread is fitting; its model will be current soon
        try:
            return self._refit(HistGradientBoostingClassifier, HistGradientBoostingRegressor)
        finally:
            self._fit_lock.release()

    def _refit(self, classifier: Any, regressor: Any) -> bool:
        with self._lock:
            n = self._observed
            if len(self._train) < min(self.options.min_train_jobs, 50):
                return False
            rows = np.concatenate([r for r, _ in self._train])
            ys = [v for _, vs in self._train for v in vs]
            wrows = np.concatenate([r for r, _ in self._wtrain]) if self._wtrain else _EMPTY_WROWS
            wys = [v for _, vs in self._wtrain for v in vs]
            self._last_fit_n = n
        o = self.options
        common = dict(
            max_iter=o.max_iter,
            learning_rate=0.1,
            max_leaf_nodes=o.max_leaf_nodes,
            min_samples_leaf=o.min_samples_leaf,
            l2_regularization=o.l2_regularization,
            random_state=o.random_state,
        )
        X, nan_cols = _matrix(rows)
        est = regressor(categorical_features=[_QUEUE, _CID], **common)
        risk = risk_nan = None
        with _openmp_limit(o.n_threads):
            est.fit(X, np.asarray(ys, dtype=np.float64))
            if len(wrows) and 0 < sum(wys) < len(wys):
                W, risk_nan = _matrix(wrows)
                risk = classifier(categorical_features=[_QUEUE], **common)
                risk.fit(W, np.asarray(wys, dtype=np.int8))
        with self._lock:
            self._model = _Model(self._model.version + 1, est, len(ys), risk, nan_cols, risk_nan)
        self.log.debug("runtime model v%s fitted on %d rows (%d jobs)", self._model.version, len(ys), n)
        return True

    # ----------------------------------------------------------------- features
    def prepare(self, req: JobRequest, *, submission: bool = True) -> Prepared:
        """Compute candidates, feature rows and the reference sample of ``req`` from current history.

        A request with a ``job_id`` counts as a submission (once per id): later requests of the same user
        see it as in flight until it is observed. ``submission=False`` (jobs learnt without having been
        predicted) leaves the submission features unknown, since the jobs in flight now are not those
        that were in flight then.
        """
        subs = self._submission_features(req) if submission else (_NAN, _NAN, _NAN)
        user = self._users.get(req.user)
        runs: Sequence[_Run] = user.runs if user is not None else ()
        app_runs: Sequence[_Run] = self._apps.get(req.app, ()) if req.app is not None else ()
        q = req.requested_time
        cap = q if (q is not None and self.request_enforced) else math.inf
        pop_ratio = self._pop_median

        c = [_NAN] * _K
        c[_REQUEST] = q if q is not None else _NAN
        n = len(runs)
        umed, wsample = _NAN, []
        if n:
            last = runs[-1]
            c[_LAST] = last.run
            c[_LAST2] = (last.run + runs[-2].run) / 2 if n >= 2 else last.run
            for r in reversed(runs):
                if c[_SREQ] != c[_SREQ] and q is not None and r.req == q:
                    c[_SREQ] = r.run
                if (
                    c[_SSHAPE] != c[_SSHAPE]
                    and r.req == q
                    and r.procs == req.requested_procs
                    and r.mem == req.requested_memory
                ):
                    c[_SSHAPE] = r.run
                if (
                    c[_SPROC] != c[_SPROC]
                    and req.requested_procs is not None
                    and r.procs == req.requested_procs
                ):
                    c[_SPROC] = r.run
                if c[_SAPP] != c[_SAPP] and req.app is not None and r.app == req.app:
                    c[_SAPP] = r.run
            # By submission rather than end: the finished sibling of a batch submitted together.
            lsub = max(runs, key=lambda r: r.submit)
            c[_LSUB] = lsub.run
            same = [r for r in runs if r.req == q and r.procs == req.requested_procs]
            if same:
                c[_LSUBSHAPE] = max(same, key=lambda r: r.submit).run
            if q is not None:
                ratios = [r.run / r.req for r in list(runs)[-5:] if r.req]
                if ratios:
                    c[_UMAX] = max(ratios) * q
                if last.req:
                    c[_LRATIO] = last.run / last.req * q
            recent = [r.run for r in list(runs)[-5:]]
            c[_RMIN] = min(recent)
            c[_RMAX] = max(recent)
            wsample = self._weighted(runs, req)
            umed = _medoid(wsample)
            c[_UMED] = umed
            c[_UBROAD] = _medoid([(r.run, 1.0) for r in list(runs)[-16:]])
            shape = [
                (r.run, 1.0)
                for r in runs
                if r.req == q and r.procs == req.requested_procs and r.mem == req.requested_memory
            ]
            if len(shape) >= 2:
                c[_SHAPEMED] = _medoid(shape[-16:])
        amed = _NAN
        if len(app_runs) >= 1:
            amed = _medoid(self._weighted(app_runs, req))
            c[_AMED] = amed
        if q is not None and pop_ratio == pop_ratio:
            c[_POP] = pop_ratio * q
        for i in range(_K):
            v = c[i]
            if v == v:
                c[i] = min(max(v, 1.0), cap)

        # Reference sample for quantiles / advice: user's, else the application's, else population.
        if wsample:
            sample = wsample
        elif app_runs:
            sample = self._weighted(app_runs, req)
        elif q is not None and self._pop:
            sample = [(max(1.0, r * q), 1.0) for r in list(self._pop)[-64:]]
        else:
            sample = []
        if cap != math.inf:
            sample = [(min(v, cap), w) for v, w in sample]

        # Fallback chain.
        if n >= self.options.min_user_history and umed == umed:
            fallback = (min(umed, cap), "user-history", "user-medoid")
        elif len(app_runs) >= self.options.min_app_history and amed == amed:
            fallback = (min(amed, cap), "app-default", "app-medoid")
        elif q is not None:
            fallback = (q, "request", "request")
        else:
            fallback = (self.options.default_runtime, "default", "default_runtime")

        if sample:
            q_low = _wquantile(sample, self.options.quantiles[0]) * math.exp(-self._widen_low)
            q_high = _wquantile(sample, self.options.quantiles[1]) * math.exp(self._widen_high)
        else:
            q_low = q_high = _NAN
        job, rows = self._rows(req, user, runs, app_runs, c, wsample, subs)
        walltimes: list[tuple[float, float, float]] = []
        wrows = _EMPTY_WROWS
        if q is not None:
            walltimes = walltime_options(
                sample,
                q,
                self.options.advice_margin,
                self.options.advice_prior_weight,
                grid=self.options.advice_grid,
            )
            below = [(a, risk) for a, _, risk in walltimes if a < q]
            if below and sample:
                total = sum(w for _, w in sample)
                n_eff = _lg(total * total / sum(w * w for _, w in sample))
                smax = max(v for v, _ in sample)
                wrows = np.empty((len(below), _N_JOB + _N_WALL))
                wrows[:, :_N_JOB] = job
                wrows[:, _N_JOB] = [_LOG(a / q) for a, _ in below]
                wrows[:, _N_JOB + 1] = [r for _, r in below]
                wrows[:, _N_JOB + 2] = n_eff
                wrows[:, _N_JOB + 3] = [_LOG(a / smax) for a, _ in below]
        prep = Prepared(req, c, rows, sample, fallback, q_low, q_high, walltimes, wrows)
        if req.job_id is not None:
            # Remembered so that observe() trains on what was known at submission.
            self._cache[req.job_id] = prep
            self._cache.move_to_end(req.job_id)
            while len(self._cache) > self.options.cache_size:
                self._cache.popitem(last=False)
        return prep

    def _submission_features(self, req: JobRequest) -> tuple[float, float, float]:
        """What the user's other submissions say (known at submission, no run times): how many of their
        jobs are in flight, the seconds since their previous submission, and how many of their
        submissions in a row (before this one) asked for the same time and processors. Registers
        ``req`` as a submission if it has a ``job_id`` not seen yet."""
        subs = self._subs.get(req.user)
        jid = req.job_id
        others = [s for s in subs if s.job_id != jid] if subs else []
        if others:
            in_flight = sum(1 for s in others if s.job_id is not None and s.job_id in self._in_flight)
            gap = _lg(req.submit_time - others[-1].submit + 1.0)
            streak = 0
            for s in reversed(others):
                if s.req != req.requested_time or s.procs != req.requested_procs:
                    break
                streak += 1
            feats = (math.log1p(in_flight), gap, math.log1p(streak))
        else:
            feats = (0.0, _NAN, 0.0)
        if jid is not None and jid not in self._in_flight and not (subs and subs[-1].job_id == jid):
            if subs is None:
                subs = self._subs[req.user] = deque(maxlen=32)
            subs.append(_Sub(jid, req.submit_time, req.requested_time, req.requested_procs))
            self._in_flight[jid] = req.user
            while len(self._in_flight) > self.options.cache_size:
                self._in_flight.popitem(last=False)
        return feats

    def _queue_code(self, queue: str | None) -> float:
        """A small integer per queue name (categorical feature); unknown or too many queues: NaN."""
        if queue is None:
            return _NAN
        code = self._queues.get(queue)
        if code is None:
            if len(self._queues) >= 200:
                return _NAN
            code = self._queues[queue] = len(self._queues)
        return float(code)

    def _weighted(self, runs: Sequence[_Run], req: JobRequest) -> list[tuple[float, float]]:
        """Recent runs, newest first, weighted by recency and similarity to ``req``."""
        out = []
        w = 1.0
        decay = self.options.recency_decay
        sim = self.options.similarity_weight
        for r in reversed(runs):
            s = w
            if req.requested_time is not None and r.req == req.requested_time:
                s *= 2.0 * sim
            if req.requested_procs is not None and r.procs == req.requested_procs:
                s *= sim
            if req.app is not None and r.app == req.app:
                s *= sim
            if req.requested_memory is not None and r.mem == req.requested_memory:
                s *= sim
            out.append((r.run, s))
            w *= decay
        return out

    def _rows(
        self,
        req: JobRequest,
        user: _User | None,
        runs: Sequence[_Run],
        app_runs: Sequence[_Run],
        c: list[float],
        wsample: list[tuple[float, float]],
        subs: tuple[float, float, float] = (_NAN, _NAN, _NAN),
    ) -> tuple[list[float], np.ndarray]:
        q = req.requested_time
        lq = _lg(q) if q is not None else _NAN
        n = len(runs)
        if n:
            logs = [_lg(r.run) for r in list(runs)[-8:]]
            mean = sum(logs) / len(logs)
            std = math.sqrt(sum((x - mean) ** 2 for x in logs) / len(logs))
            last = runs[-1]
            last_ratio = last.run / last.req if last.req else _NAN
            dreq = lq - _lg(last.req) if (q is not None and last.req) else _NAN
            same_req = sum(1 for r in runs if q is not None and r.req == q)
            since = _lg(req.submit_time - user.last_end + 1.0) if user is not None else _NAN
        else:
            mean = std = last_ratio = dreq = since = _NAN
            same_req = 0
        local = req.submit_time + self.options.clock_offset
        job = [
            lq,
            _lg(req.requested_procs) if req.requested_procs else _NAN,
            _lg(req.requested_memory) if req.requested_memory else _NAN,
            (local % 86400.0) / 3600.0,
            math.log1p(user.count) if user is not None else 0.0,
            since,
            mean,
            std,
            last_ratio,
            dreq,
            float(same_req),
            math.log1p(len(app_runs)),
            user.surprise if user is not None else _NAN,
            *subs,
            self._queue_code(req.queue),
        ]
        skill = user.skill if user is not None else [_NAN] * _K
        last_skill = user.last_skill if user is not None else [_NAN] * _K
        present = [i for i in range(_K) if c[i] == c[i]]
        if not present:
            return job, _EMPTY_ROWS
        vals = np.array([c[i] for i in present])
        if wsample:
            # How well each candidate agrees with the user's recent runs (weighted mean accuracy).
            xs = np.array([x for x, _ in wsample])
            ws = np.array([w for _, w in wsample])
            lo = np.minimum(vals[:, None], xs[None, :])
            hi = np.maximum(vals[:, None], xs[None, :])
            support = (lo / hi) @ ws / ws.sum()
        else:
            support = np.full(len(present), _NAN)
        lv = np.log(np.maximum(vals, 1.0))
        last_run = runs[-1].run if n else _NAN
        out = np.empty((len(present), _N_JOB + _N_CAND))
        out[:, :_N_JOB] = job
        out[:, _CID] = present
        out[:, _CID + 1] = lv
        out[:, _CID + 2] = lv - lq
        out[:, _CID + 3] = [skill[i] for i in present]
        out[:, _CID + 4] = [last_skill[i] for i in present]
        out[:, _CID + 5] = [self._skill_global[i] for i in present]
        out[:, _CID + 6] = support
        out[:, _CID + 7] = np.minimum(vals, last_run) / np.maximum(vals, last_run) if n else _NAN
        # Consensus: how well each candidate agrees with the other candidates (mean accuracy against
        # them), and its log distance to the user's typical run.
        m = len(vals)
        if m > 1:
            agree = np.minimum(vals[:, None], vals[None, :]) / np.maximum(vals[:, None], vals[None, :])
            out[:, _CID + 8] = (agree.sum(axis=1) - 1.0) / (m - 1)
        else:
            out[:, _CID + 8] = _NAN
        out[:, _CID + 9] = lv - mean
        return job, out

    # ----------------------------------------------------------------- predictions
    def finish(self, preps: Sequence[Prepared], model: _Model | None = None) -> list[Prediction]:
        """Turn prepared requests into predictions with ``model`` (default: the current one).

        Batching many requests that share a model is what makes the trace replay fast; it gives the
        same answers as calling :meth:`predict` on each request at its time.
        """
        model = model if model is not None else self._model
        scores: list[np.ndarray | None] = [None] * len(preps)
        if model.estimator is not None:
            idx = [i for i, p in enumerate(preps) if len(p.rows) and _has_history(p)]
            if idx:
                X = np.concatenate([preps[i].rows for i in idx])
                X[:, model.nan_cols] = 0.0
                with _openmp_limit(self.options.n_threads):
                    s = model.estimator.predict(X)
                k = 0
                for i in idx:
                    m = len(preps[i].rows)
                    scores[i] = s[k : k + m]
                    k += m
        risks: list[np.ndarray | None] = [None] * len(preps)
        if model.risk is not None:
            idx = [i for i, p in enumerate(preps) if len(p.wrows)]
            if idx:
                W = np.concatenate([preps[i].wrows for i in idx])
                W[:, model.risk_nan_cols] = 0.0
                with _openmp_limit(self.options.n_threads):
                    r = model.risk.predict_proba(W)[:, 1]
                k = 0
                for i in idx:
                    m = len(preps[i].wrows)
                    risks[i] = r[k : k + m]
                    k += m
        return [self._finish_one(p, sc, rk, model) for p, sc, rk in zip(preps, scores, risks, strict=True)]

    def _finish_one(
        self, p: Prepared, sc: np.ndarray | None, risk: np.ndarray | None, model: _Model
    ) -> Prediction:
        q = p.request.requested_time
        if sc is not None:
            present = [i for i in range(_K) if p.cands[i] == p.cands[i]]
            best = present[int(np.argmax(sc))]
            point, source, basis = p.cands[best], "model", CANDIDATES[best]
        else:
            point, source, basis = p.fallback
        q_low, q_high = (p.q_low, p.q_high) if p.sample else (point, point)
        if q is not None and self.request_enforced:
            q_high = min(q_high, q)
        q_low = min(q_low, point)
        q_high = max(q_high, point)
        return Prediction(
            point=float(point),
            q_low=float(q_low),
            q_high=float(q_high),
            source=source,
            model_version=str(model.version),
            basis=basis,
            levels=(float(self.options.quantiles[0]), float(self.options.quantiles[1])),
            support=tuple(p.sample),
            request=q,
            walltimes=tuple(
                (a, sl, float(risk[i]) if risk is not None and i < len(risk) else rk)
                for i, (a, sl, rk) in enumerate(p.walltimes)
            ),
        )

    # ----------------------------------------------------------------- learning
    def _observe(self, job: FinishedJob) -> None:
        req = job.request
        run = float(job.run_time)
        prep = self._cache.pop(req.job_id, None) if req.job_id is not None else None
        if req.job_id is not None:
            self._in_flight.pop(req.job_id, None)
        if prep is None:
            # Never predicted (e.g. history imported in bulk): features from the history before it.
            prep = self.prepare(
                JobRequest(
                    req.user,
                    req.submit_time,
                    req.requested_time,
                    req.requested_procs,
                    req.requested_memory,
                    req.app,
                    req.queue,
                ),
                submission=False,
            )
        # Training example: the features as they were at submission, the accuracy each candidate got.
        if len(prep.rows):
            ys = [_acc(prep.cands[i], run) for i in range(_K) if prep.cands[i] == prep.cands[i]]
            self._train.append((prep.rows, ys))
        q = req.requested_time
        if len(prep.wrows) and q is not None:
            # Would each walltime option below the request have killed the job?
            self._wtrain.append(
                (prep.wrows, [float(a < run <= q) for a, _, _ in prep.walltimes[: len(prep.wrows)]])
            )
        # Per-user skill of each candidate kind (cheap statistics between refits).
        user = self._users.get(req.user)
        if user is None:
            user = self._users[req.user] = _User(runs=deque(maxlen=self.options.history_length))
        rate = self.options.skill_rate
        for i in range(_K):
            v = prep.cands[i]
            if v == v:
                a = _acc(v, run)
                user.last_skill[i] = a
                s = user.skill[i]
                user.skill[i] = a if s != s else (1 - rate) * s + rate * a
                self._skill_global[i] = 0.995 * self._skill_global[i] + 0.005 * a
        if prep.sample:
            out = 1.0 if run > 1.1 * max(v for v, _ in prep.sample) else 0.0
            user.surprise = out if user.surprise != user.surprise else (1 - rate) * user.surprise + rate * out
        # Online calibration of the quantiles (adaptive conformal inference on a log-scale widening).
        if prep.sample:
            g = self.options.coverage_rate
            lo, hi = self.options.quantiles
            self._widen_low = _clip(self._widen_low + g * ((run < prep.q_low) - lo))
            self._widen_high = _clip(self._widen_high + g * ((run > prep.q_high) - (1.0 - hi)))
        # History.
        rec = _Run(
            run, req.requested_time, req.requested_procs, req.app, req.requested_memory, req.submit_time
        )
        user.runs.append(rec)
        user.count += 1
        user.last_end = job.end
        if req.app is not None:
            d = self._apps.get(req.app)
            if d is None:
                d = self._apps[req.app] = deque(maxlen=self.options.history_length)
            d.append(rec)
        if req.requested_time:
            self._with_request += 1
            self._overruns += run > 1.1 * req.requested_time
            self._pop.append(run / req.requested_time)
            if self._with_request % 16 == 1:
                self._pop_median = _median(self._pop)
        self._observed += 1


_N_JOB = 17  # job features at the start of every row
_QUEUE = _N_JOB - 1  # index of the (categorical) queue code
_CID = _N_JOB  # index of the candidate-id column in a feature row
_N_CAND = 10  # candidate features after the job features in a scorer row
_EMPTY_ROWS = np.empty((0, _N_JOB + _N_CAND))
_N_WALL = 4  # walltime-option features after the job features in a risk row
_EMPTY_WROWS = np.empty((0, _N_JOB + _N_WALL))


def _matrix(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows as a float matrix; columns unknown everywhere (e.g. no application ids in this log) are
    set to 0, since they cannot be binned; their mask is returned to do the same before scoring."""
    X = np.array(rows, dtype=np.float64)
    nan_cols = np.all(np.isnan(X), axis=0)
    X[:, nan_cols] = 0.0
    return X, nan_cols


#: Sample quantiles offered as walltime options (each times 1 + margin).
_WALLTIME_LEVELS = (0.5, 0.7, 0.8, 0.9, 0.95, 1.0)


def walltime_options(
    sample: Sequence[tuple[float, float]],
    request: float,
    margin: float = 0.1,
    prior_weight: float = 1.0,
    steps: int = 4,
    grid: int = 0,
) -> list[tuple[float, float, float]]:
    """Walltime options for a job from its weighted run-time sample: ``(walltime, expected slack,
    probability the walltime is too short)``, by increasing walltime, ending with the request (risk 0).

    Options are the sample's 50/70/80/90/95/100% quantiles times ``1 + margin`` (capped at the request),
    ``steps`` walltimes spaced geometrically between the top of those and the request, ``grid`` fixed
    fractions of the request (``request * 2 ** (-k / 2)`` for ``k = 1 .. grid``: options that do not
    depend on the sample, so that the learnt risk model can place a job's walltime anywhere), and the
    request. The
    sample counts as its effective number of runs (Kish) and is mixed with ``prior_weight`` runs spread
    uniformly over ``[0, request]``, so that a walltime below the request is never risk-free.
    """
    q = request
    pts = sorted((min(v, q), w) for v, w in sample if w > 0 and v > 0)
    if not pts:
        return [(q, q / 2.0, 0.0)]
    total = sum(w for _, w in pts)
    n_eff = total * total / sum(w * w for _, w in pts)
    pts = [(v, w * n_eff / total) for v, w in pts]
    norm = n_eff + prior_weight
    # Candidate walltimes: the sample at a few upper quantiles (plus margin), and the request.
    cands_set = {q}
    acc = 0.0
    levels = iter(_WALLTIME_LEVELS)
    level: float | None = next(levels)
    for v, w in pts:
        acc += w
        while level is not None and acc >= level * n_eff - 1e-9:
            cands_set.add(min(q, v * (1.0 + margin)))
            level = next(levels, None)
    # Between the sample's top and the request: a geometric ladder, so that a job whose history is short
    # next to its request can get a walltime that is generous yet far below the request.
    top = min(q, pts[-1][0] * (1.0 + margin))
    for k in range(1, steps + 1):
        cands_set.add(top * (q / top) ** (k / (steps + 1)))
    for k in range(1, grid + 1):
        cands_set.add(q * 2.0 ** (-k / 2.0))
    cands = sorted(cands_set)
    out = []
    i, n = 0, len(pts)
    below_w = below_wv = 0.0
    for a in cands:
        while i < n and pts[i][0] <= a:
            below_w += pts[i][1]
            below_wv += pts[i][1] * pts[i][0]
            i += 1
        slack = (a * below_w - below_wv + prior_weight * a * a / (2.0 * q)) / norm
        risk = ((n_eff - below_w) + prior_weight * (1.0 - a / q)) / norm
        out.append((a, slack, max(risk, 0.0) if a < q else 0.0))
    return out


_controller: ThreadpoolController | None = None


def _openmp_limit(n: int) -> Any:
    """A context limiting OpenMP threads to ``n``. The loaded libraries are looked up once per process
    (``threadpool_limits`` scans them on every call: milliseconds, more than a small prediction takes)."""
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller.limit(limits=n, user_api="openmp")


def _has_history(p: Prepared) -> bool:
    return any(p.cands[i] == p.cands[i] for i in range(_K) if i != _REQUEST)


def _clip(w: float) -> float:
    """Bounds of the log-scale widening: at most x/20 to x*150 around the sample quantile."""
    return min(max(w, -3.0), 5.0)


def _median(xs: Sequence[float] | deque[float]) -> float:
    s = sorted(xs)
    m = len(s) // 2
    return s[m] if len(s) % 2 else (s[m - 1] + s[m]) / 2


def _medoid(sample: list[tuple[float, float]]) -> float:
    """The sample value with the highest weighted accuracy against the others (max expected accuracy)."""
    if not sample:
        return _NAN
    top = sample[:16]
    best, best_s = _NAN, -1.0
    for v, _ in top:
        s = 0.0
        for x, w in top:
            s += w * (v / x if v < x else x / v)
        if s > best_s:
            best, best_s = v, s
    return best


def _wquantile(sample: Sequence[tuple[float, float]], level: float) -> float:
    """Weighted quantile (lower) of (value, weight) pairs."""
    pts = sorted(sample)
    total = sum(w for _, w in pts)
    target = level * total
    acc = 0.0
    for v, w in pts:
        acc += w
        if acc >= target:
            return v
    return pts[-1][0]
