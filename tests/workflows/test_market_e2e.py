"""The marketplace end to end on the test bed: a vendor publishes a queue of its Slurm cluster (real
Slurm over real SSH), a client organization's admin enables it, a researcher of the client runs a
workflow on it; the budget reservation, the ledger, the organization's report and the vendor's
revenue agree to the cent. Also: a budget too small refuses with the numbers and leaves nothing; a
price change between submission and finish is charged under the submission's version; the cluster
list shows own clusters and enabled offers only; a restart mid-run leaves exactly one ledger row;
exhausted budgets hold (``scontrol hold``) or cancel live work.

Everything goes through the REST API as the users would; the only direct look is at Slurm itself
(``squeue``, over the test bed's SSH) to see that a held job is really held.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from decimal import Decimal
from typing import Any

import pytest

from jupyter_heroes.testing.base import read_pidfile
from jupyter_heroes.testing.plugin_hub import PLATFORM_ADMIN

pytestmark = [pytest.mark.slurm, pytest.mark.hub]
FINAL = ("completed", "failed", "cancelled")
PRICE_V1 = {"currency": "EUR", "fixed": "0.10", "core_hour": "36.00"}
PRICE_V2 = {"currency": "EUR", "fixed": "0.10", "core_hour": "360.00"}


def template(name: str, seconds_default: float = 2, steps: int = 1) -> dict[str, Any]:
    out = []
    for i in range(steps):
        step = {
            "name": f"s{i}",
            "command": ["python3", "-c", "import sys, time; time.sleep(float(sys.argv[1]))", "{{ seconds }}"],
            "resources": {"memory_mb": 64, "walltime": "00:05:00"},
        }
        if i:
            step["depends_on"] = [f"s{i - 1}"]
        out.append(step)
    return {
        "heroes_template": 1,
        "name": name,
        "version": 1,
        "parameters": {"seconds": {"type": "number", "default": seconds_default, "min": 0, "max": 120}},
        "steps": out,
    }


class Market:
    """Three organizations on one hub: a vendor with the test bed's Slurm cluster, a client that
    enables its ``debug`` offer (not its ``long`` one), and a bystander with a cluster of its own."""

    def __init__(self, hub, slurm_cluster, tag: str) -> None:
        self.hub, self.tag, self.slurm = hub, tag, slurm_cluster
        self.vendor, self.client, self.other = f"{tag}-vendor", f"{tag}-client", f"{tag}-other"
        self.tokens: dict[str, str] = {}
        self.tokens["platform"] = hub.create_user(PLATFORM_ADMIN)
        for org, kind in ((self.vendor, "provider"), (self.client, "client"), (self.other, "client")):
            self.ok("platform", "POST", "/heroes/admin/organizations", {"name": org, "kind": kind}, 201)
        users = {
            "pub": (self.vendor, ["resource-provider"], []),
            "admin": (self.client, ["org-admin", "workflow-admin"], []),
            "res": (self.client, ["researcher"], ["lab", "tight"]),
            "stranger": (self.other, ["org-admin", "researcher"], []),
        }
        for short in users:
            self.tokens[short] = hub.create_user(f"{tag}-{short}")
        for org in (self.vendor, self.other):
            for short, (o, roles, _p) in users.items():
                if o == org:
                    self.ok(
                        "platform",
                        "POST",
                        "/organization/admin/users",
                        {"username": f"{tag}-{short}", "roles": roles},
                        201,
                        org=org,
                    )
        self.ok(
            "platform",
            "POST",
            "/organization/admin/users",
            {"username": f"{tag}-admin", "roles": users["admin"][1]},
            201,
            org=self.client,
        )
        for p in ("lab", "tight"):
            self.ok("admin", "POST", "/organization/admin/groups", {"name": p}, 201)
        self.ok(
            "admin",
            "POST",
            "/organization/admin/users",
            {"username": f"{tag}-res", "roles": ["researcher"], "projects": ["lab", "tight"]},
            201,
        )
        ssh = slurm_cluster.ssh
        self.cluster = f"{tag}-slurm"
        self.ok(
            "platform",
            "POST",
            "/organization/admin/cluster",
            {
                "name": self.cluster,
                "host": ssh.host,
                "port": ssh.port,
                "username": ssh.username,
                "host_key": ssh.host_key,
                "private_key": ssh.private_key,
                "scratch_root": f"{ssh.scratch_root}/{tag}",
                "queues": [{"name": p, "cpus_per_node": 2} for p in slurm_cluster.partitions],
            },
            201,
            org=self.vendor,
        )
        self.ok(
            "platform",
            "POST",
            "/organization/admin/cluster",
            {"name": f"{tag}-own", "transport": "local", "scheduler": "local", "queues": [{"name": "q"}]},
            201,
            org=self.other,
        )
        self.offers = {
            q: self.ok(
                "pub",
                "POST",
                "/marketplace/offers",
                {
                    "name": f"{tag}-{q}",
                    "cluster": self.cluster,
                    "queue": q,
                    "price": PRICE_V1,
                    "terms": "Best effort.",
                    "visibility": [self.client],
                },
                201,
            )
            for q in ("debug", "long")
        }
        self.ok("admin", "POST", f"/organization/admin/offers/{self.offers['debug']['id']}/enable")
        self.label = f"{self.vendor}/{self.cluster}"

    def call(self, who: str, method: str, path: str, body: Any = None, **kw: Any):
        return self.hub.api(method, path, self.tokens[who], body, **kw)

    def on_cluster(self, *command: str) -> str:
        """What *command* prints on the test bed's Slurm cluster, run over its sshd as the cluster's
        account (to look at the scheduler itself, not through HEROES)."""
        argv = self.slurm.ssh.ssh_argv(*command)
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout

    def open_budget(self, limit: str = "50.00", on_exhausted: str = "hold") -> dict[str, Any]:
        """The client organization's budget (EUR, margin 1)."""
        body = {"limit": limit, "currency": "EUR", "margin": 1.0, "on_exhausted": on_exhausted}
        return self.ok("admin", "POST", "/organization/budgets", body, 201)

    def ok(self, who: str, method: str, path: str, body: Any = None, status: int = 200, **kw: Any) -> Any:
        r = self.call(who, method, path, body, **kw)
        assert r.status_code == status, f"{who} {method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None

    def submit(self, tpl: str, status: int = 201, **body: Any) -> Any:
        r = self.call("res", "POST", "/organization/workflow/submit", {"template": tpl, **body})
        assert r.status_code == status, r.text
        return r.json()

    def wait(self, iid: str, settled: bool = True, timeout: float = 180) -> dict[str, Any]:
        """The instance once final (and its reservation settled, if it has one)."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.call("res", "GET", f"/organization/workflow/instance/{iid}")
            if r.status_code == 200:  # a restarting service answers 503 meanwhile
                view = r.json()
                done = view["state"] in FINAL
                if done and (not settled or (view["reservation"] or {}).get("state") != "held"):
                    return view
            assert time.monotonic() < deadline, f"instance {iid} not settled: {r.text}"
            time.sleep(0.5)

    def records(self, iid: str) -> list[dict[str, Any]]:
        return [r for r in self.ok("admin", "GET", "/organization/usage/records") if r["instance_id"] == iid]


def kill_service(hub) -> int:
    pid = read_pidfile(hub.service_pid_file)
    assert pid, "no service pid"
    os.kill(pid, signal.SIGKILL)
    return pid


def wait_back(hub, token: str, old_pid: int, timeout: float = 60) -> None:
    """Until JupyterHub has restarted the service (a new pid that answers)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = read_pidfile(hub.service_pid_file)
        if pid and pid != old_pid and hub.api("GET", "/organization/auth/me", token).status_code == 200:
            return
        time.sleep(0.2)
    raise AssertionError("the hub did not restart the service")


def cents(amount: str | Decimal) -> int:
    return int(Decimal(amount) * 100)


@pytest.fixture(scope="module")
def market(hub, slurm_cluster):
    tag = "e2e" + ("p" if "postgresql" in hub.db_url else "s")
    m = Market(hub, slurm_cluster, tag)
    m.ok("admin", "POST", "/organization/admin/workflow/template", {"template": template("sleepy")}, 201)
    m.budget = m.ok(
        "admin",
        "POST",
        "/organization/budgets",
        {"limit": "20.00", "currency": "EUR", "margin": 1.5, "on_exhausted": "hold"},
        201,
    )
    return m


def test_cluster_list_shows_own_and_enabled_offers_only(market):
    got = market.ok("res", "GET", "/organization/workflow/clusters")
    assert [c["cluster"] for c in got] == [market.label], got
    (c,) = got
    assert c["own"] is False and c["provider"] == market.vendor
    assert [q["name"] for q in c["queues"]] == ["debug"]  # the long offer is not enabled
    assert c["offer"]["id"] == market.offers["debug"]["id"] and c["offer"]["price"]["core_hour"] == "36.00"
    from jupyter_heroes.client import HeroesClient

    client = HeroesClient(
        market.hub.api_url.rsplit("/api/v1", 1)[0] + "/", market.tokens["res"], market.client
    )
    try:
        assert client.workflow_clusters() == got
    finally:
        client.close()
    text = repr(got)
    for secret in ("BEGIN OPENSSH", "ssh-ed25519", "127.0.0.1", "heroes"):
        assert secret not in text, f"{secret} leaked in the cluster list"
    # the bystander sees its own cluster only; nobody reaches the vendor's long queue or its cluster
    other = market.ok("stranger", "GET", "/organization/workflow/clusters")
    assert [c["cluster"] for c in other] == [f"{market.tag}-own"]
    market.ok("admin", "POST", "/organization/admin/workflow/template", {"template": template("probe")}, 201)
    for body in (
        {"cluster": market.label, "queue": "long"},
        {"cluster": f"{market.other}/{market.tag}-own"},
        {"cluster": f"{market.tag}-own"},
    ):
        r = market.call("res", "POST", "/organization/workflow/submit", {"template": "probe", **body})
        assert r.status_code == 404 and r.json()["reason"] == "not_found", (body, r.text)


def test_offer_run_on_slurm_ledger_report_revenue_and_budget_agree(market):
    """Submit on the vendor's queue; change the price while it runs; the run is charged under v1."""
    budget_id = market.budget["id"]
    inst = market.submit("sleepy", cluster=market.label, params={"seconds": 3}, project="lab")
    assert inst["cluster"] == market.label and inst["offer"] == market.offers["debug"]["id"]
    res = inst["reservation"]
    # upper bound: 0.10 fixed + 1 core x 5 min x 36.00/h = 3.10 EUR, x margin 1.5 = 4.65
    assert (res["state"], res["currency"], res["predicted"]) == ("held", "EUR", "3.10"), res
    assert res["basis"] == f"offer {market.tag}-debug v1, requested walltime x resources", res
    assert res["holds"] == [{"budget_id": budget_id, "reserved": "4.65", "spent": None}]
    held = market.ok("admin", "GET", f"/organization/budgets/{budget_id}")
    assert Decimal(held["reserved"]) >= Decimal("4.65")
    # the vendor raises the price while the job is queued or running: a new version
    market.ok("pub", "PATCH", f"/marketplace/offers/{market.offers['debug']['id']}", {"price": PRICE_V2})
    view = market.wait(inst["id"])
    assert view["state"] == "completed", view
    (job,) = view["jobs"]
    assert job["accounting"]["elapsed_s"] >= 3 and job["job_id"]
    (rec,) = market.records(inst["id"])
    assert (rec["offer"], rec["offer_version"], rec["cluster"]) == (f"{market.tag}-debug", 1, market.cluster)
    hours = Decimal(str(rec["core_hours"]))
    assert hours > 0
    v1 = Decimal("0.10") + hours * Decimal("36.00")
    v2 = Decimal("0.10") + hours * Decimal("360.00")
    assert abs(Decimal(rec["cost"]) - v1) <= Decimal("0.01") < v2 - Decimal(rec["cost"]), rec
    # the reservation was settled with exactly the ledger's cost
    res = view["reservation"]
    assert res["state"] == "settled" and Decimal(res["actual"]) == Decimal(rec["cost"])
    assert res["holds"][0]["spent"] == rec["cost"]
    # the organization's report and the vendor's revenue: the same cents
    by_offer = {
        r["offer"]: r for r in market.ok("admin", "GET", "/organization/usage", params={"by": "offer"})
    }
    assert by_offer[f"{market.tag}-debug"]["cost"] == {"EUR": rec["cost"]}
    revenue = market.ok("pub", "GET", "/marketplace/revenue", params={"by": "item"})
    (row,) = [r for r in revenue if r["item"] == f"{market.tag}-debug"]
    assert row["revenue"] == {"EUR": rec["cost"]}
    # the budget: everything settled is the ledger, nothing left reserved by this run
    all_records = market.ok("admin", "GET", "/organization/usage/records")
    b = market.ok("admin", "GET", f"/organization/budgets/{budget_id}")
    live = [i for i in market.ok("res", "GET", "/organization/workflow/instance") if i["state"] not in FINAL]
    assert not live
    assert cents(b["spent"]) == sum(cents(r["cost"]) for r in all_records)
    assert b["reserved"] == "0.00"
    print(
        f"e2e {market.tag}: reserved {res['holds'][0]['reserved']} EUR, ledger {rec['cost']} EUR "
        f"({rec['core_hours']} core-h, v{rec['offer_version']}), report {by_offer[f'{market.tag}-debug']['cost']}, "
        f"revenue {row['revenue']}, budget spent {b['spent']} reserved {b['reserved']}"
    )
    # the history shows both versions
    versions = market.ok("pub", "GET", f"/marketplace/offers/{market.offers['debug']['id']}/versions")
    assert [(v["version"], v["price"]["core_hour"]) for v in versions] == [(1, "36.00"), (2, "360.00")]
    # back to v1 prices for the other tests
    market.ok("pub", "PATCH", f"/marketplace/offers/{market.offers['debug']['id']}", {"price": PRICE_V1})


def test_budget_too_small_refuses_with_numbers_and_leaves_nothing(market):
    market.ok("admin", "POST", "/organization/budgets", {"limit": "0.05", "project": "tight"}, 201)
    before = market.ok("res", "GET", "/organization/workflow/instance")
    budgets_before = market.ok("admin", "GET", "/organization/budgets")
    r = market.call(
        "res",
        "POST",
        "/organization/workflow/submit",
        {"template": "sleepy", "cluster": market.label, "project": "tight"},
    )
    assert r.status_code == 409, r.text
    err = r.json()
    assert err["reason"] == "budget_exceeded"
    # the project budget's numbers: limit 0.05, available 0.05, needs 3.10 x its margin 1.2 = 3.72
    for part in ("project", "tight", "limit 0.05 EUR", "available 0.05 EUR", "needs 3.72 EUR"):
        assert part in err["message"], err["message"]
    assert market.ok("res", "GET", "/organization/workflow/instance") == before
    assert market.ok("admin", "GET", "/organization/budgets") == budgets_before


def test_submission_following_a_decision_reserves_its_prediction(market):
    d = market.ok("res", "POST", "/organization/decision/decide", {"template": "sleepy"}, 201)
    rows = {(c["cluster"], c["queue"]): c for c in d["candidates"]}
    row = rows[(market.label, "debug")]
    assert row["status"] == "ranked", d
    assert (market.label, "long") not in rows or rows[(market.label, "long")]["status"] != "ranked"
    inst = market.submit("sleepy", cluster=market.label, decision=d["decision"], project="lab")
    res = inst["reservation"]
    # the decision priced the run under the offer (EUR): that prediction is what is reserved
    assert d["currency"] == "EUR" and row["cost"] is not None, d
    assert Decimal(res["predicted"]) == Decimal(row["cost"]), (res, row)
    assert res["basis"] == "decision prediction", res
    assert res["state"] == "held"
    # a decision is followed once
    r = market.call(
        "res",
        "POST",
        "/organization/workflow/submit",
        {"template": "sleepy", "cluster": market.label, "decision": d["decision"]},
    )
    assert r.status_code == 409 and r.json()["reason"] == "decision_already_used", r.text
    stored = market.ok("res", "GET", f"/organization/decision/{d['decision']}")
    assert stored["instance"] == inst["id"]
    view = market.wait(inst["id"])
    assert view["state"] == "completed" and view["reservation"]["state"] == "settled"
    (rec,) = market.records(inst["id"])
    assert view["reservation"]["actual"] == rec["cost"]


def test_sse_stream_says_connected_first(market):
    r = market.hub.session.get(
        market.hub.api_url + "/organization/workflow/events",
        headers={"Authorization": f"token {market.tokens['res']}", "X-Heroes-Organization": market.client},
        params={"timeout": 30},
        stream=True,
        timeout=10,
    )
    try:
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        t0 = time.monotonic()
        first = next(r.iter_lines())
        assert first == b": connected" and time.monotonic() - t0 < 5
    finally:
        r.close()


# --- restarts and exhausted budgets, on a hub whose service JupyterHub restarts within a second -------


@pytest.fixture(
    scope="module",
    params=[pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)],
)
def restart_market(request, hub_factory, slurm_cluster):
    db_url = request.getfixturevalue("postgres").new_database("e2er") if request.param == "postgres" else None
    hub = hub_factory(service_restart_poll=1, db_url=db_url)
    m = Market(hub, slurm_cluster, "e2er")
    for name, steps in (("sleepy", 1), ("chain", 2)):
        m.ok(
            "admin",
            "POST",
            "/organization/admin/workflow/template",
            {"template": template(name, steps=steps)},
            201,
        )
    m.budget = m.open_budget()
    return m


def running_job_ids(m: Market, iid: str, n: int = 1, timeout: float = 60) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        r = m.call("res", "GET", f"/organization/workflow/instance/{iid}")
        if r.status_code == 200:
            jobs = {j["step"]: j for j in r.json()["jobs"]}
            if sum(1 for j in jobs.values() if j["state"] == "running") >= n:
                return jobs
        assert time.monotonic() < deadline, r.text
        time.sleep(0.3)


def squeue_reason(m: Market, job_id: str) -> str:
    return m.on_cluster("squeue", "-h", "-j", job_id, "-o", "%T:%r").strip()


def test_restart_mid_run_and_after_finish_one_ledger_row(restart_market):
    m = restart_market
    inst = m.submit("sleepy", cluster=m.label, params={"seconds": 6}, project="lab")
    running_job_ids(m, inst["id"])
    old = kill_service(m.hub)  # while the job runs
    wait_back(m.hub, m.tokens["res"], old)
    deadline = time.monotonic() + 120
    while m.call("res", "GET", f"/organization/workflow/instance/{inst['id']}").json()["state"] not in FINAL:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    old = kill_service(m.hub)  # right after it finished: ledger and settlement may be half done
    wait_back(m.hub, m.tokens["res"], old)
    view = m.wait(inst["id"])
    assert view["state"] == "completed", view
    recs = m.records(inst["id"])
    assert len(recs) == 1, recs
    assert view["reservation"]["state"] == "settled"
    assert Decimal(view["reservation"]["actual"]) == Decimal(recs[0]["cost"])
    b = m.ok("admin", "GET", f"/organization/budgets/{m.budget['id']}")
    assert cents(b["spent"]) == sum(
        cents(r["cost"]) for r in m.ok("admin", "GET", "/organization/usage/records")
    )


def test_exhausted_budget_holds_pending_jobs_then_releases_then_cancels(restart_market):
    m = restart_market
    bid = m.budget["id"]

    def exhaust() -> None:
        """Lower the limit to what is spent (spent >= limit: exhausted), whatever ran before."""
        spent = m.ok("admin", "GET", f"/organization/budgets/{bid}")["spent"]
        assert Decimal(spent) > 0, "the budget must have been charged for something"
        m.ok("admin", "PATCH", f"/organization/budgets/{bid}", {"limit": spent})

    if Decimal(m.ok("admin", "GET", f"/organization/budgets/{bid}")["spent"]) == 0:  # run alone
        first = m.submit("sleepy", cluster=m.label, params={"seconds": 2}, project="lab")
        assert m.wait(first["id"])["state"] == "completed"  # settled: its cost is spent
    # hold: the running first step goes on, the second (waiting for it) is held on Slurm
    inst = m.submit("chain", cluster=m.label, params={"seconds": 12}, project="lab")
    jobs = running_job_ids(m, inst["id"])
    assert jobs["s1"]["job_id"] and jobs["s1"]["state"] == "queued"
    exhaust()
    r = m.call("res", "POST", "/organization/workflow/submit", {"template": "sleepy", "cluster": m.label})
    assert r.status_code == 409 and r.json()["reason"] == "budget_exceeded", r.text
    deadline = time.monotonic() + 30  # the engine's sweep (5 s on the test hubs) applies the policy
    while "JobHeldUser" not in (reason := squeue_reason(m, jobs["s1"]["job_id"])):
        assert time.monotonic() < deadline, reason
        time.sleep(0.5)
    view = m.ok("res", "GET", f"/organization/workflow/instance/{inst['id']}")
    steps = {j["step"]: j for j in view["jobs"]}
    assert steps["s0"]["state"] in ("running", "completed"), steps
    assert steps["s1"]["accounting"]["budget_hold"] == bid
    # the billing admin raises the limit: the held step is released and the run completes
    m.ok("admin", "PATCH", f"/organization/budgets/{bid}", {"limit": "50.00"})
    view = m.wait(inst["id"], timeout=120)
    assert view["state"] == "completed", view
    assert len(m.records(inst["id"])) == 2
    # cancel: the organization's policy stops running work when the budget is exhausted
    m.ok("admin", "PATCH", f"/organization/budgets/{bid}", {"on_exhausted": "cancel"})
    inst = m.submit("sleepy", cluster=m.label, params={"seconds": 60}, project="lab")
    running_job_ids(m, inst["id"])
    # sacct counts whole seconds: a job cancelled in the second it started has Elapsed 0 and is
    # (rightly) charged nothing, so let it run measurably before the budget runs out
    time.sleep(2.5)
    exhaust()
    view = m.wait(inst["id"], timeout=60)
    assert view["state"] == "cancelled", view
    assert "budget is exhausted" in view["jobs"][0]["reason"] or view["jobs"][0]["state"] == "cancelled"
    (rec,) = m.records(inst["id"])  # what ran is charged, the rest of the reservation released
    assert rec["elapsed_s"] > 0
    assert view["reservation"]["state"] == "settled" and view["reservation"]["actual"] == rec["cost"]
    b = m.ok("admin", "GET", f"/organization/budgets/{bid}")
    assert b["reserved"] == "0.00" and b["exhausted"] is True
    assert cents(b["spent"]) == sum(
        cents(r["cost"]) for r in m.ok("admin", "GET", "/organization/usage/records")
    )
