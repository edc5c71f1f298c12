"""Resource offers: a provider publishes a queue of one of its clusters at its own price and terms.

A resource provider (an :class:`~jupyter_heroes.orm.Organization` of kind ``provider``, or the
platform organization for the cloud accounts it holds) publishes a queue of a cluster it enrolled as
an offer: an "A x + B" price (:class:`jupyter_heroes.decision.cost.Offer`: fixed part plus rates per
core-hour, node-hour, GPU-hour, GB-hour, storage GB-month and transferred GB) in a currency, terms
and conditions, availability windows and visibility (see :mod:`.common`).

Every change adds an immutable :class:`~jupyter_heroes.orm_market.MarketOfferVersion`; the version
in force at time *t* is the last one created at or before *t* (:func:`version_at`). A job is charged
under the version in force when it was submitted (:func:`pin_job`), so a price change never rewrites
a past job's cost, and :func:`offer_history` keeps every version for audit.

A client organization sees only offers published to it (others are :class:`~.errors.NotFound`), and
its organization admin enables the ones it wants (:func:`enable_offer`); only enabled, visible,
active and currently available offers become decision candidates (:func:`enabled_offers`,
:func:`offer_candidates`).

Functions for the REST layer take the caller's organization id (``viewer_org_id``,
``provider_org_id`` or ``org_id``) and never return what that organization may not see. They flush
but never commit: the caller owns the transaction.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..decision.candidates import CandidateError, CandidateQueue, Exclusion, make_candidate
from ..decision.cost import Offer, PriceCatalog
from ..orm import Cluster, ClusterQueue, Job, Organization
from ..orm_market import JobOfferPin, MarketEnablement, MarketOffer, MarketOfferVersion
from . import listing
from .common import (
    add_version,
    available_at,
    check_name,
    check_text,
    describe_availability,
    get_org,
    insert_if_absent,
    naive_utc,
    next_created,
    parse_availability,
    parse_price,
    parse_visibility,
    render_visibility,
)
from .errors import Conflict, InvalidInput, NotAllowed, NotFound

PUBLISHER_KINDS = ("provider", "platform")


@dataclass(frozen=True)
class OfferView:
    """An offer as one organization sees it: its current version, and whether the viewer owns it
    (the provider) or manages the marketplace (the platform), who also see visibility and history."""

    offer: MarketOffer
    version: MarketOfferVersion
    provider: Organization
    owner_view: bool

    @property
    def price(self) -> Offer:
        return Offer.from_dict(self.version.price)

    def to_dict(self, session: Session, at: datetime | None = None) -> dict[str, Any]:
        """JSON-ready view for the API (prices as strings, times ISO 8601 UTC)."""
        o, v = self.offer, self.version
        cluster = session.get(Cluster, o.cluster_id) if o.cluster_id else None
        qrow = _queue_row(session, o.cluster_id, o.queue) if cluster else None
        d: dict[str, Any] = {
            "id": o.id,
            "name": o.name,
            "description": o.description,
            "provider": self.provider.name,
            "provider_display_name": self.provider.display_name,
            "cluster": cluster.name if cluster else None,
            "queue": o.queue,
            "queue_limits": _limits(qrow),
            "state": o.state,
            "version": v.version,
            "valid_from": v.created.isoformat() + "Z",
            "currency": v.currency,
            "price": dict(v.price),
            "terms": v.terms,
            "availability": list(v.availability),
            "availability_text": describe_availability(v.availability),
            "available_now": available_at(v.availability, at),
        }
        if self.owner_view:
            d["visibility"] = render_visibility(session, v.visibility)
        return d


@dataclass(frozen=True)
class EnabledOffer:
    """An offer an organization has enabled, with its current version and where it runs.
    ``problem`` is empty when the offer can be used now, else why not (withdrawn cluster, outside
    its availability windows, ...)."""

    offer: MarketOffer
    version: MarketOfferVersion
    provider: Organization
    cluster: Cluster | None
    queue: ClusterQueue | None
    accepted_version: int
    problem: str = ""

    @property
    def usable(self) -> bool:
        return not self.problem

    @property
    def price(self) -> Offer:
        return dataclasses.replace(
            Offer.from_dict(self.version.price),
            source=f"offer {self.offer.name} v{self.version.version} of {self.provider.name}",
        )

    @property
    def terms_changed(self) -> bool:
        """The provider published a version after the one the organization accepted."""
        return self.version.version > self.accepted_version

    @property
    def cluster_label(self) -> str:
        """``provider/cluster``: how the decision names it (cluster names are unique per organization)."""
        return f"{self.provider.name}/{self.cluster.name if self.cluster else '?'}"


# --- helpers ------------------------------------------------------------------------------------


def _queue_row(session: Session, cluster_id: int | None, queue: str) -> ClusterQueue | None:
    if cluster_id is None:
        return None
    return session.scalar(
        select(ClusterQueue).where(ClusterQueue.cluster_id == cluster_id, ClusterQueue.name == queue)
    )


def _limits(q: ClusterQueue | None) -> dict[str, Any] | None:
    if q is None:
        return None
    return {
        "max_nodes": q.max_nodes,
        "cpus_per_node": q.cpus_per_node,
        "mem_per_node_mb": q.mem_per_node_mb,
        "gpus_per_node": q.gpus_per_node,
        "max_walltime_s": q.max_walltime_s,
        "arch": q.arch,
    }


#: a queue's public limits as the API shows them (None for an unknown queue)
queue_limits = _limits


OFFER = listing.Kind("offer", MarketOffer, MarketOfferVersion, "offer_id")


def _owned(session: Session, offer_id: int, provider_org_id: int) -> MarketOffer:
    return listing.owned(session, OFFER, offer_id, provider_org_id)


def _publisher(session: Session, org_id: int) -> Organization:
    org = get_org(session, org_id)
    if org.kind not in PUBLISHER_KINDS:
        raise NotAllowed(
            f"organization {org.name} is a {org.kind} organization; only resource providers (organizations "
            "of kind provider) and the platform publish resource offers",
            reason="not_a_provider",
        )
    return org


# --- publishing ---------------------------------------------------------------------------------


def publish_offer(
    session: Session,
    provider_org_id: int,
    *,
    name: str,
    cluster_id: int,
    queue: str,
    price: Any,
    terms: str = "",
    availability: Any = None,
    visibility: Any = None,
    description: str = "",
    created_by: str = "",
    now: datetime | None = None,
) -> MarketOfferVersion:
    """Publish *queue* of the provider's cluster *cluster_id* as a new offer (version 1).

    *price* is a mapping such as ``{"currency": "EUR", "fixed": "0.10", "core_hour": "0.012"}``.
    Raises :class:`~.errors.NotFound` for a cluster of another organization, :class:`~.errors.InvalidInput`
    for a bad name, queue, price, currency, window or organization, :class:`~.errors.Conflict` for a
    name already used by this provider.
    """
    _publisher(session, provider_org_id)
    check_name(name, "offer name")
    cluster = session.get(Cluster, cluster_id)
    if cluster is None or cluster.org_id != provider_org_id:
        raise NotFound.of("cluster", cluster_id)
    if _queue_row(session, cluster.id, queue) is None:
        known = sorted(q.name for q in cluster.queues)
        raise InvalidInput(f"queue: cluster {cluster.name} has no queue {queue!r}; its queues: {known}")
    offer_price = parse_price(price)
    fields = dict(
        terms=check_text(terms, "terms"),
        availability=parse_availability(availability),
        visibility=parse_visibility(session, visibility),
    )
    if session.scalar(
        select(MarketOffer.id).where(MarketOffer.provider_org_id == provider_org_id, MarketOffer.name == name)
    ):
        raise Conflict(f"you already publish an offer named {name}; update it or choose another name")
    offer = MarketOffer(
        provider_org_id=provider_org_id,
        name=name,
        description=check_text(description, "description"),
        cluster_id=cluster.id,
        queue=queue,
        state="active",
        current_version=1,
        created_by=created_by,
    )
    session.add(offer)
    session.flush()
    v = MarketOfferVersion(
        offer_id=offer.id,
        version=1,
        currency=offer_price.currency,
        price=offer_price.to_dict(),
        note="published",
        created=next_created(None, now),
        created_by=created_by,
        **fields,
    )
    session.add(v)
    session.flush()
    return v


def update_offer(
    session: Session,
    offer_id: int,
    provider_org_id: int,
    *,
    price: Any = None,
    terms: str | None = None,
    availability: Any = None,
    visibility: Any = None,
    note: str = "",
    changed_by: str = "",
    now: datetime | None = None,
) -> MarketOfferVersion:
    """Change an offer: a new version with the given fields and the others carried over. Returns the
    new version, or the current one when nothing changes. Past versions are never modified."""
    offer = _owned(session, offer_id, provider_org_id)
    if offer.state != "active":
        raise Conflict(f"offer {offer.name} is withdrawn; publish a new offer instead")
    new: dict[str, Any] = {}
    if price is not None:
        p = parse_price(price)
        new["price"], new["currency"] = p.to_dict(), p.currency
    if terms is not None:
        new["terms"] = check_text(terms, "terms")
    if availability is not None:
        new["availability"] = parse_availability(availability)
    if visibility is not None:
        new["visibility"] = parse_visibility(session, visibility)
    return add_version(
        session,
        offer,
        MarketOfferVersion,
        "offer_id",
        new,
        ("price", "currency", "terms", "availability", "visibility"),
        note=note,
        by=changed_by,
        now=now,
    )


def withdraw_offer(session: Session, offer_id: int, provider_org_id: int) -> MarketOffer:
    """Stop offering: no new runs are placed on it; jobs already pinned keep their price."""
    return listing.withdraw(session, OFFER, offer_id, provider_org_id)


# --- reading ------------------------------------------------------------------------------------


def _view(session: Session, offer: MarketOffer, viewer: Organization) -> OfferView | None:
    seen = listing.seen_by(session, OFFER, offer, viewer)
    return None if seen is None else OfferView(offer, seen.version, seen.provider, seen.owner_view)


def get_offer(session: Session, offer_id: int, viewer_org_id: int) -> OfferView:
    """The offer as *viewer_org_id* sees it, or :class:`~.errors.NotFound` if it is not published to it."""
    viewer = get_org(session, viewer_org_id)
    offer = session.get(MarketOffer, offer_id)
    view = _view(session, offer, viewer) if offer is not None else None
    if view is None:
        raise NotFound.of("offer", offer_id)
    return view


def list_offers(
    session: Session, viewer_org_id: int, *, provider_org_id: int | None = None
) -> list[OfferView]:
    """Every offer *viewer_org_id* may see (optionally of one provider), by provider and name."""
    viewer = get_org(session, viewer_org_id)
    q = select(MarketOffer).order_by(MarketOffer.provider_org_id, MarketOffer.name)
    if provider_org_id is not None:
        q = q.where(MarketOffer.provider_org_id == provider_org_id)
    views = (_view(session, o, viewer) for o in session.scalars(q).all())
    return [v for v in views if v is not None]


def offer_history(session: Session, offer_id: int, viewer_org_id: int) -> list[MarketOfferVersion]:
    """Every version of an offer, oldest first: for its provider and the platform only."""
    view = get_offer(session, offer_id, viewer_org_id)
    return listing.history(
        session, OFFER, offer_id, listing.Seen(view.offer, view.version, view.provider, view.owner_view)
    )


def version_at(session: Session, offer_id: int, when: datetime | None = None) -> MarketOfferVersion | None:
    """The version in force at *when* (default now): the last one created at or before it."""
    return listing.version_at(session, OFFER, offer_id, when)


def version_dict(session: Session, v: MarketOfferVersion) -> dict[str, Any]:
    """A version as JSON for the history view (publisher and platform)."""
    return {
        "version": v.version,
        "valid_from": v.created.isoformat() + "Z",
        "currency": v.currency,
        "price": dict(v.price),
        "terms": v.terms,
        "availability": list(v.availability),
        "visibility": render_visibility(session, v.visibility),
        "note": v.note,
        "created_by": v.created_by,
    }


# --- enabling -----------------------------------------------------------------------------------


def enable_offer(session: Session, org_id: int, offer_id: int, enabled_by: str = "") -> MarketEnablement:
    """Enable an offer for *org_id*, accepting its current terms (enabling again accepts the newest
    version). Raises :class:`~.errors.NotFound` if the offer is not published to the organization."""
    view = get_offer(session, offer_id, org_id)
    seen = listing.Seen(view.offer, view.version, view.provider, view.owner_view)
    return listing.enable(session, OFFER, org_id, seen, enabled_by)


def disable_offer(session: Session, org_id: int, offer_id: int) -> None:
    listing.disable(session, OFFER, org_id, offer_id)


def enabled_offers(
    session: Session, org_id: int, *, at: datetime | None = None, include_unusable: bool = False
) -> list[EnabledOffer]:
    """The offers *org_id* enabled that it can use at *at* (default now): active, still published to
    it, on an enabled cluster with the queue, inside an availability window. With
    *include_unusable*, the others too, each with its ``problem``."""
    out: list[EnabledOffer] = []
    for en, offer, v, provider in listing.enabled_rows(session, OFFER, get_org(session, org_id)):
        cluster = session.get(Cluster, offer.cluster_id) if offer.cluster_id else None
        qrow = _queue_row(session, offer.cluster_id, offer.queue)
        problem = ""
        if cluster is None or qrow is None:
            problem = f"offer {offer.name}: its queue {offer.queue} is no longer provided"
        elif not cluster.enabled:
            problem = f"offer {offer.name}: the provider has disabled cluster {cluster.name}"
        elif not provider.active:
            problem = f"offer {offer.name}: provider {provider.name} is inactive"
        elif not available_at(v.availability, at):
            problem = f"offer {offer.name} is not available now ({describe_availability(v.availability)})"
        if problem and not include_unusable:
            continue
        out.append(EnabledOffer(offer, v, provider, cluster, qrow, en.accepted_version, problem))
    return out


def enabled_offer_for(
    session: Session, org_id: int, cluster_id: int | None, queue: str, at: datetime | None = None
) -> EnabledOffer | None:
    """The usable enabled offer of *org_id* for *queue* of *cluster_id*; an empty *queue* (the
    cluster's default) matches only when the organization enabled exactly one offer on that cluster."""
    mine = [e for e in enabled_offers(session, org_id, at=at) if e.offer.cluster_id == cluster_id]
    exact = [e for e in mine if e.offer.queue == queue]
    if exact:
        return exact[0]
    if not queue and len(mine) == 1:
        return mine[0]
    return None


def offer_candidates(
    session: Session, org_id: int, *, at: datetime | None = None, catalog: PriceCatalog | None = None
) -> tuple[list[CandidateQueue], list[Exclusion]]:
    """Decision candidates from the organization's enabled offers, priced by the offer's current
    version (the cluster's own ``site.offer`` is ignored). Unusable offers and queues whose site
    configuration is invalid come back as :class:`~jupyter_heroes.decision.candidates.Exclusion`.
    Combine with :func:`jupyter_heroes.decision.candidates.candidates_from_orm` for the
    organization's own clusters."""
    out: list[CandidateQueue] = []
    bad: list[Exclusion] = []
    for e in enabled_offers(session, org_id, at=at, include_unusable=True):
        label = e.cluster_label
        if e.problem:
            bad.append(Exclusion(label, e.offer.queue, (e.problem,), "not-allowed"))
            continue
        assert e.cluster is not None and e.queue is not None
        site = dict(e.cluster.site or {})
        site.pop("offer", None)
        if isinstance(site.get("queues"), dict):
            site["queues"] = {
                k: {kk: vv for kk, vv in (q or {}).items() if kk != "offer"} if isinstance(q, dict) else q
                for k, q in site["queues"].items()
            }
        q = e.queue
        try:
            c = make_candidate(
                label,
                q.name,
                cluster_id=e.cluster.id,
                max_nodes=q.max_nodes,
                cpus_per_node=q.cpus_per_node,
                mem_per_node_mb=q.mem_per_node_mb,
                gpus_per_node=q.gpus_per_node or 0,
                max_walltime_s=q.max_walltime_s,
                arch=q.arch,
                container_runtime=e.cluster.container_runtime or "",
                site=site,
                catalog=catalog,
            )
        except CandidateError as err:
            bad.append(Exclusion(label, q.name, (str(err),), "misconfigured"))
            continue
        out.append(dataclasses.replace(c, offer=e.price))
    return out, bad


# --- pinning a job to the versions in force -----------------------------------------------------


def _enablement_offer_id(
    session: Session, org_id: int, cluster_id: int | None, queue: str, offer_id: int | None
) -> int | None:
    """The offer the organization enabled for this cluster and queue (or *offer_id* if it enabled
    it), whatever its state now: a job submitted before a withdrawal is still charged."""
    q = select(MarketOffer.id, MarketOffer.queue).join(
        MarketEnablement, (MarketEnablement.offer_id == MarketOffer.id) & (MarketEnablement.org_id == org_id)
    )
    q = (
        q.where(MarketOffer.id == offer_id)
        if offer_id is not None
        else q.where(MarketOffer.cluster_id == cluster_id)
    )
    rows = session.execute(q.order_by(MarketOffer.id)).all()
    if offer_id is not None:
        return rows[0][0] if rows else None
    exact = [i for i, qname in rows if qname == queue]
    if exact:
        return exact[0]
    return rows[0][0] if not queue and len(rows) == 1 else None


def pin_job(
    session: Session,
    job_id: int,
    *,
    offer_id: int | None = None,
    application_id: int | None = None,
    at: datetime | None = None,
) -> JobOfferPin | None:
    """Record the offer (and application) versions in force for a job at *at* (default: the job's
    submission time, else now). The first pin wins: pinning again never changes it.

    Call it when the job is submitted, after choosing a usable offer (:func:`enabled_offer_for`);
    it only records. Without *offer_id*, the offer the organization enabled for the job's cluster and
    queue is used. Returns the pin, or None when there is nothing to pin (the job runs on the
    organization's own cluster). Raises :class:`~.errors.NotFound` for an offer or application the
    organization has not enabled."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound.of("job", job_id)
    org_id = job.instance.org_id
    when = naive_utc(at or job.submitted)
    found = _enablement_offer_id(session, org_id, job.cluster_id, job.queue, offer_id)
    if offer_id is not None and found is None:
        raise NotFound(f"offer {offer_id} is not enabled for your organization")
    offer_version = version_at(session, found, when) if found is not None else None
    app_version = None
    if application_id is not None:
        from .applications import version_at as app_version_at

        enabled = session.scalar(
            select(MarketEnablement.id).where(
                MarketEnablement.org_id == org_id, MarketEnablement.application_id == application_id
            )
        )
        if enabled is None:
            raise NotFound(f"application {application_id} is not enabled for your organization")
        app_version = app_version_at(session, application_id, when)
    if offer_version is None and app_version is None:
        return session.get(JobOfferPin, job_id)
    insert_if_absent(
        session,
        JobOfferPin,
        {
            "job_id": job_id,
            "offer_version_id": offer_version.id if offer_version else None,
            "application_version_id": app_version.id if app_version else None,
            "pinned": naive_utc(None),
        },
        ["job_id"],
    )
    return session.get(JobOfferPin, job_id, populate_existing=True)
