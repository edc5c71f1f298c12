"""``/marketplace/applications``: applications (container image, parameter schema, licence price),
and ``/organization/admin/applications``: the ones the organization enabled.

The rules of :mod:`.offers` apply: an application provider (role ``application-provider``, scope
``apps:publish``, in an organization of kind ``provider``) publishes and versions; every member of
an organization browses what is published to it (anything else is 404); the organization's
``billing`` holders enable and disable. See :mod:`jupyter_heroes.marketplace.applications`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from ...marketplace import applications as market
from ...marketplace.common import render_visibility
from ...orm_market import MarketApplicationVersion, MarketEnablement
from .. import schemas_market as sm
from ..auth import ApiError
from ..handlers import APIHandler, endpoint, routes
from ._market import PRICE_KEYS, check_amounts, domain_errors, jsonable
from .offers import ENABLE, ID, VERSION_QUERY, enablements

PUBLISH = "apps:publish"


def app_view(
    handler: APIHandler, view: market.ApplicationView, enabled: MarketEnablement | None
) -> dict[str, Any]:
    d = view.to_dict(handler.db)
    d["enabled"] = enabled is not None
    d["accepted_version"] = enabled.accepted_version if enabled else None
    return jsonable(d)


def app_answer(handler: APIHandler, application_id: int) -> dict[str, Any]:
    """The application as the selected organization sees it now (raises the domain's NotFound)."""
    view = market.get_application(handler.db, application_id, handler.org.id)
    return app_view(handler, view, enablements(handler, MarketEnablement.application_id).get(application_id))


def version_view(s: Session, v: MarketApplicationVersion) -> dict[str, Any]:
    return jsonable(
        {
            "version": v.version,
            "valid_from": v.created,
            "image": v.image,
            "parameters_schema": v.parameters_schema,
            "currency": v.currency,
            "price": dict(v.price),
            "licence": v.licence,
            "visibility": render_visibility(s, v.visibility),
            "note": v.note,
            "created_by": v.created_by,
        }
    )


def enabled_view(e: market.EnabledApplication, en: MarketEnablement | None) -> dict[str, Any]:
    return {
        "kind": "application",
        "id": e.application.id,
        "name": e.application.name,
        "provider": e.provider.name,
        "enabled": True,
        "accepted_version": e.accepted_version,
        "current_version": e.version.version,
        "terms_changed": e.terms_changed,
        "usable": True,
        "problem": "",
        "enabled_by": en.enabled_by if en else "",
        "price": dict(e.version.price),
    }


class ApplicationListAPIHandler(APIHandler):
    path = "/marketplace/applications"
    tag = "Marketplace"

    @endpoint(summary="List the applications published to the organization", response=sm.APPLICATION_LIST)
    def get(self) -> list[dict[str, Any]]:
        """Every member may browse; a provider (and the platform) also sees its withdrawn applications
        and their visibility."""
        mine = enablements(self, MarketEnablement.application_id)
        with domain_errors():
            views = market.list_applications(self.db, self.org.id)
        return [app_view(self, v, mine.get(v.application.id)) for v in views]

    @endpoint(
        summary="Publish an application",
        scope=PUBLISH,
        body=sm.APPLICATION_CREATE,
        response=sm.APPLICATION,
        status=201,
        action="application.publish",
        errors=(409,),
    )
    def post(self) -> dict[str, Any]:
        """``price`` is the licence price (default free, in EUR); ``visibility`` defaults to private."""
        s, body = self.db, self.body
        self.audit(body["name"], image=body["image"][:200])
        check_amounts(body.get("price") or {}, PRICE_KEYS, "price")
        with domain_errors():
            v = market.publish_application(
                s,
                self.org.id,
                name=body["name"],
                image=body["image"],
                parameters_schema=body.get("parameters_schema"),
                price=body.get("price"),
                licence=body.get("licence", ""),
                visibility=body.get("visibility"),
                description=body.get("description", ""),
                created_by=self.caller_name(),
            )
            s.commit()
            self.audit(str(v.application_id), name=body["name"], version=v.version)
            return app_answer(self, v.application_id)


class ApplicationAPIHandler(APIHandler):
    path = "/marketplace/applications/{application_id}"
    tag = "Marketplace"
    path_params = {"application_id": ID}

    @endpoint(summary="Get an application", response=sm.APPLICATION)
    def get(self, application_id: str) -> dict[str, Any]:
        with domain_errors():
            return app_answer(self, self.int_arg(application_id, "Application"))

    @endpoint(
        summary="Change an application's image, parameters, price, licence or visibility (a new version)",
        scope=PUBLISH,
        body=sm.APPLICATION_PATCH,
        response=sm.APPLICATION,
        action="application.update",
        errors=(409,),
    )
    def patch(self, application_id: str) -> dict[str, Any]:
        """Fields not given are carried over; past versions never change."""
        self.audit(application_id)
        aid = self.int_arg(application_id, "Application")
        s, body = self.db, self.body
        self.audit(str(aid), fields=sorted(k for k in body if k != "note"))
        check_amounts(body.get("price") or {}, PRICE_KEYS, "price")
        with domain_errors():
            v = market.update_application(
                s,
                aid,
                self.org.id,
                image=body.get("image"),
                parameters_schema=body.get("parameters_schema"),
                price=body.get("price"),
                licence=body.get("licence"),
                visibility=body.get("visibility"),
                note=body.get("note", ""),
                changed_by=self.caller_name(),
            )
            s.commit()
            self.audit(version=v.version)
            return app_answer(self, aid)

    @endpoint(
        summary="Withdraw an application",
        scope=PUBLISH,
        response=sm.APPLICATION,
        action="application.withdraw",
    )
    def delete(self, application_id: str) -> dict[str, Any]:
        """No new runs; runs already submitted are charged as agreed. The history stays."""
        self.audit(application_id)
        aid = self.int_arg(application_id, "Application")
        s = self.db
        with domain_errors():
            app = market.withdraw_application(s, aid, self.org.id)
            s.commit()
            self.audit(str(aid), name=app.name)
            return app_answer(self, aid)


class ApplicationVersionsAPIHandler(APIHandler):
    path = "/marketplace/applications/{application_id}/versions"
    tag = "Marketplace"
    path_params = {"application_id": ID}

    @endpoint(
        summary="Every version of an application, oldest first",
        scope=PUBLISH,
        response=sm.APPLICATION_VERSION_LIST,
    )
    def get(self, application_id: str) -> list[dict[str, Any]]:
        """For the application's provider and the platform; anyone else gets 404."""
        aid = self.int_arg(application_id, "Application")
        s = self.db
        with domain_errors():
            return [version_view(s, v) for v in market.application_history(s, aid, self.org.id)]


class EnabledApplicationListAPIHandler(APIHandler):
    path = "/organization/admin/applications"
    tag = "Marketplace"

    @endpoint(summary="The applications the organization enabled", scope=ENABLE, response=sm.ENABLEMENT_LIST)
    def get(self) -> list[dict[str, Any]]:
        mine = enablements(self, MarketEnablement.application_id)
        with domain_errors():
            rows = market.enabled_applications(self.db, self.org.id)
        return jsonable([enabled_view(e, mine.get(e.application.id)) for e in rows])


class ApplicationEnableAPIHandler(APIHandler):
    path = "/organization/admin/applications/{application_id}/enable"
    tag = "Marketplace"
    path_params = {"application_id": ID}

    @endpoint(
        summary="Enable an application for the organization, accepting its current licence",
        scope=ENABLE,
        response=sm.ENABLEMENT,
        action="application.enable",
        query=VERSION_QUERY,
        errors=(409,),
    )
    def post(self, application_id: str) -> dict[str, Any]:
        self.audit(application_id)
        aid = self.int_arg(application_id, "Application")
        s = self.db
        with domain_errors():
            view = market.get_application(s, aid, self.org.id)
            self.audit(str(aid), name=view.application.name, version=view.version.version)
            want = self.query_args.get("version")
            if want is not None and want != view.version.version:
                raise ApiError(
                    409,
                    f"application {view.application.name} is at version {view.version.version}, not {want}: "
                    "its provider changed it since you read it; review the current licence and enable that "
                    "version",
                    "terms_changed",
                )
            en = market.enable_application(s, self.org.id, aid, enabled_by=self.caller_name())
            s.commit()
            found = [e for e in market.enabled_applications(s, self.org.id) if e.application.id == aid]
        return jsonable(enabled_view(found[0], en))


class ApplicationDisableAPIHandler(APIHandler):
    path = "/organization/admin/applications/{application_id}/disable"
    tag = "Marketplace"
    path_params = {"application_id": ID}

    @endpoint(
        summary="Disable an application for the organization",
        scope=ENABLE,
        status=204,
        action="application.disable",
    )
    def post(self, application_id: str) -> None:
        self.audit(application_id)
        aid = self.int_arg(application_id, "Application")
        with domain_errors():
            market.disable_application(self.db, self.org.id, aid)
            self.db.commit()
        return None


default_handlers = routes(
    ApplicationListAPIHandler,
    ApplicationAPIHandler,
    ApplicationVersionsAPIHandler,
    EnabledApplicationListAPIHandler,
    ApplicationEnableAPIHandler,
    ApplicationDisableAPIHandler,
)
