"""The online runtime predictor: fallback order, quantiles, versions, input errors and, above all, that
no prediction ever uses a job that had not finished when the predicted job was submitted."""

from __future__ import annotations

import dataclasses
import heapq
import math
from pathlib import Path

import pytest
from traitlets import TraitError

from jupyter_heroes.decision.advice import WalltimeAdvisor
from jupyter_heroes.decision.baselines import replay
from jupyter_heroes.decision.predict import (
    CANDIDATES,
    SOURCES,
    FinishedJob,
    JobRequest,
    PredictionError,
    RuntimePredictor,
    walltime_options,
)
from jupyter_heroes.decision.swf import read_swf, to_finished_jobs

DATA = Path(__file__).parent / "swf"


@pytest.fixture(scope="module")
def kth_jobs() -> list[FinishedJob]:
    return to_finished_jobs(read_swf(DATA / "kth-sp2-head.swf.gz"))


def small(**kw) -> RuntimePredictor:
    """A predictor that fits its model early, for short traces."""
    return RuntimePredictor(min_train_jobs=kw.pop("min_train_jobs", 60), refit_min_jobs=40, max_iter=20, **kw)


def job(user, submit, run, req=None, app=None, jid=None, procs=None) -> FinishedJob:
    return FinishedJob(JobRequest(user, submit, req, procs, None, app, None, jid), run)


def test_fallback_order_while_history_is_thin():
    p = RuntimePredictor(min_app_history=2, default_runtime=1234.0)
    assert SOURCES == ("model", "user-history", "app-default", "request", "default")
    # Nothing known at all: the configured default.
    pr = p.predict(JobRequest("alice", 0.0))
    assert (pr.source, pr.point, pr.model_version) == ("default", 1234.0, "0")
    # A request: the request.
    pr = p.predict(JobRequest("alice", 0.0, requested_time=7200.0, app="blast"))
    assert (pr.source, pr.point) == ("request", 7200.0)
    # Other users ran the application twice: its typical run (capped at the request).
    p.observe(job("bob", 0, 600.0, 3600.0, app="blast"))
    assert p.predict(JobRequest("alice", 10.0, 7200.0, app="blast")).source == "request"  # 1 < 2 runs
    p.observe(job("carol", 0, 650.0, 3600.0, app="blast"))
    pr = p.predict(JobRequest("alice", 10.0, 7200.0, app="blast"))
    assert (pr.source, pr.basis) == ("app-default", "app-medoid") and pr.point in (600.0, 650.0)
    assert p.predict(JobRequest("alice", 10.0, 300.0, app="blast")).point == 300.0  # capped at the request
    # The user's own history comes first.
    p.observe(job("alice", 0, 100.0, 7200.0, app="blast"))
    pr = p.predict(JobRequest("alice", 10.0, 7200.0, app="blast"))
    assert (pr.source, pr.point) == ("user-history", 100.0)
    assert p.model_version == "0"


def test_model_takes_over_after_enough_history_and_is_versioned(kth_jobs):
    p = small()
    versions = set()
    for j in sorted(kth_jobs, key=lambda j: j.end)[:200]:
        p.observe(j)  # auto_refit: refits when due
        versions.add(p.model_version)
    assert p.model_version != "0" and len(versions) >= 3  # "0", then one version per refit
    known = kth_jobs[0].request
    pr = p.predict(dataclasses.replace(known, job_id=None, submit_time=1e9))
    assert pr.source == "model" and pr.basis in CANDIDATES and pr.model_version == p.model_version
    assert p.refit() and p.model_version == str(int(pr.model_version) + 1)


def test_quantiles_are_ordered_and_capped_by_an_enforced_request(kth_jobs):
    r = replay(kth_jobs, small())
    assert {p.source for p in r.predictions} >= {"model", "user-history"}
    for j, p in zip(kth_jobs, r.predictions, strict=True):
        assert 0 < p.q_low <= p.point <= p.q_high
        assert p.q_high <= j.request.requested_time  # KTH requests are limits (auto-detected)
        assert p.levels == (0.1, 0.9)
        assert p.walltimes and p.walltimes[-1] == (j.request.requested_time, p.walltimes[-1][1], 0.0)


def test_interval_widens_when_runs_escape_it():
    p = RuntimePredictor(coverage_rate=0.1)
    for i in range(10):
        p.observe(job("u", i, 100.0, 10000.0, jid=f"h{i}"))
    highs = []
    for i in range(30):  # the user's runs suddenly take ten times longer than the history says
        req = JobRequest("u", 100.0 + i, 10000.0, job_id=f"x{i}")
        highs.append(p.predict(req).q_high)
        p.observe(FinishedJob(req, 1000.0 + i))
    assert highs[0] < 150.0 and highs[-1] > highs[10] > highs[0]
    assert all(h <= 10000.0 for h in highs)


def test_request_limit_auto_detection():
    p = RuntimePredictor()
    assert p.request_enforced
    for i in range(20):  # every job outruns its "request": requests are not limits here
        p.observe(job("u", i, 500.0, 100.0, jid=f"j{i}"))
    assert not p.request_enforced
    pr = p.predict(JobRequest("u", 100.0, 100.0))
    assert pr.point == 500.0 and pr.q_high >= 500.0
    assert RuntimePredictor(request_limit="enforced").request_enforced


def test_mapping_input_from_the_decision_module():
    from jupyter_heroes.decision.decide import Predictor

    p = RuntimePredictor()
    assert isinstance(p, Predictor)
    feats = {
        "application": "lammps",
        "template": "md",
        "step": "run",
        "user": "alice",
        "cores": 8,
        "memory_mb": 4096,
        "requested_time_s": 3600,
        "array_size": 1,
        "params": {},
    }
    req = JobRequest.from_mapping(feats)
    assert (req.user, req.app, req.requested_procs, req.requested_time) == ("alice", "lammps", 8, 3600.0)
    assert JobRequest.from_mapping({"template": "md", "step": "post"}).app == "md:post"
    pr = p.predict(feats)
    assert pr.source == "request" and pr.point == 3600.0


def test_bad_input_says_what_to_fix():
    with pytest.raises(PredictionError, match="needs a user"):
        JobRequest("", 0.0)
    with pytest.raises(PredictionError, match="requested_time must be a positive"):
        JobRequest("u", 0.0, requested_time=-5)
    with pytest.raises(PredictionError, match="requested_procs must be >= 1"):
        JobRequest("u", 0.0, requested_procs=0)
    with pytest.raises(PredictionError, match="run_time must be a positive"):
        FinishedJob(JobRequest("u", 0.0), 0.0)
    with pytest.raises(PredictionError, match="either options or keyword overrides"):
        from jupyter_heroes.decision.predict import PredictorOptions

        RuntimePredictor(PredictorOptions(), train_window=5)
    with pytest.raises(TraitError, match=r"quantiles must be two levels 0 < low < high < 1, got 0.9, 0.1"):
        RuntimePredictor(quantiles=(0.9, 0.1))
    with pytest.raises(TraitError, match="train_window must be at least 1"):
        RuntimePredictor(train_window=0)


# ------------------------------------------------------------------------------------------ look-ahead
def test_a_job_finishing_after_a_submission_is_not_used_for_it():
    a = job("u", 0.0, 100.0, 1000.0, jid="a")  # ends at 100
    b = job("u", 50.0, 900.0, 1000.0, jid="b")  # submitted while a runs
    c = job("u", 100.0, 900.0, 1000.0, jid="c")  # submitted exactly when a ends
    r = replay([a, b, c], RuntimePredictor())
    assert (r.predictions[1].source, r.predictions[1].point) == ("request", 1000.0)
    assert (r.predictions[2].source, r.predictions[2].point) == ("user-history", 100.0)
    # Changing a's outcome (it still ends after b's submission) cannot change b's prediction, only c's.
    a2 = dataclasses.replace(a, run_time=80.0)
    r2 = replay([a2, b, c], RuntimePredictor())
    assert r2.predictions[1] == r.predictions[1]
    assert r2.predictions[2].point == 80.0
    # Once it ends before b's submission, b uses it.
    r3 = replay([dataclasses.replace(a, run_time=40.0), b, c], RuntimePredictor())
    assert (r3.predictions[1].source, r3.predictions[1].point) == ("user-history", 40.0)


def test_predictions_do_not_depend_on_later_jobs(kth_jobs):
    """Replaying a prefix (by submission) gives the same predictions and advice for every job in it."""
    order = sorted(kth_jobs, key=lambda j: j.request.submit_time)
    full = replay(order, small(), advisor=WalltimeAdvisor())
    # Later jobs get wildly different outcomes: still nothing changes for the prefix.
    k = 250
    tail = [dataclasses.replace(j, run_time=j.run_time * 7 + 1) for j in order[k:]]
    mixed = replay(order[:k] + tail, small(), advisor=WalltimeAdvisor())
    prefix = replay(order[:k], small(), advisor=WalltimeAdvisor())
    assert full.refits >= 2
    for i in range(k):
        assert prefix.predictions[i] == full.predictions[i] == mixed.predictions[i]
        assert prefix.advice[i] == full.advice[i] == mixed.advice[i]
    assert any(p.source == "model" for p in prefix.predictions)


def test_replay_equals_online_use(kth_jobs):
    """The batched replay answers exactly what predict() answers when called at each submission."""
    jobs = sorted(kth_jobs, key=lambda j: j.request.submit_time)[:220]
    batched = replay(jobs, small())
    online = small()
    heap: list[tuple[float, int]] = []
    for i, j in enumerate(jobs):
        while heap and heap[0][0] <= j.request.submit_time:
            online.observe(jobs[heapq.heappop(heap)[1]])
        assert online.predict(j.request) == batched.predictions[i]
        heapq.heappush(heap, (j.end, i))
    assert online.model_version == str(batched.refits)


def test_walltime_options():
    sample = [(100.0, 1.0), (200.0, 1.0), (300.0, 1.0), (400.0, 1.0), (5000.0, 1.0)]
    opts = walltime_options(sample, 3600.0, margin=0.1)
    walls = [a for a, _, _ in opts]
    # The 50/70/80/90/95/100% quantiles plus 10% (5000 s capped at the request), then the request.
    assert walls == pytest.approx([330.0, 440.0, 3600.0])
    assert opts[-1][2] == 0.0
    risks = [r for _, _, r in opts]
    assert risks[0] > risks[1] > 0 == risks[2]
    assert risks[1] == pytest.approx((1 + (1 - 440 / 3600)) / 6)  # 5000 s above, plus the uniform prior
    slacks = [s for _, s, _ in opts]
    assert slacks == sorted(slacks)
    assert walltime_options([], 60.0) == [(60.0, 30.0, 0.0)]


def test_other_submissions_count_only_when_earlier_and_unfinished():
    """The submission features (jobs in flight, time since the previous submission, same-request streak)
    come from earlier submissions only, and a job leaves the in-flight count once it has finished."""
    p = RuntimePredictor()
    assert p._submission_features(JobRequest("u", 0.0, 600.0, 4, job_id="a")) == (
        0.0,
        pytest.approx(float("nan"), nan_ok=True),
        0.0,
    )
    assert p._submission_features(JobRequest("u", 10.0, 600.0, 4, job_id="b")) == pytest.approx(
        (math.log1p(1), math.log(11.0), math.log1p(1))
    )
    # Asking again for the same job (e.g. a re-prediction) neither counts it twice nor counts itself.
    again = p._submission_features(JobRequest("u", 10.0, 600.0, 4, job_id="b"))
    assert again == pytest.approx((math.log1p(1), math.log(11.0), math.log1p(1)))
    # Another shape breaks the streak; a finished job leaves the in-flight count.
    p.observe(job("u", 0.0, 30.0, 600.0, jid="a", procs=4))
    c = p._submission_features(JobRequest("u", 40.0, 1200.0, 4, job_id="c"))
    assert c == pytest.approx((math.log1p(1), math.log(31.0), 0.0))
    # Requests without a job id (e.g. comparing candidates before submitting) are never registered.
    p.predict(JobRequest("u", 50.0, 1200.0, 4))
    assert p._submission_features(JobRequest("u", 60.0, 1200.0, 4)) == pytest.approx(
        (math.log1p(2), math.log(21.0), math.log1p(1))
    )
    # Other users' submissions do not count.
    assert p._submission_features(JobRequest("v", 60.0, 1200.0, 4))[0] == 0.0


def test_later_submissions_do_not_change_earlier_predictions(kth_jobs):
    """Extra jobs submitted later (by the same users, never finishing within the prefix) change nothing
    before their submission: the in-flight features only see the past."""
    order = sorted(kth_jobs, key=lambda j: j.request.submit_time)[:260]
    k = 200
    t_cut = order[k].request.submit_time
    ghosts = [
        FinishedJob(dataclasses.replace(j.request, submit_time=t_cut + 1.0 + i, job_id=f"ghost{i}"), 9e6)
        for i, j in enumerate(order[:60])
    ]
    base = replay(order, small(), advisor=WalltimeAdvisor())
    more = replay(order + ghosts, small(), advisor=WalltimeAdvisor())
    for i in range(len(order)):
        if order[i].request.submit_time <= t_cut:
            assert more.predictions[i] == base.predictions[i]
            assert more.advice[i] == base.advice[i]


def test_walltime_options_ladder_up_to_the_request():
    """A history far below the request gets walltimes spaced geometrically between the sample's top
    (plus margin) and the request: each safer and with more slack than the one before."""
    sample = [(100.0, 1.0), (120.0, 1.0), (150.0, 1.0)]
    opts = walltime_options(sample, 16500.0, margin=0.1, steps=4)
    walls = [a for a, _, _ in opts]
    top = 165.0
    ladder = [top * (16500.0 / top) ** (k / 5) for k in range(1, 5)]
    assert walls[-5:-1] == pytest.approx(ladder) and walls[-1] == 16500.0
    assert ladder[1] / ladder[0] == pytest.approx(ladder[3] / ladder[2])  # geometric
    risks = [r for _, _, r in opts]
    slacks = [s for _, s, _ in opts]
    assert risks == sorted(risks, reverse=True) and risks[-1] == 0.0 and risks[-2] > 0.0
    assert slacks == sorted(slacks)
    assert [a for a, _, _ in walltime_options(sample, 16500.0, steps=0)] == [132.0, 165.0, 16500.0]
