"""SQLAlchemy models: organizations (tenants), projects, users, memberships and roles, clusters and
queues, workflow templates, instances and jobs, budgets, audit log.

Every table that holds tenant data carries ``org_id``; queries in the service always filter on it
(see :mod:`jupyter_heroes.service.auth`). Schema changes go through the alembic migrations in
``jupyter_heroes/alembic/versions``; :func:`jupyter_heroes.dbutil.check_schema` refuses to start
on a database that is not at head.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def new_id() -> str:
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    pass


class Organization(Base):
    """A tenant. ``kind`` is ``client`` (users run work), ``platform`` (the HEROES organization) or
    ``provider`` (a resource or application vendor)."""

    __tablename__ = "organizations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True, index=True)
    display_name: Mapped[str] = mapped_column(String(255), default="")
    kind: Mapped[str] = mapped_column(String(16), default="client")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    projects: Mapped[list[Project]] = relationship(
        back_populates="organization", cascade="all, delete-orphan"
    )


class Project(Base):
    """A project (a Keycloak group ``/org/project``): users sharing workflows, data and budget."""

    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("org_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    description: Mapped[str] = mapped_column(Text, default="")
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    organization: Mapped[Organization] = relationship(back_populates="projects")


class User(Base):
    """A platform user, keyed by the JupyterHub username (Keycloak ``preferred_username``)."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True, index=True)
    email: Mapped[str] = mapped_column(String(255), default="")
    full_name: Mapped[str] = mapped_column(String(255), default="")
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_login: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class OrgMember(Base):
    """Membership of a user in an organization. ``source`` is ``idp`` for memberships synchronised
    from Keycloak at each login/refresh (replaced wholesale) or ``local`` for those made through the
    admin API (kept across refreshes)."""

    __tablename__ = "org_members"
    __table_args__ = (UniqueConstraint("user_id", "org_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    source: Mapped[str] = mapped_column(String(8), default="local")


class ProjectMember(Base):
    __tablename__ = "project_members"
    __table_args__ = (UniqueConstraint("user_id", "project_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    source: Mapped[str] = mapped_column(String(8), default="local")


class Role(Base):
    """A role defined by an organization on top of the built-in ones of :mod:`jupyter_heroes.roles`;
    ``scopes`` is a list of ``custom:heroes:*`` scopes (a subset of what its creator holds)."""

    __tablename__ = "roles"
    __table_args__ = (UniqueConstraint("org_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    description: Mapped[str] = mapped_column(Text, default="")
    scopes: Mapped[list] = mapped_column(JSON, default=list)
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class RoleAssignment(Base):
    """A user holds a role (built-in or the organization's own) inside one organization."""

    __tablename__ = "role_assignments"
    __table_args__ = (UniqueConstraint("user_id", "org_id", "role"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(63))
    source: Mapped[str] = mapped_column(String(8), default="local")


class OrgClient(Base):
    """An API client (OAuth client id) registered for an organization (D3.6 ``.../clients``).
    Only a hash of its secret is stored."""

    __tablename__ = "org_clients"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    client_id: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    secret_hash: Mapped[str] = mapped_column(String(128))
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class OrgServer(Base):
    """A server belonging to an organization (D3.6 ``.../servers``): its object store endpoint.
    The secret key is stored encrypted and never returned by the API."""

    __tablename__ = "org_servers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="s3")
    endpoint: Mapped[str] = mapped_column(String(255))
    secure: Mapped[bool] = mapped_column(Boolean, default=True)
    region: Mapped[str] = mapped_column(String(64), default="us-east-1")
    access_key: Mapped[str] = mapped_column(String(255))
    secret_key_enc: Mapped[bytes] = mapped_column(LargeBinary)
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Cluster(Base):
    """An enrolled HPC cluster (or the local backend) reached through a service account."""

    __tablename__ = "clusters"
    __table_args__ = (UniqueConstraint("org_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    description: Mapped[str] = mapped_column(Text, default="")
    transport: Mapped[str] = mapped_column(String(32), default="ssh")
    scheduler: Mapped[str] = mapped_column(String(32), default="slurm")
    host: Mapped[str] = mapped_column(String(255), default="")
    port: Mapped[int] = mapped_column(Integer, default=22)
    username: Mapped[str] = mapped_column(String(64), default="")
    host_key: Mapped[str] = mapped_column(Text, default="")  # "ssh-ed25519 AAAA..." pinned public key
    private_key_enc: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    scratch_root: Mapped[str] = mapped_column(String(1024), default="")
    container_runtime: Mapped[str] = mapped_column(String(32), default="")
    site: Mapped[dict] = mapped_column(JSON, default=dict)  # PUE, grid zone, power model, ...
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    queues: Mapped[list[ClusterQueue]] = relationship(back_populates="cluster", cascade="all, delete-orphan")


class ClusterQueue(Base):
    __tablename__ = "cluster_queues"
    __table_args__ = (UniqueConstraint("cluster_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    max_nodes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cpus_per_node: Mapped[int | None] = mapped_column(Integer, nullable=True)
    mem_per_node_mb: Mapped[int | None] = mapped_column(Integer, nullable=True)
    gpus_per_node: Mapped[int] = mapped_column(Integer, default=0)
    max_walltime_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    arch: Mapped[str] = mapped_column(String(32), default="x86_64")

    cluster: Mapped[Cluster] = relationship(back_populates="queues")


class WorkflowTemplate(Base):
    """A versioned workflow template; ``spec`` is the validated YAML document as JSON."""

    __tablename__ = "workflow_templates"
    __table_args__ = (UniqueConstraint("org_id", "name", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    version: Mapped[int] = mapped_column(Integer, default=1)
    application_id: Mapped[str] = mapped_column(String(128), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    spec: Mapped[dict] = mapped_column(JSON, default=dict)
    projects: Mapped[list] = mapped_column(JSON, default=list)  # empty: every project of the org
    state: Mapped[str] = mapped_column(String(16), default="active")  # active | retired
    created_by: Mapped[str] = mapped_column(String(255), default="")
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class WorkflowInstance(Base):
    __tablename__ = "workflow_instances"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[int | None] = mapped_column(
        ForeignKey("projects.id", ondelete="SET NULL"), nullable=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    template_id: Mapped[int] = mapped_column(ForeignKey("workflow_templates.id"), index=True)
    cluster_id: Mapped[int | None] = mapped_column(
        ForeignKey("clusters.id", ondelete="SET NULL"), nullable=True
    )
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    #: per-step walltime/memory that replace the template's for this run (migration 0004):
    #: ``{step: {"walltime_s": int, "memory_mb": int, "source": "user"|"advice"|..., ...}}``,
    #: see :mod:`jupyter_heroes.workflows.overrides`; None when the template's resources apply
    resource_overrides: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="new", index=True)
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    jobs: Mapped[list[Job]] = relationship(back_populates="instance", cascade="all, delete-orphan")


class Job(Base):
    """One step of an instance as submitted to a scheduler."""

    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("instance_id", "step", "array_index"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_id: Mapped[str] = mapped_column(
        ForeignKey("workflow_instances.id", ondelete="CASCADE"), index=True
    )
    step: Mapped[str] = mapped_column(String(63))
    array_index: Mapped[int] = mapped_column(Integer, default=-1)
    cluster_id: Mapped[int | None] = mapped_column(
        ForeignKey("clusters.id", ondelete="SET NULL"), nullable=True
    )
    queue: Mapped[str] = mapped_column(String(63), default="")
    scheduler_job_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    state: Mapped[str] = mapped_column(String(16), default="new", index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    submitted: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    started: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    accounting: Mapped[dict] = mapped_column(JSON, default=dict)

    instance: Mapped[WorkflowInstance] = relationship(back_populates="jobs")


class Budget(Base):
    __tablename__ = "budgets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[int | None] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), nullable=True
    )
    currency: Mapped[str] = mapped_column(String(3), default="EUR")
    amount_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    spent_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    period_start: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    period_end: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    on_exhausted: Mapped[str] = mapped_column(String(8), default="hold")  # hold | cancel
    margin: Mapped[float] = mapped_column(Float, default=1.2)


class AuditEntry(Base):
    """One mutating API call: who, what, when, outcome. Never holds secrets."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ts: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    org_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    user: Mapped[str] = mapped_column(String(255), default="")
    action: Mapped[str] = mapped_column(String(128))
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(1024))
    target: Mapped[str] = mapped_column(String(255), default="")
    status: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))  # success | failure | denied
    detail: Mapped[dict] = mapped_column(JSON, default=dict)


# marketplace and accounting tables (orm_market) and the decision module's (orm_decision) live in
# their own modules; import them so Base.metadata is complete
from . import orm_decision, orm_market  # noqa: E402,F401
