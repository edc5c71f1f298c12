"""What offers and applications share: names, prices, visibility, availability windows, times.

**Visibility** (who may see and enable an item) is stored as
``{"public": bool, "organizations": [org ids]}``; callers give organization *names*::

    visibility: {public: false, organizations: [acme, globex]}   # or the string "public"

The publishing organization and the platform organization (the marketplace's "mayor") always see
their items; nobody else sees an item not published to them (it is reported *not found*). The
default is private: publishing is a separate, explicit step.

**Availability windows** (when a resource offer can be used; empty means always), each either
absolute or weekly::

    - {start: "2025-01-01T00:00:00Z", end: "2025-07-01T00:00:00Z"}        # either end may be omitted
    - {weekdays: [sat, sun], from: "00:00", to: "24:00", timezone: Europe/Paris}
    - {weekdays: [mon, tue, wed, thu, fri], from: "20:00", to: "06:00"}   # overnight, UTC

Times in the database are naive UTC (the convention of :mod:`jupyter_heroes.orm`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, time, timedelta, timezone
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from ..accounting.money import check_currency
from ..decision.cost import Offer, PriceError
from ..orm import Organization, utcnow
from .errors import InvalidInput, NotFound

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
HHMM_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$|^24:00$")
MAX_TEXT = 20000


def check_name(name: Any, where: str = "name") -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidInput(
            f"{where}: {name!r} is not a valid name: lower-case letters, digits and '-', starting with a "
            "letter, at most 63 characters (e.g. galileo-debug)"
        )
    return name


def check_text(text: Any, where: str) -> str:
    if text is None:
        return ""
    if not isinstance(text, str):
        raise InvalidInput(f"{where}: expected text, got {type(text).__name__}")
    if len(text) > MAX_TEXT:
        raise InvalidInput(f"{where}: {len(text)} characters; at most {MAX_TEXT}")
    return text


def parse_price(price: Any, where: str = "price") -> Offer:
    """A validated "A x + B" price (:class:`jupyter_heroes.decision.cost.Offer`) from a mapping such as
    ``{"currency": "EUR", "fixed": "0.50", "core_hour": "0.012"}``; the currency must be an ISO 4217
    code in use. Negative or non-numeric prices raise :class:`InvalidInput` naming the field."""
    if isinstance(price, Offer):
        price = price.to_dict()
    try:
        if isinstance(price, Mapping) and "currency" in price:
            check_currency(price["currency"], f"{where}.currency")
        offer = Offer.from_dict(price, where)
        check_currency(offer.currency, f"{where}.currency")
    except PriceError as e:
        raise InvalidInput(str(e), reason="invalid_price") from None
    return offer


def naive_utc(when: datetime | None) -> datetime:
    """*when* as naive UTC (aware datetimes converted; naive ones taken as UTC); ``None`` -> now."""
    if when is None:
        return utcnow()
    if when.tzinfo is not None:
        return when.astimezone(timezone.utc).replace(tzinfo=None)
    return when


def get_org(session: Session, org_id: int, what: str = "organization") -> Organization:
    org = session.get(Organization, org_id)
    if org is None:
        raise NotFound.of(what, org_id)
    return org


# --- visibility ---------------------------------------------------------------------------------


def parse_visibility(session: Session, value: Any, where: str = "visibility") -> dict[str, Any]:
    """``None`` (private), ``"public"``, a list of organization names, or
    ``{"public": bool, "organizations": [names]}`` -> the stored form (ids, sorted)."""
    if value is None:
        return {"public": False, "organizations": []}
    if value == "public":
        return {"public": True, "organizations": []}
    if isinstance(value, list | tuple):
        value = {"organizations": list(value)}
    if not isinstance(value, Mapping):
        raise InvalidInput(
            f'{where}: expected "public", a list of organization names or '
            "{public: false, organizations: [acme]}"
        )
    extra = sorted(set(value) - {"public", "organizations"})
    if extra:
        raise InvalidInput(f"{where}: unknown field(s) {extra}; known: ['organizations', 'public']")
    public = value.get("public", False)
    if not isinstance(public, bool):
        raise InvalidInput(f"{where}.public: true or false, got {public!r}")
    names = value.get("organizations") or []
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        raise InvalidInput(f"{where}.organizations: a list of organization names")
    ids: set[int] = set()
    if names:
        found = dict(
            session.execute(
                select(Organization.name, Organization.id).where(Organization.name.in_(set(names)))
            ).all()
        )
        missing = sorted(set(names) - set(found))
        if missing:
            raise InvalidInput(f"{where}.organizations: no organization named {', '.join(missing)}")
        ids = set(found.values())
    return {"public": public, "organizations": sorted(ids)}


def is_visible(visibility: Mapping[str, Any], provider_org_id: int, viewer: Organization) -> bool:
    if viewer.id == provider_org_id or viewer.kind == "platform":
        return True
    return bool(visibility.get("public")) or viewer.id in (visibility.get("organizations") or [])


def render_visibility(session: Session, visibility: Mapping[str, Any]) -> dict[str, Any]:
    """The stored form with organization names instead of ids (for the publisher only)."""
    ids = list(visibility.get("organizations") or [])
    names = (
        sorted(session.scalars(select(Organization.name).where(Organization.id.in_(ids))).all())
        if ids
        else []
    )
    return {"public": bool(visibility.get("public")), "organizations": names}


# --- availability -------------------------------------------------------------------------------


def _parse_dt(v: Any, where: str) -> str | None:
    if v is None:
        return None
    if isinstance(v, datetime):
        d = v
    elif isinstance(v, str):
        try:
            d = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput(
                f"{where}: {v!r} is not an ISO 8601 time such as 2025-01-01T00:00:00Z"
            ) from None
    else:
        raise InvalidInput(f"{where}: an ISO 8601 time such as 2025-01-01T00:00:00Z, got {v!r}")
    return naive_utc(d).isoformat() + "Z"


def parse_availability(value: Any, where: str = "availability") -> list[dict[str, Any]]:
    """Validate availability windows (see the module docstring) into their stored form."""
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise InvalidInput(f"{where}: a list of windows, e.g. [{{start: 2025-01-01T00:00:00Z}}]")
    out: list[dict[str, Any]] = []
    for i, w in enumerate(value):
        wh = f"{where}[{i}]"
        if not isinstance(w, Mapping):
            raise InvalidInput(f"{wh}: a mapping with start/end or weekdays/from/to")
        if "weekdays" in w:
            extra = sorted(set(w) - {"weekdays", "from", "to", "timezone"})
            if extra:
                raise InvalidInput(f"{wh}: unknown field(s) {extra} in a weekly window")
            days = w["weekdays"]
            if (
                not isinstance(days, list | tuple)
                or not days
                or not all(isinstance(d, str) and d.lower()[:3] in WEEKDAYS for d in days)
            ):
                raise InvalidInput(f"{wh}.weekdays: a non-empty list among {list(WEEKDAYS)}")
            hm = {}
            for k in ("from", "to"):
                t = w.get(k, "00:00" if k == "from" else "24:00")
                if not isinstance(t, str) or not HHMM_RE.match(t) or (k == "from" and t == "24:00"):
                    raise InvalidInput(
                        f"{wh}.{k}: a time HH:MM such as 08:00 (24:00 for midnight at the end)"
                    )
                hm[k] = t
            if hm["from"] == hm["to"]:
                raise InvalidInput(f"{wh}: from and to are both {hm['from']}; the window would be empty")
            tz = w.get("timezone", "UTC")
            try:
                if tz != "UTC":
                    ZoneInfo(str(tz))
            except (ZoneInfoNotFoundError, ValueError):
                raise InvalidInput(
                    f"{wh}.timezone: {tz!r} is not a time zone name such as Europe/Paris"
                ) from None
            order = sorted({d.lower()[:3] for d in days}, key=WEEKDAYS.index)
            out.append({"weekdays": order, "from": hm["from"], "to": hm["to"], "timezone": str(tz)})
        else:
            extra = sorted(set(w) - {"start", "end"})
            if extra:
                raise InvalidInput(
                    f"{wh}: unknown field(s) {extra}; a window has start/end or weekdays/from/to"
                )
            start, end = _parse_dt(w.get("start"), f"{wh}.start"), _parse_dt(w.get("end"), f"{wh}.end")
            if start is None and end is None:
                raise InvalidInput(f"{wh}: give start, end or both (an empty list means always available)")
            if start and end and start >= end:
                raise InvalidInput(f"{wh}: start {start} is not before end {end}")
            out.append({"start": start, "end": end})
    return out


def _hm(s: str) -> time | None:
    return None if s == "24:00" else time(int(s[:2]), int(s[3:]))


def available_at(windows: list[dict[str, Any]], when: datetime | None = None) -> bool:
    """Whether an offer with these (stored) windows is available at *when* (default now)."""
    if not windows:
        return True
    at = naive_utc(when)
    for w in windows:
        if "weekdays" in w:
            tz = timezone.utc if w["timezone"] == "UTC" else ZoneInfo(w["timezone"])
            local = at.replace(tzinfo=timezone.utc).astimezone(tz)
            day, t = WEEKDAYS[local.weekday()], local.time().replace(tzinfo=None)
            prev = WEEKDAYS[(local.weekday() - 1) % 7]
            start, end = _hm(w["from"]) or time(0), _hm(w["to"])
            if end is None or start < end:  # same-day window
                if day in w["weekdays"] and t >= start and (end is None or t < end):
                    return True
            else:  # overnight: from today's start to tomorrow's end
                if (day in w["weekdays"] and t >= start) or (prev in w["weekdays"] and t < end):
                    return True
        else:
            s = datetime.fromisoformat(w["start"][:-1]) if w.get("start") else None
            e = datetime.fromisoformat(w["end"][:-1]) if w.get("end") else None
            if (s is None or at >= s) and (e is None or at < e):
                return True
    return False


def describe_availability(windows: list[dict[str, Any]]) -> str:
    if not windows:
        return "always available"
    parts = []
    for w in windows:
        if "weekdays" in w:
            parts.append(f"{','.join(w['weekdays'])} {w['from']}-{w['to']} {w['timezone']}")
        else:
            parts.append(f"from {w.get('start') or 'the start'} until {w.get('end') or 'further notice'}")
    return "available " + "; ".join(parts)


def next_created(previous: datetime | None, now: datetime | None = None) -> datetime:
    """A version's start time: *now*, but strictly after the previous version's, so "the version in
    force at time t" is always one row even if the clock stepped back."""
    now = naive_utc(now)
    if previous is not None and now <= previous:
        return previous + timedelta(microseconds=1)
    return now


def rowcount(result: Any) -> int:
    """Rows matched by an UPDATE/DELETE/INSERT executed through a session (a ``CursorResult``)."""
    return cast("CursorResult[Any]", result).rowcount


def insert_if_absent(session: Session, model: Any, values: dict[str, Any], conflict: list[str]) -> bool:
    """``INSERT ... ON CONFLICT (conflict) DO NOTHING`` on SQLite and PostgreSQL: the first writer
    wins, concurrent or repeated calls never duplicate nor fail. True when this call inserted."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    else:  # pragma: no cover - the project supports these two
        raise RuntimeError(f"unsupported database {dialect}; use SQLite or PostgreSQL")
    stmt = insert(model).values(**values).on_conflict_do_nothing(index_elements=conflict)
    return rowcount(session.execute(stmt)) == 1


def latest_version(session: Session, version_model: Any, fk: str, parent_id: int) -> Any:
    """The newest version row of a versioned item (offer or application)."""
    v = session.scalar(
        select(version_model)
        .where(getattr(version_model, fk) == parent_id)
        .order_by(version_model.version.desc())
        .limit(1)
    )
    assert v is not None, f"{version_model.__name__} of {parent_id}: no version"
    return v


def add_version(
    session: Session,
    parent: Any,
    version_model: Any,
    fk: str,
    new: dict[str, Any],
    carried: tuple[str, ...],
    *,
    note: str,
    by: str,
    now: datetime | None,
) -> Any:
    """Append a version to *parent* with the *new* fields and the *carried* ones of the latest version;
    returns the latest version unchanged when *new* changes nothing.

    The ``current_version + 1`` update locks the parent row (PostgreSQL) or the database (SQLite)
    until commit, so concurrent changes get distinct numbers and each carries the other's fields."""
    prev = latest_version(session, version_model, fk, parent.id)
    if all(getattr(prev, k) == v for k, v in new.items()):
        return prev
    model = type(parent)
    session.execute(
        update(model)
        .where(model.id == parent.id)
        .values(current_version=model.current_version + 1)
        .execution_options(synchronize_session=False)
    )
    number = session.scalar(select(model.current_version).where(model.id == parent.id))
    session.expire(parent, ["current_version"])
    prev = latest_version(session, version_model, fk, parent.id)
    v = version_model(
        **{fk: parent.id},
        version=number,
        note=check_text(note, "note"),
        created=next_created(prev.created, now),
        created_by=by,
        **{**{k: getattr(prev, k) for k in carried}, **new},
    )
    session.add(v)
    session.flush()
    return v
