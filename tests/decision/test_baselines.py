"""Baselines and metrics on hand-made histories, and the benchmark end to end on a bundled trace."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jupyter_heroes.decision.baselines import (
    AleaBaseline,
    LastTwoBaseline,
    RequestBaseline,
    accuracy,
    advice_score,
    alea_with_lookahead,
    default_baselines,
    replay,
    score,
)
from jupyter_heroes.decision.predict import FinishedJob, JobRequest, RuntimePredictor

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "swf"


def job(user, submit, run, req, jid) -> FinishedJob:
    return FinishedJob(JobRequest(user, submit, req, job_id=jid), run)


def test_baselines_follow_their_definitions():
    req = JobRequest("u", 0.0, 1000.0)
    t, a, r = LastTwoBaseline(), AleaBaseline(), RequestBaseline()
    assert t.predict(req) == a.predict(req) == r.predict(req) == 1000.0  # no history: the request
    t.observe(job("u", 0, 300.0, 600.0, "1"))
    a.observe(job("u", 0, 300.0, 600.0, "1"))
    assert t.predict(req) == 300.0 and a.predict(req) == 500.0  # ratio 0.5 x 1000
    for k, (run, q) in enumerate([(900.0, 1000.0), (1500.0, 1000.0)]):
        t.observe(job("u", 0, run, q, str(k)))
        a.observe(job("u", 0, run, q, str(k)))
    assert t.predict(req) == 1000.0  # mean(900, 1500) = 1200, capped at the request
    assert t.predict(JobRequest("u", 0.0, 5000.0)) == 1200.0
    assert a.predict(req) == 1500.0  # max ratio 1.5 x 1000 (ALEA does not cap)
    assert np.isnan(r.predict(JobRequest("u", 0.0)))
    assert [b.name for b in default_baselines()] == ["request", "last_two", "alea"]


def test_metrics():
    p, a = np.array([50.0, 200.0, 100.0]), np.array([100.0, 100.0, 100.0])
    assert accuracy(p, a).tolist() == [0.5, 0.5, 1.0]
    s = score(p, a)
    assert s["accuracy"] == pytest.approx(2 / 3) and s["mae"] == pytest.approx(50.0)
    assert s["under"] == pytest.approx(1 / 3)
    adv = advice_score([50.0, 150.0, 100.0, 10.0], [100.0, 100.0, 100.0, 500.0], [200.0, 200.0, 100.0, 400.0])
    assert adv["killed"] == pytest.approx(1 / 4)  # the 4th ran past its own request: not counted
    assert adv["slack"] == pytest.approx(50.0 / 200.0)


def test_readme_alea_figure_looks_ahead():
    a = job("u", 0.0, 50.0, 100.0, "a")  # still running when b is submitted
    b = job("u", 10.0, 50.0, 100.0, "b")
    assert alea_with_lookahead([a, b]).tolist() == [100.0, 50.0]  # uses a's run time: look-ahead
    r = replay([a, b], RuntimePredictor(), baselines=[AleaBaseline()])
    assert r.baselines["alea"].tolist() == [100.0, 100.0]  # the honest one does not


def test_replay_needs_unique_ids():
    with pytest.raises(ValueError, match="unique job_id"):
        replay([job("u", 0, 1.0, 2.0, "x"), job("u", 1, 1.0, 2.0, "x")], RuntimePredictor())


def run_benchmark(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "prediction.py"), *args],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
    )


def test_benchmark_end_to_end_json():
    trace = DATA / "kth-sp2-head.swf.gz"
    p = run_benchmark(str(trace), "--json")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    out = json.loads(lines[-1])
    r = out["traces"]["kth-sp2-head"]
    assert r["jobs"] == 400 and r["refits"] >= 1
    for key in ("accuracy", "mae", "under"):
        assert r[f"{key}_ratio"] == pytest.approx(r[key] / r[f"{key}_baseline"], rel=1e-4)
    assert r["advice_slack_ratio"] == pytest.approx(
        r["advice_slack_s"] / r["advice_slack_baseline_s"], rel=1e-4
    )
    assert 0 <= r["advice_killed"] <= 1 and 0 < r["accuracy"] <= 1
    # The request baseline, recomputed here independently of the benchmark.
    from jupyter_heroes.decision.swf import read_swf, to_finished_jobs

    jobs = to_finished_jobs(read_swf(trace))
    run = np.array([j.run_time for j in jobs])
    req = np.array([j.request.requested_time for j in jobs])
    assert r["baselines"]["request"]["accuracy"] == pytest.approx(
        np.mean(np.minimum(run, req) / np.maximum(run, req)), abs=1e-6
    )
    assert r["accuracy_baseline"] == max(
        r["baselines"][k]["accuracy"] for k in ("request", "last_two", "alea")
    )
    assert isinstance(out["targets_met"], bool)
    assert "user request" in p.stdout and "walltime advice" in p.stdout


def test_benchmark_limit_and_errors(tmp_path):
    p = run_benchmark(str(DATA / "lanl-cm5-head.swf"), "--limit", "50", "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout.splitlines()[-1])["traces"]["lanl-cm5-head"]
    assert r["jobs"] <= 50
    bad = tmp_path / "bad.swf"
    bad.write_text("1 2 3\n")
    p = run_benchmark(str(bad))
    assert p.returncode == 2 and "expected at least 18" in p.stderr
    p = run_benchmark("--data-dir", str(tmp_path / "empty"))
    assert p.returncode == 2 and "pass trace paths or --data-dir" in p.stderr
