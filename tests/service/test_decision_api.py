"""The decision endpoints through the real hub + service (SQLite and PostgreSQL).

An organization of our own (``dec-lab``) enrols three clusters: the test bed's Slurm over its real
sshd (fast and dear: ``relative_speed`` 2, 2 EUR per core-hour), a local-backend cluster (slow and
cheap: 0.10 EUR per core-hour, a coal-heavy grid) and a local one too small for the template; a
vendor publishes two offers to it, of which it enables one. Then: the strategies rank the clusters
differently, the infeasible one is listed with its reason, other organizations' clusters and the
offer not enabled never appear, the Slurm rows carry Slurm's own wait estimate, bad bodies are 400
and store nothing, the roles of D3.1 Table 1 get 403 where they should, EAR measurements turn the
energy figures into measured ones, and a decision followed by a submission on Slurm shows the
prediction beside the job's actual runtime.
"""

from __future__ import annotations

import re
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from urllib3.filepost import encode_multipart_formdata

from jupyter_heroes.orm_decision import Decision
from jupyter_heroes.service.openapi import endpoints
from jupyter_heroes.testing.plugin_hub import PLATFORM_ADMIN

from .conftest import ACME, ACME_ROLE_USERS, GLOBEX, OnWorld, World

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[2]
ORG = "dec-lab"
VENDOR = "dec-vendor"
ADMIN, RES, PUB, APPS = "dec-admin", "dec-res", "dec-pub", "dec-apps"
DECIDE = "/organization/decision/decide"
POLICIES = "/organization/decision/policies"
INGEST = "/organization/decision/ingest_ear_files"
PERF = "/organization/decision/performance"
MODULE = "jupyter_heroes.service.apihandlers.decision"
TEMPLATE = {
    "heroes_template": 1,
    "name": "dec-sleep",
    "version": 1,
    "application": "dec-sleep",
    "description": "sleeps",
    "parameters": {"seconds": {"type": "integer", "default": 1, "min": 0, "max": 60}},
    "steps": [
        {
            "name": "nap",
            "command": ["sleep", "{{ seconds }}"],
            "resources": {"nodes": 1, "tasks": 1, "memory_mb": 256, "walltime": "00:10:00"},
        }
    ],
}
EAR_DATA = ROOT / "tests" / "decision" / "data"


class Lab(OnWorld):
    def __init__(self, world: World) -> None:
        self.world = world

    def decide(self, user: str = RES, status: int = 201, **body: Any) -> dict[str, Any]:
        return self.ok(user, "POST", DECIDE, {"template": "dec-sleep", **body}, status=status)

    def decisions(self) -> int:
        with self.world.db() as s:
            return s.scalar(select(func.count()).select_from(Decision))


@pytest.fixture(scope="module")
def lab(world: World, slurm_cluster, tmp_path_factory) -> Lab:
    hub = world.hub
    tag = "pg" if hub.db_url and hub.db_url.startswith("postgresql") else "lite"
    scratch = tmp_path_factory.mktemp("dec-scratch")
    world.found_org(ORG, {ADMIN: "org-admin", RES: "researcher"})
    world.found_org(VENDOR, {PUB: "resource-provider", APPS: "application-provider"}, kind="provider")
    ssh = slurm_cluster.ssh
    world.ok(
        ADMIN,
        "POST",
        "/organization/admin/cluster",
        {
            "name": "dec-slurm",
            "host": ssh.host,
            "port": ssh.port,
            "username": ssh.username,
            "host_key": ssh.host_key,
            "private_key": ssh.private_key,
            "scratch_root": f"{ssh.scratch_root}/decision-{tag}",
            "queues": [{"name": "debug"}],
            "site": {
                "relative_speed": 2.0,
                "offer": {"currency": "EUR", "core_hour": "2.00"},
                "pue": 1.1,
                "grid_zone": "FR",
                "power": {"idle_w": 100, "max_w": 400, "cores": 32},
            },
        },
        status=201,
    )
    world.ok(
        ADMIN,
        "POST",
        "/organization/admin/cluster",
        {
            "name": "dec-local",
            "transport": "local",
            "scheduler": "local",
            "scratch_root": str(scratch / "local"),
            "queues": [{"name": "debug", "max_walltime_s": 3600, "mem_per_node_mb": 4096}],
            "site": {
                "offer": {"currency": "EUR", "core_hour": "0.10"},
                "pue": 1.6,
                "grid_zone": "PL",
                "typical_wait_s": 0,
            },
        },
        status=201,
    )
    world.ok(
        ADMIN,
        "POST",
        "/organization/admin/cluster",
        {
            "name": "dec-tiny",
            "transport": "local",
            "scheduler": "local",
            "scratch_root": str(scratch / "tiny"),
            "queues": [{"name": "small", "mem_per_node_mb": 128}],
        },
        status=201,
    )
    # another organization's cluster, which dec-lab must never see
    world.ok(
        "globex-admin",
        "POST",
        "/organization/admin/cluster",
        {"name": "globex-secret-hpc", "transport": "local", "scheduler": "local", "queues": [{"name": "q"}]},
        status=201,
    )
    # a vendor publishes two queues to dec-lab, which enables one
    world.ok(
        PLATFORM_ADMIN,
        "POST",
        "/organization/admin/cluster",
        {
            "name": "dec-vcluster",
            "transport": "local",
            "scheduler": "local",
            "queues": [{"name": "on"}, {"name": "off"}],
        },
        status=201,
        org=VENDOR,
    )
    offers = {}
    for q in ("on", "off"):
        offers[q] = world.ok(
            PUB,
            "POST",
            "/marketplace/offers",
            {
                "name": f"dec-offer-{q}",
                "cluster": "dec-vcluster",
                "queue": q,
                "price": {"currency": "EUR", "core_hour": "1.00"},
                "visibility": [ORG],
            },
            status=201,
        )
    world.ok(ADMIN, "POST", f"/organization/admin/offers/{offers['on']['id']}/enable")
    world.ok(ADMIN, "POST", "/organization/admin/workflow/template", {"template": TEMPLATE}, status=201)
    return Lab(world)


def rows(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{r['cluster']}/{r['queue']}": r for r in answer["candidates"]}


def test_strategies_rank_the_clusters_differently(lab: Lab) -> None:
    cheap = lab.decide(strategy="cheapest")
    fast = lab.decide(strategy="fastest")
    green = lab.decide(strategy="lowest-carbon")
    assert cheap["recommendation"]["cluster"] == "dec-local"
    assert fast["recommendation"]["cluster"] == "dec-slurm"
    assert green["recommendation"]["cluster"] == "dec-slurm"  # FR's grid beats PL's
    for answer in (cheap, fast, green):
        assert len(answer["decision"]) == 32 and answer["currency"] == "EUR"
        assert answer["model_version"] and answer["template"] == "dec-sleep"
    r = rows(fast)
    slurm, local = r["dec-slurm/debug"], r["dec-local/debug"]
    assert slurm["rank"] == 1 and slurm["status"] == "ranked"
    # Slurm was asked over SSH (sbatch --test-only); the local cluster has its declared wait
    assert slurm["wait_source"] == "sbatch --test-only", slurm["wait_source"]
    assert "typical wait" in local["wait_source"] or "no wait estimate" in local["wait_source"]
    # relative_speed 2: half the runtime; the price is a decimal string; timestamps ISO 8601
    assert slurm["runtime_s"] == pytest.approx(local["runtime_s"] / 2)
    assert float(slurm["cost"]) > float(local["cost"]) > 0
    assert slurm["expected_start"].endswith("+00:00")
    assert slurm["energy_basis"] == "estimated" and slurm["co2e_kg"] > 0


def test_candidates_are_the_organizations_and_its_enabled_offers(lab: Lab) -> None:
    r = rows(lab.decide())
    assert {"dec-slurm/debug", "dec-local/debug", "dec-tiny/small", f"{VENDOR}/dec-vcluster/on"} == set(r)
    assert r[f"{VENDOR}/dec-vcluster/on"]["status"] == "ranked"
    assert f"offer dec-offer-on v1 of {VENDOR}" in r[f"{VENDOR}/dec-vcluster/on"]["price_source"]
    tiny = r["dec-tiny/small"]
    assert tiny["status"] == "infeasible" and tiny["rank"] is None
    assert "needs 256 MB per node; dec-tiny/small has 128 MB" in tiny["why"]
    assert not any("globex" in k or k.endswith("/off") for k in r)


def test_each_ranked_candidate_carries_submission_advice(lab: Lab) -> None:
    """Per ranked candidate and step: a walltime between the runtime predicted there and the
    template's request (within the queue's limit), rounded to minutes, and a memory request within
    the template's and the queue's; kept with the decision."""
    d = lab.decide(strategy="fastest")
    r = rows(d)
    ranked = [row for row in d["candidates"] if row["status"] == "ranked"]
    assert {row["key"] for row in ranked} == {
        "dec-slurm/debug",
        "dec-local/debug",
        f"{VENDOR}/dec-vcluster/on",
    }
    for row in ranked:
        a = row["advice"]["nap"]
        assert row["runtime_s"] <= a["walltime_s"] <= 600, (row["key"], a)  # p50 here .. the template's
        assert a["walltime_s"] % 60 == 0 and a["requested_walltime_s"] == 600
        assert 0 < a["memory_mb"] <= a["requested_memory_mb"] == 256
        assert a["basis"] and a["memory_basis"]
    local = r["dec-local/debug"]["advice"]["nap"]
    assert local["walltime_s"] <= 3600 and local["memory_mb"] <= 4096  # the queue's limits
    assert "advice" not in r["dec-tiny/small"]  # infeasible: nothing to advise
    got = lab.ok(RES, "GET", f"/organization/decision/{d['decision']}")
    assert got["candidates"] == d["candidates"]


def test_an_enabled_application_adds_its_licence_fee_to_the_cost(lab: Lab) -> None:
    """The template's application is published in the marketplace with a licence of 5 EUR a run:
    once the organization enables it (not before), every priced candidate costs 5 EUR more and says
    why; disabled again, the costs fall back."""
    before = rows(lab.decide(strategy="cheapest"))
    app = lab.ok(
        APPS,
        "POST",
        "/marketplace/applications",
        {
            "name": "dec-sleep",
            "image": "docker://registry.example.org/dec/sleep:1",
            "price": {"currency": "EUR", "fixed": "5.00", "fixed_per": "run"},
            "licence": "one fee per run",
            "visibility": [ORG],
        },
        status=201,
    )
    assert (
        rows(lab.decide(strategy="cheapest"))["dec-local/debug"]["cost"] == before["dec-local/debug"]["cost"]
    )
    lab.ok(ADMIN, "POST", f"/organization/admin/applications/{app['id']}/enable")
    try:
        d = lab.decide(strategy="cheapest")
        after = rows(d)
        for key in ("dec-slurm/debug", "dec-local/debug", f"{VENDOR}/dec-vcluster/on"):
            assert Decimal(after[key]["cost"]) - Decimal(before[key]["cost"]) == Decimal("5.00"), key
            assert after[key]["price_source"].endswith(f"+ licence of dec-sleep v1 ({VENDOR})"), after[key]
        assert Decimal(d["recommendation"]["cost"]) == Decimal(after["dec-local/debug"]["cost"])
        assert any("licence of dec-sleep" in n for n in d["notes"]), d["notes"]
    finally:
        lab.ok(ADMIN, "POST", f"/organization/admin/applications/{app['id']}/disable", status=204)
        lab.ok(APPS, "DELETE", f"/marketplace/applications/{app['id']}")
    again = rows(lab.decide(strategy="cheapest"))
    assert again["dec-local/debug"]["cost"] == before["dec-local/debug"]["cost"]
    assert "licence" not in again["dec-local/debug"]["price_source"]


def test_a_decision_is_kept_for_its_owner_and_confined_to_its_organization(lab: Lab) -> None:
    d = lab.decide(strategy="cheapest")
    did = d["decision"]
    got = lab.ok(RES, "GET", f"/organization/decision/{did}")
    assert got["recommended"] == "dec-local/debug" and got["chosen"] is None and got["user"] == RES
    assert got["candidates"] == d["candidates"]
    assert lab.ok(ADMIN, "GET", f"/organization/decision/{did}")["decision"] == did  # clusters:manage
    for user, org in (
        ("globex-admin", None),
        ("globex-res", None),
        ("globex-admin", ORG),
        ("acme-admin", None),
    ):
        r = lab.call(user, "GET", f"/organization/decision/{did}", org=org)
        assert r.status_code == 404, (user, r.text)
        assert r.json()["reason"] == "not_found"
    assert lab.call(RES, "GET", "/organization/decision/" + "0" * 32).status_code == 404
    assert lab.call(RES, "GET", "/organization/decision/not-an-id").status_code == 404
    rows_ = lab.world.audit_rows(action="decision.decide", target=did)
    assert rows_ and rows_[-1].outcome == "success" and rows_[-1].user == RES


@pytest.mark.parametrize(
    ("body", "reason", "words"),
    [
        ({"template": "no-such-flow"}, "unknown_template", "unknown template 'no-such-flow'"),
        ({"template": "dec-sleep", "params": {"seconds": 999}}, "invalid_parameter", "parameter 'seconds'"),
        ({"template": "dec-sleep", "params": {"bogus": 1}}, "invalid_parameter", "unknown parameter"),
        ({"template": "dec-sleep", "strategy": "greedy"}, "invalid_field", "strategy"),
        ({"template": "dec-sleep", "deadline": "2026-11-23T18:00:00"}, "invalid_field", "with its zone"),
        ({"template": "dec-sleep", "budget": -1}, "invalid_field", "budget"),
        ({"template": "dec-sleep", "budget": "5", "budget_currency": "XYZ"}, "invalid_currency", "XYZ"),
        ({"template": "dec-sleep", "currency": "XYZ"}, "invalid_currency", "exchange-rate table"),
        (
            {"template": "dec-sleep", "weights": {"cost": 1}},
            "not_allowed_by_policy",
            "does not allow user weights",
        ),
        ({"template": "dec-sleep", "requirements": {"colour": "red"}}, "invalid_requirements", "colour"),
        (
            {"template": "dec-sleep", "requirements": {"arch": "riscv"}},
            "no_candidate",
            "needs the riscv architecture",
        ),
        (
            {"template": "dec-sleep", "deadline": "2000-01-01T00:00:00Z"},
            "no_candidate",
            "after the deadline",
        ),
        ({"template": "dec-sleep", "surprise": 1}, "invalid_field", "surprise"),
        ({"params": {}}, "invalid_field", "template"),
    ],
)
def test_bad_requests_are_400_and_store_nothing(lab: Lab, body: dict, reason: str, words: str) -> None:
    before = lab.decisions()
    r = lab.call(RES, "POST", DECIDE, body)
    assert r.status_code == 400, r.text
    assert r.json()["reason"] == reason and words in r.json()["message"], r.json()
    assert lab.decisions() == before


def test_policy_is_set_by_admins_and_binds_researchers(lab: Lab) -> None:
    default = lab.ok(RES, "GET", POLICIES)
    assert default["strategy"] == "weighted" and default["allow_user_strategy"] is True
    r = lab.call(RES, "PUT", POLICIES, {"strategy": "fastest"})
    assert r.status_code == 403 and r.json()["reason"] == "missing_scope"
    for bad, words in (
        ({"strategy": "greedy"}, "strategy"),
        ({"weights": {"time": 0, "cost": 0}}, "at least one weight must be above 0"),
        ({"currency": "XYZ"}, "XYZ"),
        ({"platforms": {"dec-sleep": "dec-local"}}, "platforms"),
    ):
        r = lab.call(ADMIN, "PUT", POLICIES, bad)
        assert r.status_code == 400 and words in r.json()["message"], r.text
    assert lab.ok(ADMIN, "GET", POLICIES)["strategy"] == "weighted"  # refused bodies changed nothing
    try:
        set_ = lab.ok(
            ADMIN,
            "PUT",
            POLICIES,
            {
                "strategy": "cheapest",
                "allow_user_strategy": False,
                "platforms": {"dec-sleep": ["dec-local", "dec-slurm"]},
            },
        )
        assert set_["updated_by"] == ADMIN and set_["platforms"] == {"dec-sleep": ["dec-local", "dec-slurm"]}
        d = lab.decide()
        assert d["strategy"] == "cheapest" and d["recommendation"]["cluster"] == "dec-local"
        assert rows(d)[f"{VENDOR}/dec-vcluster/on"]["status"] == "not-allowed"
        r = lab.call(RES, "POST", DECIDE, {"template": "dec-sleep", "strategy": "fastest"})
        assert r.status_code == 400 and r.json()["reason"] == "not_allowed_by_policy"
        assert "ask an organization manager" in r.json()["message"]
        audit = lab.world.audit_rows(action="decision.policy")
        assert audit and audit[-1].outcome == "success" and audit[-1].user == ADMIN
    finally:
        lab.ok(ADMIN, "PUT", POLICIES, {})
    assert lab.ok(RES, "GET", POLICIES)["strategy"] == "weighted"


def _ear(header: str, rows_: list[dict[str, object]]) -> str:
    head = (EAR_DATA / header).read_text().strip()
    cols = head.split(";")
    return "\n".join([head, *(";".join(str(r.get(c, "0")) for c in cols) for r in rows_)]) + "\n"


def test_ear_measurements_make_the_energy_measured(lab: Lab) -> None:
    before = rows(lab.decide())["dec-local/debug"]
    assert before["energy_basis"] == "estimated"
    text = _ear(
        "eacct_c_header_cpu_only.txt",
        [
            {
                "JOBID": 11,
                "STEPID": 0,
                "APPID": "x",
                "NODENAME": "n1",
                "TIME_SEC": 100,
                "DC_NODE_POWER_W": 250,
            },
            {
                "JOBID": 12,
                "STEPID": 0,
                "APPID": "x",
                "NODENAME": "n1",
                "TIME_SEC": 300,
                "DC_NODE_POWER_W": 150,
            },
        ],
    )
    url = f"{INGEST}?cluster=dec-local&application=dec-sleep"
    # a researcher may not; a malformed file is refused whole
    r = lab.call(RES, "POST", url, data=text, headers={"Content-Type": "text/csv"})
    assert r.status_code == 403 and r.json()["reason"] == "missing_scope"
    bad = text.replace(";150;", ";lots;", 1) if ";150;" in text else text.replace("150", "lots", 1)
    r = lab.call(ADMIN, "POST", url, data=bad, headers={"Content-Type": "text/csv"})
    assert r.status_code == 400 and r.json()["reason"] == "invalid_ear_csv", r.text
    assert "line 3" in r.json()["message"]
    for q, words in (
        ("?application=dec-sleep", "name the cluster"),
        ("?cluster=globex-secret-hpc", "not one of"),
    ):
        r = lab.call(ADMIN, "POST", INGEST + q, data=text, headers={"Content-Type": "text/csv"})
        assert r.status_code == 400 and words in r.json()["message"], r.text
    r = lab.call(ADMIN, "POST", url, json={"csv": text})
    assert r.status_code == 400 and r.json()["reason"] == "unsupported_content_type"
    assert rows(lab.decide())["dec-local/debug"]["energy_basis"] == "estimated"  # nothing was stored
    # as a multipart upload, twice: the second adds nothing
    for added, dup in ((2, 0), (0, 2)):
        body, ctype = encode_multipart_formdata({"file": ("eacct.csv", text.encode(), "text/csv")})
        r = lab.call(ADMIN, "POST", url, data=body, headers={"Content-Type": ctype})
        assert r.status_code == 200, r.text
        got = r.json()
        assert (got["added"], got["duplicates"]) == (added, dup)
    assert got["applications"]["dec-sleep"]["node_power_w"] == pytest.approx((250 * 100 + 150 * 300) / 400)
    after = rows(lab.decide())
    assert after["dec-local/debug"]["energy_basis"] == "measured"
    assert "EAR measurements of dec-sleep" in after["dec-local/debug"]["energy_source"]
    assert after["dec-slurm/debug"]["energy_basis"] == "estimated"
    audit = lab.world.audit_rows(action="decision.ingest", outcome="success")
    assert audit and audit[-1].target == "dec-local"


def wait_state(lab: Lab, iid: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        inst = lab.ok(RES, "GET", f"/organization/workflow/instance/{iid}")
        if inst["state"] in ("completed", "failed", "cancelled"):
            return inst
        time.sleep(0.5)
    raise AssertionError(f"{iid} still {inst['state']}: {inst['jobs']}")


def test_decide_submit_run_on_slurm_then_prediction_beside_outcome(lab: Lab) -> None:
    d = lab.decide(strategy="fastest", params={"seconds": 2})
    did = d["decision"]
    rec = d["recommendation"]
    assert (rec["cluster"], rec["queue"]) == ("dec-slurm", "debug")
    predicted = d["steps"][0]
    # submitting to a candidate the decision did not rank is refused and runs nothing
    r = lab.call(
        RES,
        "POST",
        "/organization/workflow/submit",
        {"template": "dec-sleep", "cluster": "dec-tiny", "queue": "small", "decision": did},
    )
    assert r.status_code == 400 and r.json()["reason"] == "not_a_candidate", r.text
    # another organization cannot follow it
    r = lab.call(
        "globex-res",
        "POST",
        "/organization/workflow/submit",
        {"template": "dec-sleep", "cluster": "dec-slurm", "decision": did},
    )
    assert r.status_code == 404, r.text
    inst = lab.ok(
        RES,
        "POST",
        "/organization/workflow/submit",
        {
            "template": "dec-sleep",
            "cluster": "dec-slurm",
            "queue": "debug",
            "params": {"seconds": 2},
            "decision": did,
        },
        status=201,
    )
    done = wait_state(lab, inst["id"])
    assert done["state"] == "completed", done["jobs"]
    job = done["jobs"][0]
    got = lab.ok(RES, "GET", f"/organization/decision/{did}")
    assert (got["chosen"], got["accepted"], got["instance"]) == ("dec-slurm/debug", True, inst["id"])
    # sacct's elapsed time reaches the accounting a little after the end
    deadline = time.monotonic() + 60
    while True:
        perf = lab.ok(ADMIN, "GET", PERF)
        mine = [j for g in perf for j in g["jobs"] if j["instance"] == inst["id"]]
        if mine or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert len(mine) == 1, perf
    row = mine[0]
    assert row["decision"] == did and row["job_id"] == job["job_id"] and row["step"] == "nap"
    assert row["predicted_s"] == pytest.approx(predicted["point"] / 2, rel=1e-3)  # relative_speed 2
    assert 1 <= row["actual_s"] < 120 and 0 < row["accuracy"] <= 1
    assert row["under_predicted"] is (row["predicted_s"] < row["actual_s"])
    group = next(g for g in perf if g["model_version"] == row["model_version"])
    assert group["count"] >= 1 and 0 < group["accuracy"] <= 1
    assert lab.ok(RES, "GET", f"/organization/decision/{did}")["outcome"][0]["actual_s"] == row["actual_s"]
    # a researcher does not see the organization's performance
    assert lab.call(RES, "GET", PERF).status_code == 403
    # the finished job teaches the organization's predictor: the next decision uses the user's history
    again = lab.decide(strategy="fastest", params={"seconds": 2})
    step = again["steps"][0]
    assert step["source"] == "user-history", again["steps"]
    assert step["point"] < predicted["point"]


def test_a_login_node_that_is_down_falls_back_to_the_typical_wait(lab: Lab, slurm_cluster) -> None:
    """Fault at the boundary: the test bed's sshd is killed with its sessions; the decision still
    answers, the Slurm row saying its live estimate failed; the cluster answers again once it is back."""
    ssh = slurm_cluster.ssh
    ssh.kill(sessions=True)
    try:
        t0 = time.monotonic()
        r = rows(lab.decide(strategy="fastest"))
        assert time.monotonic() - t0 < 60
        slurm = r["dec-slurm/debug"]
        assert slurm["status"] == "ranked"
        assert "live estimate failed" in slurm["wait_source"], slurm["wait_source"]
    finally:
        ssh.start()
    deadline = time.monotonic() + 60
    while True:
        src = rows(lab.decide(strategy="fastest"))["dec-slurm/debug"]["wait_source"]
        if src == "sbatch --test-only" or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert src == "sbatch --test-only"


# --- roles and documentation --------------------------------------------------------------------

OPS = [(path, method, ep) for path, h, method, ep in endpoints() if h.__module__ == MODULE]
#: role -> operations it may call (D3.1 Table 1: researchers decide; managers set policy, ingest, review)
ALLOWED = {
    "researcher": {"POST decide", "GET policies", "GET {decision_id}"},
    "workflow-admin": {"POST decide", "GET policies", "GET {decision_id}"},
    "application-packager": {"POST decide", "GET policies", "GET {decision_id}"},
    "org-admin": {
        "GET policies",
        "PUT policies",
        "POST ingest_ear_files",
        "GET performance",
        "GET {decision_id}",
    },
    "project-admin": set(),
    "billing-admin": set(),
}
#: a request each allowed role gets a non-403 answer to, changing nothing
PROBE: dict[str, tuple[str, Any, int]] = {
    "POST decide": (DECIDE, {"template": "no-such-flow"}, 400),
    "GET policies": (POLICIES, None, 200),
    "PUT policies": (POLICIES, {"strategy": "greedy"}, 400),
    "POST ingest_ear_files": (INGEST, None, 400),
    "GET performance": (PERF, None, 200),
    "GET {decision_id}": ("/organization/decision/" + "a" * 32, None, 404),
}


def test_every_decision_endpoint_is_probed_and_audited() -> None:
    ids = {f"{m.upper()} {p.rsplit('/', 1)[1]}" for p, m, _ep in OPS}
    assert ids == set(PROBE)
    assert all(ep.action for _p, m, ep in OPS if m in ("post", "put"))


@pytest.mark.parametrize(("role", "user"), sorted(ACME_ROLE_USERS.items()))
def test_roles_get_403_where_table_1_denies(lab: Lab, role: str, user: str) -> None:
    for op, (path, body, status) in PROBE.items():
        method = op.split()[0]
        r = lab.call(user, method, path, body, org=ACME)
        if op in ALLOWED[role]:
            assert r.status_code == status, (role, op, r.text)
        else:
            assert r.status_code == 403, (role, op, r.text)
            assert r.json()["reason"] == "missing_scope"


def test_other_organizations_reach_nothing(lab: Lab) -> None:
    for op, (path, body, _status) in PROBE.items():
        r = lab.call("globex-admin", op.split()[0], path, body, org=ORG)
        assert r.status_code == 404, (op, r.text)


def test_docs_list_every_decision_path_action_and_reason() -> None:
    api = (ROOT / "docs" / "api.md").read_text()
    for path, method, _ep in OPS:
        row = next((ln for ln in api.splitlines() if f"`{path}`" in ln), None)
        assert row is not None and method.upper() in row, f"docs/api.md: {method.upper()} {path}"
    logs = (ROOT / "docs" / "admin" / "logs.md").read_text()
    src = (ROOT / "jupyter_heroes" / "service" / "apihandlers" / "decision.py").read_text()
    src += (ROOT / "jupyter_heroes" / "decision" / "store.py").read_text()

    actions = {ep.action for _p, _m, ep in OPS if ep.action}
    reasons = set(re.findall(r'ApiError\(\s*\d{3},.*?"([a-z_]+)",?\s*\)', src, re.S))
    reasons |= set(re.findall(r'reason = "([a-z_]+)"', src))
    reasons |= {"no_candidate", "not_allowed_by_policy", "invalid_ear_csv", "not_a_candidate"}
    for a in sorted(actions):
        assert f"`{a}`" in logs, f"docs/admin/logs.md: action {a}"
    for reason in sorted(reasons):
        assert f"`{reason}`" in logs, f"docs/admin/logs.md: reason {reason}"


def test_globex_admin_selecting_acme_gets_404_on_decide(lab: Lab) -> None:
    r = lab.call("globex-admin", "POST", DECIDE, {"template": "acme-flow"}, org=ACME)
    assert r.status_code == 404
    r = lab.call("globex-res", "POST", DECIDE, {"template": "dec-sleep"}, org=GLOBEX)
    assert r.status_code == 400 and r.json()["reason"] == "unknown_template"
