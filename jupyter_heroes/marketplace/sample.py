"""A small sample marketplace (the mayor, two vendors, two clients) for demos and tests.

:func:`seed` creates, in an empty migrated database:

- ``heroes`` (kind ``platform``): the mayor;
- ``hpc-centre`` (``provider``) with cluster ``galileo`` (queues ``debug`` and ``gpu``), and
  ``cloudy`` (``provider``) with cluster ``cloud1`` (queue ``c5``), plus ``appsoft`` (``provider``),
  an application vendor;
- clients ``acme`` (projects ``cfd`` and ``ml``, users ``alice`` and ``bob``) and ``globex`` (project
  ``crash``, user ``carol``), with a two-step workflow template ``solver`` each.

It publishes nothing: offers, applications and budgets are what callers want to exercise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from ..orm import (
    Cluster,
    ClusterQueue,
    Job,
    Organization,
    Project,
    User,
    WorkflowInstance,
    WorkflowTemplate,
    utcnow,
)

SOLVER = {
    "heroes_template": 1,
    "name": "solver",
    "version": 1,
    "application": "solver",
    "steps": [
        {
            "name": "main",
            "command": ["solver", "--input", "case.dat"],
            "resources": {"nodes": 2, "tasks": 8, "cpus_per_task": 2, "memory_mb": 4096, "gpus": 2},
        },
        {"name": "post", "command": ["post"], "depends_on": ["main"], "resources": {"nodes": 1, "tasks": 1}},
    ],
}


@dataclass
class Sample:
    """Ids of what :func:`seed` created, by name."""

    orgs: dict[str, int] = field(default_factory=dict)
    projects: dict[str, int] = field(default_factory=dict)  # "acme/cfd" -> id
    users: dict[str, int] = field(default_factory=dict)
    clusters: dict[str, int] = field(default_factory=dict)
    templates: dict[str, int] = field(default_factory=dict)  # org name -> solver template id


def seed(session: Session) -> Sample:
    s = Sample()
    for name, kind in (
        ("heroes", "platform"),
        ("hpc-centre", "provider"),
        ("cloudy", "provider"),
        ("appsoft", "provider"),
        ("acme", "client"),
        ("globex", "client"),
    ):
        org_row = Organization(name=name, display_name=name.replace("-", " ").title(), kind=kind)
        session.add(org_row)
        session.flush()
        s.orgs[name] = org_row.id
    for org, cname, queues in (
        ("hpc-centre", "galileo", [("debug", 0, 3600), ("gpu", 4, 86400)]),
        ("cloudy", "cloud1", [("c5", 0, None)]),
    ):
        c = Cluster(org_id=s.orgs[org], name=cname, transport="local", scheduler="local", site={"pue": 1.2})
        for qname, gpus, wall in queues:
            c.queues.append(
                ClusterQueue(
                    name=qname,
                    max_nodes=16,
                    cpus_per_node=48,
                    mem_per_node_mb=192000,
                    gpus_per_node=gpus,
                    max_walltime_s=wall,
                )
            )
        session.add(c)
        session.flush()
        s.clusters[cname] = c.id
    for org, projects in (("acme", ["cfd", "ml"]), ("globex", ["crash"])):
        for p in projects:
            prow = Project(org_id=s.orgs[org], name=p)
            session.add(prow)
            session.flush()
            s.projects[f"{org}/{p}"] = prow.id
        t = WorkflowTemplate(
            org_id=s.orgs[org], name="solver", version=1, application_id="solver", spec=SOLVER
        )
        session.add(t)
        session.flush()
        s.templates[org] = t.id
    for u in ("alice", "bob", "carol"):
        urow = User(name=u)
        session.add(urow)
        session.flush()
        s.users[u] = urow.id
    session.flush()
    return s


def add_run(
    session: Session,
    sample: Sample,
    *,
    org: str,
    user: str,
    project: str | None,
    cluster: str,
    queue: str,
    submitted: datetime | None = None,
    elapsed_s: float = 3600.0,
    state: str = "completed",
    energy_j: float | None = None,
) -> WorkflowInstance:
    """A workflow instance of the ``solver`` template whose ``main`` step ran *elapsed_s* seconds on
    *cluster*/*queue* (accounting as the scheduler would report it) and whose ``post`` step took a
    minute; both jobs in *state*."""
    submitted = submitted or utcnow()
    inst = WorkflowInstance(
        org_id=sample.orgs[org],
        project_id=sample.projects[f"{org}/{project}"] if project else None,
        user_id=sample.users[user],
        template_id=sample.templates[org],
        cluster_id=sample.clusters[cluster],
        state=state,
    )
    session.add(inst)
    session.flush()
    start = submitted + timedelta(seconds=30)
    for step, secs, cpus, nodes in (("main", elapsed_s, 16, 2), ("post", 60.0, 1, 1)):
        acct = {"elapsed_s": secs, "alloc_cpus": cpus, "nnodes": nodes}
        if energy_j is not None:
            acct["consumed_energy_j"] = energy_j if step == "main" else 0.0
        session.add(
            Job(
                instance_id=inst.id,
                step=step,
                cluster_id=sample.clusters[cluster],
                queue=queue,
                state=state,
                submitted=submitted,
                started=start,
                finished=start + timedelta(seconds=secs),
                accounting=acct,
            )
        )
    session.flush()
    return inst
