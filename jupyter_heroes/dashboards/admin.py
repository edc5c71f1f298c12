"""The administration dashboard (``notebooks/admin.ipynb``, served by the ``heroes-admin`` Voila service).

::

    from jupyter_heroes.dashboards import AdminApp
    AdminApp()

Organization administrators (``org-admin``, ``project-admin``, ``billing-admin`` ... in a client
organization) get one tab per thing they may manage there: users, groups (projects), roles,
clusters with their compliance check, workflow templates, the marketplace offers and applications
they enable, budgets, usage and cost reports with the decision module's performance, and the audit
trail. Platform administrators (``organizations:manage`` in the platform organization) also get the
*Platform* tab: organizations and platform-wide health. Which tabs show follows the visitor's scopes
in the picked organization; the service checks every call again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import ipywidgets as w

from ..client import HeroesError
from ..roles import SCOPES
from .common import (
    LABEL,
    AppShell,
    Section,
    button,
    cell,
    esc,
    platform_scopes,
    show_figure,
    split_list,
    table,
    text,
    wide,
)

#: scopes that make an organization show up in the admin dashboard
ADMIN_SCOPES = frozenset(
    {"users:manage", "clusters:manage", "workflows:manage", "billing", "data:manage", "audit:read"}
)


class UsersSection(Section):
    title = "Users"
    css = "heroes-users"
    scope = "users:manage"

    def build(self) -> list[w.Widget]:
        self.listing = w.HTML()
        self.username = text("username", "heroes-user-name", "hub user name")
        self.user_roles = text("roles", "heroes-user-roles", "researcher, workflow-admin")
        self.user_projects = text("projects", "heroes-user-projects", "project names (optional)")
        self.add_button = button("Add user", "heroes-user-add", "primary")
        self.add_button.on_click(lambda _b: self.add())
        return [
            self.listing,
            w.HTML("<h4>Add a member</h4>"),
            self.username,
            self.user_roles,
            self.user_projects,
            self.add_button,
        ]

    def refresh(self) -> None:
        users = self.api.users()
        self.listing.value = table(
            users, ["name", "full_name", "roles", "projects", "email"], css="heroes-user-list", key="name"
        )

    def add(self) -> None:
        name = self.username.value.strip()

        def go() -> str:
            if not name:
                raise ValueError("type the user's hub name first")
            self.api.add_user(name, split_list(self.user_roles.value), split_list(self.user_projects.value))
            return f"{name} added to {self.api.organization}"

        if self.action(go):
            self.username.value = ""


class GroupsSection(Section):
    title = "Groups"
    css = "heroes-groups"
    scope = "users:manage"

    def build(self) -> list[w.Widget]:
        self.listing = w.HTML()
        self.name = text("name", "heroes-group-name", "a DNS label, e.g. wing-design")
        self.description = text("description", "heroes-group-description")
        self.members = text("members", "heroes-group-members", "user names (optional)")
        self.create_button = button("Create group", "heroes-group-create", "primary")
        self.create_button.on_click(lambda _b: self.create())
        return [
            self.listing,
            w.HTML("<h4>Create a group (project)</h4>"),
            self.name,
            self.description,
            self.members,
            self.create_button,
        ]

    def refresh(self) -> None:
        groups = self.api.groups()
        self.listing.value = table(
            groups, ["name", "description", "members"], css="heroes-group-list", key="name"
        )

    def create(self) -> None:
        name = self.name.value.strip()
        if self.action(
            lambda: (
                self.api.create_group(name, self.description.value.strip(), split_list(self.members.value))
                and f"group {name} created"
            )
        ):
            self.name.value = ""


class RolesSection(Section):
    title = "Roles"
    css = "heroes-roles"
    scope = "users:manage"

    def build(self) -> list[w.Widget]:
        self.listing = w.HTML()
        self.name = text("role name", "heroes-role-name", "e.g. data-steward")
        self.description = text("description", "heroes-role-description")
        self.scope_boxes: dict[str, w.Checkbox] = {}
        for full, desc in SCOPES.items():
            short = full.removeprefix("custom:heroes:")
            cb = w.Checkbox(description=f"{short}: {desc}", indent=False, layout=wide("720px"))
            cb.add_class("heroes-scope-" + short.replace(":", "-"))
            self.scope_boxes[short] = cb
        self.create_button = button("Create role", "heroes-role-create", "primary")
        self.create_button.on_click(lambda _b: self.create())
        self.assign_user = text("user", "heroes-assign-user")
        self.assign_role = text("role", "heroes-assign-role")
        self.assign_button = button("Assign role", "heroes-role-assign")
        self.assign_button.on_click(lambda _b: self.assign())
        return [
            self.listing,
            w.HTML(
                "<h4>Create a role</h4><p>You can only put administrative scopes you hold into a role.</p>"
            ),
            self.name,
            self.description,
            w.VBox(list(self.scope_boxes.values())),
            self.create_button,
            w.HTML("<h4>Give a member a role</h4>"),
            self.assign_user,
            self.assign_role,
            self.assign_button,
        ]

    def refresh(self) -> None:
        roles = self.api.roles()
        rows = [{**r, "kind": "built-in" if r.get("builtin") else "organization"} for r in roles]
        for r in rows:
            r["scopes"] = [s.removeprefix("custom:heroes:") for s in r.get("scopes", [])]
        self.listing.value = table(
            rows, ["name", "kind", "scopes", "description"], css="heroes-role-list", key="name"
        )

    def create(self) -> None:
        name = self.name.value.strip()
        scopes = [s for s, cb in self.scope_boxes.items() if cb.value]

        def go() -> str:
            if not name or not scopes:
                raise ValueError("give the role a name and tick at least one scope")
            self.api.create_role(name, scopes, self.description.value.strip())
            return f"role {name} created with {', '.join(scopes)}"

        if self.action(go):
            self.name.value = ""
            for cb in self.scope_boxes.values():
                cb.value = False

    def assign(self) -> None:
        user, role = self.assign_user.value.strip(), self.assign_role.value.strip()
        self.action(lambda: self.api.assign_role(user, role) and f"{user} now holds {role}")


class ClustersSection(Section):
    title = "Clusters"
    css = "heroes-clusters"
    scope = "clusters:manage"

    def build(self) -> list[w.Widget]:
        self.listing = w.HTML()
        self.name = text("name", "heroes-cluster-name", "e.g. galileo")
        self.transport = w.Dropdown(
            description="transport", options=["ssh", "local"], value="ssh", style=LABEL, layout=wide()
        )
        self.transport.add_class("heroes-cluster-transport")
        self.scheduler = w.Dropdown(
            description="scheduler", options=["slurm", "local"], value="slurm", style=LABEL, layout=wide()
        )
        self.scheduler.add_class("heroes-cluster-scheduler")
        self.host = text("login node", "heroes-cluster-host", "host name or IP address")
        self.port = w.BoundedIntText(
            description="SSH port", value=22, min=1, max=65535, style=LABEL, layout=wide("260px")
        )
        self.port.add_class("heroes-cluster-port")
        self.username = text("service account", "heroes-cluster-user", "Unix account HEROES logs in as")
        self.host_key = w.Textarea(
            description="host key",
            placeholder="ssh-ed25519 AAAA... (pinned)",
            style=LABEL,
            layout=wide("720px"),
        )
        self.host_key.add_class("heroes-cluster-hostkey")
        self.private_key = w.Textarea(
            description="private key",
            placeholder="-----BEGIN OPENSSH PRIVATE KEY----- (stored encrypted, never shown again)",
            style=LABEL,
            layout=wide("720px"),
        )
        self.private_key.add_class("heroes-cluster-key")
        self.scratch = text("scratch root", "heroes-cluster-scratch", "a directory compute nodes see")
        self.queues = text("queues", "heroes-cluster-queues", "partitions HEROES may use, e.g. debug, long")
        self.enrol_button = button("Enrol and check", "heroes-cluster-enrol", "primary")
        self.enrol_button.on_click(lambda _b: self.enrol())
        self.check_picker = w.Dropdown(description="cluster", style=LABEL, layout=wide())
        self.check_picker.add_class("heroes-check-picker")
        self.check_button = button("Run compliance check", "heroes-cluster-check")
        self.check_button.on_click(lambda _b: self.check(self.check_picker.value))
        self.report = w.HTML()
        self.report.add_class("heroes-check-report")
        self.last_check: dict[str, Any] | None = None
        return [
            self.listing,
            w.HBox([self.check_picker, self.check_button]),
            self.report,
            w.HTML("<h4>Enrol a cluster</h4>"),
            self.name,
            self.transport,
            self.scheduler,
            self.host,
            self.port,
            self.username,
            self.host_key,
            self.private_key,
            self.scratch,
            self.queues,
            self.enrol_button,
        ]

    def refresh(self) -> None:
        clusters = self.api.clusters()
        rows = [
            {
                **c,
                "queues": [q["name"] for q in c.get("queues", [])],
                "where": f"{c['username']}@{c['host']}:{c['port']}" if c.get("host") else c.get("transport"),
            }
            for c in clusters
        ]
        self.listing.value = table(
            rows,
            ["name", "scheduler", "where", "queues", "has_private_key", "enabled"],
            css="heroes-cluster-list",
            key="name",
        )
        current = self.check_picker.value
        self.check_picker.options = [(c["name"], c["id"]) for c in clusters]
        ids = [c["id"] for c in clusters]
        if ids:
            self.check_picker.value = current if current in ids else ids[-1]

    def spec(self) -> dict[str, Any]:
        return {
            "name": self.name.value.strip(),
            "transport": self.transport.value,
            "scheduler": self.scheduler.value,
            "host": self.host.value.strip(),
            "port": int(self.port.value) if self.transport.value == "ssh" else None,
            "username": self.username.value.strip(),
            "host_key": self.host_key.value.strip(),
            "private_key": self.private_key.value.strip(),
            "scratch_root": self.scratch.value.strip(),
            "queues": [{"name": q} for q in split_list(self.queues.value)],
        }

    def enrol(self) -> None:
        spec = self.spec()

        def go() -> str:
            c = self.api.enrol_cluster(spec)
            self.private_key.value = ""  # never kept in the browser
            self.notice.info(f"cluster {c['name']} enrolled; running its compliance check ...")
            result = self.api.check_cluster(c["id"])
            self.show_check(result)
            verdict = "compliant" if result.get("compliant") else "NOT compliant"
            return f"cluster {c['name']} enrolled and checked: {verdict}"

        self.background(go, [self.enrol_button, self.check_button], f"enrolling {spec['name']} ...")

    def check(self, cluster_id: int | None) -> None:
        if cluster_id is None:
            self.notice.error("enrol a cluster first")
            return

        def go() -> str:
            result = self.api.check_cluster(cluster_id)
            self.show_check(result)
            verdict = "compliant" if result.get("compliant") else "NOT compliant"
            return f"cluster {result.get('cluster')}: {verdict}"

        self.background(go, [self.enrol_button, self.check_button], "running the compliance check ...")

    def show_check(self, result: Mapping[str, Any]) -> None:
        self.last_check = dict(result)
        verdict = "compliant" if result.get("compliant") else "not compliant"
        rows = list(result.get("items", []))
        self.report.value = (
            f"<div class='heroes-check' data-cluster='{esc(result.get('cluster'))}' "
            f"data-compliant='{str(bool(result.get('compliant'))).lower()}'>"
            f"<h4>Compliance check of {esc(result.get('cluster'))}: {esc(verdict)}</h4>"
            + table(
                rows,
                ["name", "status", "detail"],
                css="heroes-check-items",
                key="name",
                row_attrs=lambda r: {"data-status": str(r.get("status")), "class": "heroes-check-item"},
            )
            + "</div>"
        )


class TemplatesSection(Section):
    title = "Templates"
    css = "heroes-templates"
    scope = "workflows:manage"

    def build(self) -> list[w.Widget]:
        self.listing = w.HTML()
        self.document = w.Textarea(
            description="template",
            placeholder="the template as YAML or JSON (name, version, parameters, steps)",
            style=LABEL,
            layout=w.Layout(width="720px", height="220px"),
        )
        self.document.add_class("heroes-template-doc")
        self.publish_button = button("Publish template", "heroes-template-publish", "primary")
        self.publish_button.on_click(lambda _b: self.publish())
        self.retire_picker = w.Dropdown(description="template", style=LABEL, layout=wide())
        self.retire_button = button("Retire", "heroes-template-retire", "warning")
        self.retire_button.on_click(lambda _b: self.retire())
        return [
            self.listing,
            w.HBox([self.retire_picker, self.retire_button]),
            w.HTML("<h4>Publish a template (a new version when the name exists)</h4>"),
            self.document,
            self.publish_button,
        ]

    def refresh(self) -> None:
        rows = self.api.templates()
        self.listing.value = table(
            rows, ["name", "version", "state", "description"], css="heroes-template-list", key="name"
        )
        self.retire_picker.options = [
            (f"{t['name']} v{t['version']}", t["id"]) for t in rows if t.get("state", "active") == "active"
        ]

    def publish(self) -> None:
        def go() -> str:
            doc = parse_document(self.document.value)
            t = self.api.publish_template(doc)
            return f"template {t.get('name')} v{t.get('version')} published"

        if self.action(go):
            self.document.value = ""

    def retire(self) -> None:
        self.on_picked(
            self.retire_picker,
            self.api.retire_template,
            "template {} retired",
            "pick a template to retire first",
        )


def parse_document(textvalue: str) -> dict[str, Any]:
    """A YAML or JSON mapping typed into a text area, or ValueError saying what is wrong."""
    if not textvalue.strip():
        raise ValueError("paste the template (YAML or JSON) first")
    try:
        import yaml

        doc = yaml.safe_load(textvalue)
    except ImportError:  # pragma: no cover - PyYAML is a dependency of jupyter_server
        doc = json.loads(textvalue)
    except Exception as e:
        raise ValueError(f"the template is not valid YAML or JSON: {type(e).__name__}: {e}") from None
    if not isinstance(doc, dict):
        raise ValueError("the template must be a mapping (name:, parameters:, steps: ...)")
    return doc


class MarketSection(Section):
    title = "Offers"
    css = "heroes-market"
    scope = "billing"

    def build(self) -> list[w.Widget]:
        self.offer_list = w.HTML()
        self.app_list = w.HTML()
        self.offer_picker = w.Dropdown(description="offer", style=LABEL, layout=wide())
        self.offer_picker.add_class("heroes-offer-picker")
        self.enable_button = button("Enable (accept its terms)", "heroes-offer-enable", "primary")
        self.enable_button.on_click(lambda _b: self.enable())
        self.disable_button = button("Disable", "heroes-offer-disable", "warning")
        self.disable_button.on_click(lambda _b: self.disable())
        self.app_picker = w.Dropdown(description="application", style=LABEL, layout=wide())
        self.app_enable = button("Enable (accept its licence)", "heroes-app-enable")
        self.app_enable.on_click(lambda _b: self.enable_app())
        self.app_disable = button("Disable", "heroes-app-disable", "warning")
        self.app_disable.on_click(lambda _b: self.disable_app())
        return [
            w.HTML("<h4>Resource offers published to the organization</h4>"),
            self.offer_list,
            w.HBox([self.offer_picker, self.enable_button, self.disable_button]),
            w.HTML("<h4>Applications</h4>"),
            self.app_list,
            w.HBox([self.app_picker, self.app_enable, self.app_disable]),
        ]

    def refresh(self) -> None:
        offers = self.api.offers()
        enabled = {e["id"]: e for e in self.api.enabled_offers()}
        rows = []
        for o in offers:
            e = enabled.get(o["id"], {})
            rows.append(
                {
                    **o,
                    "cluster_queue": f"{o.get('cluster') or '?'}/{o.get('queue')}",
                    "price": {k: v for k, v in o.get("price", {}).items() if k != "currency"},
                    "terms_changed": e.get("terms_changed", False),
                    "usable": e.get("usable", "") if e else "",
                }
            )
        self.offer_list.value = table(
            rows,
            [
                "id",
                "name",
                "provider",
                "cluster_queue",
                "currency",
                "price",
                "version",
                "enabled",
                "terms_changed",
            ],
            css="heroes-offer-list",
            key="name",
            row_attrs=lambda r: {"data-enabled": str(bool(r.get("enabled"))).lower()},
        )
        self.offers = offers
        self.offer_picker.options = [
            (f"{o['name']} ({o['provider']}) v{o['version']}", o["id"]) for o in offers
        ]
        apps = self.api.applications()
        self.app_list.value = table(
            [{**a, "price": {k: v for k, v in a.get("price", {}).items() if k != "currency"}} for a in apps],
            ["id", "name", "provider", "image", "currency", "price", "version", "enabled"],
            css="heroes-application-list",
            key="name",
        )
        self.app_picker.options = [(f"{a['name']} ({a['provider']}) v{a['version']}", a["id"]) for a in apps]

    def _version(self, oid: int) -> int | None:
        for o in getattr(self, "offers", []):
            if o["id"] == oid:
                return int(o["version"])
        return None

    def enable(self) -> None:
        self.on_picked(
            self.offer_picker,
            lambda oid: self.api.enable_offer(oid, self._version(oid)),
            "offer {} enabled",
            "no offer is published to this organization yet",
        )

    def disable(self) -> None:
        self.on_picked(self.offer_picker, self.api.disable_offer, "offer {} disabled", "pick an offer first")

    def enable_app(self) -> None:
        self.on_picked(
            self.app_picker,
            self.api.enable_application,
            "application {} enabled",
            "no application is published to this organization yet",
        )

    def disable_app(self) -> None:
        self.on_picked(
            self.app_picker,
            self.api.disable_application,
            "application {} disabled",
            "pick an application first",
        )


class BudgetsSection(Section):
    title = "Budgets"
    css = "heroes-budgets"
    scope = "billing"

    def build(self) -> list[w.Widget]:
        self.listing = w.HTML()
        self.figure = w.Output()
        self.limit = text("limit", "heroes-budget-limit", "e.g. 5000", width="300px")
        self.currency = text("currency", "heroes-budget-currency", value="EUR", width="300px")
        self.project = text("project", "heroes-budget-project", "empty: the whole organization")
        self.on_exhausted = w.Dropdown(
            description="when exhausted", options=["hold", "cancel"], style=LABEL, layout=wide("300px")
        )
        self.create_button = button("Create budget", "heroes-budget-create", "primary")
        self.create_button.on_click(lambda _b: self.create())
        return [
            self.listing,
            self.figure,
            w.HTML("<h4>Create a budget</h4>"),
            self.limit,
            self.currency,
            self.project,
            self.on_exhausted,
            self.create_button,
        ]

    def refresh(self) -> None:
        rows = self.api.budgets()
        self.listing.value = table(
            [{**b, "project": b.get("project") or "(organization)"} for b in rows],
            ["id", "project", "currency", "limit", "spent", "reserved", "available", "on_exhausted"],
            css="heroes-budget-list",
            key="id",
        )
        if rows:
            from ..accounting.reports import budget_figure

            show_figure(self.figure, budget_figure(rows))
        else:
            self.figure.clear_output()

    def create(self) -> None:
        def go() -> str:
            b = self.api.create_budget(
                self.limit.value.strip(),
                self.currency.value.strip() or "EUR",
                self.project.value.strip() or None,
                self.on_exhausted.value,
            )
            return f"budget #{b['id']} of {b['limit']} {b['currency']} created"

        self.action(go)


class ReportsSection(Section):
    title = "Reports"
    css = "heroes-reports"
    scope = "billing"

    def build(self) -> list[w.Widget]:
        from ..accounting.reports import DIMENSIONS

        dims = sorted(k for k in DIMENSIONS if k != "organization")
        self.by = w.Dropdown(
            description="group by", options=dims, value="project", style=LABEL, layout=wide("300px")
        )
        self.period = w.Dropdown(
            description="period",
            options=["month", "day", "year"],
            value="month",
            style=LABEL,
            layout=wide("300px"),
        )
        self.show_button = button("Show", "heroes-report-show", "primary")
        self.show_button.on_click(lambda _b: self.load())
        self.listing = w.HTML()
        self.figure = w.Output()
        self.performance = w.HTML()
        self.performance.add_class("heroes-performance")
        self.performance_figure = w.Output()
        return [
            w.HBox([self.by, self.period, self.show_button]),
            self.listing,
            self.figure,
            w.HTML("<h4>Decision performance: predicted vs actual runtime</h4>"),
            self.performance,
            self.performance_figure,
        ]

    def refresh(self) -> None:
        by = self.by.value
        rows = self.api.usage(by=by, period=self.period.value)
        cols = [by, "period", "jobs", "core_hours", "energy_kwh", "total"]
        self.listing.value = table(
            rows, cols, css="heroes-usage-list", empty="no finished jobs in this organization yet"
        )
        self.figure.clear_output()
        currencies = sorted({c for r in rows for c in (r.get("total") or {})})
        if rows and currencies:
            from ..accounting.reports import cost_over_time_figure

            fig = cost_over_time_figure(rows, currency=currencies[0], group=by)
            fig.update_xaxes(type="category")  # periods are labels ("2025-03"), not instants
            show_figure(self.figure, fig)
        self.show_performance()

    def show_performance(self) -> None:
        try:
            perf = self.api.performance()
        except HeroesError as e:
            status = "not available" if e.reason == "not_available" else "could not be read"
            self.performance.value = (
                f"<div class='heroes-performance-missing' data-reason='{esc(e.reason)}'>"
                f"<b>Decision performance {status}:</b> {esc(e.message)}</div>"
            )
            return
        self.show_performance_rows(perf)

    def show_performance_rows(self, perf: Any) -> None:
        """Per model version: jobs, accuracy, mean absolute error, share under-predicted, interval
        coverage; and a predicted-vs-actual scatter of every job."""
        self.performance_figure.clear_output()
        if not isinstance(perf, list) or not all(isinstance(g, Mapping) for g in perf):
            self.performance.value = render_any(perf, css="heroes-performance-table")
            return
        rows = [{k: v for k, v in g.items() if k != "jobs"} for g in perf]
        self.performance.value = table(
            rows,
            ["model_version", "count", "accuracy", "mae_s", "under_predicted_share", "coverage"],
            css="heroes-performance-table",
            key="model_version",
            empty="no finished job was submitted from a decision yet",
        )
        jobs = [j for g in perf for j in g.get("jobs", []) if "predicted_s" in j and "actual_s" in j]
        if jobs:
            show_figure(self.performance_figure, performance_figure(jobs))


def performance_figure(jobs: list[Mapping[str, Any]]) -> Any:
    """Predicted (with its interval) against actual runtime, one point per job, per model version,
    and the diagonal where a prediction is exact."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for version in sorted({str(j.get("model_version", "")) for j in jobs}):
        mine = [j for j in jobs if str(j.get("model_version", "")) == version]
        fig.add_trace(
            go.Scatter(
                name=version or "model",
                mode="markers",
                x=[j["actual_s"] for j in mine],
                y=[j["predicted_s"] for j in mine],
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [
                        max(0.0, j.get("predicted_high_s", j["predicted_s"]) - j["predicted_s"]) for j in mine
                    ],
                    "arrayminus": [
                        max(0.0, j["predicted_s"] - j.get("predicted_low_s", j["predicted_s"])) for j in mine
                    ],
                },
                text=[f"{j.get('template', '')} {j.get('cluster', '')}/{j.get('queue', '')}" for j in mine],
            )
        )
    values = [v for j in jobs for v in (j["actual_s"], j["predicted_s"])]
    low, top = min(values), max(values) or 1.0
    log = low > 0  # runtimes span orders of magnitude: log axes when they can be
    start = low if log else 0.0
    fig.add_trace(
        go.Scatter(name="exact", mode="lines", x=[start, top], y=[start, top], line={"dash": "dot"})
    )
    fig.update_layout(
        title="Predicted vs actual runtime", xaxis_title="actual (s)", yaxis_title="predicted (s)"
    )
    if log:
        fig.update_xaxes(type="log")
        fig.update_yaxes(type="log")
    return fig


def render_any(value: Any, css: str = "") -> str:
    """An answer of unknown shape as HTML: a list of rows as a table, a mapping as name/value rows
    (nested lists of rows as their own tables)."""
    if isinstance(value, list) and all(isinstance(r, Mapping) for r in value):
        cols: list[str] = []
        for r in value:
            cols += [k for k in r if k not in cols]
        return table(value, cols, css=css)
    if isinstance(value, Mapping):
        scalars = [
            {"name": k, "value": cell(v)} for k, v in value.items() if not isinstance(v, list | Mapping)
        ]
        out = table(scalars, ["name", "value"], css=css) if scalars else ""
        for k, v in value.items():
            if isinstance(v, list | Mapping):
                out += f"<h5>{esc(k)}</h5>" + render_any(v, css)
        return out
    return f"<pre>{esc(json.dumps(value, indent=1, default=str))}</pre>"


class AuditSection(Section):
    title = "Audit"
    css = "heroes-audit"
    scope = "audit:read"

    def build(self) -> list[w.Widget]:
        self.listing = w.HTML()
        return [self.listing]

    def refresh(self) -> None:
        rows = self.api.audit(limit=50)
        self.listing.value = table(
            [{**e, "reason": (e.get("detail") or {}).get("reason", "")} for e in rows],
            ["ts", "user", "action", "target", "status", "outcome", "reason"],
            css="heroes-audit-list",
            row_attrs=lambda e: {"data-action": str(e.get("action")), "data-outcome": str(e.get("outcome"))},
        )


class PlatformSection(Section):
    """Organizations and platform-wide health, for holders of ``organizations:manage`` in the
    platform organization."""

    title = "Platform"
    css = "heroes-platform"

    def build(self) -> list[w.Widget]:
        self.health = w.HTML()
        self.health.add_class("heroes-health")
        self.listing = w.HTML()
        self.name = text("name", "heroes-org-name", "a DNS label, e.g. acme-corp")
        self.display = text("display name", "heroes-org-display")
        self.kind = w.Dropdown(
            description="kind",
            options=["client", "provider"],
            value="client",
            style=LABEL,
            layout=wide("300px"),
        )
        self.kind.add_class("heroes-org-kind")
        self.create_button = button("Create organization", "heroes-org-create", "primary")
        self.create_button.on_click(lambda _b: self.create())
        return [
            w.HTML("<h4>Health</h4>"),
            self.health,
            w.HTML("<h4>Organizations</h4>"),
            self.listing,
            self.name,
            self.display,
            self.kind,
            self.create_button,
        ]

    def refresh(self) -> None:
        orgs = self.api.organizations()
        self.listing.value = table(
            orgs,
            ["name", "display_name", "kind", "active", "members", "projects", "created"],
            css="heroes-org-list",
            key="name",
        )
        info = self.api.service_info()
        kinds: dict[str, int] = {}
        for o in orgs:
            kinds[o.get("kind", "?")] = kinds.get(o.get("kind", "?"), 0) + 1
        inactive = [o["name"] for o in orgs if not o.get("active", True)]
        rows = [
            {
                "name": "service",
                "value": f"{info['title']} {info['version']} answering ({info['operations']} operations)",
            },
            {
                "name": "organizations",
                "value": ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "none",
            },
            {"name": "members", "value": str(sum(int(o.get("members", 0)) for o in orgs))},
            {"name": "inactive organizations", "value": ", ".join(inactive) or "none"},
        ]
        self.health.value = table(rows, ["name", "value"], css="heroes-health-table", key="name")

    def create(self) -> None:
        name = self.name.value.strip()
        if self.action(
            lambda: (
                self.api.create_organization(name, self.display.value.strip(), self.kind.value)
                and f"organization {name} created: add its first administrator in its Users tab"
            )
        ):
            self.name.value = ""


class AdminApp(AppShell):
    """The administration dashboard (see the module docstring). *client*: the visitor's
    :class:`~jupyter_heroes.client.HeroesClient` (default: from the kernel's environment);
    *organization*: the one to show first."""

    title = "HEROES administration"
    css = "heroes-admin-app"
    SECTIONS = (
        UsersSection,
        GroupsSection,
        RolesSection,
        ClustersSection,
        TemplatesSection,
        MarketSection,
        BudgetsSection,
        ReportsSection,
        AuditSection,
    )

    def __init__(self, client: Any = None, *, organization: str | None = None, **kwargs: Any) -> None:
        self._platform: PlatformSection | None = None
        super().__init__(client, organization=organization, **kwargs)

    def eligible(self, org: Mapping[str, Any]) -> bool:
        have = {s.removeprefix("custom:heroes:") for s in org.get("scopes", [])}
        return bool(have & ADMIN_SCOPES) or (
            org.get("kind") == "platform" and "organizations:manage" in platform_scopes(self.me)
        )

    def organization_names(self) -> list[str]:
        names = super().organization_names()
        if "organizations:manage" in platform_scopes(self.me):  # the platform reaches every organization
            try:
                names += [o["name"] for o in self.base.organizations() if o["name"] not in names]
            except HeroesError as e:
                self.notice.error(e.message)
        return names

    def scopes(self, organization: str) -> set[str]:
        own = super().scopes(organization)
        return own or platform_scopes(self.me)

    def nothing_message(self) -> str:
        return (
            f"{self.me.get('name')} administers no organization: this dashboard is for organization and "
            "platform administrators (roles org-admin, project-admin, billing-admin, tenant-admin, "
            "solution-admin). Ask an administrator of your organization for one of those roles."
        )

    def extra_sections(self) -> list[Section]:
        if "organizations:manage" not in platform_scopes(self.me):
            return []
        if self._platform is None:
            self._platform = PlatformSection(self.base.in_org(self.organization))
        return [self._platform]
