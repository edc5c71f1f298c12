"""The decision's candidates as a plotly chart: time to result against cost, coloured by CO2e.

:func:`decision_figure` is pure (a DataFrame in the shape :meth:`HeroesClient.decide` returns in, a
``plotly.graph_objects.Figure`` out), so it is tested without a browser; the submission widget shows
it as a ``FigureWidget`` under the decision table after *Compare*.

One point per ranked candidate, labelled ``cluster/queue``: x is the time to the result (expected end
minus *now*, in hours), y the cost in the decision's currency, the colour the CO2e in kg (with a
colour bar). Error bars come from the ``expected_end_low``/``_high`` and ``cost_low``/``_high``
columns where present. The recommendation (rank 1) is a star with a dark outline in its own trace.
Ranked candidates without a price sit in a shaded "no price" band below zero cost, and the note under
the chart names them; candidates that are out (infeasible, over budget ...) are named in the note too,
never dropped silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import plotly.graph_objects as go

#: the names of the chart's traces (tests and callers find them by name)
TRACE_CANDIDATES = "candidates"
TRACE_RECOMMENDED = "recommended"
TRACE_NO_PRICE = "no price"
COLORSCALE = "Viridis"


def _num(value: Any) -> float | None:
    """*value* (a decimal string, a number, NaN, None, pandas NA) as a float, or None when unknown."""
    if value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if f != f else f


def _when(value: Any) -> datetime | None:
    if value is None or str(value) in ("", "NaT", "nan", "None", "<NA>"):
        return None
    if isinstance(value, datetime):
        t = value
    else:
        try:
            t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _hours(value: Any, now: datetime) -> float | None:
    t = _when(value)
    return None if t is None else (t - now).total_seconds() / 3600


def _label(rec: Mapping[str, Any]) -> str:
    cluster, queue = str(rec.get("cluster") or "?"), rec.get("queue")
    return f"{cluster}/{queue}" if queue and str(queue) not in ("nan", "None", "<NA>") else cluster


def _text(value: Any) -> str:
    return "" if value is None or str(value) in ("nan", "None", "<NA>", "NaT") else str(value)


def _rank(value: Any) -> str:
    n = _num(value)
    return "" if n is None else str(int(n)) if n == int(n) else str(n)


def _esc(text: str) -> str:
    """*text* safe in plotly's HTML-like labels (names and reasons come from admins and vendors)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _point(rec: Mapping[str, Any], now: datetime, currency: str) -> dict[str, Any]:
    """The chart's view of one candidate row."""
    x = _hours(rec.get("expected_end"), now)
    lo, hi = _hours(rec.get("expected_end_low"), now), _hours(rec.get("expected_end_high"), now)
    cost = _num(rec.get("cost"))
    clo, chi = _num(rec.get("cost_low")), _num(rec.get("cost_high"))
    co2e = _num(rec.get("co2e_kg"))
    money = f"{_text(rec.get('cost'))} {currency}".strip() if cost is not None else "no price"
    hover = "<br>".join(
        [
            f"<b>{_esc(_label(rec))}</b> (rank {_rank(rec.get('rank'))})",
            "result in " + (f"{x:.2f} h" if x is not None else "?"),
            f"cost {money}",
            "CO2e " + (f"{co2e:.3g} kg" if co2e is not None else "unknown"),
            _esc(_text(rec.get("why"))),
        ]
    )
    return {
        "label": _label(rec),
        "x": x,
        "x_plus": max(hi - x, 0.0) if x is not None and hi is not None else 0.0,
        "x_minus": max(x - lo, 0.0) if x is not None and lo is not None else 0.0,
        "cost": cost,
        "y_plus": max(chi - cost, 0.0) if cost is not None and chi is not None else 0.0,
        "y_minus": max(cost - clo, 0.0) if cost is not None and clo is not None else 0.0,
        "co2e": co2e,
        "hover": hover,
    }


def _error_bars(points: list[dict[str, Any]], axis: str) -> dict[str, Any]:
    """Plotly's asymmetric error bars of the points on *axis* (``x`` or ``y``): the interval."""
    return {
        "type": "data",
        "symmetric": False,
        "array": [p[f"{axis}_plus"] for p in points],
        "arrayminus": [p[f"{axis}_minus"] for p in points],
        "thickness": 1,
        "color": "#888",
    }


def _trace(
    points: list[dict[str, Any]], name: str, ys: list[float], cmin: float, cmax: float, **marker: Any
) -> go.Scatter:
    co2e = [p["co2e"] for p in points]
    coloured = any(c is not None for c in co2e)
    return go.Scatter(
        name=name,
        x=[p["x"] for p in points],
        y=ys,
        mode="markers+text",
        text=[p["label"] for p in points],
        textposition="top center",
        hovertext=[p["hover"] for p in points],
        hoverinfo="text",
        error_x=_error_bars(points, "x"),
        error_y=_error_bars(points, "y"),
        marker={
            "color": [c if c is not None else cmin for c in co2e] if coloured else "#607d8b",
            "colorscale": COLORSCALE,
            "cmin": cmin,
            "cmax": cmax,
            **marker,
        },
    )


def decision_figure(df: Any, now: datetime | None = None) -> go.Figure:
    """The chart of a decision's DataFrame *df* (see the module docstring); *now* (default: the
    current time, UTC) is where the time to result starts. The figure's ``layout.meta`` holds
    ``plotted`` (the labels of the points), ``no_price`` and ``not_plotted`` (label and why) for
    programs and tests."""
    now = now or datetime.now(timezone.utc)
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    records = df.to_dict(orient="records") if df is not None else []
    currency = str(
        (df.attrs.get("currency") if df is not None else None)
        or next((r["currency"] for r in records if _text(r.get("currency"))), "")
    )
    ranked, out = [], []
    for rec in records:
        rank = _num(rec.get("rank"))
        if rank is None:
            out.append((_label(rec), _text(rec.get("status")) or "not ranked"))
        else:
            ranked.append((rank, rec))
    ranked.sort(key=lambda rr: rr[0])
    points = [(rank, _point(rec, now, currency)) for rank, rec in ranked]
    for _, p in [rp for rp in points if rp[1]["x"] is None]:
        out.append((p["label"], "no expected end"))
    points = [rp for rp in points if rp[1]["x"] is not None]
    co2e = [p["co2e"] for _, p in points if p["co2e"] is not None]
    cmin, cmax = (min(co2e), max(co2e)) if co2e else (0.0, 1.0)
    if cmax <= cmin:
        cmax = cmin + max(abs(cmin) * 0.1, 1e-9)
    priced = [p for _, p in points if p["cost"] is not None]
    top = max([p["cost"] + p["y_plus"] for p in priced], default=1.0) or 1.0
    band = -0.12 * top  # where candidates without a price sit, under zero cost

    best = [p for rank, p in points if rank == 1]
    others = [p for rank, p in points if rank != 1]
    fig = go.Figure()
    # the colour bar lives on the candidates' trace (always present, maybe empty)
    fig.add_trace(
        _trace(
            [p for p in others if p["cost"] is not None],
            TRACE_CANDIDATES,
            [p["cost"] for p in others if p["cost"] is not None],
            cmin,
            cmax,
            size=12,
            symbol="circle",
            showscale=bool(co2e),
            colorbar={"title": {"text": "CO2e kg"}},
        )
    )
    no_price = [p for p in others if p["cost"] is None]
    if no_price:
        fig.add_trace(
            _trace(
                no_price, TRACE_NO_PRICE, [band] * len(no_price), cmin, cmax, size=12, symbol="circle-open"
            )
        )
    if best:
        fig.add_trace(
            _trace(
                best,
                TRACE_RECOMMENDED,
                [p["cost"] if p["cost"] is not None else band for p in best],
                cmin,
                cmax,
                size=20,
                symbol="star",
                line={"color": "#1b5e20", "width": 2},
            )
        )
    unpriced = [p["label"] for p in best + no_price if p["cost"] is None]
    if unpriced:
        fig.add_hrect(
            y0=band * 1.5, y1=band * 0.5, fillcolor="#eeeeee", opacity=0.6, line_width=0, layer="below"
        )
        fig.add_annotation(
            xref="paper",
            x=0,
            y=band,
            text="no price",
            showarrow=False,
            xanchor="left",
            font={"color": "#777"},
        )
    notes = []
    if unpriced:
        notes.append("no price (drawn in the band under zero): " + ", ".join(unpriced))
    if out:
        notes.append("not plotted: " + ", ".join(f"{label} ({why})" for label, why in out))
    if notes:
        fig.add_annotation(
            xref="paper",
            yref="paper",
            x=0,
            y=-0.22,
            xanchor="left",
            yanchor="top",
            align="left",
            showarrow=False,
            text="<br>".join(notes),
            font={"size": 11, "color": "#555"},
        )
    fig.update_layout(
        title={"text": "Time to result, cost and CO2e of the ranked candidates"},
        xaxis={"title": {"text": "time to result (hours from now)"}, "rangemode": "tozero"},
        yaxis={"title": {"text": f"cost ({currency})" if currency else "cost"}},
        height=420 + 16 * len(notes),
        margin={"l": 60, "r": 20, "t": 50, "b": 70 + 28 * len(notes)},
        legend={"orientation": "h", "y": 1.0, "yanchor": "bottom", "x": 1, "xanchor": "right"},
        meta={
            "plotted": [p["label"] for _, p in points],
            "recommended": [p["label"] for p in best],
            "no_price": unpriced,
            "not_plotted": [{"label": label, "why": why} for label, why in out],
            "currency": currency,
        },
    )
    return fig


def figure_widget(fig: go.Figure) -> Any:
    """*fig* as a widget: a ``plotly.graph_objects.FigureWidget`` (needs ``anywidget``, which renders
    in JupyterLab and Voila), else an ``ipywidgets.Output`` that displays the figure through plotly's
    renderer."""
    try:
        widget = go.FigureWidget(fig)
    except ImportError:
        import ipywidgets as w
        from IPython.display import display

        widget = w.Output()
        with widget:
            display(fig)
    widget.add_class("heroes-decision-figure")
    return widget
