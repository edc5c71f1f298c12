"""``/organization/auth/me``: who the caller is, in which organizations, with which roles and scopes.

Login, logout and token refresh (``/organization/auth/login|logout|refresh_token`` in D3.6) are the
hub's: ``/hub/login``, ``/hub/logout`` and the hub's token page / OAuth flow.
"""

from __future__ import annotations

from typing import Any

from .. import schemas
from ..auth import get_user, member_orgs, platform_scopes, scopes_in
from ..handlers import APIHandler, endpoint, routes
from ..views import member_view, membership


class MeAPIHandler(APIHandler):
    path = "/organization/auth/me"
    tag = "Identity"

    @endpoint(summary="Information about the authenticated user", org=False, response=schemas.ME)
    def get(self) -> dict[str, Any]:
        """The caller, every organization they belong to with their roles, projects and effective
        scopes there, and the scopes they hold in the platform organization."""
        model = self.current_user
        s = self.db
        name = self.caller_name()
        user = get_user(s, name)
        orgs = []
        for org in member_orgs(s, user):
            om = membership(s, user, org)
            assert user is not None and om is not None
            view = member_view(s, user, org, om)
            orgs.append(
                {
                    "name": org.name,
                    "display_name": org.display_name or "",
                    "kind": org.kind,
                    "roles": view["roles"],
                    "projects": view["projects"],
                    "scopes": sorted(scopes_in(s, user, org)),
                }
            )
        return {
            "name": name,
            "kind": model.get("kind", "user"),
            "admin": bool(model.get("admin", False)),
            "email": (user.email if user else "") or "",
            "full_name": (user.full_name if user else "") or "",
            "organizations": orgs,
            "platform_scopes": sorted(platform_scopes(s, user, self.heroes.platform_org)),
        }


default_handlers = routes(MeAPIHandler)
