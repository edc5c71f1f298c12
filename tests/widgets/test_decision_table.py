"""The submission widget's decision table (pure: a DataFrame in the shape the client returns)."""

from __future__ import annotations

import re

import pandas as pd

from jupyter_heroes.widgets.submission import decision_table_html


def test_one_row_per_candidate_recommended_first_and_escaped():
    df = pd.DataFrame(
        [
            {
                "rank": 1,
                "cluster": "galileo",
                "queue": "debug",
                "status": "ranked",
                "why": "best weighted score <fastest>",
                "expected_end": "2026-11-22T02:07:34.104846+00:00",
                "runtime_s": 5400.0,
                "cost": "1.20",
                "currency": "EUR",
                "energy_kwh": 0.123456,
                "co2e_kg": 0.0101,
                "key": "galileo/debug",
            },
            {
                "rank": pd.NA,
                "cluster": "vendor/o'hare",
                "queue": "long",
                "status": "excluded",
                "why": "over budget",
                "expected_end": None,
                "runtime_s": float("nan"),
                "cost": None,
                "currency": "EUR",
                "energy_kwh": float("nan"),
                "co2e_kg": float("nan"),
                "key": "x",
            },
        ]
    ).astype({"rank": "Int64"})
    html = decision_table_html(df)
    assert html.count("<tr class='heroes-candidate") == 2
    assert html.count("heroes-recommended") == 1
    assert "data-cluster='galileo' data-queue='debug'" in html.split("heroes-recommended", 1)[1][:200]
    heads = re.findall(r"<th [^>]*>(.*?)</th>", html)
    assert heads == [
        "rank",
        "cluster",
        "queue",
        "status",
        "result by",
        "runtime",
        "cost",
        "energy kWh",
        "CO2e kg",
        "why",
    ]
    assert "2026-11-22 02:07 UTC" in html and "1:30 h" in html and "1.20 EUR" in html
    assert "0.123" in html and "&lt;fastest&gt;" in html and "<fastest>" not in html
    assert "o&#39;hare" in html and "nan" not in html and "&lt;NA&gt;" not in html
    assert "galileo/debug" not in html  # internal columns stay in the DataFrame
    many = pd.concat([df.iloc[:1]] * 35, ignore_index=True)
    assert "5 more not shown" in decision_table_html(many)
    assert "heroes-decision-notes" not in html  # no notes, no list
    df.attrs["notes"] = ["runtimes predicted by request (rebuilding)", "costs <include> the licence"]
    notes = re.findall(r"<li>(.*?)</li>", decision_table_html(df).split("heroes-decision-notes", 1)[1])
    assert notes == ["runtimes predicted by request (rebuilding)", "costs &lt;include&gt; the licence"]


def test_sorted_by_each_measure_missing_values_last():
    df = pd.DataFrame(
        {
            "rank": pd.array([1, 2, pd.NA], dtype="Int64"),
            "cluster": ["a", "b", "c"],
            "queue": ["q", "q", "q"],
            "expected_end": ["2026-11-22T03:00:00+00:00", "2026-11-22T02:00:00+00:00", None],
            "cost": ["9.50", "10.00", None],
            "energy_kwh": [0.5, 0.2, float("nan")],
            "co2e_kg": [0.1, 0.3, 0.05],
        }
    )

    def order(sort_by: str) -> list[str]:
        return re.findall(r"data-cluster='(\w)'", decision_table_html(df, sort_by=sort_by))

    assert order("rank") == ["a", "b", "c"]
    assert order("expected_end") == ["b", "a", "c"]
    assert order("cost") == ["a", "b", "c"]  # 9.50 < 10.00 as numbers, not as text
    assert order("energy_kwh") == ["b", "a", "c"]
    assert order("co2e_kg") == ["c", "a", "b"]
    # the recommendation stays marked wherever it lands
    html = decision_table_html(df, sort_by="co2e_kg")
    assert (
        html.count("heroes-recommended") == 1
        and "heroes-recommended' style='background:#e8f5e9;font-weight:600' data-cluster='a'" in html
    )
