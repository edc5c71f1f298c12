"""Walltime and memory advice: never above the request, tighter when history is clear, and a risk
aversion that follows the outcomes."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from jupyter_heroes.decision.advice import (
    Advice,
    AdvisorOptions,
    WalltimeAdvisor,
    calibrated_aversion,
    memory_advice,
)
from jupyter_heroes.decision.baselines import replay
from jupyter_heroes.decision.predict import (
    FinishedJob,
    JobRequest,
    Prediction,
    RuntimePredictor,
    walltime_options,
)
from jupyter_heroes.decision.swf import read_swf, to_finished_jobs

DATA = Path(__file__).parent / "swf"


def prediction(sample, request) -> Prediction:
    opts = tuple(walltime_options(sample, request)) if request is not None else ()
    return Prediction(
        1.0, 1.0, 1.0, "user-history", "0", support=tuple(sample), request=request, walltimes=opts
    )


def test_advice_never_exceeds_the_request_on_a_real_trace():
    jobs = to_finished_jobs(read_swf(DATA / "kth-sp2-head.swf.gz"))
    r = replay(jobs, RuntimePredictor(min_train_jobs=60), advisor=WalltimeAdvisor())
    walls = [a.walltime for a in r.advice]
    reqs = [j.request.requested_time for j in jobs]
    assert all(w is not None and 0 < w <= q for w, q in zip(walls, reqs, strict=True))
    assert any(w < q for w, q in zip(walls, reqs, strict=True))  # it does advise less sometimes


def test_advice_never_exceeds_the_request_whatever_the_sample():
    rng = np.random.default_rng(0)
    adv = WalltimeAdvisor()
    for _ in range(300):
        q = float(rng.uniform(30, 1e6))
        sample = [
            (float(v), float(w)) for v, w in zip(rng.uniform(1, 2e6, 8), rng.uniform(0, 3, 8), strict=True)
        ]
        a = adv.advise(prediction(sample, q))
        assert a.walltime is not None and a.walltime <= q and 0 <= a.kill_risk <= 1


def test_clear_history_gives_tight_advice_and_thin_history_keeps_the_request():
    adv = WalltimeAdvisor(initial_aversion=2.0)
    steady = [(1000.0 + i, 1.0) for i in range(20)]
    a = adv.advise(prediction(steady, 86400.0))
    assert a.walltime == 1140.0  # 1019 s * 1.1, rounded up to the minute
    assert 0 < a.kill_risk < 0.1 and "risk" in a.reason
    # One run only: a kill is too likely to be worth the slack.
    lone = adv.advise(prediction([(1000.0, 1.0)], 86400.0))
    assert lone.walltime == 86400.0 and lone.kill_risk == 0.0
    assert adv.advise(prediction([], 3600.0)) == Advice(3600.0, 0.0, "no history: keep the request")
    none = adv.advise(prediction(steady, None))
    assert none.walltime is None and "no request" in none.reason


def test_risk_aversion_follows_outcomes():
    assert AdvisorOptions().initial_aversion == 200.0  # the default starts cautious
    adv = WalltimeAdvisor(target_kill_rate=0.05, adapt_rate=0.1, initial_aversion=20.0)
    steady = [(1000.0, 1.0)] * 20
    a = adv.advise(prediction(steady, 86400.0))
    lam0 = adv.aversion
    assert lam0 == pytest.approx(20.0 * 86400.0)
    assert adv.observe(a, 5000.0, 86400.0) is True  # killed: more cautious
    assert adv.aversion == pytest.approx(lam0 * math.exp(0.1 * 0.95))
    assert adv.observe(a, 900.0, 86400.0) is False
    assert adv.observe(a, 90000.0, 86400.0) is False  # ran past its own request: not the advice's fault
    assert adv.aversion == pytest.approx(lam0 * math.exp(0.1 * (0.95 - 0.05 - 0.05)))
    assert (adv.advised, adv.killed) == (3, 1)


def test_bad_option_names_the_setting():
    from traitlets import TraitError

    with pytest.raises(TraitError, match="AdvisorOptions.target_kill_rate must be between 0 and 1"):
        WalltimeAdvisor(target_kill_rate=1.5)


def test_memory_advice():
    assert memory_advice([1000, 1500, 1200], 4096, margin=0.2, granularity=256) == 2048
    assert memory_advice([4000], 4096) == 4096  # never above the request
    assert memory_advice([], 4096) == 4096 and memory_advice([float("nan"), -1], None) is None
    assert memory_advice([100], None, margin=0.5) == 150


def test_walltime_options_grid_of_request_fractions():
    """The grid adds walltimes at fixed fractions of the request, whatever the sample, each riskier and
    with less slack the shorter it is."""
    sample = [(1000.0, 1.0), (1100.0, 1.0), (1200.0, 1.0)]
    base = {a for a, _, _ in walltime_options(sample, 64000.0)}
    opts = walltime_options(sample, 64000.0, grid=12)
    walls = [a for a, _, _ in opts]
    assert base <= set(walls) and walls == sorted(walls) and walls[-1] == 64000.0
    for k in range(1, 13):
        assert any(a == pytest.approx(64000.0 * 2 ** (-k / 2)) for a in walls)
    risks = [r for _, _, r in opts]
    slacks = [s for _, s, _ in opts]
    assert risks == sorted(risks, reverse=True) and slacks == sorted(slacks)
    # The predictor offers them (PredictorOptions.advice_grid, default 12).
    p = RuntimePredictor()
    for i in range(3):
        p.observe(FinishedJob(JobRequest("u", 0.0, 64000.0, job_id=str(i)), 1000.0 + 100 * i, 2000.0))
    pr = p.predict(JobRequest("u", 3000.0, 64000.0))
    assert {a for a, _, _ in pr.walltimes} == set(walls)
    off = RuntimePredictor(advice_grid=0)
    for i in range(3):
        off.observe(FinishedJob(JobRequest("u", 0.0, 64000.0, job_id=str(i)), 1000.0 + 100 * i, 2000.0))
    assert {a for a, _, _ in off.predict(JobRequest("u", 3000.0, 64000.0)).walltimes} == base


def test_a_longer_walltime_is_never_riskier():
    """Risks are made non-increasing in the walltime before choosing: an option's risk is at least that of
    every longer one, and the advice reports the risk it was chosen with."""
    opts = ((600.0, 100.0, 0.05), (1200.0, 400.0, 0.30), (3600.0, 1500.0, 0.0))
    p = Prediction(1.0, 1.0, 1.0, "model", "1", support=((500.0, 1.0),), request=3600.0, walltimes=opts)
    a = WalltimeAdvisor(initial_aversion=1.0).advise(p)  # lambda = 3600 s: kills are cheap
    assert a.walltime == 600.0 and a.kill_risk == pytest.approx(0.30)
    assert [r for _, _, r in a.options] == [0.30, 0.30, 0.0]
    # lambda = 7200 s: at face value 600 s would cost 100 + 7200 * 0.05 = 460 < 1500 (the request); at
    # its true risk it costs 2260, so the request is kept.
    cautious = WalltimeAdvisor(initial_aversion=2.0).advise(p)
    assert cautious.walltime == 3600.0 and cautious.kill_risk == 0.0


def synthetic(rng: np.random.Generator, n: int) -> list[tuple[Prediction, float]]:
    """Predictions whose samples come from the same law as the run times (some quick failures)."""
    out = []
    for _ in range(n):
        q = float(rng.choice([3600.0, 14400.0, 86400.0]))
        typical = q * float(rng.uniform(0.05, 0.6))

        def draw(q: float = q, typical: float = typical) -> float:
            quick = rng.random() < 0.15
            return min(q, 30.0 if quick else max(1.0, typical * float(rng.lognormal(0, 0.3))))

        sample = [(draw(), 1.0) for _ in range(8)]
        out.append((prediction(sample, q), draw()))
    return out


def test_warm_start_calibrates_on_finished_jobs_only():
    """Until calibration_jobs outcomes are known the aversion is adapted job by job; at the last of them it
    is set to the one that would have killed target_kill_rate of those finished jobs, and advise() never
    changes it (only observe(), with an outcome, does)."""
    rng = np.random.default_rng(1)
    jobs = synthetic(rng, 400)
    adv = WalltimeAdvisor(calibration_jobs=100, target_kill_rate=0.05, adapt_rate=0.02)
    given = [adv.advise(p) for p, _ in jobs[:100]]
    lam0 = adv.aversion
    assert lam0 == pytest.approx(200.0 * jobs[0][0].request)
    for p, _ in jobs[100:]:
        adv.advise(p)
    assert adv.aversion == lam0  # advising learns nothing
    outcomes = []
    lam = lam0
    for (p, run), a in zip(jobs[:99], given[:99], strict=True):
        k = adv.observe(a, run, p.request)
        lam *= math.exp(0.02 * (k - 0.05))
        outcomes.append((a.options, run, p.request))
        assert adv.aversion == pytest.approx(lam)
    p, run = jobs[99]
    adv.observe(given[99], run, p.request)
    outcomes.append((given[99].options, run, p.request))
    cal = calibrated_aversion(outcomes, 0.05)
    assert adv.aversion == pytest.approx(cal) and cal != pytest.approx(lam)

    # At the calibrated aversion at most 5% of those jobs are killed; just under it, more than 5%.
    def share(lam: float) -> float:
        kills = 0
        for choice, r, q in outcomes:
            cost = [sl + lam * rk for _, sl, rk in choice]
            w = choice[int(np.argmin(cost))][0]
            kills += w < r <= q
        return kills / len(outcomes)

    assert share(cal) <= 0.05 < share(cal * 0.99)
    # After the warm start, the aversion is adapted job by job again.
    p, run = jobs[100]
    a = adv.advise(p)
    k = adv.observe(a, run, p.request)
    assert adv.aversion == pytest.approx(cal * math.exp(0.02 * (k - 0.05)))


def test_calibrated_aversion_errors_and_extremes():
    with pytest.raises(ValueError, match="at least one finished job"):
        calibrated_aversion([], 0.05)
    safe = ((600.0, 10.0, 0.5), (3600.0, 3000.0, 0.0))
    # The short walltime would kill every job: only a large aversion keeps the kill share at 0.
    lam = calibrated_aversion([(safe, 1000.0, 3600.0)] * 10, 0.0)
    assert 10.0 + lam * 0.5 >= 3000.0
    # It would kill none: no aversion is needed.
    assert calibrated_aversion([(safe, 100.0, 3600.0)] * 10, 0.0) < 1.01


def test_advice_never_reads_an_unfinished_outcome():
    """With a warm start early in a real trace, the advice for the jobs submitted up to a point (and the
    aversion they were advised with) is the same whatever the run times of the jobs still running or not
    yet submitted then: the advisor learns outcomes only through observe(), once jobs have finished."""
    jobs = sorted(
        to_finished_jobs(read_swf(DATA / "kth-sp2-head.swf.gz")), key=lambda j: j.request.submit_time
    )
    k = 300
    t_cut = jobs[k - 1].request.submit_time
    later = [dataclasses.replace(j, run_time=j.run_time * 5 + 7) if j.end > t_cut else j for j in jobs]

    def run(js):
        adv = WalltimeAdvisor(calibration_jobs=40)
        pred = RuntimePredictor(min_train_jobs=60, refit_min_jobs=40, max_iter=20)
        return replay(js, pred, advisor=adv, batch=1), adv

    base, adv = run(jobs)
    changed, _ = run(later)
    prefix, adv_p = run(jobs[:k])
    assert adv.advised > 40 and adv_p._warmup is None  # the warm start happened within the prefix
    for i in range(k):
        if jobs[i].request.submit_time <= t_cut:
            a, b, c = base.advice[i], changed.advice[i], prefix.advice[i]
            assert (a.walltime, a.kill_risk, a.options) == (b.walltime, b.kill_risk, b.options)
            assert (a.walltime, a.kill_risk, a.options) == (c.walltime, c.kill_risk, c.options)
    assert any(a.walltime < j.request.requested_time for a, j in zip(base.advice[:k], jobs, strict=False))
