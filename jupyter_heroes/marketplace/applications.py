"""Applications: an application provider publishes a container image with a parameter schema and a
licence price to target organizations.

A version (:class:`~jupyter_heroes.orm_market.MarketApplicationVersion`) holds the image reference
(``docker://``, ``oras://``, ``library://``, ``shub://``, ``s3://`` or a plain registry reference such
as ``registry.example.org/cfd/solver:2.1``, optionally with ``@sha256:<digest>``), the JSON Schema of
its parameters, the licence price (an "A x + B" :class:`jupyter_heroes.decision.cost.Offer`, usually
a fixed fee per run or job, perhaps per core-hour), the licence terms, and its visibility (see
:mod:`.common`). Every change adds a version; jobs are charged under the version in force at
submission (:func:`jupyter_heroes.marketplace.offers.pin_job`).

The rules of :mod:`.offers` apply: an application not published to an organization is
:class:`~.errors.NotFound` for it, only enabled applications are usable
(:func:`enabled_applications`), and history is for the publisher and the platform.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jsonschema
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..decision.cost import Offer
from ..orm import Organization
from ..orm_market import MarketApplication, MarketApplicationVersion, MarketEnablement
from . import listing
from .common import (
    add_version,
    check_name,
    check_text,
    get_org,
    naive_utc,
    next_created,
    parse_price,
    parse_visibility,
    render_visibility,
)
from .errors import Conflict, InvalidInput, NotAllowed, NotFound

PUBLISHER_KINDS = ("provider", "platform")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_RE = re.compile(
    r"^(?:(?:docker|oras|library|shub)://)?"
    rf"(?:[a-zA-Z0-9.-]+(?::[0-9]{{1,5}})?/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)
S3_IMAGE_RE = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/[A-Za-z0-9!_.*'()/-]{1,1000}\.sif$")


def check_image(image: Any) -> str:
    """A container image reference, or :class:`~.errors.InvalidInput` (never reaches a shell unchecked)."""
    if not isinstance(image, str) or not (IMAGE_RE.match(image) or S3_IMAGE_RE.match(image)) or ".." in image:
        raise InvalidInput(
            f"image: {image!r} is not a container image reference such as "
            "docker://registry.example.org/cfd/solver:2.1, oras://host/app@sha256:<digest> or "
            "s3://bucket/images/app.sif"
        )
    return image


def check_schema(schema: Any) -> dict[str, Any]:
    """A JSON Schema (draft 2020-12 unless ``$schema`` says otherwise) describing the parameters."""
    if schema is None:
        return {"type": "object"}
    if not isinstance(schema, dict):
        raise InvalidInput(
            "parameters_schema: a JSON Schema object such as {type: object, properties: {...}}"
        )
    try:
        jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator).check_schema(
            schema
        )
    except jsonschema.SchemaError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "(top)"
        raise InvalidInput(f"parameters_schema at {where}: {e.message}") from None
    return schema


@dataclass(frozen=True)
class ApplicationView:
    application: MarketApplication
    version: MarketApplicationVersion
    provider: Organization
    owner_view: bool

    @property
    def price(self) -> Offer:
        return Offer.from_dict(self.version.price)

    def to_dict(self, session: Session) -> dict[str, Any]:
        a, v = self.application, self.version
        d: dict[str, Any] = {
            "id": a.id,
            "name": a.name,
            "description": a.description,
            "provider": self.provider.name,
            "provider_display_name": self.provider.display_name,
            "state": a.state,
            "version": v.version,
            "valid_from": v.created.isoformat() + "Z",
            "image": v.image,
            "parameters_schema": v.parameters_schema,
            "currency": v.currency,
            "price": dict(v.price),
            "licence": v.licence,
        }
        if self.owner_view:
            d["visibility"] = render_visibility(session, v.visibility)
        return d


@dataclass(frozen=True)
class EnabledApplication:
    application: MarketApplication
    version: MarketApplicationVersion
    provider: Organization
    accepted_version: int

    @property
    def price(self) -> Offer:
        return dataclasses.replace(
            Offer.from_dict(self.version.price),
            source=f"licence of {self.application.name} v{self.version.version} ({self.provider.name})",
        )

    @property
    def terms_changed(self) -> bool:
        return self.version.version > self.accepted_version


APPLICATION = listing.Kind("application", MarketApplication, MarketApplicationVersion, "application_id")


def _owned(session: Session, app_id: int, provider_org_id: int) -> MarketApplication:
    return listing.owned(session, APPLICATION, app_id, provider_org_id)


def publish_application(
    session: Session,
    provider_org_id: int,
    *,
    name: str,
    image: str,
    parameters_schema: Any = None,
    price: Any = None,
    licence: str = "",
    visibility: Any = None,
    description: str = "",
    created_by: str = "",
    now: datetime | None = None,
) -> MarketApplicationVersion:
    """Publish a new application (version 1). *price* defaults to free (``{"currency": "EUR"}``)."""
    org = get_org(session, provider_org_id)
    if org.kind not in PUBLISHER_KINDS:
        raise NotAllowed(
            f"organization {org.name} is a {org.kind} organization; only application providers "
            "(organizations of kind provider) and the platform publish applications in the marketplace",
            reason="not_a_provider",
        )
    check_name(name, "application name")
    p = parse_price(price if price is not None else {"currency": "EUR"})
    fields = dict(
        image=check_image(image),
        parameters_schema=check_schema(parameters_schema),
        currency=p.currency,
        price=p.to_dict(),
        licence=check_text(licence, "licence"),
        visibility=parse_visibility(session, visibility),
    )
    if session.scalar(
        select(MarketApplication.id).where(
            MarketApplication.provider_org_id == provider_org_id, MarketApplication.name == name
        )
    ):
        raise Conflict(f"you already publish an application named {name}; update it or choose another name")
    app = MarketApplication(
        provider_org_id=provider_org_id,
        name=name,
        description=check_text(description, "description"),
        state="active",
        current_version=1,
        created_by=created_by,
    )
    session.add(app)
    session.flush()
    v = MarketApplicationVersion(
        application_id=app.id,
        version=1,
        note="published",
        created=next_created(None, now),
        created_by=created_by,
        **fields,
    )
    session.add(v)
    session.flush()
    return v


def update_application(
    session: Session,
    application_id: int,
    provider_org_id: int,
    *,
    image: str | None = None,
    parameters_schema: Any = None,
    price: Any = None,
    licence: str | None = None,
    visibility: Any = None,
    note: str = "",
    changed_by: str = "",
    now: datetime | None = None,
) -> MarketApplicationVersion:
    """A new version with the given fields (others carried over); the current one if nothing changes."""
    app = _owned(session, application_id, provider_org_id)
    if app.state != "active":
        raise Conflict(f"application {app.name} is withdrawn; publish a new application instead")
    new: dict[str, Any] = {}
    if image is not None:
        new["image"] = check_image(image)
    if parameters_schema is not None:
        new["parameters_schema"] = check_schema(parameters_schema)
    if price is not None:
        p = parse_price(price)
        new["price"], new["currency"] = p.to_dict(), p.currency
    if licence is not None:
        new["licence"] = check_text(licence, "licence")
    if visibility is not None:
        new["visibility"] = parse_visibility(session, visibility)
    return add_version(
        session,
        app,
        MarketApplicationVersion,
        "application_id",
        new,
        ("image", "parameters_schema", "currency", "price", "licence", "visibility"),
        note=note,
        by=changed_by,
        now=now,
    )


def withdraw_application(session: Session, application_id: int, provider_org_id: int) -> MarketApplication:
    return listing.withdraw(session, APPLICATION, application_id, provider_org_id)


def _view(session: Session, app: MarketApplication, viewer: Organization) -> ApplicationView | None:
    seen = listing.seen_by(session, APPLICATION, app, viewer)
    return None if seen is None else ApplicationView(app, seen.version, seen.provider, seen.owner_view)


def _seen(view: ApplicationView) -> listing.Seen:
    return listing.Seen(view.application, view.version, view.provider, view.owner_view)


def get_application(session: Session, application_id: int, viewer_org_id: int) -> ApplicationView:
    viewer = get_org(session, viewer_org_id)
    app = session.get(MarketApplication, application_id)
    view = _view(session, app, viewer) if app is not None else None
    if view is None:
        raise NotFound.of("application", application_id)
    return view


def list_applications(session: Session, viewer_org_id: int) -> list[ApplicationView]:
    viewer = get_org(session, viewer_org_id)
    apps = session.scalars(
        select(MarketApplication).order_by(MarketApplication.provider_org_id, MarketApplication.name)
    ).all()
    return [v for v in (_view(session, a, viewer) for a in apps) if v is not None]


def application_history(
    session: Session, application_id: int, viewer_org_id: int
) -> list[MarketApplicationVersion]:
    """Every version of an application, oldest first: for its provider and the platform only."""
    view = get_application(session, application_id, viewer_org_id)
    return listing.history(session, APPLICATION, application_id, _seen(view))


def enable_application(
    session: Session, org_id: int, application_id: int, enabled_by: str = ""
) -> MarketEnablement:
    """Enable an application for *org_id*, accepting its current licence (again: the newest version)."""
    view = get_application(session, application_id, org_id)
    return listing.enable(session, APPLICATION, org_id, _seen(view), enabled_by)


def disable_application(session: Session, org_id: int, application_id: int) -> None:
    listing.disable(session, APPLICATION, org_id, application_id)


def enabled_applications(session: Session, org_id: int) -> list[EnabledApplication]:
    """Applications *org_id* enabled that are still active and published to it."""
    return [
        EnabledApplication(app, v, provider, en.accepted_version)
        for en, app, v, provider in listing.enabled_rows(session, APPLICATION, get_org(session, org_id))
    ]


def version_at(
    session: Session, application_id: int, when: datetime | None = None
) -> MarketApplicationVersion | None:
    """The version in force at *when* (default now): the last one created at or before it."""
    return listing.version_at(session, APPLICATION, application_id, when)


def application_version_for(
    session: Session, org_id: int, application_id: int, when: datetime | None = None
) -> MarketApplicationVersion:
    """The version of an application *org_id* has enabled that was in force at *when*."""
    if not any(e.application.id == application_id for e in enabled_applications(session, org_id)):
        raise NotFound(f"application {application_id} is not enabled for your organization")
    v = version_at(session, application_id, when)
    if v is None:
        raise NotFound(f"application {application_id} was not published yet at {naive_utc(when)}")
    return v


def validate_parameters(version: MarketApplicationVersion, params: Any) -> None:
    """Check run parameters against the version's schema; :class:`~.errors.InvalidInput` names the
    offending parameter."""
    v = jsonschema.validators.validator_for(
        version.parameters_schema, default=jsonschema.Draft202012Validator
    )(version.parameters_schema)
    err = jsonschema.exceptions.best_match(v.iter_errors(params))
    if err is not None:
        where = "/".join(str(p) for p in err.absolute_path) or "(top)"
        raise InvalidInput(f"parameter {where}: {err.message}", reason="invalid_parameter")
