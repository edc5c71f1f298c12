from __future__ import annotations

import json

import pytest

from jupyter_heroes.decision.carbon import CarbonError, IntensityTable, carbon_kg, check_pue, default_table

# The header of Electricity Maps' yearly CSV (CI-electricitymaps-yearly_2024.csv, ODbL), and two of its rows.
EM_HEADER = (
    "Datetime (UTC),Country,Zone name,Zone id,Carbon intensity gCO₂eq/kWh (direct),"
    "Carbon intensity gCO₂eq/kWh (Life cycle),Carbon-free energy percentage (CFE%),"
    "Renewable energy percentage (RE%),Data source,Citation"
)
EM_ROWS = [
    '2024-01-01 00:00:00,France,France,FR,18.4,33.44,95.0,27.0,Electricity Maps Estimation,"Electricity Maps (2025)."',
    '2024-01-01 00:00:00,Poland,Poland,PL,600.0,650.0,20.0,20.0,Electricity Maps Estimation,"Electricity Maps (2025)."',
]


def test_default_table_records_source_year_and_basis():
    t = default_table()
    fr = t.lookup("FR")
    assert (fr.g_per_kwh, fr.basis, fr.year) == (33.44, "lifecycle", 2024)
    assert "Electricity Maps" in fr.source
    assert t.lookup("FR", "direct").g_per_kwh == 18.4
    assert t.lookup("SE-SE3").g_per_kwh == 20.42
    assert "2024" in fr.describe() and "lifecycle" in fr.describe()
    assert t.lookup("GLOBAL").year == 2023  # the global row of that file is the 2023 average


def test_unknown_zone_says_what_to_set():
    with pytest.raises(
        CarbonError, match=r"no carbon intensity for grid zone 'DE-XX'.*\['DE'\].*site.grid_zone"
    ):
        default_table().lookup("DE-XX")
    with pytest.raises(CarbonError, match="basis"):
        default_table().lookup("FR", "average")


def test_carbon_is_energy_times_pue_times_intensity():
    assert carbon_kg(10.0, 1.2, 33.44) == pytest.approx(10 * 1.2 * 33.44 / 1000)


def test_reads_the_original_electricitymaps_layout(tmp_path):
    p = tmp_path / "em.csv"
    p.write_text("\n".join([EM_HEADER, *EM_ROWS]) + "\n", encoding="utf-8")
    t = IntensityTable.from_electricitymaps_csv(p)
    assert t.lookup("PL").g_per_kwh == 650.0
    assert t.lookup("PL", "direct").g_per_kwh == 600.0
    assert t.lookup("FR").year == 2024


def test_reads_codecarbon_mix(tmp_path):
    p = tmp_path / "mix.json"
    p.write_text(json.dumps({"FRA": {"carbon_intensity": 56.0, "year": 2022, "country_name": "France"}}))
    i = IntensityTable.from_codecarbon_json(p).lookup("FRA")
    assert (i.g_per_kwh, i.basis, i.year) == (56.0, "mix", 2022)
    assert "CodeCarbon" in i.source


def test_bad_tables_and_pue(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("a,b\n1,2\n")
    with pytest.raises(CarbonError, match="not an Electricity Maps yearly CSV"):
        IntensityTable.from_electricitymaps_csv(p)
    p.write_text("zone_id,year,g_per_kwh_direct,g_per_kwh_lifecycle\nFR,2024,x,1\n")
    with pytest.raises(CarbonError, match="line 2"):
        IntensityTable.from_electricitymaps_csv(p)
    j = tmp_path / "bad.json"
    j.write_text('{"FRA": {"year": 2022}}')
    with pytest.raises(CarbonError, match="not a CodeCarbon"):
        IntensityTable.from_codecarbon_json(j)
    for bad in (0.9, 7, "1.2", True):
        with pytest.raises(CarbonError, match="PUE is a number between 1.0 and 5.0"):
            check_pue(bad)
    assert check_pue(1) == 1.0
