"""The HEROES service SIGKILLed at random points during a 20-job workflow on the test bed's real Slurm
(over real SSH), restarted by JupyterHub each time: every job accounted for, none submitted twice,
none lost.

The kills land anywhere: during the background submission of the 20 steps (between an ``sbatch``
and the commit of its id), while jobs are queued or running, while outputs are being recorded. Each
restart runs the engine's recovery, which adopts jobs it finds by name and sends only what never
reached Slurm.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import random
import signal
import time

import pytest

from jupyter_heroes.clusters.slurm import SlurmScheduler
from jupyter_heroes.clusters.ssh import SSHTransport
from jupyter_heroes.testing.base import read_pidfile
from jupyter_heroes.testing.plugin_hub import PLATFORM_ADMIN
from jupyter_heroes.workflows.engine import job_name

pytestmark = [pytest.mark.slurm, pytest.mark.hub]
ORG = "crashco"
STEPS = 20


def template() -> dict:
    steps = []
    for i in range(1, STEPS + 1):
        step = {
            "name": f"s{i:02d}",
            "command": ["python3", "-c", "import sys, time; time.sleep(float(sys.argv[1]))", "{{ seconds }}"],
            "resources": {"memory_mb": 64, "walltime": "00:05:00"},
        }
        if i > STEPS // 2:  # the second half waits for the first: afterok chains across restarts
            step["depends_on"] = [f"s{i - STEPS // 2:02d}"]
        steps.append(step)
    return {
        "heroes_template": 1,
        "name": "twenty",
        "version": 1,
        "parameters": {"seconds": {"type": "number", "default": 2, "min": 0, "max": 60}},
        "steps": steps,
    }


def ok(hub, token, method, path, body=None, status=200, **kw):
    r = hub.api(method, path, token, body, **kw)
    assert r.status_code == status, f"{method} {path}: {r.status_code} {r.text}"
    return r.json() if r.content else None


def kill_service(hub) -> int:
    pid = read_pidfile(hub.service_pid_file)
    assert pid, "no service pid"
    os.kill(pid, signal.SIGKILL)
    return pid


def wait_back(hub, token, old_pid, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = read_pidfile(hub.service_pid_file)
        if pid and pid != old_pid:
            r = hub.api("GET", "/organization/auth/me", token)
            if r.status_code == 200:
                return
        time.sleep(0.2)
    raise AssertionError("the hub did not restart the service")


def test_sigkill_at_random_points_loses_and_duplicates_nothing(hub_factory, slurm_cluster):
    seed = int(os.environ.get("HEROES_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    print(f"crash test seed {seed} (HEROES_CRASH_SEED to replay)")
    hub = hub_factory(service_restart_poll=1)
    admin = hub.create_user(PLATFORM_ADMIN)
    user = hub.create_user("crash-res")
    ok(hub, admin, "POST", "/heroes/admin/organizations", {"name": ORG}, status=201)
    ok(
        hub,
        admin,
        "POST",
        "/organization/admin/users",
        {"username": "crash-res", "roles": ["org-admin", "workflow-admin", "researcher"]},
        status=201,
        org=ORG,
    )
    ssh = slurm_cluster.ssh
    ok(
        hub,
        user,
        "POST",
        "/organization/admin/cluster",
        {
            "name": "testbed",
            "host": ssh.host,
            "port": ssh.port,
            "username": ssh.username,
            "host_key": ssh.host_key,
            "private_key": ssh.private_key,
            "scratch_root": f"{ssh.scratch_root}/crash",
            "queues": [{"name": p} for p in slurm_cluster.partitions],
        },
        status=201,
    )
    ok(hub, user, "POST", "/organization/admin/workflow/template", {"template": template()}, status=201)

    inst = ok(
        hub,
        user,
        "POST",
        "/organization/workflow/submit",
        {"template": "twenty", "cluster": "testbed", "params": {"seconds": 2}},
        status=201,
    )
    iid = inst["id"]
    kills = 0
    # first kill during the background submission of the 20 steps, the rest while jobs run or finish
    for delay in [rng.uniform(0.0, 0.6), *(rng.uniform(0.5, 3.0) for _ in range(3))]:
        time.sleep(delay)
        old = kill_service(hub)
        kills += 1
        wait_back(hub, user, old)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        view = ok(hub, user, "GET", f"/organization/workflow/instance/{iid}")
        if view["state"] in ("completed", "failed", "cancelled"):
            break
        time.sleep(1)
    jobs = {j["step"]: j for j in view["jobs"]}
    assert view["state"] == "completed", (seed, {k: (j["state"], j["reason"]) for k, j in jobs.items()})
    assert sorted(jobs) == [f"s{i:02d}" for i in range(1, STEPS + 1)]
    assert all(j["state"] == "completed" and j["exit_code"] == 0 for j in jobs.values())

    # ask Slurm itself: exactly one job per step, the one the platform recorded
    async def found_on_slurm() -> dict[str, list[str]]:
        t = SSHTransport(
            ssh.host, port=ssh.port, username=ssh.username, host_key=ssh.host_key, private_key=ssh.private_key
        )
        try:
            sched = SlurmScheduler(t)
            return {step: await sched.find_by_name(job_name(iid, step)) for step in jobs}
        finally:
            await t.close()

    # in a thread: a session-long Playwright browser leaves a running event loop on this one
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        found = pool.submit(asyncio.run, found_on_slurm()).result(timeout=120)
    assert {s: ids for s, ids in found.items() if len(ids) != 1} == {}, (seed, "submitted twice or lost")
    assert {s: ids[0] for s, ids in found.items()} == {s: j["job_id"] for s, j in jobs.items()}
    assert kills == 4


def test_compliance_check_of_the_test_bed_cluster_item_by_item(hub_factory, slurm_cluster):
    """Enrolment, then POST .../cluster/{id}/check against the real Slurm over SSH; a wrong pinned
    host key makes the check fail with a message saying so."""
    hub = hub_factory()
    admin = hub.create_user(PLATFORM_ADMIN)
    user = hub.create_user("check-admin")
    ok(hub, admin, "POST", "/heroes/admin/organizations", {"name": "checkco"}, status=201)
    ok(
        hub,
        admin,
        "POST",
        "/organization/admin/users",
        {"username": "check-admin", "roles": ["org-admin"]},
        status=201,
        org="checkco",
    )
    ssh = slurm_cluster.ssh
    body = {
        "host": ssh.host,
        "port": ssh.port,
        "username": ssh.username,
        "private_key": ssh.private_key,
        "scratch_root": f"{ssh.scratch_root}/check",
        "queues": [{"name": "debug"}],
    }
    good = ok(
        hub,
        user,
        "POST",
        "/organization/admin/cluster",
        {**body, "name": "good", "host_key": ssh.host_key},
        status=201,
    )
    report = ok(hub, user, "POST", f"/organization/admin/cluster/{good['id']}/check")
    items = {i["name"]: i for i in report["items"]}
    assert report["compliant"] is True, report
    for name in ("sbatch present", "squeue present", "sacct present", "scancel present", "Slurm version"):
        assert items[name]["status"] == "ok", items
    assert any("container" in n.lower() or "apptainer" in n.lower() for n in items), items
    assert any("scratch" in n.lower() for n in items), items
    # a host key that is not the server's: refused, and the report says why
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    other = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    bad = ok(
        hub,
        user,
        "POST",
        "/organization/admin/cluster",
        {**body, "name": "spoofed", "host_key": other},
        status=201,
    )
    report = ok(hub, user, "POST", f"/organization/admin/cluster/{bad['id']}/check")
    assert report["compliant"] is False
    assert "host key" in json.dumps(report).lower(), report
    # another organization's admin cannot run it: 404
    r = hub.api("POST", f"/organization/admin/cluster/{good['id']}/check", admin, org="heroes")
    assert r.status_code == 404, r.text
