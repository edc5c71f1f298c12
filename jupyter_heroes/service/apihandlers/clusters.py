"""``/organization/admin/cluster``: enrolment of HPC clusters (D3.6 section 3.1.2) and their queues.

A cluster is reached through a service account: host, port, Unix user, the login node's public host
key (pinned: the SSH transport refuses any other) and the account's private key, which is encrypted
with the service's Fernet key before it is stored and is never returned (``has_private_key`` says
whether one is stored).
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from ... import orm
from ...crypt import NoEncryptionKey
from .. import schemas
from ..auth import ApiError, not_found
from ..handlers import APIHandler, endpoint, routes

SCOPE = "clusters:manage"


def _names(group: str, fallback: list[str]) -> list[str]:
    names = sorted({ep.name for ep in entry_points(group=group)})
    return names or fallback


TRANSPORTS = _names("jupyter_heroes.transports", ["local", "ssh"])
SCHEDULERS = _names("jupyter_heroes.schedulers", ["local", "slurm"])
CLUSTER_CREATE = schemas.cluster_create_schema(TRANSPORTS, SCHEDULERS)
QUEUE_FIELDS = ("max_nodes", "cpus_per_node", "mem_per_node_mb", "gpus_per_node", "max_walltime_s", "arch")


def check_private_key(text: str) -> None:
    """Refuse what is not an unencrypted OpenSSH/PEM private key, without echoing it."""
    data = text.strip().encode()
    loaders = (serialization.load_ssh_private_key, serialization.load_pem_private_key)
    for load in loaders:
        try:
            load(data + b"\n", password=None)
            return
        except TypeError:
            raise ApiError(
                400,
                "field 'private_key' is a passphrase-protected key; give the unencrypted key "
                "(HEROES stores it encrypted)",
                "invalid_field",
            ) from None
        except Exception:  # not this format: try the next one
            continue
    raise ApiError(400, "field 'private_key' is not an OpenSSH or PEM private key", "invalid_field")


def cluster_view(c: orm.Cluster, org: orm.Organization) -> dict[str, Any]:
    return {
        "id": c.id,
        "name": c.name,
        "organization": org.name,
        "description": c.description or "",
        "transport": c.transport,
        "scheduler": c.scheduler,
        "host": c.host or "",
        "port": c.port,
        "username": c.username or "",
        "host_key": c.host_key or "",
        "has_private_key": c.private_key_enc is not None,
        "scratch_root": c.scratch_root or "",
        "container_runtime": c.container_runtime or "",
        "site": c.site or {},
        "enabled": bool(c.enabled),
        "created": c.created,
        "queues": [
            {"name": q.name, **{f: getattr(q, f) for f in QUEUE_FIELDS}}
            for q in sorted(c.queues, key=lambda q: q.name)
        ],
    }


class ClusterListAPIHandler(APIHandler):
    path = "/organization/admin/cluster"
    tag = "Organization admin"

    @endpoint(summary="List the organization's clusters", scope=SCOPE, response=schemas.CLUSTER_LIST)
    def get(self) -> list[dict[str, Any]]:
        q = select(orm.Cluster).where(orm.Cluster.org_id == self.org.id).order_by(orm.Cluster.name)
        return [cluster_view(c, self.org) for c in self.db.scalars(q)]

    @endpoint(
        summary="Enrol a cluster",
        scope=SCOPE,
        body=CLUSTER_CREATE,
        response=schemas.CLUSTER,
        status=201,
        action="cluster.create",
        errors=(409, 503),
    )
    def post(self) -> dict[str, Any]:
        """The ``ssh`` transport needs ``host``, ``username``, ``host_key`` and ``private_key``.
        Queues are the partitions HEROES may use, with their limits."""
        s, org, body = self.db, self.org, self.body
        name = body["name"]
        self.audit(
            name,
            transport=body.get("transport", "ssh"),
            host=body.get("host", ""),
            queues=[q["name"] for q in body.get("queues", [])],
        )
        transport = body.get("transport", "ssh")
        if transport == "ssh":
            missing = [f for f in ("host", "username", "host_key", "private_key") if not body.get(f)]
            if missing:
                raise ApiError(
                    400,
                    f"missing required field {', '.join(repr(f) for f in missing)} (transport 'ssh')",
                    "invalid_field",
                )
        qnames = [q["name"] for q in body.get("queues", [])]
        if len(set(qnames)) != len(qnames):
            raise ApiError(400, "field 'queues' names a queue twice", "invalid_field")
        if s.scalar(select(orm.Cluster.id).where(orm.Cluster.org_id == org.id, orm.Cluster.name == name)):
            raise ApiError(409, f"cluster {name} already exists in {org.name}", "exists")
        key_enc = None
        if body.get("private_key"):
            check_private_key(body["private_key"])
            try:
                key_enc = self.heroes.secrets.encrypt(body["private_key"].strip() + "\n")
            except NoEncryptionKey as e:
                raise ApiError(503, str(e), "no_crypt_key") from None
        c = orm.Cluster(
            org_id=org.id,
            name=name,
            description=body.get("description", ""),
            transport=transport,
            scheduler=body.get("scheduler", "slurm"),
            host=body.get("host", ""),
            port=body.get("port", 22),
            username=body.get("username", ""),
            host_key=body.get("host_key", "").strip(),
            private_key_enc=key_enc,
            scratch_root=body.get("scratch_root", ""),
            container_runtime=body.get("container_runtime", ""),
            site=body.get("site", {}),
            enabled=body.get("enabled", True),
        )
        for q in body.get("queues", []):
            c.queues.append(orm.ClusterQueue(name=q["name"], **{f: q[f] for f in QUEUE_FIELDS if f in q}))
        s.add(c)
        s.commit()
        self.audit(str(c.id))
        return cluster_view(c, org)


class ClusterAPIHandler(APIHandler):
    path = "/organization/admin/cluster/{cluster_id}"
    tag = "Organization admin"
    path_params = {"cluster_id": {"type": "integer", "minimum": 1, "maximum": 2147483647}}

    def find(self, cluster_id: str) -> orm.Cluster:
        cid = self.int_arg(cluster_id, "Cluster")
        c = self.db.get(orm.Cluster, cid)
        if c is None or c.org_id != self.org.id:
            raise not_found(f"Cluster {cid}")
        return c

    @endpoint(summary="Get a cluster", scope=SCOPE, response=schemas.CLUSTER)
    def get(self, cluster_id: str) -> dict[str, Any]:
        return cluster_view(self.find(cluster_id), self.org)

    @endpoint(summary="Delete a cluster", scope=SCOPE, status=204, action="cluster.delete")
    def delete(self, cluster_id: str) -> None:
        """Removes the cluster, its queues and its stored key; past jobs keep their records."""
        self.audit(cluster_id)
        c = self.find(cluster_id)
        self.audit(f"{c.id}", name=c.name)
        self.db.delete(c)
        self.db.commit()
        return None


CHECK_ITEM = schemas.obj(
    {
        "name": {"type": "string"},
        "status": {"type": "string", "enum": ["ok", "warn", "fail"]},
        "detail": {"type": "string"},
    },
    ("name", "status"),
)
CHECK = schemas.obj(
    {
        "cluster": {"type": "string"},
        "compliant": {"type": "boolean", "description": "no item failed"},
        "items": schemas.array(CHECK_ITEM),
    },
    ("cluster", "compliant", "items"),
)


class ClusterCheckAPIHandler(APIHandler):
    path = "/organization/admin/cluster/{cluster_id}/check"
    tag = "Organization admin"
    path_params = ClusterAPIHandler.path_params
    find = ClusterAPIHandler.find

    @endpoint(
        summary="Run the compliance check of a cluster (D3.1 4.2.5.1), item by item",
        scope=SCOPE,
        response=CHECK,
        action="cluster.check",
        errors=(503,),
    )
    async def post(self, cluster_id: str) -> dict[str, Any]:
        """Connects with the pinned host key and the service account, then checks item by item: a POSIX
        login shell, sbatch/squeue/sacct/scancel/sinfo present, the Slurm version, the partitions
        visible, the scratch directory writable from a compute node (a tiny job), and a container
        runtime (apptainer or singularity) present or not. Takes up to a few minutes."""
        c = self.find(cluster_id)
        self.audit(f"{c.id}", name=c.name)
        name = c.name
        self.db.commit()
        try:
            _, scheduler = self.heroes.workflows.backends.get(c)
        except Exception as e:  # a stored key that cannot be decrypted, an unknown backend
            raise ApiError(
                409,
                f"cluster {name} cannot be reached with its stored settings: {e}",
                "cluster_misconfigured",
            ) from None
        items = await scheduler.check()
        return {
            "cluster": name,
            "compliant": all(i.ok for i in items),
            "items": [{"name": i.name, "status": i.status, "detail": i.detail} for i in items],
        }


default_handlers = routes(ClusterListAPIHandler, ClusterAPIHandler, ClusterCheckAPIHandler)
