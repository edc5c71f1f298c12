"""The vendor dashboard (``notebooks/vendor.ipynb``, served by the ``heroes-vendor`` Voila service).

::

    from jupyter_heroes.dashboards import VendorApp
    VendorApp()

Resource providers (``resource-provider``: scope ``resources:publish`` in a provider organization)
publish queues of their enrolled clusters as offers with an "A x + B" price, terms and a
visibility, change them (each change a new version), withdraw them, and see which client
organizations use them and the revenue. Application providers (``application-provider``:
``apps:publish``) publish container applications with a licence price. The tabs follow the
visitor's scopes in the picked organization; the service checks every call again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ipywidgets as w

from ..client import HeroesError
from .admin import parse_document
from .common import LABEL, AppShell, Section, button, scopes_in, show_figure, split_list, table, text, wide

VENDOR_SCOPES = frozenset({"resources:publish", "apps:publish"})
#: the rates a vendor types into the offer form (the other rates of the price model stay available
#: through the REST API)
RATE_FIELDS = ("fixed", "core_hour", "node_hour", "gpu_hour", "gb_hour")


def price_from(currency: str, fields: Mapping[str, str], fixed_per: str | None = None) -> dict[str, Any]:
    """The ``price`` object of an offer or application from the form's text fields (empty ones
    left out); the service checks the amounts and the currency and names the field it refuses."""
    price: dict[str, Any] = {"currency": currency.strip().upper() or "EUR"}
    for k, v in fields.items():
        if v.strip():
            price[k] = v.strip()
    if fixed_per:
        price["fixed_per"] = fixed_per
    return price


def visibility_from(value: str) -> Any:
    """``public`` -> "public"; ``acme, globex`` -> ["acme", "globex"]; empty -> private (nobody)."""
    v = value.strip()
    if not v:
        return []
    if v.lower() == "public":
        return "public"
    return split_list(v)


def visibility_text(v: Any) -> str:
    if isinstance(v, Mapping):
        if v.get("public"):
            return "public"
        return ", ".join(v.get("organizations", [])) or "private"
    return str(v or "")


class OffersSection(Section):
    title = "Offers"
    css = "heroes-vendor-offers"
    scope = "resources:publish"

    def build(self) -> list[w.Widget]:
        self.listing = w.HTML()
        self.name = text("offer name", "heroes-offer-name", "a DNS label, e.g. galileo-debug")
        self.cluster = w.Combobox(
            description="cluster",
            placeholder="an enrolled cluster of yours",
            ensure_option=False,
            style=LABEL,
            layout=wide(),
        )
        self.cluster.add_class("heroes-offer-cluster")
        self.queue = w.Combobox(
            description="queue",
            placeholder="a queue (partition) of that cluster",
            ensure_option=False,
            style=LABEL,
            layout=wide(),
        )
        self.queue.add_class("heroes-offer-queue")
        self.cluster.observe(lambda _c: self._queues(), names="value")
        self.currency = text("currency", "heroes-offer-currency", value="EUR", width="300px")
        self.rates = {
            k: text(k.replace("_", " "), f"heroes-offer-{k.replace('_', '-')}", "0.00", width="300px")
            for k in RATE_FIELDS
        }
        self.terms = w.Textarea(description="terms", style=LABEL, layout=wide("720px"))
        self.terms.add_class("heroes-offer-terms")
        self.visibility = text(
            "visible to", "heroes-offer-visibility", "public, or organization names (empty: nobody yet)"
        )
        self.description = text("description", "heroes-offer-description")
        self.publish_button = button("Publish offer", "heroes-offer-publish", "primary")
        self.publish_button.on_click(lambda _b: self.publish())
        self.picker = w.Dropdown(description="offer", style=LABEL, layout=wide())
        self.withdraw_button = button("Withdraw", "heroes-offer-withdraw", "warning")
        self.withdraw_button.on_click(lambda _b: self.withdraw())
        self.clusters: dict[str, list[str]] = {}
        return [
            self.listing,
            w.HBox([self.picker, self.withdraw_button]),
            w.HTML("<h4>Publish a queue as an offer: price = fixed + rate x usage</h4>"),
            self.name,
            self.cluster,
            self.queue,
            self.currency,
            *self.rates.values(),
            self.terms,
            self.visibility,
            self.description,
            self.publish_button,
        ]

    def _queues(self) -> None:
        self.queue.options = tuple(self.clusters.get(self.cluster.value, []))

    def refresh(self) -> None:
        org = self.api.organization
        offers = self.api.offers(provider=org) if org else self.api.offers()
        rows = [
            {
                **o,
                "where": f"{o.get('cluster') or '?'}/{o.get('queue')}",
                "price": {k: v for k, v in o.get("price", {}).items() if k != "currency"},
                "visible_to": visibility_text(o.get("visibility")),
            }
            for o in offers
        ]
        self.listing.value = table(
            rows,
            ["id", "name", "where", "state", "version", "currency", "price", "visible_to", "available_now"],
            css="heroes-vendor-offer-list",
            key="name",
            row_attrs=lambda r: {"data-state": str(r.get("state"))},
        )
        self.picker.options = [
            (f"{o['name']} v{o['version']}", o["id"]) for o in offers if o.get("state") == "active"
        ]
        try:  # the cluster list needs clusters:manage, which not every resource provider holds
            self.clusters = {c["name"]: [q["name"] for q in c.get("queues", [])] for c in self.api.clusters()}
        except HeroesError as e:
            if e.status not in (403, 404):
                raise
            self.clusters = {}
            for o in offers:
                if o.get("cluster"):
                    self.clusters.setdefault(o["cluster"], []).append(o["queue"])
        self.cluster.options = tuple(sorted(self.clusters))
        self._queues()

    def spec(self) -> dict[str, Any]:
        return {
            "name": self.name.value.strip(),
            "cluster": self.cluster.value.strip(),
            "queue": self.queue.value.strip(),
            "price": price_from(self.currency.value, {k: t.value for k, t in self.rates.items()}),
            "terms": self.terms.value,
            "visibility": visibility_from(self.visibility.value),
            "description": self.description.value.strip(),
        }

    def publish(self) -> None:
        spec = self.spec()

        def go() -> str:
            o = self.api.publish_offer(spec)
            return f"offer {o['name']} published (version {o['version']}, visible to {visibility_text(o.get('visibility'))})"

        if self.action(go):
            self.name.value = ""

    def withdraw(self) -> None:
        self.on_picked(
            self.picker, self.api.withdraw_offer, "offer {} withdrawn", "pick one of your offers first"
        )


class ApplicationsSection(Section):
    title = "Applications"
    css = "heroes-vendor-apps"
    scope = "apps:publish"

    def build(self) -> list[w.Widget]:
        self.listing = w.HTML()
        self.name = text("application", "heroes-app-name", "a DNS label, e.g. cfd-solver")
        self.image = text(
            "image", "heroes-app-image", "docker://registry.example.org/vendor/app:1.0", width="720px"
        )
        self.currency = text("currency", "heroes-app-currency", value="EUR", width="300px")
        self.fixed = text("licence per run", "heroes-app-fixed", "e.g. 25.00", width="300px")
        self.core_hour = text("per core hour", "heroes-app-core-hour", "0.00", width="300px")
        self.licence = w.Textarea(description="licence", style=LABEL, layout=wide("720px"))
        self.licence.add_class("heroes-app-licence")
        self.schema = w.Textarea(
            description="parameters",
            placeholder="JSON Schema of the run parameters (YAML or JSON; optional)",
            style=LABEL,
            layout=w.Layout(width="720px", height="120px"),
        )
        self.visibility = text("visible to", "heroes-app-visibility", "public, or organization names")
        self.publish_button = button("Publish application", "heroes-app-publish", "primary")
        self.publish_button.on_click(lambda _b: self.publish())
        self.picker = w.Dropdown(description="application", style=LABEL, layout=wide())
        self.withdraw_button = button("Withdraw", "heroes-app-withdraw", "warning")
        self.withdraw_button.on_click(lambda _b: self.withdraw())
        return [
            self.listing,
            w.HBox([self.picker, self.withdraw_button]),
            w.HTML("<h4>Publish an application with its licence price</h4>"),
            self.name,
            self.image,
            self.currency,
            self.fixed,
            self.core_hour,
            self.licence,
            self.schema,
            self.visibility,
            self.publish_button,
        ]

    def refresh(self) -> None:
        org = self.api.organization
        apps = self.api.applications(provider=org) if org else self.api.applications()
        rows = [
            {
                **a,
                "price": {k: v for k, v in a.get("price", {}).items() if k != "currency"},
                "visible_to": visibility_text(a.get("visibility")),
            }
            for a in apps
        ]
        self.listing.value = table(
            rows,
            ["id", "name", "image", "state", "version", "currency", "price", "visible_to"],
            css="heroes-vendor-app-list",
            key="name",
        )
        self.picker.options = [
            (f"{a['name']} v{a['version']}", a["id"]) for a in apps if a.get("state") == "active"
        ]

    def publish(self) -> None:
        def go() -> str:
            spec: dict[str, Any] = {
                "name": self.name.value.strip(),
                "image": self.image.value.strip(),
                "price": price_from(
                    self.currency.value,
                    {"fixed": self.fixed.value, "core_hour": self.core_hour.value},
                    fixed_per="run" if self.fixed.value.strip() else None,
                ),
                "licence": self.licence.value,
                "visibility": visibility_from(self.visibility.value),
            }
            if self.schema.value.strip():
                spec["parameters_schema"] = parse_document(self.schema.value)
            a = self.api.publish_application(spec)
            return f"application {a['name']} published (version {a['version']})"

        if self.action(go):
            self.name.value = ""

    def withdraw(self) -> None:
        self.on_picked(
            self.picker,
            self.api.withdraw_application,
            "application {} withdrawn",
            "pick one of your applications first",
        )


class RevenueSection(Section):
    """Who uses the vendor's offers and applications, and what they earned."""

    title = "Usage and revenue"
    css = "heroes-revenue"

    def build(self) -> list[w.Widget]:
        self.period = w.Dropdown(
            description="period",
            options=["month", "day", "year"],
            value="month",
            style=LABEL,
            layout=wide("300px"),
        )
        self.show_button = button("Show", "heroes-revenue-show", "primary")
        self.show_button.on_click(lambda _b: self.load())
        self.by_client = w.HTML()
        self.listing = w.HTML()
        self.figure = w.Output()
        return [
            w.HBox([self.period, self.show_button]),
            w.HTML("<h4>Client organizations using your offers and applications</h4>"),
            self.by_client,
            w.HTML("<h4>Revenue per item and period</h4>"),
            self.listing,
            self.figure,
        ]

    def refresh(self) -> None:
        clients = self.api.revenue(by="item,organization", period=None)
        self.by_client.value = table(
            clients,
            ["kind", "item", "organization", "jobs", "core_hours", "revenue"],
            css="heroes-revenue-clients",
            empty="no client has run on your offers or applications yet",
        )
        rows = self.api.revenue(by="item", period=self.period.value)
        self.listing.value = table(
            rows, ["kind", "item", "period", "jobs", "revenue"], css="heroes-revenue-list"
        )
        self.figure.clear_output()
        currencies = sorted({c for r in rows for c in (r.get("revenue") or {})})
        if rows and currencies:
            from ..accounting.reports import revenue_figure

            fig = revenue_figure(rows, currency=currencies[0])
            fig.update_xaxes(type="category")  # periods are labels ("2025-03"), not instants
            show_figure(self.figure, fig)


class VendorApp(AppShell):
    """The vendor dashboard (see the module docstring)."""

    title = "HEROES marketplace: your offers and applications"
    css = "heroes-vendor-app"
    SECTIONS = (OffersSection, ApplicationsSection, RevenueSection)

    def eligible(self, org: Mapping[str, Any]) -> bool:
        return bool(scopes_in(self.me, org["name"]) & VENDOR_SCOPES)

    def nothing_message(self) -> str:
        return (
            f"{self.me.get('name')} publishes nothing: this dashboard is for vendors (roles resource-provider "
            "and application-provider in a provider organization). Ask the platform administrators for one."
        )


__all__ = ["ApplicationsSection", "OffersSection", "RevenueSection", "VendorApp"]
