"""The calls the admin and vendor dashboards make, as methods on top of one
:class:`~jupyter_heroes.client.HeroesClient` (every call goes through its :meth:`request`, so the
timeouts, retries, logging without secrets and :class:`HeroesError` come from there).

::

    api = DashboardAPI(HeroesClient())           # in a dashboard kernel: the visitor's own token
    api.create_role("data-steward", ["custom:heroes:data:manage"])
    cluster = api.enrol_cluster({"name": "galileo", "host": "login.example.org", ...})
    report = api.check_cluster(cluster["id"])    # {"cluster", "compliant", "items": [...]}

The service decides what the caller may do (``custom:heroes:*`` scopes of the caller's roles in the
selected organization); these methods never try to second-guess it, they return what it answers or
raise its refusal. Endpoints that a given service may not have yet (the decision's performance
report) are looked up in its OpenAPI document first and raise ``not_available`` when missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..client import HeroesClient, HeroesError, _seg

PERFORMANCE_PATH = "/organization/decision/performance"
SCOPE_PREFIX = "custom:heroes:"


class DashboardAPI:
    """REST calls of the dashboards (see the module docstring). *client* acts as the visitor."""

    def __init__(self, client: HeroesClient) -> None:
        self.client = client

    def __repr__(self) -> str:
        return f"DashboardAPI({self.client!r})"

    def in_org(self, organization: str | None) -> DashboardAPI:
        """The same calls acting in *organization* (``X-Heroes-Organization``)."""
        return DashboardAPI(self.client.with_organization(organization))

    @property
    def organization(self) -> str | None:
        return self.client.organization

    def _get(self, path: str, **params: Any) -> Any:
        return self.client.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def _post(self, path: str, body: Any = None, **params: Any) -> Any:
        return self.client.request(
            "POST", path, json_body=body, params={k: v for k, v in params.items() if v is not None}
        )

    # --- who am I ---------------------------------------------------------------------------------
    def me(self) -> dict[str, Any]:
        return self.client.me()

    # --- users, groups, roles ---------------------------------------------------------------------
    def users(self) -> list[dict[str, Any]]:
        return self._get("/organization/admin/users")

    def add_user(
        self, username: str, roles: Iterable[str] = (), projects: Iterable[str] = ()
    ) -> dict[str, Any]:
        body = {"username": username, "roles": list(roles), "projects": list(projects)}
        return self._post("/organization/admin/users", body)

    def update_user(self, username: str, **fields: Any) -> dict[str, Any]:
        return self.client.request(
            "PATCH", f"/organization/admin/users/{_seg(username)}", json_body=dict(fields)
        )

    def remove_user(self, username: str) -> None:
        self.client.request("DELETE", f"/organization/admin/users/{_seg(username)}")

    def groups(self) -> list[dict[str, Any]]:
        return self._get("/organization/admin/groups")

    def create_group(self, name: str, description: str = "", members: Iterable[str] = ()) -> dict[str, Any]:
        return self._post(
            "/organization/admin/groups", {"name": name, "description": description, "members": list(members)}
        )

    def roles(self) -> list[dict[str, Any]]:
        return self._get("/organization/admin/roles")

    def create_role(self, name: str, scopes: Iterable[str], description: str = "") -> dict[str, Any]:
        """A role of the organization; *scopes* may be given without the ``custom:heroes:`` prefix."""
        full = [s if s.startswith(SCOPE_PREFIX) else SCOPE_PREFIX + s for s in scopes]
        return self._post(
            "/organization/admin/roles", {"name": name, "scopes": full, "description": description}
        )

    def assign_role(self, username: str, role: str) -> dict[str, Any]:
        return self._post("/organization/admin/roles", {"username": username, "role": role})

    def delete_role(self, name: str) -> None:
        self.client.request("DELETE", f"/organization/admin/roles/{_seg(name)}")

    # --- clusters ---------------------------------------------------------------------------------
    def clusters(self) -> list[dict[str, Any]]:
        return self._get("/organization/admin/cluster")

    def enrol_cluster(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Enrol a cluster: *spec* as ``POST /organization/admin/cluster`` takes it (empty values left out)."""
        body = {k: v for k, v in spec.items() if v not in (None, "", [])}
        return self._post("/organization/admin/cluster", body)

    def check_cluster(self, cluster_id: int) -> dict[str, Any]:
        """The compliance check, item by item (takes up to a few minutes: a tiny job runs)."""
        return self.client.request(
            "POST", f"/organization/admin/cluster/{int(cluster_id)}/check", timeout=(10.0, 600.0)
        )

    def delete_cluster(self, cluster_id: int) -> None:
        self.client.request("DELETE", f"/organization/admin/cluster/{int(cluster_id)}")

    # --- templates --------------------------------------------------------------------------------
    def templates(self) -> list[dict[str, Any]]:
        return self._get("/organization/admin/workflow/template")

    def publish_template(self, template: Mapping[str, Any]) -> dict[str, Any]:
        return self._post("/organization/admin/workflow/template", {"template": dict(template)})

    def retire_template(self, template_id: int) -> dict[str, Any]:
        return self.client.request("DELETE", f"/organization/admin/workflow/template/{int(template_id)}")

    # --- marketplace (client side) ----------------------------------------------------------------
    def offers(self, provider: str | None = None) -> list[dict[str, Any]]:
        return self._get("/marketplace/offers", provider=provider)

    def enabled_offers(self) -> list[dict[str, Any]]:
        return self._get("/organization/admin/offers")

    def enable_offer(self, offer_id: int, version: int | None = None) -> dict[str, Any]:
        return self._post(f"/organization/admin/offers/{int(offer_id)}/enable", version=version)

    def disable_offer(self, offer_id: int) -> None:
        self._post(f"/organization/admin/offers/{int(offer_id)}/disable")

    def applications(self, provider: str | None = None) -> list[dict[str, Any]]:
        return self._get("/marketplace/applications", provider=provider)

    def enable_application(self, application_id: int, version: int | None = None) -> dict[str, Any]:
        return self._post(f"/organization/admin/applications/{int(application_id)}/enable", version=version)

    def disable_application(self, application_id: int) -> None:
        self._post(f"/organization/admin/applications/{int(application_id)}/disable")

    # --- budgets, usage ---------------------------------------------------------------------------
    def budgets(self) -> list[dict[str, Any]]:
        return self._get("/organization/budgets")

    def create_budget(
        self, limit: str, currency: str = "EUR", project: str | None = None, on_exhausted: str = "hold"
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"limit": str(limit), "currency": currency, "on_exhausted": on_exhausted}
        if project:
            body["project"] = project
        return self._post("/organization/budgets", body)

    def usage(self, by: str = "project", period: str | None = "month", currency: str | None = None) -> Any:
        return self._get("/organization/usage", by=by, period=period, currency=currency)

    def performance(self) -> Any:
        """The decision module's performance report; ``not_available`` when the service has none."""
        if not self.client.has_endpoint(PERFORMANCE_PATH, "get"):
            raise HeroesError(
                f"this HEROES service has no decision performance report (GET {PERFORMANCE_PATH}) yet; "
                "it comes with a newer service: ask the platform administrators to upgrade it",
                "not_available",
                404,
            )
        return self._get(PERFORMANCE_PATH)

    def audit(self, limit: int = 50) -> list[dict[str, Any]]:
        return self._get("/organization/admin/audit", limit=limit)

    # --- platform -----------------------------------------------------------------------------------
    def organizations(self) -> list[dict[str, Any]]:
        return self._get("/heroes/admin/organizations")

    def create_organization(self, name: str, display_name: str = "", kind: str = "client") -> dict[str, Any]:
        body = {"name": name, "kind": kind, "display_name": display_name or name}
        return self._post("/heroes/admin/organizations", body)

    def delete_organization(self, name: str) -> None:
        self.client.request("DELETE", f"/heroes/admin/organizations/{_seg(name)}")

    def service_info(self) -> dict[str, Any]:
        """What the service says about itself: its OpenAPI title, version and number of operations."""
        doc = self.client.openapi()
        info = doc.get("info", {})
        ops = sum(len(v) for v in doc.get("paths", {}).values() if isinstance(v, dict))
        return {"title": info.get("title", ""), "version": info.get("version", ""), "operations": ops}

    # --- vendors ------------------------------------------------------------------------------------
    def publish_offer(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Publish an offer: ``{name, cluster, queue, price, terms, availability, visibility, description}``."""
        return self._post("/marketplace/offers", {k: v for k, v in spec.items() if v not in (None, "")})

    def update_offer(self, offer_id: int, **fields: Any) -> dict[str, Any]:
        return self.client.request("PATCH", f"/marketplace/offers/{int(offer_id)}", json_body=fields)

    def withdraw_offer(self, offer_id: int) -> dict[str, Any]:
        return self.client.request("DELETE", f"/marketplace/offers/{int(offer_id)}")

    def publish_application(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        return self._post("/marketplace/applications", {k: v for k, v in spec.items() if v not in (None, "")})

    def withdraw_application(self, application_id: int) -> dict[str, Any]:
        return self.client.request("DELETE", f"/marketplace/applications/{int(application_id)}")

    def revenue(self, by: str = "item,organization", period: str | None = "month") -> Any:
        return self._get("/marketplace/revenue", by=by, period=period)
