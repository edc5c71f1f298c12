"""Candidates: site configuration, hard constraints with every reason, queue-wait estimates."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from jupyter_heroes import orm
from jupyter_heroes.clusters.ssh import SSHTransport
from jupyter_heroes.decision.candidates import (
    DEFAULT_PUE,
    CandidateError,
    Requirements,
    SbatchTestOnlyEstimator,
    TypicalWaitEstimator,
    WaitEstimateError,
    candidates_from_orm,
    check_feasible,
    estimate_waits,
    make_candidate,
    parse_sbatch_test_only,
    sbatch_test_only_argv,
    split_feasible,
    validate_site,
)
from jupyter_heroes.decision.energy import GENERIC_TDP_PER_CORE_W
from jupyter_heroes.workflows.templates import Resources, load_template

NOW = datetime(2026, 11, 21, 21, 0, tzinfo=timezone.utc)

TEMPLATE = load_template(
    {
        "heroes_template": 1,
        "name": "needs-much",
        "version": 1,
        "steps": [
            {
                "name": "prep",
                "command": ["true"],
                "resources": {"nodes": 1, "tasks": 1, "memory_mb": 1000, "walltime": "00:10:00"},
            },
            {
                "name": "solve",
                "command": ["solver"],
                "depends_on": ["prep"],
                "container": "docker://ghcr.io/org/solver:1.0",
                "resources": {
                    "nodes": 4,
                    "tasks": 64,
                    "cpus_per_task": 2,
                    "memory_mb": 64000,
                    "gpus": 8,
                    "walltime": "2-00:00:00",
                },
            },
        ],
    }
)

BIG = dict(max_nodes=16, cpus_per_node=64, mem_per_node_mb=256000, gpus_per_node=4, max_walltime_s=7 * 86400)


def test_a_queue_that_fits_everything():
    c = make_candidate("big", "gpu", container_runtime="apptainer", **BIG)
    assert check_feasible(c, TEMPLATE) == []
    assert c.key == "big/gpu"


def test_every_broken_constraint_is_listed():
    c = make_candidate(
        "small",
        "debug",
        max_nodes=2,
        cpus_per_node=16,
        mem_per_node_mb=32000,
        gpus_per_node=1,
        max_walltime_s=3600,
        arch="aarch64",
        site={"licences": ["gromacs"]},
    )
    req = Requirements(
        arch="x86_64", licences=("ansys", "gromacs"), data_location="s3:eu-west-1", data_locality="require"
    )
    reasons = check_feasible(c, TEMPLATE, req)
    assert reasons == [
        "step 'solve' needs 4 nodes; small/debug allows at most 2",
        "step 'solve' needs 32 cores per node; small/debug has 16",
        "step 'solve' needs 64000 MB per node; small/debug has 32000 MB",
        "step 'solve' needs 2 GPU(s) per node; small/debug has 1",
        "step 'solve' asks for 2-00:00:00 of walltime; small/debug allows 01:00:00",
        "step 'solve' runs in a container (docker://ghcr.io/org/solver:1.0); small has no container runtime",
        "needs the x86_64 architecture; small/debug is aarch64",
        "needs licence(s) ansys, not available on small",
        "the data must stay at s3:eu-west-1; small is not there",
    ]


def test_data_locality_prefer_is_not_a_constraint_and_split_keeps_reasons():
    here = make_candidate(
        "here", "q", container_runtime="apptainer", site={"data_locations": ["s3:eu-west-1"]}, **BIG
    )
    there = make_candidate("there", "q", container_runtime="apptainer", **BIG)
    small = make_candidate("small", "q", max_nodes=1)
    req = Requirements(data_location="s3:eu-west-1", input_gb=10)
    assert check_feasible(there, TEMPLATE, req) == []
    assert req.data_is_local(here) and not req.data_is_local(there)
    ok, excluded = split_feasible([here, there, small], TEMPLATE, req)
    assert [c.key for c in ok] == ["here/q", "there/q"]
    assert [(e.key, e.kind) for e in excluded] == [("small/q", "infeasible")]
    assert "allows at most 1" in excluded[0].reasons[0]


def test_site_config_and_queue_overrides():
    site = {
        "pue": 1.2,
        "grid_zone": "FR",
        "relative_speed": 1.5,
        "typical_wait_s": 600,
        "timezone": "Europe/Paris",
        "power": {"idle_w": 90, "max_w": 350, "cores": 64},
        "offer": {"currency": "EUR", "core_hour": "0.012"},
        "container_runtimes": ["singularity"],
        "queues": {"long": {"offer": {"currency": "EUR", "core_hour": "0.006"}, "relative_speed": 1.0}},
    }
    debug = make_candidate("c", "debug", container_runtime="apptainer", site=site)
    long = make_candidate("c", "long", site=site)
    assert debug.offer.rates["core_hour"] == Decimal("0.012")
    assert long.offer.rates["core_hour"] == Decimal("0.006")
    assert (debug.relative_speed, long.relative_speed) == (1.5, 1.0)
    assert debug.container_runtimes == {"apptainer", "singularity"}
    assert debug.pue == 1.2 and debug.pue_declared and debug.grid_zone == "FR"
    assert debug.tz() == ZoneInfo("Europe/Paris")
    bare = make_candidate("bare", "q")
    assert bare.offer is None and not bare.pue_declared and "no power model" in bare.power.describe()


def test_cloud_site_takes_limits_and_price_from_the_catalog():
    c = make_candidate(
        "aws",
        "hpc",
        site={
            "kind": "cloud",
            "cloud": {"provider": "aws", "instance_type": "p4d.24xlarge", "region": "eu-west-1"},
        },
    )
    assert (c.cpus_per_node, c.mem_per_node_mb, c.gpus_per_node) == (96, 1152 * 1024, 8)
    assert str(c.offer.rates["node_hour"]) == "35.39655" and c.offer.currency == "USD"
    assert "list price" in c.offer.source


@pytest.mark.parametrize(
    ("site", "message"),
    [
        ({"colour": "green"}, r"cluster 'x' site: unknown field\(s\) \['colour'\]"),
        ({"kind": "grid"}, r"site.kind: one of \['hpc', 'cloud'\]"),
        ({"offer": {"core_hour": "-1"}}, r"site.offer.core_hour: '-1' is negative"),
        ({"offer": {"core_hour": "cheap"}}, r"site.offer.core_hour: 'cheap' is not a number"),
        ({"power": {"idle_w": 10}}, "site.power: give both"),
        ({"pue": 0.5}, "site.pue: a PUE is a number between 1.0 and 5.0"),
        ({"relative_speed": 0}, "site.relative_speed: expected a positive number"),
        ({"typical_wait_s": -1}, "site.typical_wait_s: expected a non-negative number"),
        ({"timezone": "Mars/Olympus"}, "site.timezone: 'Mars/Olympus' is not a time zone"),
        ({"grid_zone": "FR; rm -rf"}, "site.grid_zone"),
        ({"licences": "ansys"}, "site.licences: expected a list of names"),
        ({"cloud": {"provider": "aws", "instance_type": "nope.large"}}, "site.cloud: no list price"),
        ({"queues": {"q": {"colour": 1}}}, r"site.queues.q: a mapping of overrides"),
    ],
)
def test_bad_site_config_names_the_field(site, message):
    with pytest.raises(CandidateError, match=message):
        make_candidate("x", "q", site=site)


def test_validate_site_checks_every_queue_override():
    validate_site({"offer": {"core_hour": "0.01"}, "queues": {"long": {"offer": {"core_hour": "0.02"}}}})
    with pytest.raises(
        CandidateError, match=r"cluster 'hpc1' site.queues.long.offer.core_hour: '-0.02' is negative"
    ):
        validate_site({"queues": {"long": {"offer": {"core_hour": "-0.02"}}}}, "hpc1")
    with pytest.raises(CandidateError, match="expected a mapping"):
        validate_site([], "hpc1")


def test_from_orm_rows_only_the_organizations_enabled_clusters():
    engine = create_engine("sqlite://")
    orm.Base.metadata.create_all(engine)
    with Session(engine) as db:
        a, b = orm.Organization(name="a"), orm.Organization(name="b")
        db.add_all([a, b])
        db.flush()
        good = orm.Cluster(
            org_id=a.id, name="good", container_runtime="apptainer", site={"pue": 1.3, "grid_zone": "DE"}
        )
        good.queues = [
            orm.ClusterQueue(
                name="debug", max_nodes=2, cpus_per_node=8, mem_per_node_mb=16000, max_walltime_s=3600
            ),
            orm.ClusterQueue(name="gpu", max_nodes=1, cpus_per_node=32, gpus_per_node=4, arch="aarch64"),
        ]
        off = orm.Cluster(org_id=a.id, name="off", enabled=False, queues=[orm.ClusterQueue(name="q")])
        bad = orm.Cluster(
            org_id=a.id, name="bad", site={"offer": {"core_hour": "-2"}}, queues=[orm.ClusterQueue(name="q")]
        )
        other = orm.Cluster(org_id=b.id, name="other", queues=[orm.ClusterQueue(name="q")])
        db.add_all([good, off, bad, other])
        db.commit()
        cands, excluded = candidates_from_orm(db.query(orm.Cluster).all(), a.id)
    assert sorted(c.key for c in cands) == ["good/debug", "good/gpu"]
    gpu = next(c for c in cands if c.queue == "gpu")
    assert (gpu.gpus_per_node, gpu.arch, gpu.container_runtimes, gpu.pue) == (
        4,
        "aarch64",
        {"apptainer"},
        1.3,
    )
    assert gpu.cluster_id is not None
    assert [(e.key, e.kind) for e in excluded] == [("bad/q", "misconfigured")]
    assert "negative" in excluded[0].reasons[0]


# --- queue wait -------------------------------------------------------------------------------


def test_parse_sbatch_test_only():
    out = "sbatch: Job 123 to start at 2026-11-21T22:00:00 using 1 processors on nodes localhost in partition debug"
    t = parse_sbatch_test_only(out)
    assert (t.job_id, t.processors, t.nodes, t.partition) == (123, 1, "localhost", "debug")
    assert t.start == datetime(2026, 11, 21, 22, 0, tzinfo=timezone.utc)
    paris = parse_sbatch_test_only(out.replace("nodes localhost", "nodes n[01-04]"), ZoneInfo("Europe/Paris"))
    assert paris.start.astimezone(timezone.utc) == datetime(2026, 11, 21, 21, 0, tzinfo=timezone.utc)
    assert paris.nodes == "n[01-04]"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "sbatch: error: Batch job submission failed: Requested node configuration is not available",
            "Requested node configuration is not available",
        ),
        ("something else", "unexpected sbatch --test-only output"),
        (
            "sbatch: Job 5 to start at 2026-13-45T99:00:00 using 1 processors on nodes a in partition b",
            "SLURM_TIME_FORMAT",
        ),
        ("", "unexpected"),
    ],
)
def test_parse_sbatch_test_only_errors(text, message):
    with pytest.raises(WaitEstimateError, match=message):
        parse_sbatch_test_only(text)


def test_test_only_argv_is_a_list_of_separate_arguments():
    c = make_candidate("c", "debug; rm -rf /")  # a hostile queue name stays one argument
    argv = sbatch_test_only_argv(
        c, Resources(nodes=2, tasks=4, cpus_per_task=2, memory_mb=1000, gpus=1, walltime_s=90)
    )
    assert argv == [
        "env",
        "SLURM_TIME_FORMAT=standard",
        "sbatch",
        "--test-only",
        "--partition=debug; rm -rf /",
        "--nodes=2",
        "--ntasks=4",
        "--cpus-per-task=2",
        "--mem=1000M",
        "--time=2",
        "--gpus=1",
        "--wrap=true",
    ]


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str


class ScriptedCluster:
    """Stand-in for a cluster's transport (the boundary): answers ``run(argv)`` with what Slurm 22.05
    prints. The real call over SSH is wired by the engine owner against the Slurm test bed."""

    def __init__(
        self, test_only: Result, squeue: Result | None = None, fail: Exception | None = None
    ) -> None:
        self.test_only, self.squeue, self.fail = test_only, squeue, fail
        self.calls: list[list[str]] = []

    async def run(self, argv, *, timeout=None):
        self.calls.append(list(argv))
        if self.fail:
            raise self.fail
        return self.test_only if "--test-only" in argv else self.squeue


async def test_sbatch_estimator_start_pending_refusal_and_fallback():
    a = make_candidate("a", "debug")
    b = make_candidate("b", "debug")
    c = make_candidate("c", "debug", site={"typical_wait_s": 900})
    d = make_candidate("d", "debug", site={"typical_wait_s": 60})
    clusters = {
        "a": ScriptedCluster(
            Result(
                0,
                "",
                "sbatch: Job 7 to start at 2026-11-21T23:30:00 using 2 processors on nodes n1 in partition debug\n",
            ),
            Result(0, "101\n102\n103\n", ""),
        ),
        "b": ScriptedCluster(
            Result(
                1,
                "",
                "sbatch: error: Batch job submission failed: Requested node configuration is not available\n",
            )
        ),
        "c": ScriptedCluster(Result(0, "", ""), fail=ConnectionError("connection reset")),
        "d": ScriptedCluster(
            Result(
                1,
                "",
                "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)\n",
            )
        ),
    }
    est = SbatchTestOnlyEstimator(clusters)
    waits = await estimate_waits(est, [a, b, c, d], Resources(), NOW)
    assert waits["a/debug"].start == datetime(2026, 11, 21, 23, 30, tzinfo=timezone.utc)
    assert waits["a/debug"].pending_jobs == 3 and waits["a/debug"].source == "sbatch --test-only"
    assert waits["b/debug"].refused == (
        "Slurm refuses the job: Batch job submission failed: Requested node configuration is not available"
    )
    assert waits["c/debug"].start == NOW + timedelta(seconds=900) and waits["c/debug"].refused is None
    assert "live estimate failed: c: connection reset" in waits["c/debug"].source
    assert waits["d/debug"].refused is None and "Unable to contact" in waits["d/debug"].source
    assert clusters["a"].calls[1][0] == "squeue"


@pytest.mark.slurm
async def test_wait_estimates_from_the_real_slurm_over_ssh(slurm_cluster):
    ssh = slurm_cluster.ssh
    transport = SSHTransport(
        ssh.host, port=ssh.port, username=ssh.username, host_key=ssh.host_key, private_key=ssh.private_key
    )
    debug = make_candidate("heroes", "debug")
    nosuch = make_candidate("heroes", "no-such-partition")
    now = datetime.now(timezone.utc)
    try:
        est = SbatchTestOnlyEstimator({"heroes": transport})
        waits = await estimate_waits(est, [debug, nosuch], Resources(), now)
    finally:
        await transport.close()
    w = waits["heroes/debug"]
    assert w.source == "sbatch --test-only" and w.refused is None
    assert now - timedelta(seconds=5) <= w.start <= now + timedelta(minutes=10)
    assert w.pending_jobs is not None and w.pending_jobs >= 0
    assert waits["heroes/no-such-partition"].refused == (
        "Slurm refuses the job: invalid partition specified: no-such-partition"
    )


async def test_typical_wait_estimator():
    c = make_candidate("c", "q", site={"typical_wait_s": 120})
    w = await TypicalWaitEstimator().estimate(c, Resources(), NOW)
    assert w.start == NOW + timedelta(seconds=120) and "typical wait" in w.source
    w0 = await TypicalWaitEstimator().estimate(make_candidate("d", "q"), Resources(), NOW)
    assert w0.start == NOW and "assumed 0" in w0.source


def test_requirements_from_dict():
    r = Requirements.from_dict({"arch": "x86_64", "licences": ["ansys"], "input_gb": 2.5})
    assert r.licences == ("ansys",) and r.input_gb == 2.5
    with pytest.raises(ValueError, match="unknown field"):
        Requirements.from_dict({"gpu": 1})
    with pytest.raises(ValueError, match="data_locality"):
        Requirements.from_dict({"data_locality": "maybe"})
    with pytest.raises(ValueError, match="input_gb"):
        Requirements.from_dict({"input_gb": -1})
    with pytest.raises(ValueError, match="licences"):
        Requirements.from_dict({"licences": "ansys"})


def test_site_examples_in_the_user_docs_are_valid():
    doc = (Path(__file__).parents[2] / "docs" / "user" / "decision.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", doc, re.S)
    assert len(blocks) == 2, "docs/user/decision.md lost its site examples"
    for block in blocks:
        validate_site(yaml.safe_load(block), "doc")
    assert f"assumed at {DEFAULT_PUE}" in doc
    assert f"assumed to draw {GENERIC_TDP_PER_CORE_W:g} W per core" in doc
