"""The decision store on a migrated database (SQLite and PostgreSQL): a decision and its predictions
are recorded, the user's pick is linked to the submitted workflow, the predicted cost is read back for
the budget, predictions sit beside the jobs' outcomes per model version, policies and EAR power are
kept per organization, and another organization's decision is not found.

Runtimes come from the real :class:`~jupyter_heroes.decision.predict.RuntimePredictor` (no history
yet: it predicts from the request), so the store sees what the service stores."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import select
from traitlets import TraitError
from traitlets.config import Config

from jupyter_heroes import orm
from jupyter_heroes.decision import store
from jupyter_heroes.decision.advice import WalltimeAdvisor
from jupyter_heroes.decision.candidates import make_candidate
from jupyter_heroes.decision.decide import decide
from jupyter_heroes.decision.ear import read_ear_csv
from jupyter_heroes.decision.predict import RuntimePredictor
from jupyter_heroes.decision.ranking import Policy, UserChoice
from jupyter_heroes.decision.service import OrgPredictors
from jupyter_heroes.orm_decision import DecisionPrediction, EarRecord
from jupyter_heroes.workflows.templates import load_template

DATA = Path(__file__).parent / "data"
NOW = datetime(2026, 11, 21, 21, 0, tzinfo=timezone.utc)
TEMPLATE = load_template(
    {
        "heroes_template": 1,
        "name": "solver",
        "version": 1,
        "application": "solver",
        "parameters": {"n": {"type": "integer", "default": 10}},
        "steps": [
            {
                "name": "prep",
                "command": ["prep"],
                "resources": {"nodes": 1, "tasks": 1, "memory_mb": 1024, "walltime": "00:10:00"},
            },
            {
                "name": "run",
                "command": ["solver", "{{ n }}"],
                "depends_on": ["prep"],
                "resources": {"nodes": 1, "tasks": 4, "memory_mb": 4096, "walltime": "01:00:00"},
            },
        ],
    }
)
LIMITS = dict(max_nodes=4, cpus_per_node=8, mem_per_node_mb=16384, max_walltime_s=86400)


def candidates():
    return [
        make_candidate(
            "fast",
            "q",
            **LIMITS,
            site={"relative_speed": 2.0, "offer": {"currency": "EUR", "core_hour": "0.50"}, "pue": 1.1},
        ),
        make_candidate("slow", "q", **LIMITS, site={"offer": {"currency": "EUR", "core_hour": "0.01"}}),
        make_candidate("tiny", "q", max_nodes=1, cpus_per_node=2, mem_per_node_mb=2048),
    ]


def a_decision(strategy="cheapest"):
    cands = candidates()
    d = decide(
        TEMPLATE,
        {"n": 3},
        cands,
        RuntimePredictor(),
        choice=UserChoice(strategy=strategy),
        now=NOW,
        user="alice",
    )
    return d, cands


def record(s, ids, org="acme", strategy="cheapest"):
    d, cands = a_decision(strategy)
    user = s.get(orm.User, ids.users["alice"])
    did = store.record_decision(
        s,
        org_id=ids.orgs[org],
        user=user,
        template=TEMPLATE,
        params={"n": 3},
        decision=d,
        policy=Policy(),
        limits={"deadline": None},
        candidates=cands,
    )
    return did, d


def test_a_decision_and_its_predictions_are_recorded(db):
    with db.session() as s:
        did, d = record(s, db.ids)
    assert d.recommendation is not None and d.recommendation.key == "slow/q"
    with db.session() as s:
        row = store.get_decision(s, db.ids.orgs["acme"], did)
        assert row.recommended == "slow/q" and row.strategy == "cheapest" and row.user_name == "alice"
        assert row.template_name == "solver" and row.params == {"n": 3}
        assert row.model_version == "0"  # no model fitted yet
        statuses = {c["key"]: c["status"] for c in row.candidates}
        assert statuses == {"slow/q": "ranked", "fast/q": "ranked", "tiny/q": "infeasible"}
        preds = s.scalars(select(DecisionPrediction).where(DecisionPrediction.decision_id == did)).all()
        by = {(p.cluster, p.step): p for p in preds}
        # the infeasible candidate has no figures; the ranked ones one row per step and one overall
        assert {k for k in by} == {(c, st) for c in ("fast", "slow") for st in ("", "prep", "run")}
        # 'fast' runs twice as fast: its step predictions are halved
        assert by[("fast", "run")].runtime_s == pytest.approx(by[("slow", "run")].runtime_s / 2)
        assert by[("slow", "")].cost_cents is not None and by[("slow", "")].currency == "EUR"
        assert by[("slow", "")].runtime_s == pytest.approx(
            by[("slow", "prep")].runtime_s + by[("slow", "run")].runtime_s
        )
        view = store.decision_view(row)
        assert view["decision"] == did and view["chosen"] is None and view["instance"] is None


def _instance(s, ids, org="acme"):
    inst = orm.WorkflowInstance(
        org_id=ids.orgs[org], user_id=ids.users["alice"], template_id=ids.templates[org], state="completed"
    )
    s.add(inst)
    s.flush()
    return inst


def test_link_submission_records_the_pick_and_refuses_what_was_not_ranked(db):
    with db.session() as s:
        did, d = record(s, db.ids)
        inst = _instance(s, db.ids)
        iid = inst.id
    with db.session() as s:
        with pytest.raises(
            store.NotACandidate, match=r"tiny/q was not a ranked candidate.*ranked: slow/q, fast/q"
        ):
            store.link_submission(
                s, org_id=db.ids.orgs["acme"], decision_id=did, instance_id=iid, cluster="tiny", queue="q"
            )
        with pytest.raises(store.DecisionNotFound, match="not found in your organization") as e:
            store.link_submission(
                s, org_id=db.ids.orgs["globex"], decision_id=did, instance_id=iid, cluster="slow", queue="q"
            )
        assert e.value.status == 404 and e.value.reason == "not_found"
        with pytest.raises(store.DecisionNotFound):
            store.link_submission(
                s,
                org_id=db.ids.orgs["acme"],
                decision_id="0" * 32,
                instance_id=iid,
                cluster="slow",
                queue="q",
            )
    with db.session() as s:
        assert store.get_decision(s, db.ids.orgs["acme"], did).chosen == ""  # refusals changed nothing
        # the user overrides the recommendation; an empty queue names the cluster's only ranked queue
        store.link_submission(
            s, org_id=db.ids.orgs["acme"], decision_id=did, instance_id=iid, cluster="fast", queue=""
        )
    with db.session() as s:
        row = store.get_decision(s, db.ids.orgs["acme"], did)
        assert (row.chosen, row.accepted, row.instance_id) == ("fast/q", False, iid)
        assert row.chosen_at is not None
        other = _instance(s, db.ids)
        with pytest.raises(store.DecisionAlreadyUsed, match="already followed by workflow"):
            store.link_submission(
                s,
                org_id=db.ids.orgs["acme"],
                decision_id=did,
                instance_id=other.id,
                cluster="fast",
                queue="q",
            )
        # linking the same instance again is harmless
        store.link_submission(
            s, org_id=db.ids.orgs["acme"], decision_id=did, instance_id=iid, cluster="slow", queue="q"
        )
        assert store.get_decision(s, db.ids.orgs["acme"], did).accepted is True


def test_predicted_cost_is_the_candidates_whole_workflow_cost(db):
    with db.session() as s:
        did, d = record(s, db.ids)
    rows = {r["key"]: r for r in d.to_dict()["candidates"]}
    with db.session() as s:
        cents, cur = store.predicted_cost(s, did, "fast", "q")
        assert cur == "EUR" and cents == round(float(rows["fast/q"]["cost"]) * 100) and cents > 0
        assert store.predicted_cost(s, did, "tiny", "q") is None  # not ranked
        assert store.predicted_cost(s, "f" * 32, "fast", "q") is None
        assert store.predicted_cost(s, did, "fast", "q", org_id=db.ids.orgs["globex"]) is None
        assert store.predicted_cost(s, did, "fast", "q", org_id=db.ids.orgs["acme"]) == (cents, cur)


def test_performance_sets_predictions_beside_the_jobs_outcomes(db):
    with db.session() as s:
        did, d = record(s, db.ids)
        inst = _instance(s, db.ids)
        store.link_submission(
            s, org_id=db.ids.orgs["acme"], decision_id=did, instance_id=inst.id, cluster="slow", queue="q"
        )
        pred = {
            p.step: p
            for p in s.scalars(
                select(DecisionPrediction).where(
                    DecisionPrediction.decision_id == did, DecisionPrediction.cluster == "slow"
                )
            )
        }
        end = datetime(2026, 11, 21, 22, 0)
        # prep ran exactly as predicted; run took twice as long (accounting), a failed retry is ignored
        s.add_all(
            [
                orm.Job(
                    instance_id=inst.id,
                    step="prep",
                    state="completed",
                    started=end - timedelta(seconds=pred["prep"].runtime_s),
                    finished=end,
                ),
                orm.Job(
                    instance_id=inst.id,
                    step="run",
                    state="completed",
                    started=end,
                    finished=end + timedelta(hours=5),
                    accounting={"elapsed_s": 2 * pred["run"].runtime_s, "consumed_energy_j": 1000.0},
                ),
                orm.Job(instance_id=inst.id, step="run", array_index=1, state="failed", finished=end),
            ]
        )
    with db.session() as s:
        perf = store.performance(s, db.ids.orgs["acme"])
        assert [g["model_version"] for g in perf] == ["0"]
        g = perf[0]
        assert g["count"] == 2
        assert g["accuracy"] == pytest.approx((1.0 + 0.5) / 2)
        assert g["under_predicted_share"] == pytest.approx(0.5)
        assert g["mae_s"] == pytest.approx(pred["run"].runtime_s / 2, rel=1e-3)
        jobs = {j["step"]: j for j in g["jobs"]}
        assert jobs["run"]["actual_s"] == pytest.approx(2 * pred["run"].runtime_s, rel=1e-3)
        assert jobs["run"]["under_predicted"] is True and jobs["run"]["actual_energy_j"] == 1000.0
        assert jobs["prep"]["accuracy"] == pytest.approx(1.0, abs=1e-3)
        assert jobs["run"]["decision"] == did and jobs["run"]["cluster"] == "slow"
        # confined to the organization, and to jobs finished since a time
        assert store.performance(s, db.ids.orgs["globex"]) == []
        later = datetime(2026, 11, 22, 4, 0, tzinfo=timezone.utc)  # after both ends
        assert store.performance(s, db.ids.orgs["acme"], since=later) == []


def test_policies_are_validated_and_kept_per_organization(db):
    with db.session() as s:
        assert store.get_policy(s, db.ids.orgs["acme"]) == Policy()
        p = store.set_policy(
            s,
            db.ids.orgs["acme"],
            {"strategy": "lowest-carbon", "allow_user_strategy": False, "platforms": {"solver": ["slow"]}},
            updated_by="admin",
        )
        assert p.strategy == "lowest-carbon"
        for bad, words in (
            ({"strategy": "greedy"}, "unknown strategy 'greedy'"),
            ({"weights": {"time": -1}}, r"policy.weights.time: a non-negative number"),
            ({"currency": "XYZ"}, "policy.currency"),
            ({"nonsense": 1}, r"unknown field\(s\) \['nonsense'\]"),
            ([1, 2], "a JSON object"),
        ):
            with pytest.raises(store.InvalidPolicy, match=words):
                store.set_policy(s, db.ids.orgs["acme"], bad)
    with db.session() as s:
        got = store.get_policy(s, db.ids.orgs["acme"])
        assert got.strategy == "lowest-carbon" and got.platforms == {"solver": ("slow",)}
        assert not got.allow_user_strategy
        assert store.policy_row(s, db.ids.orgs["acme"]).updated_by == "admin"
        assert store.get_policy(s, db.ids.orgs["globex"]) == Policy()


def ear_text(header_file: str, rows: list[dict[str, object]]) -> str:
    header = (DATA / header_file).read_text().strip()
    cols = header.split(";")
    lines = [header]
    for r in rows:
        lines.append(";".join(str(r.get(c, "0")) for c in cols))
    return "\n".join(lines) + "\n"


def test_ear_rows_give_measured_power_per_cluster_and_application(db):
    text = ear_text(
        "eacct_c_header_cpu_only.txt",
        [
            {
                "JOBID": 1,
                "STEPID": 0,
                "APPID": "solver",
                "NODENAME": "n1",
                "TIME_SEC": 100,
                "DC_NODE_POWER_W": 300,
            },
            {
                "JOBID": 1,
                "STEPID": 0,
                "APPID": "solver",
                "NODENAME": "n2",
                "TIME_SEC": 100,
                "DC_NODE_POWER_W": 100,
            },
            {
                "JOBID": 2,
                "STEPID": 0,
                "APPID": "other",
                "NODENAME": "n1",
                "TIME_SEC": 50,
                "DC_NODE_POWER_W": 500,
            },
        ],
    )
    recs = read_ear_csv(text)
    with db.session() as s:
        res = store.ingest_ear(
            s, org_id=db.ids.orgs["acme"], org_name="acme", cluster="slow", records=recs, source="eacct"
        )
        assert (res.added, res.duplicates) == (3, 0)
        assert res.applications["solver"].node_power_w == pytest.approx(200.0)
        again = store.ingest_ear(
            s, org_id=db.ids.orgs["acme"], org_name="acme", cluster="slow", records=recs, source="eacct"
        )
        assert (again.added, again.duplicates) == (0, 3)  # the same file twice counts once
    with db.session() as s:
        mp = store.measured_powers(s, db.ids.orgs["acme"], "solver", ["slow", "fast"])
        assert set(mp) == {"slow"} and mp["slow"].runs == 1 and mp["slow"].node_power_w == pytest.approx(200)
        assert store.measured_powers(s, db.ids.orgs["globex"], "solver", ["slow"]) == {}


def test_heroes_plugin_rows_of_another_organization_are_refused(db):
    text = ear_text(
        "heroes_app_csv_header_cpu_only.txt",
        [
            {
                "HEROES_INSTANCE_WORKFLOW_ID": "NO_WRF_ID",
                "HEROES_TEMPLATE_WORKFLOW_ID": "solver",
                "HEROES_USER_ID": "alice",
                "HEROES_ORGANIZATION_NAME": "globex",
                "HEROES_ORGANIZATION_ID": "2",
                "JOBID": 7,
                "STEPID": 0,
                "NODENAME": "n1",
                "TIME_SEC": 10,
                "DC_NODE_POWER_W": 250,
            }
        ],
    )
    with db.session() as s:
        with pytest.raises(store.DecisionStoreError, match="belongs to organization 'globex'"):
            store.ingest_ear(
                s,
                org_id=db.ids.orgs["acme"],
                org_name="acme",
                cluster="slow",
                records=read_ear_csv(text),
                source="heroes-plugin",
            )
        assert s.scalars(select(EarRecord)).all() == []
        # in its own organization the template name gives the application
        res = store.ingest_ear(
            s,
            org_id=db.ids.orgs["globex"],
            org_name="globex",
            cluster="slow",
            records=read_ear_csv(text),
            source="heroes-plugin",
        )
        assert set(res.applications) == {"solver"}


def test_slurm_consumed_energy_measures_power_where_ear_has_none(db):
    acme = db.ids.orgs["acme"]
    with db.session() as s:
        cluster = orm.Cluster(org_id=acme, name="metered", transport="local", scheduler="local")
        s.add(cluster)
        s.flush()
        inst = _instance(s, db.ids)
        inst.cluster_id = cluster.id
        end = datetime(2026, 11, 21, 22, 0)
        for i, (energy, elapsed, nodes) in enumerate(((720_000.0, 3600.0, 2), (360_000.0, 1800.0, 1))):
            s.add(
                orm.Job(
                    instance_id=inst.id,
                    step="main",
                    array_index=i,
                    cluster_id=cluster.id,
                    state="completed",
                    finished=end,
                    accounting={"consumed_energy_j": energy, "elapsed_s": elapsed, "nnodes": nodes},
                )
            )
        # a job without an energy measurement (no acct_gather_energy plugin) is not counted
        s.add(
            orm.Job(
                instance_id=inst.id,
                step="main",
                array_index=9,
                cluster_id=cluster.id,
                state="completed",
                finished=end,
                accounting={"consumed_energy_j": None, "elapsed_s": 10.0},
            )
        )
    with db.session() as s:
        mp = store.power_measurements(s, acme, "solver", ["metered", "other"])
        assert set(mp) == {"metered"} and mp["metered"].runs == 2
        # (720 kJ + 360 kJ) / (3600 s x 2 nodes + 1800 s x 1 node) = 120 W per node
        assert mp["metered"].node_power_w == pytest.approx(120.0)
        assert "Slurm ConsumedEnergy" in mp["metered"].source
        assert store.power_measurements(s, acme, "other-app", ["metered"]) == {}
        assert store.power_measurements(s, db.ids.orgs["globex"], "solver", ["metered"]) == {}
        # EAR measurements, where ingested, take precedence
        text = ear_text(
            "eacct_c_header_cpu_only.txt",
            [
                {
                    "JOBID": 1,
                    "STEPID": 0,
                    "APPID": "solver",
                    "NODENAME": "n1",
                    "TIME_SEC": 10,
                    "DC_NODE_POWER_W": 300,
                }
            ],
        )
        store.ingest_ear(
            s, org_id=acme, org_name="acme", cluster="metered", records=read_ear_csv(text), source="eacct"
        )
        assert store.power_measurements(s, acme, "solver", ["metered"])["metered"].node_power_w == 300


def test_org_predictors_learn_incrementally_from_finished_jobs_only(db):
    """Each catch-up observes only the jobs finished since the previous one; other organizations'
    jobs, unfinished jobs and jobs without a runtime are never learned from."""
    acme = db.ids.orgs["acme"]
    preds = OrgPredictors(db.factory)
    try:
        assert preds.catch_up(acme) == 0
        end = datetime(2026, 11, 21, 22, 0)
        with db.session() as s:
            inst = _instance(s, db.ids)
            other = _instance(s, db.ids, org="globex")
            s.add_all(
                [
                    orm.Job(
                        instance_id=inst.id,
                        step="main",
                        state="completed",
                        submitted=end - timedelta(hours=2),
                        finished=end,
                        accounting={"elapsed_s": 1200.0},
                    ),
                    orm.Job(instance_id=inst.id, step="post", state="running"),
                    orm.Job(instance_id=other.id, step="main", state="completed", finished=end),
                ]
            )
        p = preds._model(acme).predictor
        assert preds.catch_up(acme) == 1 and p.observed == 1
        assert preds.catch_up(acme) == 0 and p.observed == 1  # nothing new
        with db.session() as s:
            job = s.scalar(select(orm.Job).where(orm.Job.instance_id == inst.id, orm.Job.step == "post"))
            job.state, job.finished = "completed", end + timedelta(minutes=5)
            job.started = end
        assert preds.catch_up(acme) == 1 and p.observed == 2
        # the user's history now drives the prediction of the same step
        feats = {"application": "solver", "template": "solver", "step": "main", "user": "alice"}
        feats.update(cores=16, memory_mb=4096, requested_time_s=3600)
        got = p.predict(feats)
        assert got.source == "user-history" and got.model_version == preds.model_version(acme) == "0"
        # globex's job is read by globex's own predictor, which cannot learn from it (no runtime)
        assert preds.catch_up(db.ids.orgs["globex"]) == 1
        assert preds._model(db.ids.orgs["globex"]).predictor is not p
        assert preds._model(db.ids.orgs["globex"]).predictor.observed == 0
    finally:
        preds.close()


def _finished_job(inst, step, end, elapsed, **acct):
    return orm.Job(
        instance_id=inst.id,
        step=step,
        state="completed",
        submitted=end - timedelta(seconds=elapsed + 60),
        finished=end,
        accounting={"elapsed_s": float(elapsed), **acct},
    )


def test_org_predictors_keep_max_orgs_and_rebuild_an_evicted_one_from_history(db):
    """A bounded LRU: with room for one organization, using globex's predictor drops acme's; acme's
    next use builds a new predictor that has learned its whole history again."""
    acme, globex = db.ids.orgs["acme"], db.ids.orgs["globex"]
    end = datetime(2026, 11, 21, 22, 0)
    with db.session() as s:
        s.add_all(
            [_finished_job(_instance(s, db.ids), "main", end - timedelta(hours=i), 1200) for i in range(3)]
        )
        s.add(_finished_job(_instance(s, db.ids, org="globex"), "main", end, 60))
    preds = OrgPredictors(db.factory, max_orgs=1)
    try:
        assert preds.catch_up(acme) == 3
        first = preds._model(acme).predictor
        assert preds.cached() == [acme] and preds.evictions == 0
        assert preds.catch_up(globex) == 1
        assert preds.cached() == [globex] and preds.evictions == 1
        # rebuilt: a new predictor, caught up on all three jobs again, predicting from alice's history
        assert preds.catch_up(acme) == 3
        again = preds._model(acme).predictor
        assert again is not first and again.observed == 3 and preds.evictions == 2
        feats = {"application": "solver", "template": "solver", "step": "main", "user": "alice"}
        feats.update(cores=16, memory_mb=4096, requested_time_s=3600)
        got = again.predict(feats)
        assert got.source == "user-history" and got.point == pytest.approx(1200)
    finally:
        preds.close()
    # the most recently used one stays: with room for two, using acme keeps it over globex
    lru = OrgPredictors(db.factory, max_orgs=2)
    try:
        lru.catch_up(acme), lru.catch_up(globex), lru.catch_up(acme)
        third = db.ids.orgs[next(o for o in db.ids.orgs if db.ids.orgs[o] not in (acme, globex))]
        lru.catch_up(third)
        assert lru.cached() == [acme, third]
    finally:
        lru.close()
    with pytest.raises(TraitError, match="max_orgs must be at least 1"):
        OrgPredictors(db.factory, max_orgs=0)


def test_warm_rebuilds_the_most_recently_active_organizations(db):
    """At start the service rebuilds the predictors of the warm_orgs organizations whose jobs finished
    last, the most recent one last (the last to be dropped); the others wait for their first decision."""
    acme, globex = db.ids.orgs["acme"], db.ids.orgs["globex"]
    third = next(i for o, i in db.ids.orgs.items() if i not in (acme, globex))
    end = datetime(2026, 11, 21, 22, 0)
    with db.session() as s:  # globex finished last, then acme, then the third organization
        s.add_all(
            [_finished_job(_instance(s, db.ids), "main", end - timedelta(hours=i), 1200) for i in range(3)]
        )
        s.add(_finished_job(_instance(s, db.ids, org="globex"), "main", end + timedelta(hours=1), 60))
        s.add(_finished_job(_instance(s, db.ids, org="globex"), "main", end, 60))
        tpl = db.ids.templates["acme"]
        inst = orm.WorkflowInstance(
            org_id=third, user_id=db.ids.users["alice"], template_id=tpl, state="completed"
        )
        s.add(inst)
        s.flush()
        s.add(_finished_job(inst, "main", end - timedelta(days=3), 600))
        # cancelled last of all: the predictor learns from completed jobs only, so it does not count
        s.add(orm.Job(instance_id=inst.id, step="post", state="cancelled", finished=end + timedelta(hours=2)))
    preds = OrgPredictors(db.factory, warm_orgs=2)
    try:
        assert preds.cached() == []
        assert preds.warm() == {acme: 3, globex: 2}
        assert preds.cached() == [acme, globex]  # globex, the most recent, is the most recently used
        assert preds._model(acme).predictor.observed == 3 and preds._model(globex).predictor.observed == 2
        assert preds.catch_up(acme) == 0  # the first decision has nothing left to read
    finally:
        preds.close()
    assert preds.warm() == {}  # closed: stops before the next organization
    with closing(OrgPredictors(db.factory, warm_orgs=8, max_orgs=1)) as capped:
        assert capped.warm() == {globex: 2}  # never more than max_orgs
    with closing(OrgPredictors(db.factory, warm_orgs=0)) as off:
        assert off.warm() == {} and off.cached() == []
    with pytest.raises(TraitError, match="warm_orgs must be 0 or more"):
        OrgPredictors(db.factory, warm_orgs=-1)


def test_a_catch_up_scores_in_batches_exactly_as_job_by_job(db):
    """The catch-up prepares each finished job just before learning it and scores the predictions in
    batches (one scikit-learn call per model version): the advisor ends exactly where predicting,
    advising and learning job by job leaves it, through several refits of the model."""
    acme = db.ids.orgs["acme"]
    end = datetime(2026, 11, 21, 22, 0)
    rnd = random.Random(5)
    users = [db.ids.users[u] for u in sorted(db.ids.users)][:4]
    with db.session() as s:
        for i in range(900):
            inst = orm.WorkflowInstance(
                org_id=acme,
                user_id=rnd.choice(users),
                template_id=db.ids.templates["acme"],
                state="completed",
            )
            s.add(inst)
            s.flush()
            s.add(
                _finished_job(
                    inst, "main", end - timedelta(minutes=900 - i), min(3500, rnd.lognormvariate(6.5, 1.2))
                )
            )
    preds = OrgPredictors(db.factory)
    try:
        assert preds.catch_up(acme) == 900
        m = preds._model(acme)
        assert m.predictor.model_version == "2" and m.advisor.advised > 800
        # the same jobs, one by one as before batching
        ref, adv = RuntimePredictor(), WalltimeAdvisor()
        templates: dict = {}
        with db.session() as s:
            rows = s.execute(
                select(orm.Job, orm.WorkflowInstance, orm.User.name)
                .join(orm.WorkflowInstance, orm.WorkflowInstance.id == orm.Job.instance_id)
                .join(orm.User, orm.User.id == orm.WorkflowInstance.user_id)
                .where(orm.WorkflowInstance.org_id == acme)
                .order_by(orm.Job.finished, orm.Job.id)
            ).all()
            for job, inst, user in rows:
                fj = preds._finished(s, job, inst, user, templates)
                p = ref.predict(dataclasses.replace(fj.request, job_id=None))
                adv.observe(adv.advise(p), fj.run_time, fj.request.requested_time)
                ref.observe(fj)
        assert ref.model_version == m.predictor.model_version
        assert (adv.advised, adv.killed, adv._lambda) == (
            m.advisor.advised,
            m.advisor.killed,
            m.advisor._lambda,
        )
    finally:
        preds.close()


def _long_and_short_history(db):
    """acme: 1,500 finished jobs (seconds to read); globex: one. Returns their ids."""
    acme, globex = db.ids.orgs["acme"], db.ids.orgs["globex"]
    end = datetime(2026, 11, 21, 22, 0)
    with db.session() as s:
        for i in range(1500):
            s.add(_finished_job(_instance(s, db.ids), "main", end - timedelta(minutes=i), 600 + i % 700))
        s.add(_finished_job(_instance(s, db.ids, org="globex"), "main", end - timedelta(days=30), 60))
    return acme, globex


async def test_a_decision_does_not_wait_for_other_organizations_warm_up(db):
    """The warm-up at start runs in a thread of its own: with a one-thread pool for decisions, a
    decision for another organization is served while a long history is still being read; closing
    (the service stopping) ends the warm-up at its next job."""
    acme, globex = _long_and_short_history(db)
    preds = OrgPredictors(db.factory, executor=ThreadPoolExecutor(1), warm_orgs=1)
    try:
        warm = asyncio.ensure_future(preds.warm_up())
        for _ in range(1000):  # until the warm-up has started on acme
            if acme in preds.cached():
                break
            await asyncio.sleep(0.01)
        other = await preds.get(globex)
        assert not warm.done(), "globex's decision waited for acme's warm-up"
        assert other.observed == 1
        # the service stops: the warm-up ends at its next job, not after the whole history
        preds.close()
        read = (await asyncio.wait_for(warm, 30))[acme]
        assert read < 1500 and preds._model(acme).predictor.observed == read
    finally:
        preds.close()


async def test_concurrent_decisions_of_one_organization_share_its_catch_up(db):
    """Two decisions of an organization whose long history is being read take one thread of the
    pool between them, not both: a third organization's decision is served meanwhile. Each gets the
    predictor caught up on every job finished before it asked."""
    acme, globex = _long_and_short_history(db)
    end = datetime(2026, 11, 21, 22, 0)
    preds = OrgPredictors(db.factory, executor=ThreadPoolExecutor(2))
    try:
        first = asyncio.ensure_future(preds.get(acme))
        await asyncio.sleep(0)
        second = asyncio.ensure_future(preds.get(acme))
        await asyncio.sleep(0)
        other = await preds.get(globex)
        assert not first.done() and not second.done(), "globex's decision waited for acme's catch-up"
        assert other.observed == 1
        # a job of acme finishes while the first catch-up runs: the second decision sees it
        with db.session() as s:
            s.add(_finished_job(_instance(s, db.ids), "main", end + timedelta(minutes=5), 900))
        a, b = await asyncio.wait_for(asyncio.gather(first, second), 60)
        assert a is b and b.observed == 1501
    finally:
        preds.close()


async def test_a_decision_goes_on_without_the_model_while_a_long_history_is_rebuilt(db):
    """A decision does not wait longer than c.OrgPredictors.decision_wait for its organization's
    predictor: while 1,500 jobs are still being read it answers from the user's own last runs (the
    requests for a user without any), says so in its notes, keeps the requests as advice and stores
    its predictions as model version "rebuilding". The rebuild carries on, and the next decision uses
    the model."""
    from jupyter_heroes.decision.service import DecideRequest, DecisionService

    acme, _ = _long_and_short_history(db)
    with db.session() as s:
        own = orm.Cluster(org_id=acme, name="own", transport="local", scheduler="local", site={"pue": 1.2})
        own.queues.append(
            orm.ClusterQueue(
                name="q",
                max_nodes=4,
                cpus_per_node=16,
                mem_per_node_mb=16384,
                gpus_per_node=2,
                max_walltime_s=86400,
            )
        )
        s.add(own)
        row = s.get(orm.WorkflowTemplate, db.ids.templates["acme"])
        template_row = SimpleNamespace(id=row.id, spec=row.spec)
    req = DecideRequest(
        org_id=acme, user=None, user_name="alice", template_row=template_row, params={}, choice=UserChoice()
    )
    svc = DecisionService(db.factory, config=Config({"OrgPredictors": {"decision_wait": 0.2}}))
    try:
        newcomer = await svc.decide(dataclasses.replace(req, user_name="bob"))  # no runs of his own
        first = await svc.decide(req)
        read = svc.predictors._model(acme).predictor.observed
        assert read < 1500, "the decision waited for the whole rebuild"
        note = next(n for n in first.decision.notes if "being rebuilt" in n)
        assert "of 1,500 finished jobs read so far" in note and "Compare again in a few minutes" in note
        assert first.model_version == newcomer.model_version == "rebuilding"
        assert {(st.source, st.model_version) for st in newcomer.decision.steps} == {
            ("request", "rebuilding")
        }
        # alice's last 64 runs took 600 to 663 s: her prediction follows them
        main = next(st for st in first.decision.steps if st.step == "main")
        assert (main.source, main.model_version) == ("user-history", "rebuilding")
        assert 600 <= main.point <= 663
        advice = first.advice["own/q"]
        for step in advice.values():
            assert step["walltime_s"] == step["requested_walltime_s"]
            assert step["memory_mb"] == step["requested_memory_mb"]
            assert "being rebuilt" in step["basis"] and "being rebuilt" in step["memory_basis"]
        # the rebuild went on; once it is done, decisions use the model again
        caught_up = await asyncio.wait_for(svc.predictors.get(acme), 120)
        assert caught_up.observed == 1500 and caught_up.model_version not in ("0", "rebuilding")
        second = await svc.decide(req)
        assert not any("being rebuilt" in n for n in second.decision.notes)
        assert second.model_version == caught_up.model_version
        assert "request" not in {st.source for st in second.decision.steps}
        with db.session() as s:
            stored = {
                (d, v)
                for d, v in s.execute(
                    select(DecisionPrediction.decision_id, DecisionPrediction.model_version)
                ).all()
            }
        assert (first.decision_id, "rebuilding") in stored
        assert (second.decision_id, caught_up.model_version) in stored
    finally:
        svc.close()
    with pytest.raises(TraitError, match="decision_wait must be more than 0 s"):
        OrgPredictors(db.factory, decision_wait=0)


def test_advice_from_history_is_between_the_prediction_and_the_limits(db):
    """After a user's runs of a step, the walltime advice is at least the predicted upper quantile
    and below the template's request, halved on a twice-as-fast queue, and the memory advice is the
    recent peak (per node) plus the margin; a step without a recorded peak keeps its memory request."""
    from jupyter_heroes.decision.service import DecisionService, _Recording

    acme = db.ids.orgs["acme"]
    end = datetime(2026, 11, 21, 22, 0)
    with db.session() as s:
        # 'main' (8 tasks on 2 nodes) ran about 20 minutes, 300 MiB per task at most
        for i in range(12):
            s.add(
                _finished_job(
                    _instance(s, db.ids),
                    "main",
                    end - timedelta(hours=i),
                    1100 + 20 * i,
                    max_rss_bytes=300 * 2**20,
                )
            )
        tpl = s.get(orm.WorkflowTemplate, db.ids.templates["acme"])
        template = load_template(tpl.spec)
    # a risk aversion of half the request per kill (the default, 200 requests, needs a long history
    # of unharmed jobs before it advises less than the request)
    svc = DecisionService(db.factory, config=Config({"AdvisorOptions": {"initial_aversion": 0.5}}))
    try:
        predictor = svc.predictors._model(acme).predictor
        assert svc.predictors.catch_up(acme) == 12
        limits = dict(max_nodes=4, cpus_per_node=16, mem_per_node_mb=8192, gpus_per_node=2)
        cands = [
            make_candidate("fast", "q", **limits, max_walltime_s=86400, site={"relative_speed": 2.0}),
            make_candidate("slow", "q", **limits, max_walltime_s=7200),
        ]
        rec = _Recording(predictor)
        d = decide(template, {}, cands, rec, now=NOW, user="alice")
        advice = svc.advise(acme, "alice", template, d, rec.by_step, cands)
        main = rec.by_step["main"]
        assert set(advice) == {"fast/q", "slow/q"} and set(advice["slow/q"]) == {"main", "post"}
        slow, fast = advice["slow/q"]["main"], advice["fast/q"]["main"]
        assert main.q_high <= slow["walltime_s"] < 3600 and slow["walltime_s"] <= 3000
        assert slow["walltime_s"] % 60 == 0 and slow["requested_walltime_s"] == 3600
        assert fast["walltime_s"] == pytest.approx(slow["walltime_s"] / 2, abs=60)
        assert fast["walltime_s"] >= main.point / 2
        # peak 300 MiB per task x 4 tasks per node, +20%, rounded up to 64 MB
        assert slow["memory_mb"] == 1472 and "your runs" in slow["memory_basis"]
        post = advice["slow/q"]["post"]
        assert main.q_high <= post["walltime_s"] < 3600  # the application's history, 'main' runs
        assert post["memory_mb"] == post["requested_memory_mb"] == 512
        assert "keep the request" in post["memory_basis"]
    finally:
        svc.close()


def test_the_template_application_names_the_enabled_application_whose_licence_is_charged(db):
    """A plain name finds the one enabled application of that name; with two providers' of the same
    name, only provider/name does, and the plain name adds no fee but a note saying what to write.
    Applications published but not enabled never count."""
    from jupyter_heroes.decision.service import enabled_application_for
    from jupyter_heroes.marketplace import applications as apps

    acme = db.ids.orgs["acme"]
    price = {"currency": "EUR", "fixed": "5.00", "fixed_per": "run"}
    with db.session() as s:
        for provider in ("appsoft", "cloudy"):
            apps.publish_application(
                s,
                db.ids.orgs[provider],
                name="solver",
                image="docker://r.example.org/solver:1",
                price=price,
                visibility="public",
            )
        assert enabled_application_for(s, acme, "solver") == (None, "")  # published, not enabled
        ids = {
            a.application.name + "@" + a.provider.name: a.application.id
            for a in apps.list_applications(s, acme)
        }
        apps.enable_application(s, acme, ids["solver@appsoft"])
        found, note = enabled_application_for(s, acme, "solver")
        assert found.provider.name == "appsoft" and note == ""
        assert found.price.source == "licence of solver v1 (appsoft)"
        apps.enable_application(s, acme, ids["solver@cloudy"])
        found, note = enabled_application_for(s, acme, "solver")
        assert found is None and "several providers (appsoft/solver, cloudy/solver)" in note
        assert enabled_application_for(s, acme, "cloudy/solver")[0].provider.name == "cloudy"
        assert enabled_application_for(s, db.ids.orgs["globex"], "solver") == (None, "")
