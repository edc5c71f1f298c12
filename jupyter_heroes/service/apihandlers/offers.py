"""``/marketplace/offers``: resource offers (D3.1 3.1.4, 4.9), and ``/organization/admin/offers``:
the ones the organization enabled.

A resource provider (an organization of kind ``provider``, role ``resource-provider``, scope
``resources:publish``) publishes a queue of one of its clusters at an "A x + B" price, with terms,
availability windows and a visibility. Every change (``PATCH``) is a new immutable version; jobs are
charged under the version in force when they were submitted. ``DELETE`` withdraws the offer (jobs
already submitted keep their price). The history (``/versions``) is for the provider and the
platform.

Any member of an organization browses the offers published to it; an offer that is not is answered
404, exactly like one that does not exist. A client organization's ``org-admin`` or
``billing-admin`` (scope ``billing``: enabling accepts commercial terms) enables and disables offers
under ``/organization/admin/offers/{offer_id}/enable|disable``.

The rules live in :mod:`jupyter_heroes.marketplace.offers`; this module maps names to ids, the
domain's errors to JSON errors, and audits.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from ... import orm
from ...marketplace import offers as market
from ...orm_market import MarketEnablement
from .. import schemas_market as sm
from ..auth import ApiError
from ..handlers import APIHandler, endpoint, routes
from ._market import PRICE_KEYS, check_amounts, domain_errors, jsonable

PUBLISH = "resources:publish"
ENABLE = "billing"
ID = {"type": "integer", "minimum": 1, "maximum": 2147483647}
VERSION_QUERY = {
    "version": {
        **ID,
        "description": "the version whose terms you accept: 409 terms_changed if the provider has "
        "published another since you read it",
    }
}


def enablements(handler: APIHandler, column: Any) -> dict[int, MarketEnablement]:
    """The selected organization's enablements, by offer (or application) id."""
    rows = handler.db.scalars(
        select(MarketEnablement).where(MarketEnablement.org_id == handler.org.id, column.is_not(None))
    )
    return {getattr(en, column.key): en for en in rows}


def offer_view(
    handler: APIHandler, view: market.OfferView, enabled: MarketEnablement | None
) -> dict[str, Any]:
    d = view.to_dict(handler.db)
    d["enabled"] = enabled is not None
    d["accepted_version"] = enabled.accepted_version if enabled else None
    return jsonable(d)


def offer_answer(handler: APIHandler, offer_id: int) -> dict[str, Any]:
    """The offer as the selected organization sees it now (raises the domain's NotFound)."""
    view = market.get_offer(handler.db, offer_id, handler.org.id)
    return offer_view(handler, view, enablements(handler, MarketEnablement.offer_id).get(offer_id))


def enabled_view(e: market.EnabledOffer, en: MarketEnablement | None) -> dict[str, Any]:
    return {
        "kind": "offer",
        "id": e.offer.id,
        "name": e.offer.name,
        "provider": e.provider.name,
        "enabled": True,
        "accepted_version": e.accepted_version,
        "current_version": e.version.version,
        "terms_changed": e.terms_changed,
        "usable": e.usable,
        "problem": e.problem,
        "enabled_by": en.enabled_by if en else "",
        "price": dict(e.version.price),
    }


def cluster_id(handler: APIHandler, name: str) -> int:
    """The id of the selected (provider) organization's cluster *name*, or 400."""
    if handler.org.kind not in market.PUBLISHER_KINDS:  # say so before looking for a cluster
        raise ApiError(
            403,
            f"organization {handler.org.name} is a {handler.org.kind} organization; only resource providers "
            "(organizations of kind provider) and the platform publish resource offers",
            "not_a_provider",
        )
    found = handler.db.scalar(
        select(orm.Cluster.id).where(orm.Cluster.org_id == handler.org.id, orm.Cluster.name == name)
    )
    if found is None:
        raise ApiError(
            400,
            f"no cluster '{name}' in organization {handler.org.name}; offers publish a queue of a cluster "
            "enrolled with POST /organization/admin/cluster",
            "unknown_cluster",
        )
    return found


class OfferListAPIHandler(APIHandler):
    path = "/marketplace/offers"
    tag = "Marketplace"

    @endpoint(
        summary="List the resource offers published to the organization",
        response=sm.OFFER_LIST,
        query={"provider": {"type": "string", "maxLength": 63, "description": "only this provider's offers"}},
    )
    def get(self) -> list[dict[str, Any]]:
        """Every member may browse. A provider (and the platform) also sees its own withdrawn offers
        and their visibility; clients see only active offers published to them."""
        s = self.db
        provider_id = None
        if "provider" in self.query_args:
            provider_id = s.scalar(
                select(orm.Organization.id).where(orm.Organization.name == self.query_args["provider"])
            )
            if provider_id is None:
                return []
        mine = enablements(self, MarketEnablement.offer_id)
        with domain_errors():
            views = market.list_offers(s, self.org.id, provider_org_id=provider_id)
        return [offer_view(self, v, mine.get(v.offer.id)) for v in views]

    @endpoint(
        summary="Publish a queue of one of the organization's clusters as an offer",
        scope=PUBLISH,
        body=sm.OFFER_CREATE,
        response=sm.OFFER,
        status=201,
        action="offer.publish",
        errors=(409,),
    )
    def post(self) -> dict[str, Any]:
        """Only provider organizations (and the platform) publish. ``visibility`` defaults to
        private: nobody else sees the offer until it is published to them."""
        s, body = self.db, self.body
        self.audit(body["name"], cluster=body["cluster"], queue=body["queue"])
        check_amounts(body["price"], PRICE_KEYS, "price")
        cid = cluster_id(self, body["cluster"])
        with domain_errors():
            v = market.publish_offer(
                s,
                self.org.id,
                name=body["name"],
                cluster_id=cid,
                queue=body["queue"],
                price=body["price"],
                terms=body.get("terms", ""),
                availability=body.get("availability"),
                visibility=body.get("visibility"),
                description=body.get("description", ""),
                created_by=self.caller_name(),
            )
            s.commit()
            self.audit(str(v.offer_id), name=body["name"], version=v.version)
            return offer_answer(self, v.offer_id)


class OfferAPIHandler(APIHandler):
    path = "/marketplace/offers/{offer_id}"
    tag = "Marketplace"
    path_params = {"offer_id": ID}

    @endpoint(summary="Get an offer", response=sm.OFFER)
    def get(self, offer_id: str) -> dict[str, Any]:
        with domain_errors():
            return offer_answer(self, self.int_arg(offer_id, "Offer"))

    @endpoint(
        summary="Change an offer's price, terms, availability or visibility (a new version)",
        scope=PUBLISH,
        body=sm.OFFER_PATCH,
        response=sm.OFFER,
        action="offer.update",
        errors=(409,),
    )
    def patch(self, offer_id: str) -> dict[str, Any]:
        """Fields not given are carried over from the current version; past versions never change.
        A change that changes nothing creates no version."""
        self.audit(offer_id)
        oid = self.int_arg(offer_id, "Offer")
        s, body = self.db, self.body
        self.audit(str(oid), fields=sorted(k for k in body if k != "note"))
        check_amounts(body.get("price") or {}, PRICE_KEYS, "price")
        with domain_errors():
            v = market.update_offer(
                s,
                oid,
                self.org.id,
                price=body.get("price"),
                terms=body.get("terms"),
                availability=body.get("availability"),
                visibility=body.get("visibility"),
                note=body.get("note", ""),
                changed_by=self.caller_name(),
            )
            s.commit()
            self.audit(version=v.version)
            return offer_answer(self, oid)

    @endpoint(summary="Withdraw an offer", scope=PUBLISH, response=sm.OFFER, action="offer.withdraw")
    def delete(self, offer_id: str) -> dict[str, Any]:
        """Nothing new is placed on a withdrawn offer; jobs already submitted are charged as agreed.
        The offer and its history stay (for audit)."""
        self.audit(offer_id)
        oid = self.int_arg(offer_id, "Offer")
        s = self.db
        with domain_errors():
            offer = market.withdraw_offer(s, oid, self.org.id)
            s.commit()
            self.audit(str(oid), name=offer.name)
            return offer_answer(self, oid)


class OfferVersionsAPIHandler(APIHandler):
    path = "/marketplace/offers/{offer_id}/versions"
    tag = "Marketplace"
    path_params = {"offer_id": ID}

    @endpoint(
        summary="Every version of an offer, oldest first", scope=PUBLISH, response=sm.OFFER_VERSION_LIST
    )
    def get(self, offer_id: str) -> list[dict[str, Any]]:
        """For the offer's provider and the platform; anyone else gets 404."""
        oid = self.int_arg(offer_id, "Offer")
        s = self.db
        with domain_errors():
            return [jsonable(market.version_dict(s, v)) for v in market.offer_history(s, oid, self.org.id)]


class EnabledOfferListAPIHandler(APIHandler):
    path = "/organization/admin/offers"
    tag = "Marketplace"

    @endpoint(
        summary="The offers the organization enabled, with whether each is usable now",
        scope=ENABLE,
        response=sm.ENABLEMENT_LIST,
    )
    def get(self) -> list[dict[str, Any]]:
        """``terms_changed``: the provider published a version after the one accepted (enable again to
        accept it). ``problem``: why an offer cannot be used now (withdrawn cluster, outside its
        availability windows ...)."""
        mine = enablements(self, MarketEnablement.offer_id)
        with domain_errors():
            rows = market.enabled_offers(self.db, self.org.id, include_unusable=True)
        return jsonable([enabled_view(e, mine.get(e.offer.id)) for e in rows])


class OfferEnableAPIHandler(APIHandler):
    path = "/organization/admin/offers/{offer_id}/enable"
    tag = "Marketplace"
    path_params = {"offer_id": ID}

    @endpoint(
        summary="Enable an offer for the organization, accepting its current terms",
        scope=ENABLE,
        response=sm.ENABLEMENT,
        action="offer.enable",
        query=VERSION_QUERY,
        errors=(409,),
    )
    def post(self, offer_id: str) -> dict[str, Any]:
        """Enabling again accepts the newest version. The decision module then proposes the offer to
        the organization's users whenever it is available."""
        self.audit(offer_id)
        oid = self.int_arg(offer_id, "Offer")
        s = self.db
        with domain_errors():
            view = market.get_offer(s, oid, self.org.id)
            self.audit(str(oid), name=view.offer.name, version=view.version.version)
            want = self.query_args.get("version")
            if want is not None and want != view.version.version:
                raise ApiError(
                    409,
                    f"offer {view.offer.name} is at version {view.version.version}, not {want}: its provider "
                    "changed it since you read it; review the current terms and enable that version",
                    "terms_changed",
                )
            en = market.enable_offer(s, self.org.id, oid, enabled_by=self.caller_name())
            s.commit()
            found = [
                e for e in market.enabled_offers(s, self.org.id, include_unusable=True) if e.offer.id == oid
            ]
        return jsonable(enabled_view(found[0], en))


class OfferDisableAPIHandler(APIHandler):
    path = "/organization/admin/offers/{offer_id}/disable"
    tag = "Marketplace"
    path_params = {"offer_id": ID}

    @endpoint(
        summary="Disable an offer for the organization", scope=ENABLE, status=204, action="offer.disable"
    )
    def post(self, offer_id: str) -> None:
        """Runs are no longer placed on it; jobs already submitted are charged as agreed."""
        self.audit(offer_id)
        oid = self.int_arg(offer_id, "Offer")
        with domain_errors():
            market.disable_offer(self.db, self.org.id, oid)
            self.db.commit()
        return None


default_handlers = routes(
    OfferListAPIHandler,
    OfferAPIHandler,
    OfferVersionsAPIHandler,
    EnabledOfferListAPIHandler,
    OfferEnableAPIHandler,
    OfferDisableAPIHandler,
)
