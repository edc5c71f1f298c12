"""The marketplace the ``test_market_*`` modules share, built once per hub on top of ``world``.

Through the API: the platform admin creates three vendors (organizations of kind ``provider``) and
a client organization of our own (``mkt-client``, so budgets, enablements and ledger rows never
touch what other service tests do in acme and globex), adds their users, enrols the vendors'
clusters; the vendors publish; the client's admin enables.

Ledger rows are written by the domain layer (:mod:`jupyter_heroes.accounting.ledger`) exactly as the
workflow engine does when jobs finish: the jobs are inserted as finished (a real run is what
``tests/workflows`` covers) and ``record_instance`` prices them under the versions in force at their
submission. Three runs:

=====  =====  =======  ======================  =====================  ==============
run    user   project  offer (version)         resources              licence
=====  =====  =======  ======================  =====================  ==============
A      rita   lab      hpc-debug v1            0.50 + 10 x 0.01 EUR   cfd-solver 25
B      rob    lab      hpc-debug v2            0.50 + 10 x 0.02 EUR   -
C      rita   -        cloud-c5 v1             1 x 1.25 USD           -
=====  =====  =======  ======================  =====================  ==============
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from jupyter_heroes import orm
from jupyter_heroes.accounting.ledger import record_instance
from jupyter_heroes.marketplace.offers import pin_job
from jupyter_heroes.orm_market import MarketOffer
from jupyter_heroes.testing.plugin_hub import PLATFORM_ADMIN

from .conftest import ACME, OnWorld, World, template_doc

CLIENT = "mkt-client"
HPC = "hpc-vendor"
CLOUD = "cloud-vendor"
SOFT = "soft-vendor"

#: user -> (organization, roles, projects)
USERS: dict[str, tuple[str, list[str], list[str]]] = {
    "hpc-pub": (HPC, ["resource-provider"], []),
    "cloud-pub": (CLOUD, ["resource-provider", "application-provider"], []),
    "soft-pub": (SOFT, ["application-provider"], []),
    "mkt-admin": (CLIENT, ["org-admin"], []),
    "mkt-bill": (CLIENT, ["billing-admin"], []),
    "mkt-rita": (CLIENT, ["researcher"], ["lab"]),
    "mkt-rob": (CLIENT, ["researcher"], ["lab"]),
}
HPC_V1 = {"currency": "EUR", "fixed": "0.50", "core_hour": "0.01"}
HPC_V2 = {"currency": "EUR", "fixed": "0.50", "core_hour": "0.02"}
CLOUD_PRICE = {"currency": "USD", "node_hour": "1.25"}
APP_PRICE = {"currency": "EUR", "fixed": "25.00", "fixed_per": "run"}


@dataclass
class Market(OnWorld):
    world: World
    offers: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> API view at publication
    apps: dict[str, dict[str, Any]] = field(default_factory=dict)
    budgets: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, str] = field(default_factory=dict)  # A/B/C -> workflow instance id


def _seed_run(
    world: World, *, user: str, project: str | None, offer: str, queue: str, app: int | None
) -> str:
    """A finished one-job run of ``lab-flow`` on the offer's cluster (1 node, 10 cores, one hour),
    pinned and recorded in the ledger as the engine does."""
    with world.db() as s:
        org = s.scalar(select(orm.Organization).where(orm.Organization.name == CLIENT))
        uid = s.scalar(select(orm.User.id).where(orm.User.name == user))
        pid = (
            s.scalar(select(orm.Project.id).where(orm.Project.org_id == org.id, orm.Project.name == project))
            if project
            else None
        )
        tid = s.scalar(
            select(orm.WorkflowTemplate.id).where(
                orm.WorkflowTemplate.org_id == org.id, orm.WorkflowTemplate.name == "lab-flow"
            )
        )
        cluster_id = s.scalar(select(MarketOffer.cluster_id).where(MarketOffer.name == offer))
        now = orm.utcnow()
        inst = orm.WorkflowInstance(
            org_id=org.id,
            project_id=pid,
            user_id=uid,
            template_id=tid,
            cluster_id=cluster_id,
            state="completed",
        )
        s.add(inst)
        s.flush()
        job = orm.Job(
            instance_id=inst.id,
            step="main",
            cluster_id=cluster_id,
            queue=queue,
            state="completed",
            exit_code=0,
            submitted=now,
            started=now - timedelta(hours=1),
            finished=now,
            accounting={"elapsed_s": 3600.0, "alloc_cpus": 10, "nnodes": 1, "consumed_energy_j": 7.2e6},
        )
        s.add(job)
        s.flush()
        pin_job(s, job.id, application_id=app)
        record_instance(s, inst.id)
        s.commit()
        return inst.id


def build(world: World) -> Market:
    m = Market(world)
    hub = world.hub
    for name in USERS:
        world.tokens[name] = hub.create_user(name)
        world.secrets[f"token:{name}"] = world.tokens[name]
    for org, kind in ((HPC, "provider"), (CLOUD, "provider"), (SOFT, "provider"), (CLIENT, "client")):
        m.ok(PLATFORM_ADMIN, "POST", "/heroes/admin/organizations", {"name": org, "kind": kind}, status=201)
    # the platform staff set up the vendors: users and enrolled clusters
    for user, (org, roles, _p) in USERS.items():
        if org != CLIENT:
            m.ok(
                PLATFORM_ADMIN,
                "POST",
                "/organization/admin/users",
                {"username": user, "roles": roles},
                201,
                org=org,
            )
    for org, cluster, queues in ((HPC, "hpc-one", ["debug", "gpu"]), (CLOUD, "cloud-one", ["c5"])):
        m.ok(
            PLATFORM_ADMIN,
            "POST",
            "/organization/admin/cluster",
            {
                "name": cluster,
                "transport": "local",
                "scheduler": "local",
                "queues": [{"name": q, "cpus_per_node": 16} for q in queues],
            },
            status=201,
            org=org,
        )
    # the client organization: its administrator, who adds the others, a project and a template
    m.ok(
        PLATFORM_ADMIN,
        "POST",
        "/organization/admin/users",
        {"username": "mkt-admin", "roles": ["org-admin"]},
        201,
        org=CLIENT,
    )
    m.ok("mkt-admin", "POST", "/organization/admin/groups", {"name": "lab"}, status=201)
    for user, (org, roles, projects) in USERS.items():
        if org == CLIENT and user != "mkt-admin":
            m.ok(
                "mkt-admin",
                "POST",
                "/organization/admin/users",
                {"username": user, "roles": roles, "projects": projects},
                201,
            )
    m.ok(
        "mkt-admin",
        "POST",
        "/organization/admin/workflow/template",
        {"template": template_doc("lab-flow")},
        201,
    )

    # the vendors publish ...
    m.offers["hpc-debug"] = m.ok(
        "hpc-pub",
        "POST",
        "/marketplace/offers",
        {
            "name": "hpc-debug",
            "cluster": "hpc-one",
            "queue": "debug",
            "price": HPC_V1,
            "terms": "Best effort.",
            "visibility": [CLIENT, ACME],
        },
        status=201,
    )
    m.offers["cloud-c5"] = m.ok(
        "cloud-pub",
        "POST",
        "/marketplace/offers",
        {
            "name": "cloud-c5",
            "cluster": "cloud-one",
            "queue": "c5",
            "price": CLOUD_PRICE,
            "visibility": "public",
        },
        status=201,
    )
    m.apps["cfd-solver"] = m.ok(
        "soft-pub",
        "POST",
        "/marketplace/applications",
        {
            "name": "cfd-solver",
            "image": "docker://registry.example.org/soft/cfd-solver:2.1",
            "parameters_schema": {"type": "object", "properties": {"mesh": {"type": "string"}}},
            "price": APP_PRICE,
            "licence": "One run per fee.",
            "visibility": {"public": False, "organizations": [CLIENT, ACME]},
        },
        status=201,
    )
    m.apps["cloud-viz"] = m.ok(
        "cloud-pub",
        "POST",
        "/marketplace/applications",
        {"name": "cloud-viz", "image": "library://cloud/viz:1.0", "visibility": "public"},
        status=201,
    )
    # ... the client's administrator enables what it wants to use
    for name in ("hpc-debug", "cloud-c5"):
        m.ok("mkt-admin", "POST", f"/organization/admin/offers/{m.offers[name]['id']}/enable")
    m.ok("mkt-admin", "POST", f"/organization/admin/applications/{m.apps['cfd-solver']['id']}/enable")

    # budgets other tests name (acme's is for a far-future year: it limits nothing the others run)
    m.budgets["lab"] = m.ok(
        "mkt-bill", "POST", "/organization/budgets", {"project": "lab", "limit": "500"}, 201
    )
    m.budgets[ACME] = m.ok(
        "acme-bill",
        "POST",
        "/organization/budgets",
        {"limit": "100", "period_start": "2090-01-01T00:00:00Z", "period_end": "2091-01-01T00:00:00Z"},
        status=201,
    )

    # runs, with a price change between A and B
    m.runs["A"] = _seed_run(
        world,
        user="mkt-rita",
        project="lab",
        offer="hpc-debug",
        queue="debug",
        app=m.apps["cfd-solver"]["id"],
    )
    m.ok(
        "hpc-pub",
        "PATCH",
        f"/marketplace/offers/{m.offers['hpc-debug']['id']}",
        {"price": HPC_V2, "note": "energy"},
    )
    m.runs["B"] = _seed_run(world, user="mkt-rob", project="lab", offer="hpc-debug", queue="debug", app=None)
    m.runs["C"] = _seed_run(world, user="mkt-rita", project=None, offer="cloud-c5", queue="c5", app=None)
    return m


def market_of(world: World) -> Market:
    """The shared marketplace of this hub (built on first use)."""
    m = getattr(world, "market", None)
    if m is None:
        m = build(world)
        world.market = m  # type: ignore[attr-defined]
    return m
