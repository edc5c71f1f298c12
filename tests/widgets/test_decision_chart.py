"""The decision chart (cost vs time to result vs CO2e) from a REAL decision: a world on the session's
hub with the unpriced local cluster, a priced cluster with two queues at different prices and speeds,
and one too small for the template (out of the ranking). ``decision_figure`` is checked on the
DataFrame ``HeroesClient.decide`` returned; ``SubmissionWidget.compare()`` shows it under the table."""

from __future__ import annotations

from datetime import datetime, timezone

import ipywidgets as w
import pandas as pd
import plotly.graph_objects as go
import pytest
from client.world import World, build_world

from jupyter_heroes.widgets import SubmissionWidget
from jupyter_heroes.widgets.chart import (
    TRACE_CANDIDATES,
    TRACE_NO_PRICE,
    TRACE_RECOMMENDED,
    decision_figure,
)

pytestmark = [
    pytest.mark.hub,
    pytest.mark.parametrize("hub", ["sqlite"], indirect=True),
    pytest.mark.timeout(240),
]

PARAMS = {"samples": 20000, "seed": 1, "label": "chart"}


@pytest.fixture(scope="session")
def chart_world(hub, tmp_path_factory) -> World:
    scratch = tmp_path_factory.mktemp("fchart-scratch")
    world = build_world(hub, "fchart", scratch / "local")
    world.ok(
        world.admin,
        "POST",
        "/organization/admin/cluster",
        {
            "name": "priced",
            "transport": "local",
            "scheduler": "local",
            "scratch_root": str(scratch / "priced"),
            "queues": [{"name": "fast"}, {"name": "cheap"}],
            "site": {
                "offer": {"currency": "EUR", "fixed": "0.50", "core_hour": "2.00"},
                "pue": 1.2,
                "grid_zone": "FR",
                "typical_wait_s": 0,
                "relative_speed": 2.0,
                "queues": {
                    "cheap": {
                        "offer": {"currency": "EUR", "fixed": "0.10", "core_hour": "0.01"},
                        "relative_speed": 0.5,
                    }
                },
            },
        },
        status=201,
        org=world.org,
    )
    world.ok(
        world.admin,
        "POST",
        "/organization/admin/cluster",
        {
            "name": "tiny",
            "transport": "local",
            "scheduler": "local",
            "scratch_root": str(scratch / "tiny"),
            "queues": [{"name": "small", "mem_per_node_mb": 128}],
        },
        status=201,
        org=world.org,
    )
    return world


@pytest.fixture(scope="session")
def decided(chart_world):
    client = chart_world.client(organization=chart_world.org)
    now = datetime.now(timezone.utc)
    df = client.decide("monte-carlo-pi", PARAMS)
    return df, now


def label(rec) -> str:
    return f"{rec['cluster']}/{rec['queue']}"


def test_one_point_per_ranked_candidate_recommendation_marked(decided):
    df, now = decided
    ranked = df[df["rank"].notna()]
    # the world gives what the chart must show: priced and unpriced ranked candidates, one out
    assert {"priced/fast", "priced/cheap", "local/debug"} <= {label(r) for _, r in ranked.iterrows()}
    assert "tiny/small" not in {label(r) for _, r in ranked.iterrows()}
    fig = decision_figure(df, now=now)
    assert isinstance(fig, go.Figure)
    traces = {t.name: t for t in fig.data}
    # every ranked candidate is exactly one point, in one of the traces
    plotted = [txt for t in fig.data for txt in t.text]
    assert sorted(plotted) == sorted(label(r) for _, r in ranked.iterrows())
    assert sorted(fig.layout.meta["plotted"]) == sorted(plotted)
    # the recommendation has its own, distinct trace: a larger star
    best = df[df["rank"] == 1].iloc[0]
    rec = traces[TRACE_RECOMMENDED]
    assert list(rec.text) == [label(best)] and fig.layout.meta["recommended"] == [label(best)]
    assert rec.marker.symbol == "star" and rec.marker.size > traces[TRACE_CANDIDATES].marker.size
    assert label(best) not in traces[TRACE_CANDIDATES].text
    # x: hours from now to the expected end; y: the cost in the decision's currency
    for t in fig.data:
        for txt, x, y in zip(t.text, t.x, t.y, strict=True):
            row = ranked[[label(r) == txt for _, r in ranked.iterrows()]].iloc[0]
            end = datetime.fromisoformat(str(row["expected_end"]))
            assert x == pytest.approx((end - now).total_seconds() / 3600, abs=1e-6)
            if not pd.isna(row["cost"]):
                assert y == pytest.approx(float(row["cost"]))
    currency = df.attrs["currency"]
    assert fig.layout.yaxis.title.text == f"cost ({currency})"
    assert "time to result" in fig.layout.xaxis.title.text
    # two priced points differ: the cheap queue costs less and takes longer than the fast one
    pos = {txt: (x, y) for t in fig.data for txt, x, y in zip(t.text, t.x, t.y, strict=True)}
    assert pos["priced/cheap"][1] < pos["priced/fast"][1]
    assert pos["priced/cheap"][0] > pos["priced/fast"][0]


def test_colour_bar_hover_and_error_bars(decided):
    df, now = decided
    fig = decision_figure(df, now=now)
    cand = next(t for t in fig.data if t.name == TRACE_CANDIDATES)
    assert cand.marker.showscale and cand.marker.colorbar.title.text == "CO2e kg"
    ranked = df[df["rank"].notna()].set_index(df[df["rank"].notna()].apply(label, axis=1))
    for t in fig.data:
        for txt, colour, hover, plus, minus in zip(
            t.text, t.marker.color, t.hovertext, t.error_x.array, t.error_x.arrayminus, strict=True
        ):
            row = ranked.loc[txt]
            assert colour == pytest.approx(float(row["co2e_kg"]))
            assert f"CO2e {float(row['co2e_kg']):.3g} kg" in hover and txt in hover
            cost = row["cost"]
            assert (f"cost {cost} {row['currency']}" if not pd.isna(cost) else "cost no price") in hover
            assert f"(rank {int(row['rank'])})" in hover
            # the time range: from the low to the high expected end
            end = datetime.fromisoformat(str(row["expected_end"]))
            high = datetime.fromisoformat(str(row["expected_end_high"]))
            low = datetime.fromisoformat(str(row["expected_end_low"]))
            assert plus == pytest.approx((high - end).total_seconds() / 3600, abs=1e-6)
            assert minus == pytest.approx((end - low).total_seconds() / 3600, abs=1e-6)
    # the priced points have a cost range too
    fast = ranked.loc["priced/fast"]
    i = [t for t in fig.data if "priced/fast" in t.text][0]
    k = list(i.text).index("priced/fast")
    assert i.error_y.array[k] == pytest.approx(float(fast["cost_high"]) - float(fast["cost"]))
    assert i.error_y.arrayminus[k] == pytest.approx(float(fast["cost"]) - float(fast["cost_low"]))


def test_missing_prices_and_excluded_candidates_are_noted(decided):
    df, now = decided
    fig = decision_figure(df, now=now)
    unpriced = [label(r) for _, r in df[df["rank"].notna()].iterrows() if pd.isna(r["cost"])]
    assert unpriced == ["local/debug"]
    assert fig.layout.meta["no_price"] == unpriced
    # drawn in a band under zero cost, named in the note
    where = [t for t in fig.data if "local/debug" in t.text][0]
    y = list(where.y)[list(where.text).index("local/debug")]
    assert y < 0 and where.name in (TRACE_NO_PRICE, TRACE_RECOMMENDED)
    assert any(s.y0 < y < s.y1 for s in fig.layout.shapes)
    note = "\n".join(a.text for a in fig.layout.annotations)
    assert "no price (drawn in the band under zero): local/debug" in note
    out = df[df["rank"].isna()]
    assert len(out) and "not plotted: " in note
    for _, r in out.iterrows():
        assert f"{label(r)} ({r['status']})" in note
    assert {d["label"] for d in fig.layout.meta["not_plotted"]} == {label(r) for _, r in out.iterrows()}


def test_without_candidates_the_figure_is_empty_not_an_error(decided):
    df, now = decided
    fig = decision_figure(df.iloc[:0], now=now)
    assert fig.layout.meta["plotted"] == [] and all(len(t.x) == 0 for t in fig.data)


def test_compare_shows_the_chart_and_recompare_replaces_it(chart_world):
    sw = SubmissionWidget(chart_world.client(organization=chart_world.org))
    try:
        assert sw.decision_chart is None and sw.decision_chart_box.children == ()
        assert sw.decision_chart_box in sw.children
        assert "heroes-decision-chart" in sw.decision_chart_box._dom_classes
        for name, value in PARAMS.items():
            sw.form.fields[name].value = value
        df = sw.compare()
        chart = sw.decision_chart
        assert isinstance(chart, go.FigureWidget) and isinstance(chart, w.DOMWidget)
        assert sw.decision_chart_box.children == (chart,)
        assert "heroes-decision-figure" in chart._dom_classes
        ranked = {label(r) for _, r in df[df["rank"].notna()].iterrows()}
        assert set(chart.layout.meta["plotted"]) == ranked
        assert chart.layout.meta["recommended"] == [label(df[df["rank"] == 1].iloc[0])]
        # under the table
        kids = list(sw.children)
        assert kids.index(sw.decision_view) < kids.index(sw.decision_chart_box)
        # re-compare: a new chart of the new decision, the old one closed
        sw.form.fields["samples"].value = 2_000_000
        df2 = sw.compare()
        assert df2.attrs["decision"] != df.attrs["decision"]
        assert sw.decision_chart is not chart and chart.comm is None
        assert sw.decision_chart_box.children == (sw.decision_chart,)
        assert set(sw.decision_chart.layout.meta["plotted"]) == {
            label(r) for _, r in df2[df2["rank"].notna()].iterrows()
        }
        # another template: no decision, no chart
        sw.template_picker.value = "run-python"
        assert sw.decision_chart is None and sw.decision_chart_box.children == ()
    finally:
        sw.close()
