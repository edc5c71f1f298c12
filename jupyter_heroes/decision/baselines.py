"""Yardsticks for runtime prediction and the chronological replay that measures against them.

Baselines (each an online predictor with ``observe(job)`` and ``predict(request) -> seconds``):

* :class:`RequestBaseline`: the user's requested time.
* :class:`LastTwoBaseline`: mean run time of the user's last two finished jobs, capped at the request
  (Tsafrir, Etsion, Feitelson, "Backfilling using system-generated predictions rather than user runtime
  estimates", IEEE TPDS 18(6), 2007). One finished job: its run time; none: the request.
* :class:`AleaBaseline`: the largest run/request ratio among the user's last five finished jobs, times
  the request (the estimate of the ALEA scheduling simulator). No history: the request.

:func:`replay` feeds a trace to a :class:`.predict.RuntimePredictor`, an optional
:class:`.advice.WalltimeAdvisor` and the baselines in time order: before each submission it reports every
job whose end (submit + wait + run) is at or before that submission, in order of end time, and only then
asks for predictions. Nothing else reaches the predictors, so no prediction can use a later job.

:func:`alea_with_lookahead` reproduces a figure of ``shared/data/README.md`` that was computed with the
user's last five *submitted* jobs, whether finished or not: it looks ahead and is reported only to show
where that figure comes from.
"""

from __future__ import annotations

import heapq
from collections import defaultdict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .advice import Advice, WalltimeAdvisor
from .predict import FinishedJob, JobRequest, Prediction, Prepared, RuntimePredictor


class Baseline(Protocol):
    name: str

    def observe(self, job: FinishedJob) -> None: ...

    def predict(self, request: JobRequest) -> float: ...


class RequestBaseline:
    """The requested time (NaN when there is none)."""

    name = "request"

    def observe(self, job: FinishedJob) -> None:
        pass

    def predict(self, request: JobRequest) -> float:
        return request.requested_time if request.requested_time is not None else float("nan")


class LastTwoBaseline:
    """Tsafrir 2007: mean of the user's last two finished runs, capped at the request."""

    name = "last_two"

    def __init__(self) -> None:
        self._runs: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=2))

    def observe(self, job: FinishedJob) -> None:
        self._runs[job.request.user].append(job.run_time)

    def predict(self, request: JobRequest) -> float:
        q = request.requested_time
        h = self._runs.get(request.user)
        if not h:
            return q if q is not None else float("nan")
        p = sum(h) / len(h)
        return min(p, q) if q is not None else p


class AleaBaseline:
    """ALEA: max run/request ratio of the user's last five finished jobs, times the request."""

    name = "alea"

    def __init__(self, n: int = 5) -> None:
        self._ratios: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=n))

    def observe(self, job: FinishedJob) -> None:
        q = job.request.requested_time
        if q:
            self._ratios[job.request.user].append(job.run_time / q)

    def predict(self, request: JobRequest) -> float:
        q = request.requested_time
        h = self._ratios.get(request.user)
        if q is None:
            return float("nan")
        return max(h) * q if h else q


def default_baselines() -> list[Baseline]:
    return [RequestBaseline(), LastTwoBaseline(), AleaBaseline()]


def alea_with_lookahead(jobs: Sequence[FinishedJob], n: int = 5) -> np.ndarray:
    """The README's ALEA figure: ratios of the user's last ``n`` jobs SUBMITTED before (finished or not).

    This uses run times that are not known yet at submission (look-ahead); never use it as a yardstick.
    """
    order = sorted(range(len(jobs)), key=lambda i: (jobs[i].request.submit_time, i))
    hist: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=n))
    out = np.empty(len(jobs))
    for i in order:
        r = jobs[i].request
        q = r.requested_time
        h = hist[r.user]
        out[i] = (max(h) * q if h else q) if q is not None else np.nan
        if q:
            h.append(jobs[i].run_time / q)
    return out


# ---------------------------------------------------------------------------------------- metrics
def accuracy(pred: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Per job ``min(pred, actual) / max(pred, actual)`` (1 is perfect)."""
    return np.minimum(pred, actual) / np.maximum(pred, actual)


def score(pred: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray) -> dict[str, float]:
    """``accuracy`` (mean), ``mae`` (seconds) and ``under`` (share of jobs predicted shorter than they ran)."""
    p = np.asarray(pred, dtype=float)
    a = np.asarray(actual, dtype=float)
    return {
        "accuracy": float(np.mean(accuracy(p, a))),
        "mae": float(np.mean(np.abs(p - a))),
        "under": float(np.mean(p < a)),
    }


def advice_score(
    advice: Sequence[float] | np.ndarray,
    actual: Sequence[float] | np.ndarray,
    request: Sequence[float] | np.ndarray,
) -> dict[str, float]:
    """``killed``: share of jobs with advice < run <= request (killed by the advice, not by the request);
    ``slack``: sum(max(0, advice - run)) / sum(max(0, request - run)) (1 is the users' own slack)."""
    adv = np.asarray(advice, dtype=float)
    a = np.asarray(actual, dtype=float)
    q = np.asarray(request, dtype=float)
    own = float(np.sum(np.maximum(0.0, q - a)))
    return {
        "killed": float(np.mean((adv < a) & (a <= q))),
        "slack": float(np.sum(np.maximum(0.0, adv - a)) / own) if own > 0 else float("nan"),
    }


# ---------------------------------------------------------------------------------------- replay
@dataclass
class ReplayResult:
    """Everything a replay produced, aligned with the input jobs."""

    predictions: list[Prediction]
    advice: list[Advice | None]
    baselines: dict[str, np.ndarray] = field(default_factory=dict)
    refits: int = 0

    def points(self) -> np.ndarray:
        return np.array([p.point for p in self.predictions])


def replay(
    jobs: Sequence[FinishedJob],
    predictor: RuntimePredictor,
    *,
    advisor: WalltimeAdvisor | None = None,
    baselines: Sequence[Baseline] = (),
    batch: int = 256,
) -> ReplayResult:
    """Replay ``jobs`` chronologically (see the module docstring); results follow the input order.

    Every job needs a ``job_id`` unique in the trace. For speed, predictions are computed in batches of
    up to ``batch`` consecutive submissions that share a model version: each is exactly what
    :meth:`RuntimePredictor.predict` would have answered at the job's submission. The advisor sees the
    outcomes of finished jobs at the end of each batch (a delay, never a look-ahead), so its risk
    aversion is constant within a batch. The predictor's ``auto_refit`` is honoured between batches.
    """
    ids = [j.request.job_id for j in jobs]
    if any(i is None for i in ids) or len(set(ids)) != len(ids):
        raise ValueError("replay needs a unique job_id on every job")
    n = len(jobs)
    order = sorted(range(n), key=lambda i: (jobs[i].request.submit_time, i))
    heap: list[tuple[float, int, int]] = []
    preds: list[Prediction | None] = [None] * n
    advice: list[Advice | None] = [None] * n
    base = {b.name: np.full(n, np.nan) for b in baselines}
    pending: list[tuple[int, Prepared]] = []
    finished: list[int] = []  # outcomes the advisor has not seen yet, in order of end
    auto = predictor.options.auto_refit
    predictor.options.auto_refit = False
    refits = 0
    seq = 0

    def flush() -> None:
        for (i, _), p in zip(pending, predictor.finish([p for _, p in pending]), strict=True):
            preds[i] = p
            if advisor is not None:
                advice[i] = advisor.advise(p)
        pending.clear()
        if advisor is not None:
            for k in finished:
                done = jobs[k]
                advisor.observe(advice[k], done.run_time, done.request.requested_time)  # type: ignore[arg-type]
        finished.clear()

    try:
        for i in order:
            req = jobs[i].request
            while heap and heap[0][0] <= req.submit_time:
                _, _, k = heapq.heappop(heap)
                done = jobs[k]
                predictor.observe(done)
                for b in baselines:
                    b.observe(done)
                finished.append(k)
                if auto and predictor.refit_due:
                    flush()
                    refits += predictor.refit()
            pending.append((i, predictor.prepare(req)))
            for b in baselines:
                base[b.name][i] = b.predict(req)
            seq += 1
            heapq.heappush(heap, (jobs[i].end, seq, i))
            if len(pending) >= batch:
                flush()
        flush()
    finally:
        predictor.options.auto_refit = auto
    return ReplayResult(predictions=preds, advice=advice, baselines=base, refits=refits)  # type: ignore[arg-type]


def summarize(
    result: ReplayResult, jobs: Sequence[FinishedJob], extra: Mapping[str, np.ndarray] | None = None
) -> dict[str, dict[str, float]]:
    """Scores of the predictor (``model``), each baseline and each ``extra`` prediction array."""
    actual = np.array([j.run_time for j in jobs])
    out = {"model": score(result.points(), actual)}
    for name, p in {**result.baselines, **(extra or {})}.items():
        out[name] = score(p, actual)
    if any(a is not None for a in result.advice):
        req = np.array([j.request.requested_time or np.inf for j in jobs])
        adv = np.array(
            [a.walltime if a is not None and a.walltime is not None else np.inf for a in result.advice]
        )
        has = np.isfinite(req)
        out["advice"] = advice_score(adv[has], actual[has], req[has])
    return out
