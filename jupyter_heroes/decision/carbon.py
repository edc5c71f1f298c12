"""Carbon of a run: IT energy x the site's PUE x the grid's carbon intensity.

Sources disagree (France: 18 gCO2eq/kWh direct and 33 life-cycle in Electricity Maps 2024, 56 in
CodeCarbon's OWID/Ember mix), so every :class:`Intensity` records its source, year and basis
(``lifecycle``, ``direct`` or ``mix``), and every carbon figure in a decision says which one it used.

The shipped default table (``data/carbon_intensity_electricitymaps_2024.csv``) is a subset of Electricity
Maps' 2024 yearly averages (European zones and a few cloud regions; ODbL, licence beside it): a zone id
such as ``FR``, ``DE`` or ``SE-SE3`` in a cluster's ``site.grid_zone``. A site may instead declare
``site.grid_intensity_g_per_kwh`` (with ``site.grid_intensity_source``). Tables from the full
Electricity Maps CSV or CodeCarbon's ``global_energy_mix.json`` load with
:meth:`IntensityTable.from_electricitymaps_csv` and :meth:`IntensityTable.from_codecarbon_json`.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"
BASES = ("lifecycle", "direct", "mix")
EM_SOURCE = "Electricity Maps yearly average (ODbL)"


class CarbonError(ValueError):
    """No intensity for a zone, a bad PUE, or an unreadable intensity table."""

    reason = "invalid-carbon"


@dataclass(frozen=True)
class Intensity:
    zone: str
    g_per_kwh: float
    basis: str
    source: str
    year: int | None

    def describe(self) -> str:
        year = f" {self.year}" if self.year else ""
        return f"{self.g_per_kwh:g} gCO2eq/kWh ({self.basis}, {self.source}{year}, zone {self.zone})"


class IntensityTable:
    """Grid carbon intensity by zone. ``entries[zone][basis] = (g_per_kwh, year)``."""

    def __init__(self, entries: dict[str, dict[str, tuple[float, int | None]]], source: str) -> None:
        self.entries = entries
        self.source = source

    def lookup(self, zone: str, basis: str = "lifecycle") -> Intensity:
        if basis not in BASES:
            raise CarbonError(f"intensity basis {basis!r}: use one of {list(BASES)}")
        e = self.entries.get(zone)
        if e is None:
            near = sorted(z for z in self.entries if z.split("-")[0] == zone.split("-")[0])
            hint = f" (this table has {near})" if near else ""
            raise CarbonError(
                f"no carbon intensity for grid zone {zone!r} in {self.source}{hint}; set site.grid_zone "
                "to a zone id of the table or site.grid_intensity_g_per_kwh on the cluster"
            )
        if basis not in e:
            basis = next(iter(e))  # a table with one basis (CodeCarbon's mix) answers with it
        g, year = e[basis]
        return Intensity(zone, g, basis, self.source, year)

    @classmethod
    def from_electricitymaps_csv(cls, path: str | Path) -> IntensityTable:
        """Read Electricity Maps' yearly CSV (columns ``Zone id``, ``Carbon intensity gCO₂eq/kWh
        (direct)``, ``(Life cycle)``, ``Datetime (UTC)``) or the shipped subset (``zone_id``,
        ``g_per_kwh_direct``, ``g_per_kwh_lifecycle``, ``year``)."""
        entries: dict[str, dict[str, tuple[float, int | None]]] = {}
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            cols = reader.fieldnames or []
            if "zone_id" in cols:
                zc, dc, lc, yc = "zone_id", "g_per_kwh_direct", "g_per_kwh_lifecycle", "year"
            elif "Zone id" in cols:
                zc, yc = "Zone id", "Datetime (UTC)"
                dc = next((c for c in cols if c.startswith("Carbon intensity") and "(direct)" in c), "")
                lc = next((c for c in cols if c.startswith("Carbon intensity") and "(Life cycle)" in c), "")
            else:
                raise CarbonError(f"{path}: not an Electricity Maps yearly CSV (no 'Zone id' column)")
            for i, r in enumerate(reader, start=2):
                try:
                    year = int(str(r[yc])[:4]) if r.get(yc) else None
                    entries[r[zc]] = {"lifecycle": (float(r[lc]), year), "direct": (float(r[dc]), year)}
                except (KeyError, ValueError) as e:
                    raise CarbonError(f"{path}, line {i}: {e}") from None
        return cls(entries, EM_SOURCE)

    @classmethod
    def from_codecarbon_json(cls, path: str | Path) -> IntensityTable:
        """Read CodeCarbon's ``global_energy_mix.json`` (ISO 3166 alpha-3 keys, ``carbon_intensity``
        in gCO2eq/kWh and ``year``)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            entries = {
                k: {"mix": (float(v["carbon_intensity"]), int(v["year"]) if v.get("year") else None)}
                for k, v in data.items()
            }
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise CarbonError(f"{path}: not a CodeCarbon global_energy_mix.json ({e})") from None
        return cls(entries, "CodeCarbon global energy mix (OWID/Ember, MIT)")


_DEFAULT: IntensityTable | None = None


def default_table() -> IntensityTable:
    """The shipped Electricity Maps 2024 subset, read once."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = IntensityTable.from_electricitymaps_csv(
            DATA_DIR / "carbon_intensity_electricitymaps_2024.csv"
        )
    return _DEFAULT


def check_pue(pue: float, where: str = "site.pue") -> float:
    if isinstance(pue, bool) or not isinstance(pue, int | float) or not 1.0 <= pue <= 5.0:
        raise CarbonError(f"{where}: a PUE is a number between 1.0 and 5.0, got {pue!r}")
    return float(pue)


def carbon_kg(it_kwh: float, pue: float, g_per_kwh: float) -> float:
    """kg CO2eq of *it_kwh* of IT energy at a site with *pue* on a grid of *g_per_kwh*."""
    return it_kwh * pue * g_per_kwh / 1000.0
