"""Reports on the ledger: usage and cost per organization, project, user, template, offer and period;
vendor revenue; CSV export; plotly figures for the dashboards.

Report rows are plain dicts, one per group::

    {"project": "cfd", "period": "2025-03", "jobs": 12, "core_hours": 310.5, "node_hours": 10.2,
     "gpu_hours": 0.0, "mem_gb_hours": 1240.0, "energy_kwh": 3.2, "energy_jobs": 12,
     "cost": {"EUR": Decimal("41.20")}, "licence": {"EUR": Decimal("5.00")},
     "total": {"EUR": Decimal("46.20")}}

Money is grouped by currency (an offer in USD stays in USD); pass ``currency=`` and ``rates=`` to
convert every amount into one currency (then each dict has that single key). ``energy_kwh`` sums the
jobs whose energy was measured; ``energy_jobs`` says how many those were.

Confinement: :func:`usage_report` only ever reads the rows of the organization it is given.
:func:`vendor_revenue` reads only the rows of the vendor's own offers and applications and groups
them by client *organization* at most: a vendor never sees a client's users or projects, nor
another vendor's figures.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, literal, select
from sqlalchemy.orm import Session

from ..decision.cost import CurrencyRates
from ..marketplace.common import get_org, naive_utc
from ..marketplace.errors import InvalidInput, NotFound
from ..orm import Cluster, Organization, Project, User, WorkflowTemplate
from ..orm_market import MarketApplication, MarketOffer, MarketOfferVersion, UsageRecord
from .budgets import _convert
from .ledger import J_PER_KWH
from .money import from_cents

PERIODS = ("day", "month", "year")
#: dimension -> (ledger column, model and attribute naming it)
DIMENSIONS: dict[str, Any] = {
    "organization": (UsageRecord.org_id, Organization, "name"),
    "project": (UsageRecord.project_id, Project, "name"),
    "user": (UsageRecord.user_id, User, "name"),
    "template": (UsageRecord.template_id, WorkflowTemplate, None),
    "cluster": (UsageRecord.cluster_id, Cluster, "name"),
    "offer": (UsageRecord.offer_id, MarketOffer, "name"),
    "application": (UsageRecord.application_id, MarketApplication, "name"),
    "provider": (UsageRecord.provider_org_id, Organization, "name"),
}
VENDOR_DIMENSIONS = ("item", "organization", "period")
METRICS = ("jobs", "core_hours", "node_hours", "gpu_hours", "mem_gb_hours", "energy_kwh", "energy_jobs")


def _period_expr(session: Session, period: str) -> Any:
    if period not in PERIODS:
        raise InvalidInput(f"period: {period!r}; one of {list(PERIODS)}")
    if session.get_bind().dialect.name == "postgresql":
        fmt = {"day": "YYYY-MM-DD", "month": "YYYY-MM", "year": "YYYY"}[period]
        return func.to_char(UsageRecord.finished, fmt)
    fmt = {"day": "%Y-%m-%d", "month": "%Y-%m", "year": "%Y"}[period]
    return func.strftime(fmt, UsageRecord.finished)


def _names(session: Session, dim: str, ids: set[Any]) -> dict[Any, str]:
    _col, model, attr = DIMENSIONS[dim]
    ids = {i for i in ids if i is not None}
    if not ids:
        return {}
    rows = session.scalars(select(model).where(model.id.in_(ids))).all()
    if model is WorkflowTemplate:
        return {r.id: f"{r.name} v{r.version}" for r in rows}
    return {r.id: getattr(r, attr) for r in rows}


def _aggregate(
    session: Session,
    where: list[Any],
    dims: Sequence[str],
    period: str | None,
    money: Sequence[tuple[str, Any, Any]],
) -> list[dict[str, Any]]:
    cols: list[Any] = []
    for d in dims:
        if d == "period":
            if period is None:
                raise InvalidInput("by: 'period' needs period='day', 'month' or 'year'")
            cols.append(_period_expr(session, period).label("period"))
        else:
            cols.append(DIMENSIONS[d][0].label(d))
    money_cols = []
    for name, cents, cur in money:
        money_cols += [cur.label(f"{name}_cur"), func.sum(cents).label(name)]
    q = (
        select(
            *cols,
            *money_cols,
            func.count(UsageRecord.id).label("jobs"),
            func.sum(UsageRecord.core_hours).label("core_hours"),
            func.sum(UsageRecord.node_hours).label("node_hours"),
            func.sum(UsageRecord.gpu_hours).label("gpu_hours"),
            func.sum(UsageRecord.mem_gb_hours).label("mem_gb_hours"),
            func.coalesce(func.sum(UsageRecord.energy_j), 0.0).label("energy_j"),
            func.count(UsageRecord.energy_j).label("energy_jobs"),
        )
        .where(*where)
        .group_by(*cols, *[m for m in money_cols if m.name.endswith("_cur")])
    )
    merged: dict[tuple, dict[str, Any]] = {}
    for row in session.execute(q).mappings():
        key = tuple(row[d] for d in dims)
        out = merged.get(key)
        if out is None:
            out = {d: row[d] for d in dims}
            out.update({m: 0 for m in METRICS})
            out["energy_kwh"] = 0.0
            for name, _c, _u in money:
                out[name] = {}
            merged[key] = out
        for m in ("jobs", "energy_jobs"):
            out[m] += int(row[m] or 0)
        for m in ("core_hours", "node_hours", "gpu_hours", "mem_gb_hours"):
            out[m] += float(row[m] or 0.0)
        out["energy_kwh"] += float(row["energy_j"] or 0.0) / J_PER_KWH
        for name, _c, _u in money:
            cur = row[f"{name}_cur"]
            out[name][cur] = out[name].get(cur, 0) + int(row[name] or 0)
    rows = list(merged.values())
    for d in dims:
        if d in DIMENSIONS:
            names = _names(session, d, {r[d] for r in rows})
            for r in rows:
                r[f"{d}_id"] = r[d]
                r[d] = names.get(r[d], "(none)" if r[d] is None else f"(deleted {r[d]})")
    return rows


def _finish_money(
    rows: list[dict[str, Any]], names: Sequence[str], currency: str | None, rates: CurrencyRates | None
) -> list[dict[str, Any]]:
    for r in rows:
        for n in names:
            cents: dict[str, int] = r[n]
            if currency is not None:
                cents = {currency: sum(_convert(v, c, currency, rates) for c, v in cents.items())}
            r[n] = {c: from_cents(v) for c, v in sorted(cents.items()) if v or currency is not None}
    return rows


def _where_period(start: datetime | None, end: datetime | None) -> list[Any]:
    w = []
    if start is not None:
        w.append(UsageRecord.finished >= naive_utc(start))
    if end is not None:
        w.append(UsageRecord.finished < naive_utc(end))
    return w


def _sort(rows: list[dict[str, Any]], dims: Sequence[str]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: tuple(str(r.get(d, "")) for d in dims))


def usage_report(
    session: Session,
    org_id: int,
    *,
    by: Sequence[str] = ("project",),
    period: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    project_id: int | None = None,
    user_id: int | None = None,
    currency: str | None = None,
    rates: CurrencyRates | None = None,
) -> list[dict[str, Any]]:
    """Usage and cost of one organization's jobs finished in [start, end), grouped *by* any of
    ``project``, ``user``, ``template``, ``cluster``, ``offer``, ``application``, ``provider`` and
    ``period`` (with *period* ``day``/``month``/``year``; given a period, ``period`` is added to
    *by*). Optionally restricted to one project or user."""
    get_org(session, org_id)
    dims = list(by)
    if period is not None and "period" not in dims:
        dims.append("period")
    bad = [d for d in dims if d != "period" and (d not in DIMENSIONS or d == "organization")]
    if bad:
        known = sorted(k for k in DIMENSIONS if k != "organization") + ["period"]
        raise InvalidInput(f"by: unknown dimension(s) {bad}; known: {known}")
    where = [UsageRecord.org_id == org_id, *_where_period(start, end)]
    if project_id is not None:
        where.append(UsageRecord.project_id == project_id)
    if user_id is not None:
        where.append(UsageRecord.user_id == user_id)
    rows = _aggregate(
        session,
        where,
        dims,
        period,
        [
            ("cost", UsageRecord.cost_cents, UsageRecord.currency),
            ("licence", UsageRecord.licence_cents, UsageRecord.licence_currency),
        ],
    )
    for r in rows:
        total = dict(r["cost"])
        for c, v in r["licence"].items():
            total[c] = total.get(c, 0) + v
        r["total"] = total
    return _sort(_finish_money(rows, ("cost", "licence", "total"), currency, rates), dims)


def vendor_revenue(
    session: Session,
    provider_org_id: int,
    *,
    by: Sequence[str] = ("item",),
    period: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    currency: str | None = None,
    rates: CurrencyRates | None = None,
) -> list[dict[str, Any]]:
    """What a vendor earned: resource offers (``kind: offer``) and application licences
    (``kind: application``), grouped *by* ``item`` (the offer or application), client
    ``organization`` and ``period``. Rows carry ``revenue`` per currency."""
    get_org(session, provider_org_id)
    dims = list(by)
    if period is not None and "period" not in dims:
        dims.append("period")
    bad = [d for d in dims if d not in VENDOR_DIMENSIONS]
    if bad:
        raise InvalidInput(
            f"by: {bad} not available to vendors; group by {list(VENDOR_DIMENSIONS)} (a vendor sees "
            "client organizations, never their users or projects)"
        )
    base = _where_period(start, end)
    rows: list[dict[str, Any]] = []
    for kind, owner_col, item, cents, cur in (
        ("offer", UsageRecord.provider_org_id, "offer", UsageRecord.cost_cents, UsageRecord.currency),
        (
            "application",
            UsageRecord.app_provider_org_id,
            "application",
            UsageRecord.licence_cents,
            UsageRecord.licence_currency,
        ),
    ):
        qdims = [item if d == "item" else d for d in dims]
        part = _aggregate(
            session, [owner_col == provider_org_id, *base], qdims, period, [("revenue", cents, cur)]
        )
        for r in part:
            if item in r:
                r["item"], r["item_id"] = r.pop(item), r.pop(f"{item}_id")
            r["kind"] = kind
        rows += part
    return _sort(_finish_money(rows, ("revenue",), currency, rates), ["kind", *dims])


def offer_usage(
    session: Session, offer_id: int, viewer_org_id: int, *, period: str | None = "month"
) -> list[dict[str, Any]]:
    """Use of one offer by client organization (and period): for its provider and the platform only;
    anyone else gets :class:`~..marketplace.errors.NotFound`, even for a public offer."""
    viewer = get_org(session, viewer_org_id)
    offer = session.get(MarketOffer, offer_id)
    if offer is None or (viewer.id != offer.provider_org_id and viewer.kind != "platform"):
        raise NotFound.of("offer", offer_id)
    dims = ["organization"] + (["period"] if period else [])
    rows = _aggregate(
        session,
        [UsageRecord.offer_id == offer_id],
        dims,
        period,
        [("revenue", UsageRecord.cost_cents, UsageRecord.currency)],
    )
    return _sort(_finish_money(rows, ("revenue",), None, None), dims)


def version_usage(session: Session, offer_id: int, provider_org_id: int) -> list[dict[str, Any]]:
    """Jobs and revenue per version of an offer (the provider's audit view)."""
    offer = session.get(MarketOffer, offer_id)
    if offer is None or offer.provider_org_id != provider_org_id:
        raise NotFound.of("offer", offer_id)
    q = (
        select(
            MarketOfferVersion.version,
            UsageRecord.currency,
            func.count(UsageRecord.id),
            func.coalesce(func.sum(UsageRecord.cost_cents), literal(0)),
        )
        .join(UsageRecord, UsageRecord.offer_version_id == MarketOfferVersion.id)
        .where(MarketOfferVersion.offer_id == offer_id)
        .group_by(MarketOfferVersion.version, UsageRecord.currency)
        .order_by(MarketOfferVersion.version)
    )
    return [
        {"version": v, "jobs": n, "revenue": {cur: from_cents(c)}}
        for v, cur, n, c in session.execute(q).all()
    ]


# --- CSV ----------------------------------------------------------------------------------------

RECORD_FIELDS = (
    "job_id",
    "instance_id",
    "step",
    "started",
    "finished",
    "project",
    "user",
    "template",
    "cluster",
    "queue",
    "offer",
    "offer_version",
    "application",
    "application_version",
    "pricing",
    "core_hours",
    "node_hours",
    "gpu_hours",
    "mem_gb_hours",
    "elapsed_s",
    "energy_j",
    "currency",
    "cost",
    "licence_currency",
    "licence",
)
_FLOATS = ("core_hours", "node_hours", "gpu_hours", "mem_gb_hours", "elapsed_s", "energy_j")
_INTS = ("job_id", "offer_version", "application_version")
_DECIMALS = ("cost", "licence")
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _cell(v: Any) -> str:
    """A CSV cell; text starting like a spreadsheet formula is prefixed with ``'``."""
    if v is None:
        return ""
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, float):
        return repr(v)
    s = str(v)
    if isinstance(v, str) and s.startswith(_FORMULA):
        return "'" + s
    return s


def _uncell(s: str) -> str:
    return s[1:] if s.startswith("'") and s[1:].startswith(_FORMULA) else s


def records_csv(
    session: Session,
    org_id: int,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    project_id: int | None = None,
    user_id: int | None = None,
) -> str:
    """The organization's ledger, one line per job, for billing outside the platform."""
    from .ledger import records

    recs = records(session, org_id, start=start, end=end, project_id=project_id, user_id=user_id)
    names = {d: _names(session, d, {getattr(r, DIMENSIONS[d][0].key) for r in recs}) for d in DIMENSIONS}
    vnums = dict(
        session.execute(
            select(MarketOfferVersion.id, MarketOfferVersion.version).where(
                MarketOfferVersion.id.in_({r.offer_version_id for r in recs if r.offer_version_id})
            )
        ).all()
    )
    from ..orm_market import MarketApplicationVersion

    anums = dict(
        session.execute(
            select(MarketApplicationVersion.id, MarketApplicationVersion.version).where(
                MarketApplicationVersion.id.in_(
                    {r.application_version_id for r in recs if r.application_version_id}
                )
            )
        ).all()
    )
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(RECORD_FIELDS)
    for r in recs:
        row = {
            "job_id": r.job_id,
            "instance_id": r.instance_id,
            "step": r.step,
            "started": r.started,
            "finished": r.finished,
            "project": names["project"].get(r.project_id),
            "user": names["user"].get(r.user_id),
            "template": names["template"].get(r.template_id),
            "cluster": names["cluster"].get(r.cluster_id),
            "queue": r.queue,
            "offer": names["offer"].get(r.offer_id),
            "offer_version": vnums.get(r.offer_version_id) if r.offer_version_id else None,
            "application": names["application"].get(r.application_id),
            "application_version": anums.get(r.application_version_id) if r.application_version_id else None,
            "pricing": r.pricing,
            "core_hours": r.core_hours,
            "node_hours": r.node_hours,
            "gpu_hours": r.gpu_hours,
            "mem_gb_hours": r.mem_gb_hours,
            "elapsed_s": r.elapsed_s,
            "energy_j": r.energy_j,
            "currency": r.currency,
            "cost": from_cents(r.cost_cents),
            "licence_currency": r.licence_currency,
            "licence": from_cents(r.licence_cents),
        }
        w.writerow([_cell(row[f]) for f in RECORD_FIELDS])
    return buf.getvalue()


def read_records_csv(text: str) -> list[dict[str, Any]]:
    """Parse :func:`records_csv` output back into typed values (floats, Decimals, datetimes)."""
    rows = []
    for raw in csv.DictReader(io.StringIO(text)):
        if set(raw) != set(RECORD_FIELDS):
            raise InvalidInput(f"not a HEROES ledger export: columns {sorted(raw)}")
        row: dict[str, Any] = {}
        for k, v in raw.items():
            if v == "":
                row[k] = None
            elif k in _FLOATS:
                row[k] = float(v)
            elif k in _INTS:
                row[k] = int(v)
            elif k in _DECIMALS:
                row[k] = Decimal(v)
            elif k in ("started", "finished"):
                row[k] = datetime.fromisoformat(v)
            else:
                row[k] = _uncell(v)
        rows.append(row)
    return rows


def report_csv(rows: Iterable[dict[str, Any]]) -> str:
    """A report (from :func:`usage_report` or :func:`vendor_revenue`) as CSV: one column per
    dimension and metric, one per currency for money (``cost_EUR``, ``revenue_USD``, ...)."""
    rows = list(rows)
    scalar: list[str] = []
    money: dict[str, set[str]] = {}
    for r in rows:
        for k, v in r.items():
            if isinstance(v, dict):
                money.setdefault(k, set()).update(v)
            elif k not in scalar:
                scalar.append(k)
    cols = scalar + [f"{k}_{c}" for k in money for c in sorted(money[k])]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        line = [_cell(r.get(k)) for k in scalar]
        line += [_cell(r.get(k, {}).get(c, "")) for k in money for c in sorted(money[k])]
        w.writerow(line)
    return buf.getvalue()


# --- figures ------------------------------------------------------------------------------------


def _money_value(r: dict[str, Any], key: str, currency: str) -> float:
    return float(r.get(key, {}).get(currency, 0))


def _go():
    try:
        import plotly.graph_objects as go
    except ImportError as e:  # pragma: no cover - plotly is in the notebook extra
        raise RuntimeError("the dashboards need plotly: pip install 'jupyter_heroes[notebook]'") from e
    return go


def cost_over_time_figure(
    rows: Sequence[dict[str, Any]], *, currency: str, group: str = "project", key: str = "total"
) -> Any:
    """Stacked bars of cost per period, one series per *group* value (rows of :func:`usage_report`
    with ``by=[group]`` and a period)."""
    go = _go()
    periods = sorted({r["period"] for r in rows})
    groups = sorted({str(r.get(group, "")) for r in rows})
    fig = go.Figure()
    for g in groups:
        by_p = {r["period"]: _money_value(r, key, currency) for r in rows if str(r.get(group, "")) == g}
        fig.add_trace(go.Bar(name=g, x=periods, y=[by_p.get(p, 0.0) for p in periods]))
    fig.update_layout(
        barmode="stack",
        title=f"Cost per period ({currency})",
        xaxis_title="period",
        yaxis_title=currency,
        legend_title=group,
    )
    return fig


def breakdown_figure(
    rows: Sequence[dict[str, Any]], *, dimension: str, currency: str, key: str = "total"
) -> Any:
    """Horizontal bars of cost per *dimension* value, largest first."""
    go = _go()
    pairs = sorted(((str(r[dimension]), _money_value(r, key, currency)) for r in rows), key=lambda p: p[1])
    fig = go.Figure(go.Bar(x=[v for _, v in pairs], y=[k for k, _ in pairs], orientation="h"))
    fig.update_layout(title=f"Cost per {dimension} ({currency})", xaxis_title=currency)
    return fig


def usage_figure(rows: Sequence[dict[str, Any]], *, dimension: str, metric: str = "core_hours") -> Any:
    """Bars of a usage metric (core_hours, gpu_hours, energy_kwh, jobs, ...) per *dimension* value."""
    if metric not in METRICS:
        raise InvalidInput(f"metric: {metric!r}; one of {list(METRICS)}")
    go = _go()
    fig = go.Figure(go.Bar(x=[str(r[dimension]) for r in rows], y=[r[metric] for r in rows]))
    fig.update_layout(title=f"{metric.replace('_', ' ')} per {dimension}", yaxis_title=metric)
    return fig


def budget_figure(statuses: Sequence[dict[str, Any]]) -> Any:
    """Spent / reserved / available per budget (from :func:`.budgets.budget_status`), stacked."""
    go = _go()
    labels = [f"{s['project'] or 'organization'} ({s['currency']}, #{s['id']})" for s in statuses]
    fig = go.Figure()
    for part, color in (("spent", "#d62728"), ("reserved", "#ff7f0e"), ("available", "#2ca02c")):
        fig.add_trace(
            go.Bar(
                name=part, y=labels, x=[float(s[part]) for s in statuses], orientation="h", marker_color=color
            )
        )
    fig.update_layout(barmode="stack", title="Budgets", xaxis_title="amount")
    return fig


def revenue_figure(rows: Sequence[dict[str, Any]], *, currency: str) -> Any:
    """A vendor's revenue per item (and per period when the rows have one)."""
    go = _go()
    fig = go.Figure()
    if rows and "period" in rows[0]:
        periods = sorted({r["period"] for r in rows})
        for item in sorted({str(r.get("item", r.get("kind"))) for r in rows}):
            by_p = {
                r["period"]: _money_value(r, "revenue", currency)
                for r in rows
                if str(r.get("item", r.get("kind"))) == item
            }
            fig.add_trace(go.Bar(name=item, x=periods, y=[by_p.get(p, 0.0) for p in periods]))
        fig.update_layout(barmode="stack")
    else:
        fig.add_trace(
            go.Bar(
                x=[str(r.get("item", r.get("kind"))) for r in rows],
                y=[_money_value(r, "revenue", currency) for r in rows],
            )
        )
    fig.update_layout(title=f"Revenue ({currency})", yaxis_title=currency)
    return fig
