"""Walltime and memory advice: ask for less than users do, without killing their jobs.

A walltime that is too long wastes reservations and hurts backfilling; one that is too short kills the
job. :class:`WalltimeAdvisor` chooses, among the walltime options of a prediction
(``Prediction.walltimes``: upper quantiles of the user's similar recent runs plus a margin, fixed
fractions of the request, and the request; see :func:`.predict.walltime_options`), the one that
minimises

    expected slack (seconds)  +  lambda * P(the walltime kills the job)

where the kill risk is learnt by the predictor from how such options fared on finished jobs. The advice
is never above the request. Slack is in seconds, so the risk budget goes where the slack is: jobs that
ask for hours get tight advice when their history is clear, short jobs keep their request.

``lambda`` (seconds of slack one kill is worth) is learnt from outcomes (:meth:`WalltimeAdvisor.observe`,
finished jobs only). Once ``calibration_jobs`` jobs advised from history have finished, it is set to
the smallest value that would have killed ``target_kill_rate`` of them (:func:`calibrated_aversion`, a
warm start); before and after that it is multiplied by
``exp(adapt_rate * (killed - target_kill_rate))`` per finished job, so the long-run share of jobs the
advice would have killed tracks ``target_kill_rate`` whatever the workload (the same idea as adaptive
conformal inference). The share realised over ``n`` jobs differs from the target by
``log(lambda_end / lambda_start) / (adapt_rate * n)``: the advisor starts cautious (``initial_aversion``
high, so ``lambda`` mostly falls) and aims 1% under the 5% limit, which leaves room for ``lambda`` to
rise again when the workload changes. A slow step keeps ``lambda`` steady: its swings cost slack, since
for calibrated risks one constant ``lambda`` is the optimum of the trade-off (on a log whose slack sits
in a few very long requests, a fast step loses a tenth of the users' slack for the same kills).

The risks of the options are made non-increasing in the walltime before choosing (a longer walltime
cannot be riskier; the learnt model is not monotone by construction).

Memory advice (:func:`memory_advice`) is simpler: the largest recent peak of similar jobs plus a margin,
rounded up, never above the request.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from traitlets import Float, Int, TraitError, validate
from traitlets.config import LoggingConfigurable

from .predict import Prediction, option_values


@dataclass(frozen=True, slots=True)
class Advice:
    """A walltime in seconds, the estimated probability that it kills the job, and why.

    ``options`` are the walltimes the advisor chose among, ``(seconds as advised, expected slack, kill
    risk)``: :meth:`WalltimeAdvisor.observe` uses them to calibrate its risk aversion once the job has
    finished. They take no part in comparisons.
    """

    walltime: float | None
    kill_risk: float
    reason: str
    options: tuple[tuple[float, float, float], ...] = field(default=(), compare=False, repr=False)


class AdvisorOptions(LoggingConfigurable):
    """Options of :class:`WalltimeAdvisor` (``c.AdvisorOptions.<name>`` in a config file)."""

    target_kill_rate = Float(
        0.04,
        help="Share of jobs the advice may kill in the long run (advice < run <= request); the advisor "
        "adapts its risk aversion to keep this rate. Default 0.04 (4%: 1% under the 5% the benchmark "
        "allows, for the controller's error; see adapt_rate).",
    ).tag(config=True)
    adapt_rate = Float(
        0.02,
        help="Step of the online adaptation of the risk aversion (per finished job, log scale). Smaller "
        "is steadier (less slack for the same kills) but follows a changing workload more slowly: over n "
        "jobs the realised kill share misses target_kill_rate by log(aversion change) / (adapt_rate * n). "
        "Default 0.02.",
    ).tag(config=True)
    initial_aversion = Float(
        200.0,
        help="Initial risk aversion, as a multiple of the first request seen (then adapted). High, so "
        "that the advisor starts cautious and the adaptation mostly lowers it. Default 200.",
    ).tag(config=True)
    calibration_jobs = Int(
        300,
        help="After this many finished jobs advised from history, the risk aversion is set once to the "
        "value that would have killed target_kill_rate of them (a warm start from outcomes, instead of "
        "initial_aversion's guess), then adapted job by job. 0: no warm start.",
    ).tag(config=True)
    round_to = Int(60, help="Advice is rounded up to a multiple of this many seconds (Slurm: minutes).").tag(
        config=True
    )
    min_walltime = Float(60.0, help="Never advise less than this many seconds.").tag(config=True)

    @validate("target_kill_rate")
    def _check_rate(self, proposal: Any) -> float:
        if not 0 < proposal["value"] < 1:
            raise TraitError(
                f"AdvisorOptions.target_kill_rate must be between 0 and 1, got {proposal['value']}"
            )
        return proposal["value"]


class WalltimeAdvisor:
    """Walltime advice with an online-calibrated risk of killing jobs (see the module docstring).

    Options come from ``options`` (an :class:`AdvisorOptions`) or keyword overrides.
    """

    def __init__(self, options: AdvisorOptions | None = None, **overrides: Any) -> None:
        if options is not None and overrides:
            raise ValueError("give either options or keyword overrides, not both")
        self.options = options if options is not None else AdvisorOptions(**overrides)
        self._lambda: float | None = None
        self.advised = 0
        self.killed = 0
        # Outcomes kept for the warm start (options, run time, request), until calibration_jobs of them.
        self._warmup: list[tuple[tuple[tuple[float, float, float], ...], float, float | None]] | None = (
            [] if self.options.calibration_jobs > 0 else None
        )

    def __getstate__(self) -> dict[str, Any]:
        """What the advisor learnt, with its options as plain values (for saving with pickle)."""
        return {**self.__dict__, "options": option_values(self.options)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        self.options = AdvisorOptions(**state.pop("options"))
        self.__dict__.update(state)

    @property
    def aversion(self) -> float | None:
        """The current ``lambda`` (seconds of slack worth one kill), ``None`` before the first advice."""
        return self._lambda

    def advise(self, prediction: Prediction) -> Advice:
        """Advice for the job ``prediction`` was made for (from its ``walltimes`` options)."""
        q = prediction.request
        opts = prediction.walltimes
        if q is None or not opts:
            return Advice(None, 1.0, "no request: give a walltime to get advice on it")
        if len(opts) == 1 or not prediction.support:
            return Advice(q, 0.0, "no history: keep the request")
        if self._lambda is None:
            self._lambda = self.options.initial_aversion * q
        lam = self._lambda
        o = self.options
        # The walltimes as they would be advised (rounded up, at least min_walltime, the request at
        # most: risk-free there), and risks made non-increasing in the walltime (a longer walltime
        # cannot be riskier; the learnt model is not monotone by construction).
        walls = [float(a) for a, _, _ in opts]
        if o.round_to > 0:
            walls = [math.ceil(a / o.round_to) * o.round_to for a in walls]
        walls = [min(max(a, o.min_walltime), q) for a in walls]
        risks = [0.0 if a >= q else r for a, (_, _, r) in zip(walls, opts, strict=True)]
        for i in range(len(risks) - 2, -1, -1):
            risks[i] = max(risks[i], risks[i + 1])
        best, best_cost = len(opts) - 1, math.inf
        for i, (_, slack, _) in enumerate(opts):
            cost = slack + lam * risks[i]
            if cost < best_cost:
                best, best_cost = i, cost
        a, risk = walls[best], risks[best]
        choice = tuple((w, float(sl), r) for w, (_, sl, _), r in zip(walls, opts, risks, strict=True))
        if a >= q:
            return Advice(q, 0.0, "keep the request: the history does not justify less", choice)
        return Advice(float(a), float(risk), f"{risk:.0%} risk from the user's recent runs", choice)

    def observe(self, advice: Advice, run_time: float, request: float | None) -> bool:
        """Record a finished job's outcome under ``advice``; returns whether the advice would have killed it.

        Call it only once the job has finished (its run time is what is learnt): this and the warm start
        (``calibration_jobs``) are the only ways outcomes reach the advisor.
        """
        if advice.walltime is None or self._lambda is None:
            return False
        killed = advice.walltime < run_time and (request is None or run_time <= request)
        self.advised += 1
        self.killed += killed
        o = self.options
        self._lambda *= math.exp(o.adapt_rate * ((1.0 if killed else 0.0) - o.target_kill_rate))
        if self._warmup is not None and len(advice.options) > 1:
            self._warmup.append((advice.options, run_time, request))
            if len(self._warmup) >= o.calibration_jobs:
                self._lambda = calibrated_aversion(self._warmup, o.target_kill_rate)
                self._warmup = None
        return killed


def _kills(
    choice: tuple[tuple[float, float, float], ...], run_time: float, request: float | None
) -> list[bool]:
    return [w < run_time and (request is None or run_time <= request) for w, _, _ in choice]


def calibrated_aversion(
    outcomes: Sequence[tuple[tuple[tuple[float, float, float], ...], float, float | None]],
    target: float,
) -> float:
    """The smallest risk aversion ``lambda`` that, choosing ``argmin(slack + lambda * risk)`` among each
    finished job's options, would have killed at most ``target`` of them.

    ``outcomes``: per finished job, its :attr:`Advice.options`, run time and request. The share killed
    does not grow with ``lambda`` (risks do not grow and slacks do not fall with the walltime), so a
    bisection on ``log lambda`` finds it.
    """
    if not outcomes:
        raise ValueError("calibrated_aversion needs at least one finished job")
    m = max(len(c) for c, _, _ in outcomes)
    n = len(outcomes)
    slack = np.full((n, m), np.inf)
    risk = np.zeros((n, m))
    kill = np.zeros((n, m), dtype=bool)
    for j, (choice, run, req) in enumerate(outcomes):
        k = len(choice)
        slack[j, :k] = [sl for _, sl, _ in choice]
        risk[j, :k] = [r for _, _, r in choice]
        kill[j, :k] = _kills(choice, run, req)
    rows = np.arange(n)
    lo, hi = 0.0, 60.0  # log lambda, seconds: 1 s to 1e26 s
    for _ in range(50):
        mid = (lo + hi) / 2.0
        share = kill[rows, np.argmin(slack + math.exp(mid) * risk, axis=1)].mean()
        if share > target:
            lo = mid
        else:
            hi = mid
    return math.exp(hi)


def memory_advice(
    peaks: Sequence[float], requested: float | None, *, margin: float = 0.2, granularity: float = 1.0
) -> float | None:
    """Memory to request: the largest recent peak of similar jobs times ``1 + margin``, rounded up to
    ``granularity``, never above ``requested``. ``None`` when there is no peak to go on (keep the request).
    """
    good = [p for p in peaks if p is not None and p > 0 and math.isfinite(p)]
    if not good:
        return requested
    a = max(good) * (1.0 + margin)
    if granularity > 0:
        a = math.ceil(a / granularity) * granularity
    return min(a, requested) if requested is not None else a
