"""What the admin and vendor dashboards share: tables, a notice line, sections whose actions turn the
service's refusals into readable messages, an organization picker, and plotly output.

Every widget is core ipywidgets 8 (so the dashboards run in Voila, JupyterLab and Notebook without a
front-end build of ours); figures are shown with plotly's own mime renderer (``jupyterlab-plotly``,
which plotly installs and Voila loads).
"""

from __future__ import annotations

import html
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import ipywidgets as w

from ..client import HeroesClient, HeroesError
from .api import SCOPE_PREFIX, DashboardAPI

log = logging.getLogger("jupyter_heroes.dashboards")

TABLE_STYLE = (
    "<style>"
    ".heroes-dash table{border-collapse:collapse;margin:4px 0;font-size:13px}"
    ".heroes-dash th,.heroes-dash td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}"
    ".heroes-dash th{background:#f3f3f3}"
    ".heroes-dash tr[data-status='ok'] td.status{color:#1a7f37;font-weight:bold}"
    ".heroes-dash tr[data-status='warn'] td.status{color:#9a6700;font-weight:bold}"
    ".heroes-dash tr[data-status='fail'] td.status{color:#cf222e;font-weight:bold}"
    ".heroes-notice{min-height:1.4em}"
    ".heroes-notice .error{color:#cf222e}"
    ".heroes-notice .ok{color:#1a7f37}"
    "</style>"
)


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def cell(value: Any) -> str:
    """A value as table text: lists joined, mappings as ``k=v``, booleans as yes/no."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Mapping) and "name" in value:  # a role, project or member with its source
        extra = f" ({value['source']})" if value.get("source") not in (None, "local") else ""
        return f"{value['name']}{extra}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={cell(v)}" for k, v in value.items())
    if isinstance(value, list | tuple | set):
        return ", ".join(cell(v) for v in value)
    return "" if value is None else str(value)


def table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | Mapping[str, str],
    *,
    css: str = "",
    key: str | None = None,
    row_attrs: Callable[[Mapping[str, Any]], Mapping[str, str]] | None = None,
    empty: str = "nothing yet",
) -> str:
    """*rows* as an HTML table (every value escaped). *columns*: keys, or key -> heading. *key*:
    a field written as ``data-key`` on each row (for tests and styling); *row_attrs*: more
    ``data-*`` attributes per row."""
    cols = dict(columns) if isinstance(columns, Mapping) else {c: c.replace("_", " ") for c in columns}
    if not rows:
        return f"<p class='{esc(css)} heroes-empty'><i>{esc(empty)}</i></p>"
    head = "".join(f"<th>{esc(h)}</th>" for h in cols.values())
    body = []
    for r in rows:
        attrs = dict(row_attrs(r)) if row_attrs else {}
        if key is not None:
            attrs["data-key"] = cell(r.get(key))
        a = "".join(f" {esc(k)}='{esc(v)}'" for k, v in attrs.items())
        tds = "".join(f"<td class='{esc(c)}'>{esc(cell(r.get(c)))}</td>" for c in cols)
        body.append(f"<tr{a}>{tds}</tr>")
    return f"<table class='{esc(css)}'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class Notice(w.HTML):
    """One line saying what happened: ``ok(...)``, ``error(...)``, ``info(...)``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_class("heroes-notice")

    def ok(self, text: str) -> None:
        self.value = f"<span class='ok'>{esc(text)}</span>"

    def error(self, text: str) -> None:
        self.value = f"<span class='error'>{esc(text)}</span>"

    def info(self, text: str) -> None:
        self.value = f"<span class='info'>{esc(text)}</span>"

    def clear(self) -> None:
        self.value = ""


def wide(width: str = "480px") -> w.Layout:
    return w.Layout(width=width)


LABEL = {"description_width": "140px"}


def text(description: str, css: str, placeholder: str = "", value: str = "", width: str = "480px") -> w.Text:
    t = w.Text(description=description, placeholder=placeholder, value=value, style=LABEL, layout=wide(width))
    t.add_class(css)
    return t


def button(description: str, css: str, style: str = "", tooltip: str = "") -> w.Button:
    b = w.Button(
        description=description,
        button_style=style,
        tooltip=tooltip or description,
        layout=w.Layout(width="auto", align_self="flex-start"),
    )
    b.add_class(css)
    return b


def split_list(value: str) -> list[str]:
    """``"a, b  c"`` -> ``["a", "b", "c"]`` (commas or spaces)."""
    return [p for p in value.replace(",", " ").split() if p]


class Section(w.VBox):
    """A tab of a dashboard: a title, a notice, content, and :meth:`action` / :meth:`background`
    that run a call and show the service's refusal (its own message) instead of a traceback.
    Subclasses fill :meth:`build` and :meth:`refresh`."""

    title = "section"
    css = "heroes-section"
    #: the scope (without prefix) a visitor needs for this tab to be shown; "" for everyone
    scope = ""

    def __init__(self, api: DashboardAPI, **kwargs: Any) -> None:
        self.api = api
        self.notice = Notice()
        self.busy = False
        super().__init__(**kwargs)
        self.add_class(self.css)
        self.add_class("heroes-dash")
        self.children = [w.HTML(TABLE_STYLE), *self.build(), self.notice]

    def build(self) -> list[w.Widget]:  # pragma: no cover - abstract
        raise NotImplementedError

    def refresh(self) -> None:
        """Reload what the tab shows from the service."""

    def set_api(self, api: DashboardAPI) -> None:
        self.api = api
        self.notice.clear()
        self.load()

    def load(self) -> None:
        """:meth:`refresh`, with the service's refusal shown in the notice."""
        try:
            self.refresh()
        except HeroesError as e:
            self.notice.error(e.message)

    def action(self, fn: Callable[[], str | None]) -> bool:
        """Run *fn* (which returns a success message or None); a :class:`HeroesError` becomes the
        notice, with the service's message. Returns whether it succeeded."""
        try:
            msg = fn()
        except HeroesError as e:
            self.notice.error(e.message)
            return False
        except ValueError as e:  # a form value that does not convert
            self.notice.error(str(e))
            return False
        if msg:
            self.notice.ok(msg)
        self.load_quietly()
        return True

    def on_picked(self, picker: w.Dropdown, call: Callable[[Any], object], done: str, nothing: str) -> bool:
        """Run *call* on what *picker* holds and say *done* (``{}`` stands for it), through
        :meth:`action`; with nothing picked, say *nothing* (what to do first) instead."""
        picked = picker.value
        if picked is None:
            self.notice.error(nothing)
            return False

        def go() -> str:
            call(picked)
            return done.format(picked)

        return self.action(go)

    def load_quietly(self) -> None:
        try:
            self.refresh()
        except HeroesError as e:
            log.info("refresh after an action failed: %s", e.reason)

    def background(
        self, fn: Callable[[], str | None], buttons: Iterable[w.Button], working: str
    ) -> threading.Thread:
        """Run *fn* in a thread (a cluster check takes minutes): *buttons* are disabled meanwhile and
        the notice says *working*."""
        buttons = list(buttons)
        for b in buttons:
            b.disabled = True
        self.busy = True
        self.notice.info(working)

        def run() -> None:
            try:
                self.action(fn)
            finally:
                self.busy = False
                for b in buttons:
                    b.disabled = False

        t = threading.Thread(target=run, name=f"heroes-dash-{self.css}", daemon=True)
        t.start()
        return t


def show_figure(out: w.Output, fig: Any) -> None:
    """Replace *out*'s content with the plotly figure *fig*, as plotly's own mime type (drawn by the
    ``jupyterlab-plotly`` renderer that Voila loads): set directly, so it works from any thread and
    whatever plotly's default renderer is."""
    import plotly.io as pio

    bundle = dict(pio.renderers["plotly_mimetype"].to_mimebundle(fig.to_dict()))
    bundle["text/plain"] = f"<plotly figure: {fig.layout.title.text or 'chart'}>"
    out.outputs = ({"output_type": "display_data", "data": bundle, "metadata": {}},)


def scopes_in(me: Mapping[str, Any], organization: str) -> set[str]:
    """The visitor's scopes (without the ``custom:heroes:`` prefix) in *organization*."""
    for o in me.get("organizations", []):
        if o.get("name") == organization:
            return {s.removeprefix(SCOPE_PREFIX) for s in o.get("scopes", [])}
    return set()


def platform_scopes(me: Mapping[str, Any]) -> set[str]:
    return {s.removeprefix(SCOPE_PREFIX) for s in me.get("platform_scopes", [])}


def default_api(client: HeroesClient | None = None, organization: str | None = None) -> DashboardAPI:
    """The visitor's API: *client*, or a :class:`HeroesClient` from the kernel's environment (which
    the dashboard service fills with the visitor's own token)."""
    return DashboardAPI(client or HeroesClient(organization=organization))


class AppShell(w.VBox):
    """A dashboard: header, organization picker, a tab per :class:`Section` the visitor may use in
    the picked organization. Subclasses set ``title``, ``css``, ``SECTIONS`` and :meth:`eligible`."""

    title = "HEROES"
    css = "heroes-app"
    SECTIONS: tuple[type[Section], ...] = ()

    def __init__(
        self,
        client: HeroesClient | None = None,
        *,
        organization: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.add_class(self.css)
        self.add_class("heroes-dash")
        self.header = w.HTML(f"<h2 style='margin:4px 0'>{esc(self.title)}</h2>")
        self.notice = Notice()
        self.org_picker = w.Dropdown(description="organization", style=LABEL, layout=wide())
        self.org_picker.add_class("heroes-org")
        self.tabs = w.Tab()
        self.tabs.add_class("heroes-tabs")
        self.sections: dict[str, Section] = {}
        self._tab_observed = False
        self._loading = False
        self.children = [w.HTML(TABLE_STYLE), self.header, self.org_picker, self.notice, self.tabs]
        self.me: dict[str, Any] = {}
        try:
            self.base = default_api(client)
            self.me = self.base.me()
        except HeroesError as e:
            self.notice.error(e.message)
            self.org_picker.layout.display = self.tabs.layout.display = "none"
            return
        orgs = self.organization_names()
        self.header.value = (
            f"<h2 style='margin:4px 0'>{esc(self.title)}</h2>"
            f"<div class='heroes-visitor'>signed in as <b>{esc(self.me.get('name'))}</b></div>"
        )
        if not orgs:
            self.notice.error(self.nothing_message())
            self.org_picker.layout.display = self.tabs.layout.display = "none"
            return
        self.org_picker.options = orgs
        self.org_picker.value = organization if organization in orgs else orgs[0]
        self.org_picker.observe(lambda _change: self.show_org(), names="value")
        if len(orgs) == 1:
            self.org_picker.disabled = True
        self.show_org()

    def organization_names(self) -> list[str]:
        """The organizations the picker offers: the visitor's own that :meth:`eligible` accepts."""
        return [o["name"] for o in self.me.get("organizations", []) if self.eligible(o)]

    def scopes(self, organization: str) -> set[str]:
        """The visitor's scopes (without prefix) in *organization*."""
        return scopes_in(self.me, organization)

    def eligible(self, org: Mapping[str, Any]) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def nothing_message(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_sections(self) -> list[Section]:
        """Sections that do not depend on the organization (the platform's)."""
        return []

    @property
    def organization(self) -> str:
        return str(self.org_picker.value or "")

    def show_org(self) -> None:
        """Rebuild the tabs for the picked organization and the visitor's scopes there; the first
        tab is loaded now, the others each time they are opened (so what a tab shows is fresh, and
        its charts are drawn while they are visible)."""
        org = self.organization
        api = self.base.in_org(org)
        have = self.scopes(org)
        sections: list[Section] = [cls(api) for cls in self.SECTIONS if not cls.scope or cls.scope in have]
        sections += self.extra_sections()
        self.sections = {s.title: s for s in sections}
        if not self._tab_observed:
            self.tabs.observe(self._tab_opened, names="selected_index")
            self._tab_observed = True
        self._loading = True
        try:
            self.tabs.children = sections
            for i, s in enumerate(sections):
                self.tabs.set_title(i, s.title)
            self.tabs.selected_index = 0 if sections else None
        finally:
            self._loading = False
        if sections:
            sections[0].load()
        self.notice.clear()

    def _tab_opened(self, change: dict[str, Any]) -> None:
        index = change["new"]
        if self._loading or index is None or index >= len(self.tabs.children):
            return
        self.tabs.children[index].load()

    def section(self, title: str) -> Section:
        """The tab *title*, opened (and so loaded) as a click on it would."""
        section = self.sections[title]
        index = list(self.tabs.children).index(section)
        if self.tabs.selected_index != index:
            self.tabs.selected_index = index
        return section
