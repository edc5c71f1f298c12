"""``SubmissionWidget``: pick a workflow template, fill in its parameters, choose where it runs, submit,
and watch it run — in a notebook or a Voila dashboard::

    from jupyter_heroes.widgets import SubmissionWidget

    SubmissionWidget()

Everything goes through :class:`~jupyter_heroes.client.HeroesClient` (by default configured from the
environment of the JupyterHub single-user server). The parameter form is generated from the
template's declarations and checked as you type (:mod:`.form`); the service checks again and its
refusal is shown next to the field it names. After a submission a :class:`~.monitor.JobMonitor`
follows the new workflow live. When the service has budgets, a line shows what is left (or, for
members who cannot see budgets, what their own work cost this month); when it has the decision
endpoint, *Compare* shows where the workflow can run and clicking a row's cluster fills it in; the
checkbox *Use the recommended walltime and memory* then submits with the comparison's advice for
the chosen cluster and queue (``accept_advice``), shown next to it step by step.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import ipywidgets as w

from ..client import HeroesClient, HeroesError
from .form import ERROR_STYLE, ParameterForm, _esc
from .monitor import JobMonitor

log = logging.getLogger("jupyter_heroes.widgets")

PARAM_ERROR_RE = re.compile(r"^parameter '([a-z][a-z0-9_]*)': (.*)$", re.S)
HIDDEN = "none"


class SubmissionWidget(w.VBox):
    """The submission form (see the module docstring).

    *client*: a :class:`HeroesClient` (default: one from the environment); *organization*: the
    organization to act in when you belong to several; *template*, *cluster*, *queue*: preselected
    values. Attributes for programs and tests: ``form`` (the :class:`ParameterForm`), ``monitor``
    (the :class:`JobMonitor` of the last submission), ``instance`` (its dict).
    """

    def __init__(
        self,
        client: HeroesClient | None = None,
        *,
        organization: str | None = None,
        template: str | None = None,
        cluster: str | None = None,
        queue: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.base_client = client
        self.client: HeroesClient | None = client
        self.form: ParameterForm | None = None
        self.monitor: JobMonitor | None = None
        self.instance: dict[str, Any] | None = None
        self.templates: dict[str, dict[str, Any]] = {}
        self.cluster_queues: dict[str, list[str]] = {}
        self.me: dict[str, Any] = {}
        self._busy = False

        self.header = w.HTML("<h3 style='margin:4px 0'>HEROES workflow</h3>")
        label = {"description_width": "130px"}

        def wide() -> w.Layout:  # one Layout per widget: hiding one must not hide the others
            return w.Layout(width="460px")

        self.org_picker = w.Dropdown(description="organization", style=label, layout=wide())
        self.template_picker = w.Dropdown(description="template", style=label, layout=wide())
        self.template_picker.add_class("heroes-template")
        self.template_info = w.HTML()
        self.form_box = w.VBox()
        self.cluster_box = w.Combobox(
            description="cluster", placeholder="cluster name", ensure_option=False, style=label, layout=wide()
        )
        self.cluster_box.add_class("heroes-cluster")
        self.queue_box = w.Combobox(
            description="queue", placeholder="default queue", ensure_option=False, style=label, layout=wide()
        )
        self.queue_box.add_class("heroes-queue")
        self.project_picker = w.Dropdown(description="project", style=label, layout=wide())
        self.budget = w.HTML()
        self.budget.add_class("heroes-budget")
        self.submit_button = w.Button(
            description="Submit", icon="play", button_style="primary", disabled=True
        )
        self.submit_button.add_class("heroes-submit")
        self.submit_button.on_click(lambda _b: self.submit())
        self.compare_button = w.Button(description="Compare", icon="balance-scale")
        self.compare_button.add_class("heroes-compare")
        self.compare_button.on_click(lambda _b: self.compare())
        self.compare_button.layout.display = HIDDEN
        self.status = w.HTML()
        self.status.add_class("heroes-status")
        self.decision_view = w.HTML()
        self.decision_view.add_class("heroes-decision")
        self.decision: Any = None  # the last decision's DataFrame
        self._compared: tuple[str, dict[str, Any]] | None = None  # template and values it was asked for
        self.decision_sort = w.Dropdown(
            description="sort by", options=SORT_OPTIONS, value="rank", layout=w.Layout(width="260px")
        )
        self.decision_sort.add_class("heroes-decision-sort")
        self.decision_sort.layout.display = HIDDEN
        self.decision_sort.observe(lambda _c: self._render_decision(), names="value")
        # the chart of the last comparison (chart.decision_figure), shown under the table after Compare
        self.decision_chart: Any = None
        self.decision_chart_box = w.VBox()
        self.decision_chart_box.add_class("heroes-decision-chart")
        # after a comparison: submit with its walltime and memory advice for the chosen placement
        self.advice_box = w.Checkbox(
            value=False, description="Use the recommended walltime and memory", indent=False
        )
        self.advice_box.add_class("heroes-accept-advice")
        self.advice_info = w.HTML()
        self.advice_info.add_class("heroes-advice")
        self.advice_row = w.HBox([self.advice_box, self.advice_info])
        self.advice_row.layout.display = HIDDEN
        self.monitor_box = w.VBox()
        super().__init__(
            [
                self.header,
                self.org_picker,
                self.template_picker,
                self.template_info,
                self.form_box,
                self.cluster_box,
                self.queue_box,
                self.project_picker,
                self.budget,
                self.advice_row,
                w.HBox([self.submit_button, self.compare_button]),
                self.status,
                self.decision_sort,
                self.decision_view,
                self.decision_chart_box,
                self.monitor_box,
            ],
            **kwargs,
        )
        self.add_class("heroes-submission")
        self.cluster_box.observe(self._cluster_changed, names="value")
        self.queue_box.observe(lambda _c: self._render_advice(), names="value")

        try:
            if self.client is None:
                self.client = self.base_client = HeroesClient(organization=organization)
            self._load_identity(organization)
            self._load_organization(template, cluster, queue)
        except HeroesError as e:
            self._disable(e.message)
            return
        self.org_picker.observe(self._org_changed, names="value")
        self.template_picker.observe(self._template_changed, names="value")
        self._update_validity()

    # --- loading ----------------------------------------------------------------------------------
    def _load_identity(self, organization: str | None) -> None:
        assert self.client is not None
        self.me = self.client.me()
        orgs = [o for o in self.me.get("organizations", []) if o.get("kind") != "platform"] or list(
            self.me.get("organizations", [])
        )
        if not orgs:
            raise HeroesError(
                f"{self.me.get('name', 'you')} belong(s) to no organization yet: ask an organization's "
                "administrator to add you",
                "no_organization",
                403,
            )
        self.org_picker.options = [(o.get("display_name") or o["name"], o["name"]) for o in orgs]
        names = [o["name"] for o in orgs]
        chosen = organization or (self.client.organization if self.client.organization in names else None)
        if chosen and chosen not in names:
            raise HeroesError(
                f"you are not a member of organization '{chosen}'; yours: {', '.join(names)}",
                "not_found",
                404,
            )
        self.org_picker.value = chosen or names[0]
        self.org_picker.layout.display = None if len(orgs) > 1 else HIDDEN
        if len(orgs) > 1 or self.client.organization != self.org_picker.value:
            self.client = self._client_for(self.org_picker.value)

    def _client_for(self, org: str) -> HeroesClient:
        assert self.base_client is not None
        if self.base_client.organization == org:
            return self.base_client
        return self.base_client.with_organization(org)

    def _load_organization(
        self, template: str | None = None, cluster: str | None = None, queue: str | None = None
    ) -> None:
        client = self.client
        assert client is not None
        listing = client.templates()
        self.templates = {}
        for t in listing:  # the newest version of each name
            if t["name"] not in self.templates or t["version"] > self.templates[t["name"]]["version"]:
                self.templates[t["name"]] = t
        org: dict[str, Any] = next(
            (o for o in self.me.get("organizations", []) if o["name"] == self.org_picker.value), {}
        )
        projects = [p if isinstance(p, str) else p.get("name", "") for p in org.get("projects", [])]
        self.project_picker.options = [("(default)", "")] + [(p, p) for p in projects if p]
        self.project_picker.value = ""
        self.project_picker.layout.display = None if projects else HIDDEN
        try:
            self.cluster_queues = client.cluster_choices()
        except HeroesError as e:
            log.info("no cluster suggestions: %s", e.reason)
            self.cluster_queues = {}
        self.cluster_box.options = sorted(self.cluster_queues)
        if cluster is not None:
            self.cluster_box.value = cluster
        elif len(self.cluster_queues) == 1:
            self.cluster_box.value = next(iter(self.cluster_queues))
        self._cluster_changed()
        if queue is not None:
            self.queue_box.value = queue
        if not self.templates:
            self.template_picker.options = []
            self._show_form(None)
            self.status.value = (
                "<span style='color:#555'>No workflow templates are available to you in this organization; "
                "ask its workflow administrator to publish one.</span>"
            )
        else:
            opts = [(f"{t['name']} v{t['version']}", name) for name, t in sorted(self.templates.items())]
            self.template_picker.options = opts
            if template is not None and template not in self.templates:
                raise HeroesError(
                    f"workflow template '{template}' not found; the templates you may run are: "
                    f"{', '.join(sorted(self.templates))}",
                    "not_found",
                    404,
                )
            self.template_picker.value = template or opts[0][1]
            self._show_form(self.template_picker.value)
        self.compare_button.layout.display = (
            None if self.templates and self._has(client.DECIDE_PATH, "post") else HIDDEN
        )
        self._load_budget()

    def _has(self, path: str, method: str) -> bool:
        try:
            return bool(self.client and self.client.has_endpoint(path, method))
        except HeroesError:
            return False

    def _load_budget(self) -> None:
        """One line: the organization's or your project's budget when you may see budgets, else
        your own cost this month, else nothing."""
        client = self.client
        assert client is not None
        self.budget.value = ""
        try:
            budgets = client.budgets()
        except HeroesError:
            budgets = None
        if budgets:
            project = self.project_picker.value or None
            mine = [b for b in budgets if b.get("project") == project] or [
                b for b in budgets if b.get("project") is None
            ]
            if mine:
                b = mine[0]
                scope = f"project {b['project']}" if b.get("project") else "organization"
                colour = "#c62828" if b.get("exhausted") else "#2e7d32"
                self.budget.value = (
                    f"<span class='heroes-budget-line' style='color:{colour}'>Budget ({_esc(scope)}): "
                    f"{_esc(b['spent'])} of {_esc(b['limit'])} {_esc(b['currency'])} spent, "
                    f"{_esc(b['available'])} available</span>"
                )
                return
        try:
            rows = client.usage(by="period", period="month")
        except HeroesError:
            return
        if rows:
            last = rows[-1]
            total = last.get("total") or last.get("cost") or {}
            money = ", ".join(f"{v} {c}" for c, v in total.items()) or "nothing"
            self.budget.value = (
                f"<span class='heroes-budget-line' style='color:#555'>Your usage in {_esc(last.get('period', ''))}: "
                f"{_esc(last.get('jobs', 0))} jobs, {_esc(money)}</span>"
            )
        else:
            self.budget.value = "<span class='heroes-budget-line' style='color:#555'>No cost recorded for you this month.</span>"

    # --- reacting ---------------------------------------------------------------------------------
    def _org_changed(self, change: Any) -> None:
        self.client = self._client_for(change["new"])
        self.cluster_box.value = ""
        self.queue_box.value = ""
        self.status.value = ""
        try:
            self._load_organization()
        except HeroesError as e:
            self._error(e.message)
        self._update_validity()

    def _template_changed(self, change: Any) -> None:
        self._show_form(change["new"])
        self.status.value = ""
        self.decision = None
        self._render_decision()
        self._render_chart()

    def _cluster_changed(self, _change: Any = None) -> None:
        self.queue_box.options = list(self.cluster_queues.get(self.cluster_box.value, []))
        self._render_advice()
        self._update_validity()

    def _show_form(self, name: str | None) -> None:
        if name is None or name not in self.templates:
            self.form = None
            self.form_box.children = ()
            self.template_info.value = ""
        else:
            t = self.templates[name]
            self.form = ParameterForm(t, on_change=self._update_validity)
            self.form_box.children = (self.form.box,)
            steps = ", ".join(s.get("name", "") for s in t.get("steps", []))
            self.template_info.value = (
                f"<div style='color:#444;margin:2px 0 6px 0'>{_esc(t.get('description', ''))}"
                f"<br><span style='color:#777;font-size:85%'>steps: {_esc(steps)}</span></div>"
            )
        self._update_validity()

    def _update_validity(self) -> None:
        ok = self.form is not None and self.form.valid and bool(self.cluster_box.value.strip())
        self.submit_button.disabled = self._busy or not ok
        if self.form is not None and not self.cluster_box.value.strip():
            self.submit_button.tooltip = "choose a cluster first"
        elif self.form is not None and not self.form.valid:
            bad = ", ".join(self.form.problems)
            self.submit_button.tooltip = f"fix the marked parameters first: {bad}"
        else:
            self.submit_button.tooltip = "submit the workflow"

    def _disable(self, message: str) -> None:
        for child in (
            self.org_picker,
            self.template_picker,
            self.cluster_box,
            self.queue_box,
            self.project_picker,
            self.submit_button,
        ):
            child.disabled = True
        self._error(message)

    def _error(self, message: str) -> None:
        self.status.value = f"<span style='{ERROR_STYLE}'>{_esc(message)}</span>"

    # --- actions ----------------------------------------------------------------------------------
    def submit(self) -> dict[str, Any] | None:
        """Submit the form; the new instance (also in ``instance``), or None when refused (the
        reason is shown)."""
        if self.client is None or self.form is None:
            return None
        if not self.form.valid:
            self._error(f"fix the marked parameters first: {', '.join(self.form.problems)}")
            return None
        self._busy = True
        self._update_validity()
        self.status.value = "<span style='color:#555'>submitting ...</span>"
        cluster, queue = self.cluster_box.value.strip(), self.queue_box.value.strip()
        values = self.form.values()
        decision = self._decision_followed(values, cluster, queue)
        accept = bool(self.advice_box.value) and self.advice_row.layout.display != HIDDEN
        if accept and not decision:
            self._busy = False
            self._update_validity()
            self._error(
                "the recommended walltime and memory come from the comparison of exactly these values on "
                "one of its ranked clusters: press Compare again (or choose one of its rows), or untick "
                "'Use the recommended walltime and memory'"
            )
            return None
        try:
            inst = self.client.submit(
                self.template_picker.value,
                values,
                cluster=cluster,
                queue=queue or None,
                project=self.project_picker.value or None,
                decision=decision,
                accept_advice=accept,
            )
        except HeroesError as e:
            self._refused(e)
            return None
        finally:
            self._busy = False
            self._update_validity()
        self.instance = inst
        if decision:
            self._compared = None  # a decision is followed once; Compare again for the next run
            self.advice_row.layout.display = HIDDEN
        self.status.value = (
            f"<span class='heroes-submitted' style='color:#2e7d32'>submitted workflow <code>{_esc(inst['id'])}</code>"
            "</span>"
        )
        if self.monitor is not None:
            self.monitor.close()
        self.monitor = JobMonitor(self.client, inst)
        self.monitor_box.children = (self.monitor,)
        return inst

    def _decision_followed(self, values: Mapping[str, Any], cluster: str, queue: str) -> str | None:
        """The id of the comparison shown, if this submission follows it: same template and values,
        and *cluster*/*queue* one of its ranked rows (the recommendation or another)."""
        df = self.decision
        if df is None or not df.attrs.get("decision") or self._compared is None:
            return None
        if self._compared != (self.template_picker.value, dict(values)):
            return None
        if not {"cluster", "queue", "rank"} <= set(df.columns):
            return None
        ranked = df[df["rank"].notna()]
        for _, row in ranked.iterrows():
            if str(row["cluster"]) == cluster and (not queue or str(row["queue"]) == queue):
                return str(df.attrs["decision"])
        return None

    def _refused(self, e: HeroesError) -> None:
        m = PARAM_ERROR_RE.match(e.message)
        if m and self.form is not None and m.group(1) in self.form.fields:
            f = self.form.fields[m.group(1)]
            f.error.value = f"<span style='{ERROR_STYLE}'>{_esc(m.group(2))}</span>"
        self._error(f"the service refused the submission: {e.message}")

    def compare(self) -> Any:
        """Ask the decision endpoint where the workflow can run; show the table (and return it)."""
        if self.client is None or self.form is None:
            return None
        try:
            df = self.client.decide(self.template_picker.value, self.form.values())
        except HeroesError as e:
            self._error(e.message)
            return None
        self.decision = df
        self._compared = (self.template_picker.value, self.form.values())
        # the recommendation fills the form before the table and chart appear (a reader of the
        # table then sees the form already following it)
        best = df[df["rank"] == 1] if "rank" in df.columns else df.iloc[:0]
        if len(best) and "cluster" in df.columns:
            row: Mapping[str, Any] = best.iloc[0].to_dict()
            self.cluster_box.value = str(row.get("cluster") or "")
            if row.get("queue"):
                self.queue_box.value = str(row["queue"])
        self._render_decision()
        self._render_chart()
        return df

    def _render_decision(self) -> None:
        if self.decision is None:
            self.decision_view.value = ""
            self.decision_sort.layout.display = HIDDEN
            self._render_advice()
            return
        self.decision_view.value = decision_table_html(self.decision, sort_by=self.decision_sort.value)
        self.decision_sort.layout.display = None
        self._render_advice()

    def advice(self) -> dict[str, Any] | None:
        """The last comparison's walltime and memory advice for the chosen cluster and queue
        (step -> ``{walltime_s, walltime, memory_mb, ...}``), or None."""
        df = self.decision
        if df is None or self._compared is None or "advice" not in getattr(df, "columns", ()):
            return None
        cluster, queue = self.cluster_box.value.strip(), self.queue_box.value.strip()
        for rec in df.to_dict(orient="records"):
            if str(rec.get("cluster")) == cluster and (not queue or str(rec.get("queue")) == queue):
                a = rec.get("advice")
                return dict(a) if isinstance(a, Mapping) and a else None
        return None

    def _render_advice(self) -> None:
        """Show the checkbox (and the advice, step by step) when the comparison advised the chosen
        cluster and queue; hide it otherwise."""
        advice = self.advice()
        if not advice:
            self.advice_row.layout.display = HIDDEN
            self.advice_info.value = ""
            return
        parts = []
        for step, a in advice.items():
            if not isinstance(a, Mapping):
                continue
            wall = a.get("walltime") or f"{a.get('walltime_s')} s"
            parts.append(
                f"<span title='{_attr(a.get('basis', ''))}'>{_esc(step)}: {_esc(wall)}, "
                f"{_esc(a.get('memory_mb'))} MB</span>"
            )
        self.advice_info.value = (
            f"<span style='color:#555;font-size:90%'>({'; '.join(parts)})</span>" if parts else ""
        )
        self.advice_row.layout.display = None

    def _render_chart(self) -> None:
        """Replace the chart with one of the current decision (none without a decision)."""
        old, self.decision_chart = self.decision_chart, None
        self.decision_chart_box.children = ()
        if old is not None:
            old.close()
        if self.decision is None:
            return
        from .chart import decision_figure, figure_widget

        try:
            self.decision_chart = figure_widget(decision_figure(self.decision))
        except Exception:  # the table stays useful without its chart
            log.exception("the decision chart could not be drawn")
            self.decision_chart_box.children = (
                w.HTML(
                    "<span style='color:#777'>The chart could not be drawn; the table above has the figures.</span>"
                ),
            )
            return
        self.decision_chart_box.children = (self.decision_chart,)

    def close(self) -> None:
        if self.monitor is not None:
            self.monitor.close()
        if self.decision_chart is not None:
            self.decision_chart.close()
        super().close()


#: (column of the decision table, heading) shown by the widget, in this order; the rest stay in the
#: DataFrame that :meth:`SubmissionWidget.compare` returns
DECISION_COLUMNS = [
    ("rank", "rank"),
    ("cluster", "cluster"),
    ("queue", "queue"),
    ("status", "status"),
    ("expected_end", "result by"),
    ("runtime_s", "runtime"),
    ("cost", "cost"),
    ("energy_kwh", "energy kWh"),
    ("co2e_kg", "CO2e kg"),
    ("why", "why"),
]


def _cell(column: str, value: Any, row: Mapping[str, Any]) -> str:
    if value is None or (isinstance(value, float) and value != value) or str(value) in ("<NA>", "NaT", "nan"):
        return ""
    if column == "runtime_s":
        minutes = round(float(value) / 60)
        return f"{minutes // 60}:{minutes % 60:02d} h"
    if column == "expected_end":
        return str(value).replace("T", " ")[:16] + " UTC"
    if column == "cost":
        return f"{value} {row.get('currency') or ''}".strip()
    if column in ("energy_kwh", "co2e_kg"):
        return f"{float(value):.3g}"
    return str(value)


def _attr(value: Any) -> str:
    return _esc(str(value)).replace("'", "&#39;")


#: what the decision table can be sorted by: (label, column); missing values go last
SORT_OPTIONS = [
    ("rank (recommended first)", "rank"),
    ("result by (earliest)", "expected_end"),
    ("cost (lowest)", "cost"),
    ("energy (lowest)", "energy_kwh"),
    ("CO2e (lowest)", "co2e_kg"),
]


def _sorted(df: Any, column: str) -> Any:
    import pandas as pd

    if column not in df.columns:
        return df
    if column == "expected_end":
        key = pd.to_datetime(df[column], errors="coerce", utc=True)
    else:
        key = pd.to_numeric(df[column].astype("object"), errors="coerce")
    order = key.reset_index(drop=True).sort_values(na_position="last", kind="stable").index
    return df.iloc[list(order)]


def decision_table_html(df: Any, max_rows: int = 30, sort_by: str = "rank") -> str:
    """The decision's candidates as a compact HTML table: one row per candidate (``tr.heroes-candidate``
    with ``data-cluster``/``data-queue``), sorted by *sort_by* (a column of :data:`SORT_OPTIONS`), the
    recommended one (rank 1) highlighted (``heroes-recommended``), the reasons in the last column, and
    the service's notes on the whole comparison (``df.attrs["notes"]``) under it."""
    df = _sorted(df, sort_by)
    cols = [(c, h) for c, h in DECISION_COLUMNS if c in df.columns]
    head = "".join(f"<th style='text-align:left;padding:2px 8px'>{_esc(h)}</th>" for _, h in cols)
    rows = []
    for rec in df.head(max_rows).to_dict(orient="records"):
        best = str(rec.get("rank")) == "1"
        style = "background:#e8f5e9;font-weight:600" if best else ""
        cells = "".join(
            f"<td style='padding:2px 8px;vertical-align:top{';min-width:280px' if c == 'why' else ''}'>"
            f"{_esc(_cell(c, rec.get(c), rec))}</td>"
            for c, _ in cols
        )
        rows.append(
            f"<tr class='heroes-candidate{' heroes-recommended' if best else ''}' style='{style}' "
            f"data-cluster='{_attr(rec.get('cluster', ''))}' data-queue='{_attr(rec.get('queue', ''))}'>"
            f"{cells}</tr>"
        )
    note = f"<div style='color:#777'>{len(df) - max_rows} more not shown</div>" if len(df) > max_rows else ""
    notes = [str(n) for n in (getattr(df, "attrs", {}) or {}).get("notes") or []]
    if notes:  # what the service says about the whole comparison (e.g. where its runtimes come from)
        items = "".join(f"<li>{_esc(n)}</li>" for n in notes)
        note += (
            f"<ul class='heroes-decision-notes' style='color:#555;font-size:90%;margin:4px 0'>{items}</ul>"
        )
    return (
        "<table class='heroes-decision-table' style='border-collapse:collapse;font-size:90%'>"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{note}"
    )
