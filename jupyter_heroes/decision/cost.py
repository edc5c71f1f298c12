"""What a run costs: the providers' business models (D3.1 section 4.9), currencies, cloud list prices.

An :class:`Offer` is the "A x + B" model of D3.1: a fixed part ``fixed`` (B) plus a rate (A) per unit of
each kind of usage x: core-hours, node-hours, GPU-hours, GB-hours of memory, storage GB-months and
transferred GB. Resource providers (an HPC centre's queue, a cloud instance type) and application
providers (licence fees) both publish offers; an application's offer usually charges ``fixed`` per run
and perhaps a rate per core-hour.

Money is :class:`~decimal.Decimal`, never float. Rounding, documented once here and relied on by tests:

- each line (``rate x quantity``, or the fixed part) is computed exactly and rounded half-up to the
  cent in the offer's currency;
- an offer's total is the sum of its rounded lines, so a printed breakdown always adds up;
- a total converted to another currency is converted exactly from the rounded total, then rounded
  half-up to the cent. Conversion goes through the table's base currency (see :class:`CurrencyRates`).

Prices are validated when an offer is read: a negative, non-finite or non-numeric price, an unknown
usage kind or a malformed currency code raises :class:`PriceError` (a ``ValueError``) naming the field.

Cloud offers default to list prices from :func:`default_catalog` (on-demand USD/hour per instance, from
the SkyPilot catalog v6; see ``data/SOURCES.md``): ``node_hour`` is the instance price and
:func:`nodes_needed` says how many instances a step takes.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).parent / "data"
CENT = Decimal("0.01")
ZERO = Decimal(0)
CURRENCY_RE = re.compile(r"^[A-Z]{3}$")

#: rate name in an offer -> (usage field, unit shown on a bill line)
RATES: dict[str, tuple[str, str]] = {
    "core_hour": ("core_hours", "core-h"),
    "node_hour": ("node_hours", "node-h"),
    "gpu_hour": ("gpu_hours", "GPU-h"),
    "gb_hour": ("mem_gb_hours", "GB-h"),
    "storage_gb_month": ("storage_gb_month", "GB-month"),
    "transfer_gb": ("transfer_gb", "GB"),
}
FIXED_PER = ("job", "run")


class PriceError(ValueError):
    """A price, an offer or a currency table is invalid; the message names the field."""

    reason = "invalid-price"


def round_cents(amount: Decimal) -> Decimal:
    """Round half-up to the cent."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def parse_amount(value: Any, where: str) -> Decimal:
    """A non-negative finite Decimal from a Decimal, int, float or numeric string, or :class:`PriceError`.

    Floats go through their shortest ``repr`` (``0.1`` is read as ``Decimal("0.1")``, not the binary
    approximation); booleans are refused.
    """
    if isinstance(value, bool) or value is None:
        raise PriceError(f"{where}: expected a price (a number such as 0.012), got {value!r}")
    if isinstance(value, Decimal):
        d = value
    elif isinstance(value, int | float | str):
        try:
            d = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
        except InvalidOperation:
            raise PriceError(f"{where}: {value!r} is not a number; write a price such as 0.012") from None
    else:
        raise PriceError(f"{where}: expected a price (a number such as 0.012), got {type(value).__name__}")
    if not d.is_finite():
        raise PriceError(f"{where}: {value!r} is not a finite number")
    if d < 0:
        raise PriceError(f"{where}: {value!r} is negative; prices must be zero or more")
    return d


def check_currency(code: Any, where: str) -> str:
    if not isinstance(code, str) or not CURRENCY_RE.match(code):
        raise PriceError(f"{where}: {code!r} is not an ISO 4217 currency code such as EUR or USD")
    return code


@dataclass(frozen=True)
class Usage:
    """Quantities a run consumes, in the units of :data:`RATES`. ``jobs`` counts scheduler submissions
    (an array step is one submission), ``runs`` counts workflow runs."""

    core_hours: Decimal = ZERO
    node_hours: Decimal = ZERO
    gpu_hours: Decimal = ZERO
    mem_gb_hours: Decimal = ZERO
    storage_gb_month: Decimal = ZERO
    transfer_gb: Decimal = ZERO
    jobs: int = 1
    runs: int = 1

    @classmethod
    def from_floats(cls, jobs: int = 1, runs: int = 1, **quantities: float) -> Usage:
        """Build from float quantities (each read through its shortest ``repr``)."""
        fields = {f for f, _ in RATES.values()}
        bad = sorted(set(quantities) - fields)
        if bad:
            raise ValueError(f"unknown usage kind(s) {bad}; known: {sorted(fields)}")
        vals = {}
        for k, v in quantities.items():
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"usage {k}: {v!r} must be a finite number >= 0")
            vals[k] = Decimal(repr(float(v)))
        return cls(**vals, jobs=jobs, runs=runs)

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            *(getattr(self, f) + getattr(other, f) for f, _ in RATES.values()),
            jobs=self.jobs + other.jobs,
            runs=max(self.runs, other.runs),
        )


@dataclass(frozen=True)
class CostLine:
    item: str
    quantity: Decimal
    unit: str
    rate: Decimal
    amount: Decimal  # rounded to the cent, in the offer's currency


@dataclass(frozen=True)
class CostBreakdown:
    currency: str
    lines: tuple[CostLine, ...]

    @property
    def total(self) -> Decimal:
        return sum((line.amount for line in self.lines), ZERO)


@dataclass(frozen=True)
class Offer:
    """An "A x + B" business model. ``fixed`` (B) is charged once per job (``fixed_per="job"``, each
    scheduler submission; an array step is one) or once per workflow run (``fixed_per="run"``)."""

    currency: str = "EUR"
    fixed: Decimal = ZERO
    fixed_per: str = "job"
    rates: Mapping[str, Decimal] = field(default_factory=dict)
    name: str = ""
    source: str = ""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "offer") -> Offer:
        """Read ``{"currency": "EUR", "fixed": "0.50", "core_hour": "0.008", ...}``; every rate key is
        one of :data:`RATES`."""
        if not isinstance(d, Mapping):
            raise PriceError(f"{where}: expected a mapping of prices, got {type(d).__name__}")
        known = {"currency", "fixed", "fixed_per", "name", "source", *RATES}
        extra = sorted(set(d) - known)
        if extra:
            raise PriceError(f"{where}: unknown field(s) {extra}; prices are {sorted(RATES)} and 'fixed'")
        fixed_per = d.get("fixed_per", "job")
        if fixed_per not in FIXED_PER:
            raise PriceError(f"{where}.fixed_per: must be one of {list(FIXED_PER)}, got {fixed_per!r}")
        return cls(
            currency=check_currency(d.get("currency", "EUR"), f"{where}.currency"),
            fixed=parse_amount(d.get("fixed", 0), f"{where}.fixed"),
            fixed_per=fixed_per,
            rates={k: parse_amount(d[k], f"{where}.{k}") for k in RATES if k in d},
            name=str(d.get("name", "")),
            source=str(d.get("source", "")),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "currency": self.currency,
            "fixed": str(self.fixed),
            "fixed_per": self.fixed_per,
        }
        out.update({k: str(v) for k, v in self.rates.items()})
        if self.name:
            out["name"] = self.name
        return out

    def price(self, usage: Usage) -> CostBreakdown:
        """The bill for *usage*: one line per non-zero charge, each rounded to the cent."""
        label = f"{self.name} " if self.name else ""
        lines: list[CostLine] = []
        if self.fixed:
            n = Decimal(usage.jobs if self.fixed_per == "job" else usage.runs)
            lines.append(
                CostLine(f"{label}fixed", n, self.fixed_per, self.fixed, round_cents(self.fixed * n))
            )
        for key, (ufield, unit) in RATES.items():
            rate = self.rates.get(key)
            qty = getattr(usage, ufield)
            if rate and qty:
                lines.append(CostLine(f"{label}{key}", qty, unit, rate, round_cents(rate * qty)))
        return CostBreakdown(self.currency, tuple(lines))


@dataclass(frozen=True)
class CurrencyRates:
    """Conversion table: ``rates[C]`` is how many units of currency C one unit of ``base`` buys."""

    base: str
    rates: Mapping[str, Decimal]
    source: str = ""
    as_of: str = ""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CurrencyRates:
        if not isinstance(d, Mapping) or "rates" not in d:
            raise PriceError("currency rates: expected {'base': 'EUR', 'rates': {'USD': '1.08', ...}}")
        base = check_currency(d.get("base", "EUR"), "currency rates.base")
        rates: dict[str, Decimal] = {}
        for code, v in dict(d["rates"]).items():
            check_currency(code, "currency rates")
            r = parse_amount(v, f"currency rates.{code}")
            if r == 0:
                raise PriceError(f"currency rates.{code}: a rate of 0 cannot convert anything")
            rates[code] = r
        rates.setdefault(base, Decimal(1))
        if rates[base] != 1:
            raise PriceError(f"currency rates.{base}: the base currency's own rate must be 1")
        return cls(base, rates, str(d.get("source", "")), str(d.get("as_of", "")))

    def convert(self, amount: Decimal, frm: str, to: str) -> Decimal:
        """*amount* in *frm* expressed in *to*, exactly (round with :func:`round_cents` for display)."""
        if frm == to:
            return amount
        for c in (frm, to):
            if c not in self.rates:
                raise PriceError(
                    f"no exchange rate for {c}; the table (base {self.base}) knows {sorted(self.rates)}: "
                    "add it to the decision's currency rates"
                )
        return amount / self.rates[frm] * self.rates[to]

    def convert_cents(self, amount: Decimal, frm: str, to: str) -> Decimal:
        return round_cents(self.convert(amount, frm, to))


def default_rates() -> CurrencyRates:
    """The shipped table (``data/exchange_rates.json``; an ECB yearly average, for comparisons only)."""
    return CurrencyRates.from_dict(json.loads((DATA_DIR / "exchange_rates.json").read_text()))


# --- cloud list prices ------------------------------------------------------------------------


@dataclass(frozen=True)
class CloudPrice:
    provider: str
    instance_type: str
    vcpus: int
    memory_gib: float
    gpus: int
    accelerator: str
    price_per_hour: Decimal
    currency: str
    region: str

    def offer(self) -> Offer:
        return Offer(
            currency=self.currency,
            rates={"node_hour": self.price_per_hour},
            name="",
            source=f"{self.provider} on-demand list price, {self.instance_type} in {self.region}",
        )


class PriceCatalog:
    """Cloud instance list prices, looked up by provider, instance type and region."""

    def __init__(self, rows: Iterable[CloudPrice], source: str = "") -> None:
        self.rows = list(rows)
        self.source = source

    @classmethod
    def from_csv(cls, path: str | Path, source: str = "") -> PriceCatalog:
        """Read a CSV with columns provider, instance_type, vcpus, memory_gib, gpus, accelerator,
        usd_per_hour, region (the layout of ``data/cloud_prices_skypilot_v6.csv``)."""
        rows = []
        with open(path, newline="", encoding="utf-8") as f:
            for i, r in enumerate(csv.DictReader(f), start=2):
                where = f"{path}, line {i}"
                try:
                    rows.append(
                        CloudPrice(
                            provider=r["provider"],
                            instance_type=r["instance_type"],
                            vcpus=int(r["vcpus"]),
                            memory_gib=float(r["memory_gib"]),
                            gpus=int(r["gpus"] or 0),
                            accelerator=r.get("accelerator") or "",
                            price_per_hour=parse_amount(r["usd_per_hour"], f"{where}, usd_per_hour"),
                            currency="USD",
                            region=r["region"],
                        )
                    )
                except (KeyError, ValueError) as e:
                    if isinstance(e, PriceError):
                        raise
                    raise PriceError(
                        f"{where}: {e!r} (expected the columns of cloud_prices_skypilot_v6.csv)"
                    ) from None
        return cls(rows, source or str(path))

    def lookup(self, provider: str, instance_type: str, region: str | None = None) -> CloudPrice:
        found = [r for r in self.rows if r.provider == provider and r.instance_type == instance_type]
        if not found:
            known = sorted({r.instance_type for r in self.rows if r.provider == provider})
            raise PriceError(
                f"no list price for {provider} instance type {instance_type!r}; known: {known or 'none'}; "
                "set site.offer on the cluster to price it yourself"
            )
        if region is not None:
            found = [r for r in found if r.region == region]
            if not found:
                raise PriceError(f"no list price for {provider} {instance_type} in region {region!r}")
        if len({r.price_per_hour for r in found}) > 1:
            regions = sorted(r.region for r in found)
            raise PriceError(
                f"{provider} {instance_type} is priced differently by region; set site.cloud.region to one of {regions}"
            )
        return found[0]


_CATALOG: PriceCatalog | None = None


def default_catalog() -> PriceCatalog:
    """The shipped list prices (AWS and OCI on-demand, SkyPilot catalog v6), read once."""
    global _CATALOG
    if _CATALOG is None:
        _CATALOG = PriceCatalog.from_csv(
            DATA_DIR / "cloud_prices_skypilot_v6.csv", "SkyPilot catalog v6 on-demand list prices (USD/h)"
        )
    return _CATALOG


def nodes_needed(
    nodes: int, cores: int, memory_mb_per_node: int, gpus: int, vcpus: int, memory_mb: int, gpus_per_node: int
) -> int:
    """Instances a step needs: at least the nodes it asks for, enough vCPUs for its cores, enough memory
    for its ``nodes x memory_mb_per_node`` and enough GPUs. ``0`` means it cannot fit at all (a step
    needs GPUs and the instance has none)."""
    need = max(
        nodes, math.ceil(cores / max(vcpus, 1)), math.ceil(nodes * memory_mb_per_node / max(memory_mb, 1))
    )
    if gpus:
        if not gpus_per_node:
            return 0
        need = max(need, math.ceil(gpus / gpus_per_node))
    return need
