"""Walltime and memory advice: ask for less than users do, without killing their jobs.

A walltime that is too long wastes reservations and hurts backfilling; one that is too short kills the
job. :class:`WalltimeAdvisor` chooses, among the walltime options of a prediction
(``Prediction.walltimes``: upper quantiles of the user's similar recent runs plus a margin, and the
request; see :func:`.predict.walltime_options`), the one that minimises

    expected slack (seconds)  +  lambda * P(the walltime kills the job)

where the kill risk is learnt by the predictor from how such options fared on finished jobs. The advice
is never above the request. Slack is in seconds, so the risk budget goes where the slack is: jobs that
ask for hours get tight advice when their history is clear, short jobs keep their request.

``lambda`` (seconds of slack one kill is worth) is adapted online from outcomes
(:meth:`WalltimeAdvisor.observe`): multiplied by ``exp(adapt_rate * (killed - target_kill_rate))`` per
finished job, so the long-run share of jobs the advice would have killed tracks ``target_kill_rate``
whatever the workload (the same idea as adaptive conformal inference).

Memory advice (:func:`memory_advice`) is simpler: the largest recent peak of similar jobs plus a margin,
rounded up, never above the request.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from traitlets import Float, Int, TraitError, validate
from traitlets.config import LoggingConfigurable

from .predict import Prediction


@dataclass(frozen=True, slots=True)
class Advice:
    """A walltime in seconds, the estimated probability that it kills the job, and why."""

    walltime: float | None
    kill_risk: float
    reason: str


class AdvisorOptions(LoggingConfigurable):
    """Options of :class:`WalltimeAdvisor` (``c.AdvisorOptions.<name>`` in a config file)."""

    target_kill_rate = Float(
        0.03,
        help="Share of jobs the advice may kill in the long run (advice < run <= request); the advisor "
        "adapts its risk aversion to keep this rate. Default 0.03 (3%).",
    ).tag(config=True)
    adapt_rate = Float(
        0.05, help="Step of the online adaptation of the risk aversion (per finished job, log scale)."
    ).tag(config=True)
    initial_aversion = Float(
        20.0, help="Initial risk aversion, as a multiple of the first request seen (then adapted)."
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
        best, best_cost = opts[-1], math.inf
        for opt in opts:
            cost = opt[1] + lam * opt[2]
            if cost < best_cost:
                best, best_cost = opt, cost
        a, _, risk = best
        if self.options.round_to > 0:
            a = math.ceil(a / self.options.round_to) * self.options.round_to
        a = max(a, self.options.min_walltime)
        if a >= q:
            return Advice(q, 0.0, "keep the request: the history does not justify less")
        return Advice(float(a), float(risk), f"{risk:.0%} risk from the user's recent runs")

    def observe(self, advice: Advice, run_time: float, request: float | None) -> bool:
        """Record a finished job's outcome under ``advice``; returns whether the advice would have killed it."""
        if advice.walltime is None or self._lambda is None:
            return False
        killed = advice.walltime < run_time and (request is None or run_time <= request)
        self.advised += 1
        self.killed += killed
        self._lambda *= math.exp(
            self.options.adapt_rate * ((1.0 if killed else 0.0) - self.options.target_kill_rate)
        )
        return killed


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
