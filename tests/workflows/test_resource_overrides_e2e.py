"""Accepting the decision's advice, end to end on the test bed: a researcher runs a short workflow a
few times on the vendor's Slurm queue (real Slurm over real SSH), asks for a decision, which now
advises a walltime far below the template's, submits with ``accept_advice`` — and Slurm itself
(``scontrol show job``, over the test bed's SSH) holds the advised time limit and memory.

The service runs with ``AdvisorOptions.initial_aversion=0.5`` (half the request's seconds per kill,
as in tests/decision/test_store.py): with the default (200 requests, warm-started after 300 finished jobs) the advisor keeps the request
until an organization has a long record of unharmed jobs, far more than a test can run.
"""

from __future__ import annotations

import re
import time
from decimal import Decimal
from typing import Any

import pytest
from test_market_e2e import FINAL, Market, template

pytestmark = [pytest.mark.slurm, pytest.mark.hub]

ADVISOR = """
for _s in c.JupyterHub.services:
    if _s.get("name") == "heroes":
        _s["command"] = [*_s["command"], "--AdvisorOptions.initial_aversion=0.5"]
"""


@pytest.fixture(scope="module")
def advised(hub_factory, slurm_cluster) -> Market:
    hub = hub_factory(extra_config=ADVISOR)
    m = Market(hub, slurm_cluster, "adv")
    tpl = template("napper", seconds_default=1)
    tpl["steps"][0]["resources"] = {"memory_mb": 256, "walltime": "00:05:00"}
    m.ok("admin", "POST", "/organization/admin/workflow/template", {"template": tpl}, 201)
    m.open_budget()
    return m


def scontrol_job(m: Market, job_id: str) -> dict[str, str]:
    """``scontrol show job`` as the cluster's account sees it, as key=value pairs."""
    return dict(re.findall(r"(\w+)=(\S*)", m.on_cluster("scontrol", "show", "job", "--oneliner", job_id)))


def hms(seconds: int) -> str:
    h, rest = divmod(int(seconds), 3600)
    return f"{h:02d}:{rest // 60:02d}:{rest % 60:02d}"


def finished(m: Market, ids: list[str], timeout: float = 180) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        views = [m.ok("res", "GET", f"/organization/workflow/instance/{i}") for i in ids]
        if all(v["state"] in FINAL for v in views):
            return views
        assert time.monotonic() < deadline, [(v["id"], v["state"], v["jobs"]) for v in views]
        time.sleep(0.5)


def test_slurm_gets_the_advised_time_limit_and_memory(advised):
    m = advised
    # a short history: three runs of about a second under the template's 5 minutes
    runs = [m.submit("napper", cluster=m.label, project="lab")["id"] for _ in range(3)]
    assert all(v["state"] == "completed" for v in finished(m, runs)), runs
    plain_id = [j["job_id"] for j in m.ok("res", "GET", f"/organization/workflow/instance/{runs[0]}")["jobs"]]
    assert scontrol_job(m, plain_id[0])["TimeLimit"] == "00:05:00"  # the template's, as submitted
    d = m.ok("res", "POST", "/organization/decision/decide", {"template": "napper"}, 201)
    row = {c["key"]: c for c in d["candidates"]}[f"{m.label}/debug"]
    advice = row["advice"]["s0"]
    assert advice["walltime_s"] < 300 and advice["walltime_s"] % 60 == 0, advice
    inst = m.submit("napper", cluster=m.label, project="lab", decision=d["decision"], accept_advice=True)
    s0 = inst["resources"]["s0"]
    assert (s0["walltime_s"], s0["memory_mb"], s0["source"]) == (
        advice["walltime_s"],
        advice["memory_mb"],
        "advice",
    )
    (view,) = finished(m, [inst["id"]])
    assert view["state"] == "completed", view
    job = scontrol_job(m, view["jobs"][0]["job_id"])
    assert job["JobName"] == f"h{inst['id']}-s0"
    assert job["TimeLimit"] == hms(advice["walltime_s"]), (job["TimeLimit"], advice)
    assert job["MinMemoryNode"] == f"{advice['memory_mb']}M", (job.get("MinMemoryNode"), advice)
    # its reservation: the decision's prediction, never above the advised walltime's upper bound
    # (0.10 fixed + 1 core x the advised walltime x 36.00/h)
    res = view["reservation"]
    bound = Decimal("0.10") + Decimal(advice["walltime_s"]) / 3600 * Decimal("36.00")
    assert Decimal(res["predicted"]) <= bound + Decimal("0.01") < Decimal("3.10"), (res, advice)
    print(
        f"advised {advice['walltime']} / {advice['memory_mb']} MB ({advice['basis']}); Slurm: "
        f"TimeLimit={job['TimeLimit']} MinMemoryNode={job['MinMemoryNode']}; reserved {res['predicted']} EUR"
    )
