"""What a resource offer and an application share as catalogue listings: a provider owns them, each
change is a version, an organization sees one only when it is published to it, and enables it by
accepting its current version.

:mod:`.offers` and :mod:`.applications` each describe their tables once as a :class:`Kind` and call
these functions with it, so the rules (not found rather than forbidden, history for the publisher and
the platform only, the version in force at a time) are written in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..orm import Organization
from ..orm_market import MarketEnablement
from .common import is_visible, latest_version, naive_utc
from .errors import Conflict, NotFound


@dataclass(frozen=True)
class Kind:
    """One kind of listing: its noun in messages, its table, its version table and the column that
    links a version (and an enablement) to it."""

    noun: str
    model: Any
    version_model: Any
    fk: str

    def latest(self, session: Session, item_id: int) -> Any:
        return latest_version(session, self.version_model, self.fk, item_id)


@dataclass
class Seen:
    """A listing as one organization sees it: the item, its latest version, its provider, and
    whether the viewer owns it (the publisher or the platform)."""

    item: Any
    version: Any
    provider: Organization
    owner_view: bool


def owned(session: Session, kind: Kind, item_id: int, provider_org_id: int) -> Any:
    """The item if *provider_org_id* published it, else :class:`~.errors.NotFound`."""
    item = session.get(kind.model, item_id)
    if item is None or item.provider_org_id != provider_org_id:
        raise NotFound.of(kind.noun, item_id)
    return item


def withdraw(session: Session, kind: Kind, item_id: int, provider_org_id: int) -> Any:
    """Stop listing: no new runs use it; jobs already pinned keep their version and price."""
    item = owned(session, kind, item_id, provider_org_id)
    item.state = "withdrawn"
    session.flush()
    return item


def seen_by(session: Session, kind: Kind, item: Any, viewer: Organization) -> Seen | None:
    """*item* as *viewer* sees it, or None when it is neither the viewer's nor active and published to it."""
    v = kind.latest(session, item.id)
    owner = viewer.id == item.provider_org_id or viewer.kind == "platform"
    if not owner and (item.state != "active" or not is_visible(v.visibility, item.provider_org_id, viewer)):
        return None
    provider = session.get(Organization, item.provider_org_id)
    assert provider is not None
    return Seen(item, v, provider, owner)


def history(session: Session, kind: Kind, item_id: int, seen: Seen) -> list[Any]:
    """Every version, oldest first: for the publisher and the platform only (others: not found)."""
    if not seen.owner_view:
        raise NotFound.of(f"{kind.noun} history of", item_id)
    vm = kind.version_model
    return list(session.scalars(select(vm).where(getattr(vm, kind.fk) == item_id).order_by(vm.version)).all())


def version_at(session: Session, kind: Kind, item_id: int, when: datetime | None = None) -> Any | None:
    """The version in force at *when* (default now): the last one created at or before it."""
    vm = kind.version_model
    return session.scalar(
        select(vm)
        .where(getattr(vm, kind.fk) == item_id, vm.created <= naive_utc(when))
        .order_by(vm.version.desc())
        .limit(1)
    )


def _enablement(session: Session, kind: Kind, org_id: int, item_id: int) -> MarketEnablement | None:
    return session.scalar(
        select(MarketEnablement).where(
            MarketEnablement.org_id == org_id, getattr(MarketEnablement, kind.fk) == item_id
        )
    )


def enable(session: Session, kind: Kind, org_id: int, seen: Seen, enabled_by: str = "") -> MarketEnablement:
    """Enable a listing *seen* by *org_id*, accepting its current version (enabling again accepts the
    newest one); a withdrawn listing is a :class:`~.errors.Conflict`."""
    if seen.item.state != "active":
        raise Conflict(f"{kind.noun} {seen.item.name} is withdrawn and cannot be enabled")
    en = _enablement(session, kind, org_id, seen.item.id)
    if en is None:
        en = MarketEnablement(
            org_id=org_id,
            **{kind.fk: seen.item.id},
            accepted_version=seen.version.version,
            enabled_by=enabled_by,
        )
        session.add(en)
    else:
        en.accepted_version = seen.version.version
        en.enabled_by = enabled_by or en.enabled_by
    session.flush()
    return en


def disable(session: Session, kind: Kind, org_id: int, item_id: int) -> None:
    en = _enablement(session, kind, org_id, item_id)
    if en is None:
        raise NotFound(f"{kind.noun} {item_id} is not enabled for your organization")
    session.delete(en)
    session.flush()


def enabled_rows(
    session: Session, kind: Kind, org: Organization
) -> list[tuple[MarketEnablement, Any, Any, Organization]]:
    """(enablement, item, latest version, provider) of each active listing *org* enabled that is still
    published to it, by provider and name."""
    rows = session.execute(
        select(MarketEnablement, kind.model)
        .join(kind.model, kind.model.id == getattr(MarketEnablement, kind.fk))
        .where(MarketEnablement.org_id == org.id, kind.model.state == "active")
        .order_by(kind.model.provider_org_id, kind.model.name)
    ).all()
    out = []
    for en, item in rows:
        v = kind.latest(session, item.id)
        if not is_visible(v.visibility, item.provider_org_id, org):
            continue  # unpublished from this organization: as if it did not exist
        provider = session.get(Organization, item.provider_org_id)
        assert provider is not None
        out.append((en, item, v, provider))
    return out
