"""Saved runtime predictors (c.OrgPredictors.state_dir), on SQLite and PostgreSQL: a predictor saved
when the service stops is restored at the next start, reads only the jobs finished since, and then
predicts and advises exactly as one that never stopped; a saved predictor that must not be used
(another version, other options, a database without its last job, a file others can write, a damaged
file) is rebuilt from the history, and the log says why."""

from __future__ import annotations

import json
import logging
import pickle
import random
import zlib
from datetime import datetime, timedelta

import pytest
from sqlalchemy import delete
from traitlets import TraitError
from traitlets.config import Config

from jupyter_heroes import orm
from jupyter_heroes.decision import saved
from jupyter_heroes.decision.service import OrgPredictors

END = datetime(2026, 11, 21, 22, 0)
LOG = logging.getLogger("test-saved-predictors")
FEATS = {"application": "solver", "template": "solver", "step": "main", "user": "alice"}
FEATS.update(cores=16, memory_mb=4096, requested_time_s=3600)


def _job(s, db, user: str, end: datetime, elapsed: float) -> orm.Job:
    inst = orm.WorkflowInstance(
        org_id=db.ids.orgs["acme"],
        user_id=db.ids.users[user],
        template_id=db.ids.templates["acme"],
        state="completed",
    )
    s.add(inst)
    s.flush()
    job = orm.Job(
        instance_id=inst.id,
        step="main",
        state="completed",
        submitted=end - timedelta(seconds=elapsed + 60),
        finished=end,
        accounting={"elapsed_s": float(elapsed), "max_rss_bytes": 200 * 2**20},
    )
    s.add(job)
    return job


def _history(db, n: int = 400) -> None:
    """*n* finished jobs of acme's three users: enough for a fitted model (version 1 or more)."""
    rnd = random.Random(3)
    with db.session() as s:
        for i in range(n):
            user = ("alice", "bob", "carol")[i % 3]
            _job(s, db, user, END - timedelta(minutes=n - i), min(3500, rnd.lognormvariate(6.5, 1.0)))


def _learnt(preds: OrgPredictors, org: int) -> tuple:
    m = preds._model(org)
    p = m.predictor.predict(FEATS)
    return (
        m.predictor.observed,
        m.predictor.model_version,
        (p.point, p.q_low, p.q_high, p.source, p.walltimes),
        (m.advisor._lambda, m.advisor.advised, m.advisor.killed),
        {k: list(v) for k, v in m.peaks.items()},
    )


def test_a_restored_predictor_reads_only_newer_jobs_and_learns_as_if_never_stopped(db, tmp_path):
    acme = db.ids.orgs["acme"]
    _history(db)
    state = tmp_path / "state"
    first = OrgPredictors(db.factory, state_dir=str(state))
    assert first.catch_up(acme) == 400 and first._model(acme).predictor.model_version != "0"
    first.close()  # the service stops: saved
    path = saved.path_for(state, acme)
    assert path.is_file() and path.stat().st_mode & 0o777 == 0o600
    assert state.stat().st_mode & 0o777 == 0o700
    with db.session() as s:  # a job finishes while the service is down
        _job(s, db, "alice", END + timedelta(minutes=5), 900)
    again = OrgPredictors(db.factory, state_dir=str(state), log=LOG)
    assert again.catch_up(acme) == 1  # restored, then only the new job is read
    assert again.restored == 1
    # the same as a predictor that read the whole history in one go
    fresh = OrgPredictors(db.factory)
    try:
        assert fresh.catch_up(acme) == 401
        assert _learnt(again, acme) == _learnt(fresh, acme)
    finally:
        fresh.close()
    again.close()  # learnt one more job: written again
    written = path.stat().st_mtime_ns
    third = OrgPredictors(db.factory, state_dir=str(state))
    assert third.catch_up(acme) == 0 and third._model(acme).predictor.observed == 401
    third.close()  # nothing learnt since restored: not written
    assert path.stat().st_mtime_ns == written
    # never saved without a state_dir
    off = OrgPredictors(db.factory)
    off.catch_up(acme)
    off.close()
    assert sorted(p.name for p in state.iterdir()) == [path.name]


def _rewrite(path, versions=None, state=None) -> None:
    """Rewrite a saved predictor as another HEROES would have: other *versions* in its header (and a
    body that no version can unpickle: the header must be checked first), or a change to its *state*."""
    data = path.read_bytes()
    head, _, body = data[len(saved.MAGIC) :].partition(b"\n")
    written = {**json.loads(head), **(versions or {})}
    if versions:
        body = b"objects of another version"
    else:
        body = zlib.compress(pickle.dumps({**pickle.loads(zlib.decompress(body)), **(state or {})}))
    path.write_bytes(saved.MAGIC + json.dumps(written).encode() + b"\n" + body)


@pytest.mark.parametrize(
    ("spoil", "why"),
    [
        ("heroes", "was written by heroes 0.0.1"),
        ("options", "other c.PredictorOptions"),
        ("job", "is no longer a finished job of the organization"),
        ("writable", "can be written by other users"),
        ("damaged", "cannot be read"),
        ("not-ours", "is not a HEROES predictor"),
        ("other-org", "saved for organization"),
        ("other-db", "saved from another database (postgresql://elsewhere/heroes)"),
    ],
)
def test_a_saved_predictor_that_must_not_be_used_is_rebuilt_from_history(db, tmp_path, caplog, spoil, why):
    acme = db.ids.orgs["acme"]
    _history(db, 40)
    state = tmp_path / "state"
    first = OrgPredictors(db.factory, state_dir=str(state))
    first.catch_up(acme)
    first.close()
    path = saved.path_for(state, acme)
    config = Config()
    if spoil == "heroes":  # an upgrade of HEROES since the save
        _rewrite(path, versions={"heroes": "0.0.1"})
    elif spoil == "options":
        config = Config({"PredictorOptions": {"train_window": 4000}})
    elif spoil == "job":  # the database was restored from an older backup
        with db.session() as s:
            s.execute(delete(orm.Job).where(orm.Job.finished == END - timedelta(minutes=1)))
    elif spoil == "writable":
        path.chmod(0o620)
    elif spoil == "damaged":
        data = path.read_bytes()
        path.write_bytes(data[:300])
    elif spoil == "not-ours":
        path.write_bytes(b"PK\x03\x04 something else")
    elif spoil == "other-org":
        _rewrite(path, state={"org_id": acme + 1000})
    elif spoil == "other-db":  # another deployment's file in a shared working directory
        _rewrite(path, state={"database": "postgresql://elsewhere/heroes"})
    caplog.set_level(logging.WARNING, LOG.name)
    again = OrgPredictors(db.factory, state_dir=str(state), log=LOG, config=config)
    try:
        expected = 39 if spoil == "job" else 40
        assert again.catch_up(acme) == expected and again.restored == 0
        assert again._model(acme).predictor.observed == expected
        warning = next(r.getMessage() for r in caplog.records if "not used" in r.getMessage())
        assert why in warning and "rebuilt from its history" in warning, warning
    finally:
        again.close()


def test_save_settings_are_validated(db, tmp_path):
    with pytest.raises(TraitError, match="save_interval must be more than 0 s"):
        OrgPredictors(db.factory, save_interval=0)
    # a state directory another user could write to is refused for saving too (and logged)
    state = tmp_path / "open"
    state.mkdir(mode=0o777)
    state.chmod(0o777)
    acme = db.ids.orgs["acme"]
    _history(db, 5)
    preds = OrgPredictors(db.factory, state_dir=str(state))
    preds.catch_up(acme)
    assert preds.save_all() == 0 and list(state.iterdir()) == []
    with pytest.raises(saved.SavedStateError, match="chmod go-w"):
        preds.save(acme)
    preds.state_dir = ""
    preds.close()


def test_a_predictor_dropped_from_memory_is_saved_and_restored(db, tmp_path):
    """With room for one organization, using globex's predictor drops acme's: it is saved then, and
    acme's next use restores it instead of reading its history again."""
    acme, globex = db.ids.orgs["acme"], db.ids.orgs["globex"]
    _history(db, 40)
    state = tmp_path / "state"
    preds = OrgPredictors(db.factory, state_dir=str(state), max_orgs=1)
    try:
        assert preds.catch_up(acme) == 40
        before = _learnt(preds, acme)
        preds.catch_up(globex)  # acme dropped, saved in the background
        assert preds.cached() == [globex] and preds.evictions == 1
        preds._saver.submit(lambda: None).result(timeout=60)  # the save queued before it is done
        assert saved.path_for(state, acme).is_file()
        assert preds.catch_up(acme) == 0 and preds.restored == 1
        assert _learnt(preds, acme) == before
    finally:
        preds.close()
