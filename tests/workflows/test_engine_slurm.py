"""The workflow engine on the test bed's real Slurm, reached over real OpenSSH with a pinned host key."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
import pytest_asyncio

from jupyter_heroes import dbutil
from jupyter_heroes.orm import (
    Cluster,
    ClusterQueue,
    Job,
    Organization,
    User,
    WorkflowInstance,
    WorkflowTemplate,
)
from jupyter_heroes.workflows.engine import BackendPool, WorkflowEngine
from jupyter_heroes.workflows.events import EventBus
from jupyter_heroes.workflows.staging import LocalStoreStager
from jupyter_heroes.workflows.templates import load_template

pytestmark = pytest.mark.slurm
TEMPLATES = Path(__file__).parents[2] / "templates"


class SlurmWorld:
    def __init__(self, tmp_path: Path, cluster) -> None:
        self.tb = cluster
        url = f"sqlite:///{tmp_path / 'heroes.sqlite'}"
        dbutil.upgrade(url)
        self.sql = dbutil.make_engine(url)
        self.factory = dbutil.session_factory(self.sql)
        self.store = tmp_path / "store"
        ssh = cluster.ssh
        with dbutil.session_scope(self.factory) as s:
            org = Organization(name="orga")
            s.add(org)
            s.flush()
            s.add(User(name="alice"))
            c = Cluster(
                org_id=org.id,
                name="testbed",
                transport="ssh",
                scheduler="slurm",
                host=ssh.host,
                port=ssh.port,
                username=ssh.username,
                host_key=ssh.host_key,
                scratch_root=str(ssh.scratch_root) + "/heroes",
            )
            for p in cluster.partitions:
                c.queues.append(ClusterQueue(name=p))
            s.add(c)
            for f in sorted(TEMPLATES.glob("*.yaml")):
                t = load_template(f.read_text())
                s.add(WorkflowTemplate(org_id=org.id, name=t.name, version=t.version, spec=t.source))
            s.add(
                WorkflowTemplate(
                    org_id=org.id,
                    name="exits",
                    version=1,
                    spec={
                        "heroes_template": 1,
                        "name": "exits",
                        "version": 1,
                        "parameters": {"code": {"type": "integer", "default": 3, "min": 0, "max": 255}},
                        "steps": [
                            {
                                "name": "run",
                                "command": [
                                    "python3",
                                    "-c",
                                    "import sys; sys.exit(int(sys.argv[1]))",
                                    "{{ code }}",
                                ],
                            },
                            {"name": "after", "depends_on": ["run"], "command": ["true"]},
                        ],
                    },
                )
            )
        self.events = EventBus()
        self.engine = self.new_engine()

    def new_engine(self) -> WorkflowEngine:
        key = self.tb.ssh.private_key
        return WorkflowEngine(
            self.factory,
            BackendPool(key_loader=lambda c: key),
            LocalStoreStager(self.store),
            self.events,
            poll_interval=0.5,
        )

    def submit(self, template: str, params: dict | None = None, queue: str = "") -> str:
        with dbutil.session_scope(self.factory) as s:
            inst = self.engine.create_instance(
                s,
                org=s.query(Organization).one(),
                user=s.query(User).one(),
                template_row=s.query(WorkflowTemplate).filter_by(name=template).one(),
                params=params,
                cluster=s.query(Cluster).one(),
                queue=queue,
            )
            return inst.id

    def cluster_id(self) -> int:
        with dbutil.session_scope(self.factory) as s:
            return s.query(Cluster).one().id

    def jobs(self, iid: str) -> dict:
        with dbutil.session_scope(self.factory) as s:
            return {j.step: j for j in s.query(Job).filter_by(instance_id=iid)}

    def state(self, iid: str) -> str:
        with dbutil.session_scope(self.factory) as s:
            return s.get(WorkflowInstance, iid).state

    async def wait_final(self, iid: str, timeout: float = 120, seen: list | None = None) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await self.engine.poll_cluster(self.cluster_id())
            if seen is not None:
                seen.extend(j.state for j in self.jobs(iid).values())
            st = self.state(iid)
            if st in ("completed", "failed", "cancelled"):
                return st
            await asyncio.sleep(0.5)
        raise AssertionError(
            f"{iid} not final: { {k: (j.state, j.reason) for k, j in self.jobs(iid).items()} }"
        )


@pytest_asyncio.fixture
async def sw(tmp_path, slurm_cluster):
    w = SlurmWorld(tmp_path, slurm_cluster)
    yield w
    await w.engine.stop()
    await w.engine.backends.close()
    w.sql.dispose()


async def test_three_templates_end_to_end_with_accounting_and_heroes_environment(sw):
    mc = sw.submit("monte-carlo-pi", {"samples": 20000, "label": "a; $(id) `id` 'q'"}, queue="debug")
    sweep = sw.submit("parameter-sweep", {"points": 3, "x_min": 1.0, "x_max": 3.0})
    heat = sw.submit("heat-pipeline", {"cells": 30, "steps": 20}, queue="long")
    for iid in (mc, sweep, heat):
        await sw.engine.launch(iid)
    for iid in (mc, sweep, heat):
        assert await sw.wait_final(iid) == "completed", {
            k: (j.state, j.reason) for k, j in sw.jobs(iid).items()
        }
    res = sw.store / "orga" / "alice" / "results"
    mc_out = json.loads((res / mc / "result.json").read_text())
    assert mc_out["label"] == "a; $(id) `id` 'q'"
    env = mc_out["heroes_env"]
    assert env["HEROES_INSTANCE_WORKFLOW_ID"] == mc and env["HEROES_ORGANIZATION_NAME"] == "orga"
    assert env["HEROES_JOB_ID"] == sw.jobs(mc)["estimate"].scheduler_job_id
    assert {
        "HEROES_TEMPLATE_WORKFLOW_ID",
        "HEROES_USER_ID",
        "HEROES_ORGANIZATION_ID",
        "HEROES_LOGS_PATH",
    } <= set(env)
    xs = sorted(json.loads(p.read_text())["x"] for p in (res / sweep / "points").glob("point-*.json"))
    assert xs == [1.0, 2.0, 3.0]
    assert json.loads((res / heat / "summary.json").read_text())["cells"] == 30
    # accounting from sacct is recorded beside each job
    acct = sw.jobs(heat)["simulate"].accounting
    assert acct.get("state") == "COMPLETED" or acct.get("native_state", "").startswith("COMPLETED"), acct
    assert sw.jobs(mc)["estimate"].exit_code == 0


async def test_sshd_killed_mid_workflow_reconnects_and_completes(sw):
    iid = sw.submit("heat-pipeline", {"cells": 30, "steps": 200000})  # simulate runs a few seconds
    await sw.engine.launch(iid)
    await sw.engine.poll_cluster(sw.cluster_id())
    sw.tb.ssh.kill(sessions=True)  # the login node goes away with every connection to it
    stats = await sw.engine.poll_cluster(sw.cluster_id())  # the cluster is unreachable now
    assert stats.unknown == stats.jobs > 0
    assert all(j.state not in ("failed", "cancelled") for j in sw.jobs(iid).values())
    sw.tb.ssh.start()
    assert await sw.wait_final(iid, timeout=180) == "completed"


async def test_controller_down_30s_shows_unknown_then_correct_never_failed(sw):
    iid = sw.submit("monte-carlo-pi", {"samples": 20000})
    await sw.engine.launch(iid)
    seen: list[str] = []
    sw.tb.slurm.stop_controller()
    t0 = time.monotonic()
    try:
        stats = await sw.engine.poll_cluster(sw.cluster_id())
        assert stats.unknown == stats.jobs == 1
        seen.extend(j.state for j in sw.jobs(iid).values())
        assert seen[-1] == "unknown"
        await asyncio.sleep(max(0.0, 30 - (time.monotonic() - t0)))
    finally:
        sw.tb.slurm.start_controller()
    assert await sw.wait_final(iid, timeout=120, seen=seen) == "completed"
    assert "failed" not in seen


async def test_failed_job_gets_its_exit_code_and_stops_the_rest(sw):
    iid = sw.submit("exits", {"code": 3})
    await sw.engine.launch(iid)
    assert await sw.wait_final(iid) == "failed"
    deadline = time.monotonic() + 60  # sacct may lag: the engine asks again at the next polls
    while sw.jobs(iid)["run"].exit_code is None and time.monotonic() < deadline:
        await sw.engine.poll_cluster(sw.cluster_id())
        await asyncio.sleep(1)
    jobs = sw.jobs(iid)
    assert (jobs["run"].state, jobs["run"].exit_code) == ("failed", 3)
    assert jobs["after"].state == "cancelled"
