"""SQLAlchemy models of the marketplace and of accounting (migration ``0002``).

Marketplace: a provider organization publishes a queue of one of its clusters as a
:class:`MarketOffer` and an application as a :class:`MarketApplication`. Every change of price, terms,
availability or visibility adds an immutable version row (:class:`MarketOfferVersion`,
:class:`MarketApplicationVersion`); the history is never rewritten (the ORM refuses to update or
delete a version row). A client organization enables what it wants to use
(:class:`MarketEnablement`); a job records the versions in force when it was submitted
(:class:`JobOfferPin`).

Accounting: a :class:`BudgetReservation` holds part of one or more budgets (:class:`BudgetHold`, one
per budget: the organization's and the project's) from submission until it is settled with the
actual cost; :class:`BudgetCredit` records prepayments; :class:`UsageRecord` is the ledger, one row
per finished job.

Money is stored in integer hundredths of the currency unit (``*_cents``), never as float.
The tables are registered on :data:`jupyter_heroes.orm.Base`'s metadata when this module is imported.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .orm import Base, new_id, utcnow


class ImmutableRowError(RuntimeError):
    """Someone tried to change or delete a version row: history is append-only."""


# --- marketplace --------------------------------------------------------------------------------


class MarketOffer(Base):
    """A resource offer: one queue of one cluster of a provider organization. The mutable part is
    only ``state`` and ``current_version``; prices and terms live in the versions."""

    __tablename__ = "market_offers"
    __table_args__ = (UniqueConstraint("provider_org_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider_org_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(63))
    description: Mapped[str] = mapped_column(Text, default="")
    # the cluster may be removed later; the offer (and its history) stays, withdrawn
    cluster_id: Mapped[int | None] = mapped_column(
        ForeignKey("clusters.id", ondelete="SET NULL"), nullable=True, index=True
    )
    queue: Mapped[str] = mapped_column(String(63))
    state: Mapped[str] = mapped_column(String(16), default="active")  # active | withdrawn
    current_version: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(255), default="")

    versions: Mapped[list[MarketOfferVersion]] = relationship(
        back_populates="offer", order_by="MarketOfferVersion.version", passive_deletes=True
    )


class MarketOfferVersion(Base):
    """One immutable version of an offer, in force from ``created`` until the next version."""

    __tablename__ = "market_offer_versions"
    __table_args__ = (UniqueConstraint("offer_id", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    offer_id: Mapped[int] = mapped_column(ForeignKey("market_offers.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    price: Mapped[dict] = mapped_column(JSON, default=dict)  # decision.cost.Offer.to_dict()
    terms: Mapped[str] = mapped_column(Text, default="")
    availability: Mapped[list] = mapped_column(JSON, default=list)  # windows; empty: always
    visibility: Mapped[dict] = mapped_column(JSON, default=dict)  # {"public": bool, "organizations": [ids]}
    note: Mapped[str] = mapped_column(Text, default="")
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    created_by: Mapped[str] = mapped_column(String(255), default="")

    offer: Mapped[MarketOffer] = relationship(back_populates="versions")


class MarketApplication(Base):
    """An application published by an organization (an application provider)."""

    __tablename__ = "market_applications"
    __table_args__ = (UniqueConstraint("provider_org_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider_org_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(63))
    description: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(16), default="active")  # active | withdrawn
    current_version: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(255), default="")

    versions: Mapped[list[MarketApplicationVersion]] = relationship(
        back_populates="application", order_by="MarketApplicationVersion.version", passive_deletes=True
    )


class MarketApplicationVersion(Base):
    """One immutable version of an application: image, parameters, licence price and targets."""

    __tablename__ = "market_application_versions"
    __table_args__ = (UniqueConstraint("application_id", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    application_id: Mapped[int] = mapped_column(
        ForeignKey("market_applications.id", ondelete="CASCADE"), index=True
    )
    version: Mapped[int] = mapped_column(Integer)
    image: Mapped[str] = mapped_column(String(1024))
    parameters_schema: Mapped[dict] = mapped_column(JSON, default=dict)  # a JSON Schema
    currency: Mapped[str] = mapped_column(String(3))
    price: Mapped[dict] = mapped_column(JSON, default=dict)  # licence price, decision.cost.Offer.to_dict()
    licence: Mapped[str] = mapped_column(Text, default="")  # licence terms
    visibility: Mapped[dict] = mapped_column(JSON, default=dict)
    note: Mapped[str] = mapped_column(Text, default="")
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    created_by: Mapped[str] = mapped_column(String(255), default="")

    application: Mapped[MarketApplication] = relationship(back_populates="versions")


class MarketEnablement(Base):
    """An organization has enabled an offer or an application (exactly one of the two), accepting the
    terms of version ``accepted_version``."""

    __tablename__ = "market_enablements"
    __table_args__ = (
        UniqueConstraint("org_id", "offer_id"),
        UniqueConstraint("org_id", "application_id"),
        CheckConstraint(
            "(offer_id IS NULL) <> (application_id IS NULL)", name="ck_market_enablements_one_item"
        ),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    offer_id: Mapped[int | None] = mapped_column(
        ForeignKey("market_offers.id", ondelete="CASCADE"), nullable=True, index=True
    )
    application_id: Mapped[int | None] = mapped_column(
        ForeignKey("market_applications.id", ondelete="CASCADE"), nullable=True, index=True
    )
    accepted_version: Mapped[int] = mapped_column(Integer)
    enabled_by: Mapped[str] = mapped_column(String(255), default="")
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class JobOfferPin(Base):
    """The offer and application versions in force when a job was submitted: what it is charged."""

    __tablename__ = "market_job_pins"
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    offer_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("market_offer_versions.id", ondelete="SET NULL"), nullable=True, index=True
    )
    application_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("market_application_versions.id", ondelete="SET NULL"), nullable=True, index=True
    )
    pinned: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


# --- accounting ---------------------------------------------------------------------------------


class BudgetReservation(Base):
    """Budget held for a run between submission and settlement. ``state``: ``held`` (counted in the
    budgets' ``reserved_cents``), ``settled`` (the actual cost moved to ``spent_cents``) or
    ``released`` (nothing spent)."""

    __tablename__ = "budget_reservations"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[int | None] = mapped_column(
        ForeignKey("projects.id", ondelete="SET NULL"), nullable=True
    )
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    instance_id: Mapped[str | None] = mapped_column(
        ForeignKey("workflow_instances.id", ondelete="SET NULL"), nullable=True, index=True
    )
    currency: Mapped[str] = mapped_column(String(3))  # of predicted_cents and actual_cents
    predicted_cents: Mapped[int] = mapped_column(BigInteger)
    actual_cents: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="held", index=True)
    note: Mapped[str] = mapped_column(Text, default="")
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    closed: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    holds: Mapped[list[BudgetHold]] = relationship(
        back_populates="reservation", cascade="all, delete-orphan", order_by="BudgetHold.budget_id"
    )


class BudgetHold(Base):
    """The part of one budget a reservation holds (``amount_cents``) and, once settled, what it was
    charged (``spent_cents``), both in the budget's currency."""

    __tablename__ = "budget_holds"
    __table_args__ = (UniqueConstraint("reservation_id", "budget_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    reservation_id: Mapped[str] = mapped_column(
        ForeignKey("budget_reservations.id", ondelete="CASCADE"), index=True
    )
    budget_id: Mapped[int] = mapped_column(ForeignKey("budgets.id", ondelete="CASCADE"), index=True)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    spent_cents: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    reservation: Mapped[BudgetReservation] = relationship(back_populates="holds")


class BudgetCredit(Base):
    """A prepayment (credit) added to a budget; the budget's limit grew by ``amount_cents``."""

    __tablename__ = "budget_credits"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    budget_id: Mapped[int] = mapped_column(ForeignKey("budgets.id", ondelete="CASCADE"), index=True)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    reference: Mapped[str] = mapped_column(String(255), default="")  # e.g. an invoice or order number
    note: Mapped[str] = mapped_column(Text, default="")
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(255), default="")


class UsageRecord(Base):
    """The ledger: one row per finished job (unique ``job_id``), priced under the offer and
    application versions in force at submission. The resource cost is in ``currency`` (the offer's);
    the application licence in ``licence_currency``. Links survive deletions as NULL."""

    __tablename__ = "usage_records"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True, unique=True
    )
    instance_id: Mapped[str | None] = mapped_column(
        ForeignKey("workflow_instances.id", ondelete="SET NULL"), nullable=True, index=True
    )
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[int | None] = mapped_column(
        ForeignKey("projects.id", ondelete="SET NULL"), nullable=True, index=True
    )
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True, index=True
    )
    template_id: Mapped[int | None] = mapped_column(
        ForeignKey("workflow_templates.id", ondelete="SET NULL"), nullable=True
    )
    cluster_id: Mapped[int | None] = mapped_column(
        ForeignKey("clusters.id", ondelete="SET NULL"), nullable=True
    )
    queue: Mapped[str] = mapped_column(String(63), default="")
    step: Mapped[str] = mapped_column(String(63), default="")
    offer_id: Mapped[int | None] = mapped_column(
        ForeignKey("market_offers.id", ondelete="SET NULL"), nullable=True, index=True
    )
    offer_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("market_offer_versions.id", ondelete="SET NULL"), nullable=True
    )
    provider_org_id: Mapped[int | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="SET NULL"), nullable=True, index=True
    )
    application_id: Mapped[int | None] = mapped_column(
        ForeignKey("market_applications.id", ondelete="SET NULL"), nullable=True, index=True
    )
    application_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("market_application_versions.id", ondelete="SET NULL"), nullable=True
    )
    app_provider_org_id: Mapped[int | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="SET NULL"), nullable=True, index=True
    )
    pricing: Mapped[str] = mapped_column(String(16), default="none")  # offer | site | none
    core_hours: Mapped[float] = mapped_column(Float, default=0.0)
    node_hours: Mapped[float] = mapped_column(Float, default=0.0)
    gpu_hours: Mapped[float] = mapped_column(Float, default=0.0)
    mem_gb_hours: Mapped[float] = mapped_column(Float, default=0.0)
    elapsed_s: Mapped[float] = mapped_column(Float, default=0.0)
    energy_j: Mapped[float | None] = mapped_column(Float, nullable=True)
    currency: Mapped[str] = mapped_column(String(3), default="EUR")
    cost_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    licence_currency: Mapped[str] = mapped_column(String(3), default="EUR")
    licence_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    breakdown: Mapped[list] = mapped_column(JSON, default=list)
    started: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished: Mapped[datetime] = mapped_column(DateTime, index=True)
    recorded: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


# --- append-only history ------------------------------------------------------------------------


def _refuse(kind: str):
    def listener(_mapper, _conn, target) -> None:
        raise ImmutableRowError(
            f"{type(target).__name__} {getattr(target, 'id', '?')} is history and cannot be {kind}; "
            "publish a new version instead"
        )

    return listener


for _cls in (MarketOfferVersion, MarketApplicationVersion):
    event.listen(_cls, "before_update", _refuse("changed"))
    event.listen(_cls, "before_delete", _refuse("deleted"))
