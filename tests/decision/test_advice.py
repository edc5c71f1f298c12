"""Walltime and memory advice: never above the request, tighter when history is clear, and a risk
aversion that follows the outcomes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from jupyter_heroes.decision.advice import Advice, WalltimeAdvisor, memory_advice
from jupyter_heroes.decision.baselines import replay
from jupyter_heroes.decision.predict import Prediction, RuntimePredictor, walltime_options
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
    adv = WalltimeAdvisor(target_kill_rate=0.05, adapt_rate=0.1)
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
