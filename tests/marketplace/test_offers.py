"""Resource offers: versioning, visibility (404 for others), enabling, availability, decision candidates."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from jupyter_heroes.decision.cost import Usage
from jupyter_heroes.marketplace import offers as mo
from jupyter_heroes.marketplace.common import available_at, parse_availability
from jupyter_heroes.marketplace.errors import Conflict, InvalidInput, NotAllowed, NotFound
from jupyter_heroes.orm_market import ImmutableRowError, MarketOfferVersion

PRICE = {"currency": "EUR", "fixed": "0.50", "core_hour": "0.012", "gpu_hour": "1.10"}


def publish(s, ids, name="galileo-debug", queue="debug", visibility=("acme",), **kw):
    return mo.publish_offer(
        s,
        ids.orgs["hpc-centre"],
        name=name,
        cluster_id=ids.clusters["galileo"],
        queue=queue,
        price=kw.pop("price", PRICE),
        terms=kw.pop("terms", "Best effort; data deleted after 30 days."),
        visibility=list(visibility),
        created_by="vendor-admin",
        **kw,
    )


def test_publish_update_creates_versions_and_keeps_history(db):
    ids = db.ids
    with db.session() as s:
        v1 = publish(s, ids)
        offer_id = v1.offer_id
        assert v1.version == 1 and v1.price["core_hour"] == "0.012" and v1.currency == "EUR"
    with db.session() as s:
        v2 = mo.update_offer(
            s, offer_id, ids.orgs["hpc-centre"], price={**PRICE, "core_hour": "0.020"}, note="energy prices"
        )
        assert v2.version == 2
        # unchanged fields are carried over, the old row is untouched
        assert v2.terms == "Best effort; data deleted after 30 days."
        assert v2.visibility == v1.visibility
        assert v2.created > v1.created
        # an update that changes nothing adds no version
        same = mo.update_offer(s, offer_id, ids.orgs["hpc-centre"], price={**PRICE, "core_hour": "0.020"})
        assert same.id == v2.id
    with db.session() as s:
        hist = mo.offer_history(s, offer_id, ids.orgs["hpc-centre"])
        assert [(v.version, v.price["core_hour"]) for v in hist] == [(1, "0.012"), (2, "0.020")]
        assert [mo.version_dict(s, v)["visibility"] for v in hist] == [
            {"public": False, "organizations": ["acme"]}
        ] * 2
        # the platform (the mayor) audits it too; a client may not see the history
        assert len(mo.offer_history(s, offer_id, ids.orgs["heroes"])) == 2
        with pytest.raises(NotFound):
            mo.offer_history(s, offer_id, ids.orgs["acme"])
        # version in force at a time
        assert mo.version_at(s, offer_id, hist[0].created).version == 1
        assert mo.version_at(s, offer_id, hist[1].created).version == 2
        assert mo.version_at(s, offer_id, hist[0].created - timedelta(seconds=1)) is None
        assert mo.get_offer(s, offer_id, ids.orgs["acme"]).version.version == 2


def test_versions_are_immutable(db):
    with db.session() as s:
        v1 = publish(s, db.ids)
    with pytest.raises(ImmutableRowError, match="cannot be changed; publish a new version"):
        with db.session() as s:
            row = s.get(MarketOfferVersion, v1.id)
            row.price = {"currency": "EUR", "core_hour": "0"}
            s.flush()
    with pytest.raises(ImmutableRowError, match="cannot be deleted"):
        with db.session() as s:
            s.delete(s.get(MarketOfferVersion, v1.id))
            s.flush()
    with db.session() as s:
        assert s.get(MarketOfferVersion, v1.id).price["core_hour"] == "0.012"


def test_concurrent_updates_get_distinct_version_numbers(db):
    with db.session() as s:
        offer_id = publish(s, db.ids).offer_id
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def change(i: int) -> None:
        try:
            barrier.wait()
            with db.session() as s:
                mo.update_offer(
                    s, offer_id, db.ids.orgs["hpc-centre"], price={**PRICE, "fixed": f"1.{i:02d}"}
                )
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=change, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with db.session() as s:
        hist = mo.offer_history(s, offer_id, db.ids.orgs["hpc-centre"])
        assert [v.version for v in hist] == list(range(1, 10))
        assert sorted(v.price["fixed"] for v in hist[1:]) == [f"1.{i:02d}" for i in range(8)]
        assert [v.created for v in hist] == sorted(v.created for v in hist)


def test_visibility_client_vendor_separation(db):
    ids = db.ids
    with db.session() as s:
        offer_id = publish(s, ids).offer_id
    with db.session() as s:
        acme = mo.get_offer(s, offer_id, ids.orgs["acme"])
        d = acme.to_dict(s)
        assert d["provider"] == "hpc-centre" and d["queue"] == "debug" and d["price"]["core_hour"] == "0.012"
        assert d["queue_limits"]["cpus_per_node"] == 48
        assert "visibility" not in d  # a client does not learn who else may see the offer
        owner = mo.get_offer(s, offer_id, ids.orgs["hpc-centre"]).to_dict(s)
        assert owner["visibility"] == {"public": False, "organizations": ["acme"]}
        assert mo.get_offer(s, offer_id, ids.orgs["heroes"]).owner_view
        # not published to globex, and another vendor does not see it either: not found, not forbidden
        for other in ("globex", "cloudy"):
            with pytest.raises(NotFound, match=f"offer {offer_id} not found") as e:
                mo.get_offer(s, offer_id, ids.orgs[other])
            assert e.value.status == 404 and e.value.reason == "not_found"
            assert mo.list_offers(s, ids.orgs[other]) == []
            with pytest.raises(NotFound):
                mo.enable_offer(s, ids.orgs[other], offer_id)
        assert [v.offer.id for v in mo.list_offers(s, ids.orgs["acme"])] == [offer_id]
        # a vendor cannot change another vendor's offer
        with pytest.raises(NotFound):
            mo.update_offer(s, offer_id, ids.orgs["cloudy"], terms="mine now")
    with db.session() as s:
        mo.update_offer(s, offer_id, ids.orgs["hpc-centre"], visibility="public")
    with db.session() as s:
        assert mo.get_offer(s, offer_id, ids.orgs["globex"]).version.version == 2
        assert mo.get_offer(s, offer_id, ids.orgs["cloudy"]).offer.id == offer_id


def test_enable_and_enabled_offers(db):
    ids = db.ids
    acme = ids.orgs["acme"]
    with db.session() as s:
        debug = publish(s, ids).offer_id
        gpu = publish(s, ids, name="galileo-gpu", queue="gpu", visibility=("acme", "globex")).offer_id
    with db.session() as s:
        assert mo.enabled_offers(s, acme) == []  # published is not enabled
        en = mo.enable_offer(s, acme, debug, enabled_by="acme-admin")
        assert en.accepted_version == 1
    with db.session() as s:
        got = mo.enabled_offers(s, acme)
        assert [(e.offer.id, e.cluster_label, e.queue.name) for e in got] == [
            (debug, "hpc-centre/galileo", "debug")
        ]
        assert got[0].price.rates["core_hour"] == Decimal("0.012") and not got[0].terms_changed
        assert mo.enabled_offers(s, ids.orgs["globex"]) == []
        mo.update_offer(s, debug, ids.orgs["hpc-centre"], price={**PRICE, "core_hour": "0.015"})
    with db.session() as s:
        (e,) = mo.enabled_offers(s, acme)
        assert e.version.version == 2 and e.terms_changed  # the UI can ask the admin to review
        mo.enable_offer(s, acme, debug)  # re-enabling accepts the new terms
    with db.session() as s:
        (e,) = mo.enabled_offers(s, acme)
        assert not e.terms_changed
        # unpublishing from acme removes it from acme's candidates and makes it not found
        mo.update_offer(s, debug, ids.orgs["hpc-centre"], visibility=["globex"])
    with db.session() as s:
        assert mo.enabled_offers(s, acme) == []
        with pytest.raises(NotFound):
            mo.get_offer(s, debug, acme)
        mo.enable_offer(s, acme, gpu)
        mo.withdraw_offer(s, gpu, ids.orgs["hpc-centre"])
    with db.session() as s:
        assert mo.enabled_offers(s, acme, include_unusable=True) == []
        with pytest.raises(Conflict, match="withdrawn"):
            mo.update_offer(s, gpu, ids.orgs["hpc-centre"], terms="x")
        with pytest.raises(NotFound):
            mo.get_offer(s, gpu, ids.orgs["globex"])
        with pytest.raises(NotFound, match="not enabled"):
            mo.disable_offer(s, ids.orgs["globex"], gpu)


def test_disabled_cluster_and_availability_windows(db):
    ids = db.ids
    acme = ids.orgs["acme"]
    later = datetime.now(timezone.utc) + timedelta(days=10)
    with db.session() as s:
        offer_id = publish(s, ids, availability=[{"start": later.isoformat()}]).offer_id
        mo.enable_offer(s, acme, offer_id)
    with db.session() as s:
        assert mo.enabled_offers(s, acme) == []
        (e,) = mo.enabled_offers(s, acme, include_unusable=True)
        assert "not available now" in e.problem
        assert [x.offer.id for x in mo.enabled_offers(s, acme, at=later + timedelta(hours=1))] == [offer_id]
        cands, excl = mo.offer_candidates(s, acme)
        assert cands == [] and excl[0].kind == "not-allowed" and "not available now" in excl[0].reasons[0]


def test_offer_candidates_are_priced_by_the_offer(db):
    ids = db.ids
    acme = ids.orgs["acme"]
    with db.session() as s:
        from jupyter_heroes.orm import Cluster

        # the cluster's own site price must not leak into the marketplace price
        s.get(Cluster, ids.clusters["galileo"]).site = {
            "pue": 1.1,
            "offer": {"currency": "EUR", "core_hour": "9"},
            "queues": {"debug": {"offer": {"currency": "EUR", "core_hour": "8"}}},
        }
        offer_id = publish(s, ids).offer_id
        mo.enable_offer(s, acme, offer_id)
    with db.session() as s:
        (c,), excl = mo.offer_candidates(s, acme)
        assert excl == []
        assert c.key == "hpc-centre/galileo/debug" and c.cluster_id == ids.clusters["galileo"]
        assert c.cpus_per_node == 48 and c.pue == 1.1
        assert c.offer.rates["core_hour"] == Decimal("0.012")
        assert "galileo-debug v1 of hpc-centre" in c.offer.source
        bill = c.offer.price(Usage(core_hours=Decimal(100), gpu_hours=Decimal(2)))
        assert bill.total == Decimal("0.50") + Decimal("1.20") + Decimal("2.20")


def test_publishing_rules_and_bad_input(db):
    ids = db.ids
    hpc = ids.orgs["hpc-centre"]
    with db.session() as s:
        with pytest.raises(NotAllowed, match="acme is a client organization"):
            mo.publish_offer(
                s, ids.orgs["acme"], name="x", cluster_id=ids.clusters["galileo"], queue="debug", price=PRICE
            )
        with pytest.raises(NotFound, match="cluster"):  # another provider's cluster
            mo.publish_offer(
                s,
                ids.orgs["cloudy"],
                name="x",
                cluster_id=ids.clusters["galileo"],
                queue="debug",
                price=PRICE,
            )
        cases = [
            ({"price": {**PRICE, "core_hour": "-0.01"}}, r"core_hour: '-0.01' is negative"),
            ({"price": {**PRICE, "currency": "XYZ"}}, r"'XYZ' is not an ISO 4217 currency"),
            ({"price": {**PRICE, "currency": "eur"}}, r"did you mean EUR"),
            ({"price": {**PRICE, "cpu_hour": "1"}}, r"unknown field\(s\) \['cpu_hour'\]"),
            ({"price": {**PRICE, "fixed": "abc"}}, r"'abc' is not a number"),
            ({"name": "Bad Name"}, r"offer name: 'Bad Name' is not a valid name"),
            ({"queue": "nope"}, r"galileo has no queue 'nope'; its queues: \['debug', 'gpu'\]"),
            ({"visibility": ["acme", "nobody"]}, r"no organization named nobody"),
            ({"availability": [{"start": "2025-02-01", "end": "2025-01-01"}]}, r"is not before end"),
            ({"availability": [{"weekdays": ["funday"]}]}, r"weekdays: a non-empty list"),
            ({"availability": [{"weekdays": ["sat"], "timezone": "Mars/Base"}]}, r"not a time zone"),
            ({"availability": "always"}, r"availability: a list of windows"),
        ]
        for kw, msg in cases:
            args = {"name": "ok-name", "queue": "debug", "price": PRICE, **kw}
            with pytest.raises(InvalidInput, match=msg) as e:
                mo.publish_offer(s, hpc, cluster_id=ids.clusters["galileo"], **args)
            assert isinstance(e.value, ValueError) and e.value.status == 400
        publish(s, ids)
        with pytest.raises(Conflict, match="already publish an offer named galileo-debug"):
            publish(s, ids)


def test_weekly_and_absolute_windows():
    nights = parse_availability([{"weekdays": ["mon", "tue"], "from": "20:00", "to": "06:00"}])
    mon = datetime(2025, 3, 3)  # a Monday
    assert available_at(nights, mon.replace(hour=21))
    assert available_at(nights, mon.replace(hour=5) + timedelta(days=1))  # Tuesday 05:00, Monday's night
    assert not available_at(nights, mon.replace(hour=12))
    assert available_at(nights, mon.replace(hour=3) + timedelta(days=3)) is False  # Thursday 03:00
    assert available_at(nights, mon.replace(hour=3) + timedelta(days=2))  # Wednesday 03:00, Tuesday's night
    weekend = parse_availability([{"weekdays": ["sat", "sun"], "timezone": "Europe/Paris"}])
    # Friday 23:30 UTC is Saturday 00:30 in Paris
    assert available_at(weekend, datetime(2025, 3, 7, 23, 30))
    assert not available_at(weekend, datetime(2025, 3, 7, 22, 30))
    spring = parse_availability([{"start": "2025-03-01T00:00:00+01:00", "end": "2025-04-01T00:00:00Z"}])
    assert spring == [{"start": "2025-02-28T23:00:00Z", "end": "2025-04-01T00:00:00Z"}]
    assert available_at(spring, datetime(2025, 2, 28, 23, 0))
    assert not available_at(spring, datetime(2025, 4, 1))
    assert available_at([], datetime(1990, 1, 1))


def test_pin_job_uses_version_at_submission(db):
    from jupyter_heroes.marketplace.sample import add_run
    from jupyter_heroes.orm import Job
    from jupyter_heroes.orm_market import JobOfferPin

    ids = db.ids
    with db.session() as s:
        v1 = publish(s, ids)
        mo.enable_offer(s, ids.orgs["acme"], v1.offer_id)
        inst = add_run(s, ids, org="acme", user="alice", project="cfd", cluster="galileo", queue="debug")
        job_ids = [j.id for j in inst.jobs]
    with db.session() as s:
        mo.update_offer(s, v1.offer_id, ids.orgs["hpc-centre"], price={**PRICE, "core_hour": "1"})
    with db.session() as s:
        pins = [mo.pin_job(s, j) for j in job_ids]
        assert {p.offer_version_id for p in pins} == {v1.id}  # submitted before the change
        # pinning again, even at another time, never changes a pin
        again = mo.pin_job(s, job_ids[0], at=datetime.now(timezone.utc))
        assert again.offer_version_id == v1.id
        assert s.scalar(select(func.count()).select_from(JobOfferPin)) == 2
        # a job on a cluster the organization has no offer for: nothing to pin
        other = add_run(s, ids, org="globex", user="carol", project="crash", cluster="cloud1", queue="c5")
        assert mo.pin_job(s, other.jobs[0].id) is None
        with pytest.raises(NotFound):
            mo.pin_job(s, s.scalar(select(func.max(Job.id))) + 1)


def test_the_decision_ranks_enabled_offers_at_their_price(db):
    """End to end with the decision module: only enabled offers are candidates, priced by the offer.
    Runtimes come from a TEST STAND-IN predictor (fixed seconds per step), not a model."""
    from dataclasses import dataclass

    from jupyter_heroes.decision.decide import decide
    from jupyter_heroes.decision.ranking import UserChoice
    from jupyter_heroes.marketplace.sample import SOLVER
    from jupyter_heroes.workflows.templates import load_template

    @dataclass(frozen=True)
    class P:
        point: float
        q_low: float
        q_high: float
        source: str = "test stand-in"
        model_version: str = "0"

    class StandIn:
        def predict(self, features):
            return P(3600.0, 3600.0, 3600.0)

    ids = db.ids
    acme = ids.orgs["acme"]
    with db.session() as s:
        debug = publish(s, ids, price={"currency": "EUR", "core_hour": "0.02", "gpu_hour": "1.00"}).offer_id
        gpu = publish(
            s, ids, name="galileo-gpu", queue="gpu", price={"currency": "EUR", "gpu_hour": "0.50"}
        ).offer_id
        publish(s, ids, name="not-enabled", queue="gpu", price={"currency": "EUR"})  # free, but not enabled
        mo.enable_offer(s, acme, debug)
        mo.enable_offer(s, acme, gpu)
    with db.session() as s:
        cands, excl = mo.offer_candidates(s, acme)
    assert sorted(c.key for c in cands) == ["hpc-centre/galileo/debug", "hpc-centre/galileo/gpu"]
    d = decide(
        load_template(SOLVER), {}, cands, StandIn(), choice=UserChoice(strategy="cheapest"), exclusions=excl,
        now=datetime(2026, 1, 5, 12, tzinfo=timezone.utc),
    )  # fmt: skip
    costs = {r["key"]: r["cost"] for r in d.table.to_dict(orient="records")}
    # main: 16 cores x 2 GPUs for 1 h, post: 1 core for 1 h; the debug queue has no GPU: infeasible
    assert costs["hpc-centre/galileo/gpu"] == Decimal("1.00")
    assert d.recommendation is not None and d.recommendation.key == "hpc-centre/galileo/gpu"
    assert "not-enabled" not in " ".join(costs)
