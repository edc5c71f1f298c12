"""SQLAlchemy models of the decision module's memory (migration ``0003``).

- :class:`Decision`: one answer of ``POST /organization/decision/decide``: who asked, for which
  template and parameters, under which strategy and policy, the ranked table as it was shown, the
  recommendation, and, once the user submitted, the candidate chosen and the workflow instance.
- :class:`DecisionPrediction`: what was predicted for each ranked candidate, one row per step
  (``step`` = the step's name: its runtime) plus one row for the whole workflow (``step`` = ``""``:
  runtime, cost, energy, carbon). Outcomes are not copied here: they are the workflow's
  :class:`~jupyter_heroes.orm.Job` rows (elapsed time from the scheduler's accounting), joined
  through :attr:`Decision.instance_id`, so predictions sit beside outcomes without a second truth.
- :class:`DecisionPolicy`: an organization's decision policy
  (:class:`jupyter_heroes.decision.ranking.Policy` as JSON).
- :class:`EarRecord`: one EAR signature row (a job step on one node) ingested for an organization's
  cluster and application; the mean of these is the ``measured`` node power later decisions use.

The tables are registered on :data:`jupyter_heroes.orm.Base`'s metadata when this module is imported.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .orm import Base, new_id, utcnow

#: a candidate's cluster label: an own cluster's name, or ``provider/cluster`` for a vendor offer
CLUSTER_LABEL_LEN = 127


class Decision(Base):
    __tablename__ = "decisions"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True, index=True
    )
    user_name: Mapped[str] = mapped_column(String(255), default="")
    template_id: Mapped[int | None] = mapped_column(
        ForeignKey("workflow_templates.id", ondelete="SET NULL"), nullable=True
    )
    template_name: Mapped[str] = mapped_column(String(63))
    template_version: Mapped[int] = mapped_column(Integer, default=1)
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    strategy: Mapped[str] = mapped_column(String(32))
    weights: Mapped[dict] = mapped_column(JSON, default=dict)
    policy: Mapped[dict] = mapped_column(JSON, default=dict)  # the organization's policy at the time
    limits: Mapped[dict] = mapped_column(JSON, default=dict)  # deadline, budget asked by the user
    currency: Mapped[str] = mapped_column(String(3), default="EUR")
    model_version: Mapped[str] = mapped_column(String(64), default="")
    candidates: Mapped[list] = mapped_column(JSON, default=list)  # the table's rows as shown
    message: Mapped[str] = mapped_column(Text, default="")
    recommended: Mapped[str] = mapped_column(String(255), default="")  # "cluster/queue" or ""
    chosen: Mapped[str] = mapped_column(String(255), default="")
    accepted: Mapped[bool | None] = mapped_column(Boolean, nullable=True)  # chose the recommendation
    chosen_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    instance_id: Mapped[str | None] = mapped_column(
        ForeignKey("workflow_instances.id", ondelete="SET NULL"), nullable=True, index=True
    )
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)

    predictions: Mapped[list[DecisionPrediction]] = relationship(
        back_populates="decision", cascade="all, delete-orphan", passive_deletes=True
    )


class DecisionPrediction(Base):
    __tablename__ = "decision_predictions"
    __table_args__ = (UniqueConstraint("decision_id", "cluster", "queue", "step"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    decision_id: Mapped[str] = mapped_column(ForeignKey("decisions.id", ondelete="CASCADE"), index=True)
    cluster: Mapped[str] = mapped_column(String(CLUSTER_LABEL_LEN))
    queue: Mapped[str] = mapped_column(String(63))
    step: Mapped[str] = mapped_column(String(63), default="")  # "": the whole workflow
    runtime_s: Mapped[float] = mapped_column(Float)
    runtime_low_s: Mapped[float] = mapped_column(Float)
    runtime_high_s: Mapped[float] = mapped_column(Float)
    cost_cents: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    currency: Mapped[str] = mapped_column(String(3), default="EUR")
    energy_kwh: Mapped[float | None] = mapped_column(Float, nullable=True)
    co2e_kg: Mapped[float | None] = mapped_column(Float, nullable=True)
    energy_basis: Mapped[str] = mapped_column(String(16), default="")
    source: Mapped[str] = mapped_column(String(64), default="")  # the predictor's fallback level
    model_version: Mapped[str] = mapped_column(String(64), default="")

    decision: Mapped[Decision] = relationship(back_populates="predictions")


class DecisionPolicy(Base):
    __tablename__ = "decision_policies"
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True)
    policy: Mapped[dict] = mapped_column(JSON, default=dict)
    updated_by: Mapped[str] = mapped_column(String(255), default="")
    updated: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class EarRecord(Base):
    """One EAR row (a job step on one node); ingesting the same file twice adds nothing."""

    __tablename__ = "decision_ear_records"
    __table_args__ = (UniqueConstraint("org_id", "cluster", "job_id", "step_id", "node"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    cluster: Mapped[str] = mapped_column(String(CLUSTER_LABEL_LEN))
    application: Mapped[str] = mapped_column(String(128), index=True)
    job_id: Mapped[str] = mapped_column(String(64))
    step_id: Mapped[str] = mapped_column(String(64))
    node: Mapped[str] = mapped_column(String(255))
    time_s: Mapped[float] = mapped_column(Float)
    dc_node_power_w: Mapped[float] = mapped_column(Float)
    energy_j: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(32))  # eacct | heroes-plugin
    ingested: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    ingested_by: Mapped[str] = mapped_column(String(255), default="")
