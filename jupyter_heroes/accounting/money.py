"""Money as the database stores it: integer hundredths of a currency unit ("cents"), and the list of
currency codes the platform accepts.

Amounts come in as :class:`~decimal.Decimal`, int or numeric strings (floats through their shortest
``repr``), read with :func:`jupyter_heroes.decision.cost.parse_amount` so a price and a budget are
validated the same way; they are rounded half-up to the cent (the rule of
:mod:`jupyter_heroes.decision.cost`). Every currency, including those without minor units such as
JPY, is stored in hundredths.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal
from typing import Any

from ..decision.cost import CurrencyRates, PriceError, default_rates, parse_amount, round_cents

#: ISO 4217 codes of the currencies in current use as legal tender (from the Unicode CLDR
#: territory-currency data shipped with Babel 2.18: codes with no end date and ``tender`` true).
ISO_4217: frozenset[str] = frozenset(
    """AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP BYN BZD
    CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD
    GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT
    LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR
    NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP
    STN SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XCG XOF
    XPF YER ZAR ZMW ZWG""".split()
)
HUNDRED = Decimal(100)


class CurrencyError(PriceError):
    """An unknown or malformed currency code (a ``ValueError``)."""

    reason = "invalid-currency"


def check_currency(code: Any, where: str = "currency") -> str:
    """*code* if it is an ISO 4217 code in current use, else :class:`CurrencyError` naming *where*."""
    if not isinstance(code, str) or code not in ISO_4217:
        hint = f"; did you mean {code.upper()}?" if isinstance(code, str) and code.upper() in ISO_4217 else ""
        raise CurrencyError(
            f"{where}: {code!r} is not an ISO 4217 currency code in use (such as EUR, USD, CHF){hint}"
        )
    return code


def to_cents(amount: Any, where: str = "amount") -> int:
    """A non-negative amount (Decimal, int, numeric string or float) rounded half-up to whole cents."""
    return int(round_cents(parse_amount(amount, where)) * HUNDRED)


def from_cents(cents: int) -> Decimal:
    """Integer cents as a Decimal with two places (``1234 -> Decimal("12.34")``)."""
    return (Decimal(int(cents)) / HUNDRED).quantize(Decimal("0.01"))


def ceil_cents(amount: Decimal) -> int:
    """*amount* (in currency units) rounded up to the next cent: a reservation never falls short."""
    return int((amount * HUNDRED).to_integral_value(rounding=ROUND_CEILING))


def convert_cents(cents: int, frm: str, to: str, rates: CurrencyRates | None = None) -> int:
    """*cents* in *frm* converted to *to* (half-up to the cent); unknown currencies raise
    :class:`~jupyter_heroes.decision.cost.PriceError` naming the rates table to extend."""
    if frm == to:
        return int(cents)
    rates = rates or default_rates()
    return int(rates.convert_cents(from_cents(cents), frm, to) * HUNDRED)


def fmt(cents: int, currency: str) -> str:
    """``1234, "EUR" -> "12.34 EUR"``."""
    return f"{from_cents(cents)} {currency}"
