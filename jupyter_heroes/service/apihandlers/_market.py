"""What the marketplace, budget and usage handlers share (a private module: no routes of its own).

- :func:`domain_errors`: the domain layer's errors (:class:`jupyter_heroes.marketplace.errors.MarketError`,
  each with ``message``, ``reason`` and ``status``) answered as the service's JSON errors;
- :func:`jsonable`: report rows (``Decimal`` amounts) as JSON values;
- :func:`parse_time`, :func:`parse_dims`: query parameters of the reports;
- :func:`check_amounts`: amounts the database can hold;
- :func:`write_csv`: answer ``text/csv`` instead of JSON.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from ...decision.cost import RATES
from ...marketplace.errors import MarketError
from ..auth import ApiError

if TYPE_CHECKING:
    from ..handlers import APIHandler

_DIMS_RE = re.compile(r"^[a-z_]+(,[a-z_]+)*$")
#: the largest amount (price, limit, credit) accepted: costs and limits are stored in 64-bit cents
MAX_AMOUNT = Decimal(10) ** 12
#: the amounts of a price
PRICE_KEYS = ("fixed", *RATES)


@contextmanager
def domain_errors() -> Iterator[None]:
    """Turn a domain error into an :class:`ApiError` with its status, message and reason
    (``invalid-price`` style reasons are normalised to ``invalid_price``)."""
    try:
        yield
    except MarketError as e:
        raise ApiError(e.status, e.message, e.reason.replace("-", "_")) from None


def jsonable(value: Any) -> Any:
    """Decimals as strings (money keeps its cents), datetimes ISO 8601 UTC, containers recursively."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds") + ("" if value.tzinfo else "Z")
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def parse_time(value: str | None, name: str) -> datetime | None:
    """An ISO 8601 date (``2025-03-01``) or time (``2025-03-01T12:00:00Z``) as naive UTC, or 400."""
    if value is None:
        return None
    text = value.strip()
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            return datetime(d.year, d.month, d.day)
        t = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except (ValueError, OverflowError):
        raise ApiError(
            400,
            f"'{name}' is not an ISO 8601 date or time; write e.g. 2025-03-01 or 2025-03-01T00:00:00Z",
            "invalid_field",
        ) from None
    if t.tzinfo is not None:
        try:
            t = t.astimezone(timezone.utc).replace(tzinfo=None)
        except OverflowError:
            raise ApiError(400, f"'{name}' is out of range", "invalid_field") from None
    return t


def parse_dims(value: str, name: str = "by") -> list[str]:
    """``"project,user"`` -> ``["project", "user"]`` (the domain checks which are allowed)."""
    if not _DIMS_RE.match(value):
        raise ApiError(
            400,
            f"query parameter '{name}' must be dimensions separated by commas, e.g. project,user",
            "invalid_field",
        )
    dims = value.split(",")
    if len(set(dims)) != len(dims):
        raise ApiError(400, f"query parameter '{name}' names a dimension twice", "invalid_field")
    return dims


def check_amounts(values: dict[str, Any], keys: Any, where: str = "") -> None:
    """400 for an amount of *values* (under *keys*) above :data:`MAX_AMOUNT`; the domain layer checks
    the rest (negative, not a number) with its own messages."""
    for k in keys:
        v = values.get(k)
        if isinstance(v, bool) or not isinstance(v, int | float | str):
            continue
        try:
            d = Decimal(str(v).strip())
        except InvalidOperation:
            continue
        if d.is_finite() and abs(d) > MAX_AMOUNT:
            name = f"{where}.{k}" if where else k
            raise ApiError(400, f"field '{name}' is too large: at most {MAX_AMOUNT:f}", "invalid_field")


def write_csv(handler: APIHandler, text: str, filename: str) -> None:
    """Finish the request with *text* as a CSV download (the endpoint then returns ``None``)."""
    handler.set_status(200)
    handler.set_header("Content-Type", "text/csv; charset=UTF-8")
    handler.set_header("Content-Disposition", f'attachment; filename="{filename}"')
    handler.finish(text)
