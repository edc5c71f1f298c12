"""JSON schemas of the marketplace, budget and usage endpoints (``apihandlers/offers.py``,
``applications.py``, ``budgets.py``, ``usage.py``).

Like :mod:`.schemas` they are written in the subset common to JSON Schema and OpenAPI 3.0. Request
schemas check shapes and names; the amounts, currencies, windows and visibility lists are then
checked by the domain layer (:mod:`jupyter_heroes.marketplace`, :mod:`jupyter_heroes.accounting`),
whose messages name the field and a valid example (a negative price, an unknown currency or a zero
budget is a 400 from there).
"""

from __future__ import annotations

from typing import Any

from ..decision.cost import FIXED_PER, RATES
from .schemas import DATETIME, REF, SLUG, TEXT, _str, array, obj

# --- money ----------------------------------------------------------------------------------------
AMOUNT = {
    "description": "a decimal amount >= 0, as a string ('0.012') or a number",
    "oneOf": [
        {"type": "string", "maxLength": 40, "title": "decimal string such as '12.50'"},
        {"type": "number", "title": "number"},
    ],
}
CURRENCY = _str(max_length=8, hint="ISO 4217 currency code in use, e.g. EUR, USD, CHF")
#: a currency -> decimal string mapping (reports keep each currency apart unless asked to convert)
MONEY = {
    "type": "object",
    "additionalProperties": {"type": "string"},
    "description": "amount per currency, e.g. {'EUR': '12.50'}",
}
PRICE = obj(
    {
        "currency": CURRENCY,
        "fixed": AMOUNT,
        "fixed_per": {"type": "string", "enum": list(FIXED_PER), "description": "fixed part per job or run"},
        **{k: AMOUNT for k in RATES},
    },
    ("currency",),
    description="an 'A x + B' price: 'fixed' (B) plus rates per unit of usage (A)",
)
PRICE_OUT = obj(
    {"currency": {"type": "string"}, "fixed": {"type": "string"}, "fixed_per": {"type": "string"}},
    closed=False,
)

# --- publishing -----------------------------------------------------------------------------------
VISIBILITY = {
    "description": "'public', a list of organization names, or {public: bool, organizations: [names]}",
    "oneOf": [
        {"type": "string", "enum": ["public"], "title": "'public'"},
        array(REF, maxItems=1000, uniqueItems=True, title="list of organization names"),
        obj(
            {"public": {"type": "boolean"}, "organizations": array(REF, maxItems=1000, uniqueItems=True)},
            title="{public, organizations}",
        ),
    ],
}
VISIBILITY_OUT = obj(
    {"public": {"type": "boolean"}, "organizations": array({"type": "string"})}, ("public", "organizations")
)
WINDOW = obj(
    {
        "start": _str(max_length=64),
        "end": _str(max_length=64),
        "weekdays": array(_str(max_length=16), maxItems=7),
        "from": _str(max_length=5),
        "to": _str(max_length=5),
        "timezone": _str(max_length=64),
    },
    description="{start, end} (ISO 8601 times) or {weekdays, from, to, timezone}",
)
AVAILABILITY = array(WINDOW, maxItems=100, description="availability windows; empty: always available")
NOTE = _str(max_length=4000, hint="why this version (shown in the history)")
QUEUE_NAME = _str(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$", "a queue of the cluster", 63)

OFFER_CREATE = obj(
    {
        "name": SLUG,
        "description": TEXT,
        "cluster": REF,
        "queue": QUEUE_NAME,
        "price": PRICE,
        "terms": _str(max_length=20000),
        "availability": AVAILABILITY,
        "visibility": VISIBILITY,
    },
    ("name", "cluster", "queue", "price"),
)
OFFER_PATCH = obj(
    {
        "price": PRICE,
        "terms": _str(max_length=20000),
        "availability": AVAILABILITY,
        "visibility": VISIBILITY,
        "note": NOTE,
    },
    minProperties=1,
)
_ENABLED = {
    "enabled": {"type": "boolean", "description": "the selected organization enabled it"},
    "accepted_version": {
        "type": "integer",
        "nullable": True,
        "description": "the version whose terms the organization accepted when enabling",
    },
}
OFFER = obj(
    {
        "id": {"type": "integer"},
        "name": {"type": "string"},
        "description": {"type": "string"},
        "provider": {"type": "string"},
        "provider_display_name": {"type": "string"},
        "cluster": {"type": "string", "nullable": True},
        "queue": {"type": "string"},
        "queue_limits": {"type": "object", "nullable": True},
        "state": {"type": "string", "enum": ["active", "withdrawn"]},
        "version": {"type": "integer"},
        "valid_from": DATETIME,
        "currency": {"type": "string"},
        "price": PRICE_OUT,
        "terms": {"type": "string"},
        "availability": array({"type": "object"}),
        "availability_text": {"type": "string"},
        "available_now": {"type": "boolean"},
        "visibility": {**VISIBILITY_OUT, "description": "for the provider and the platform only"},
        **_ENABLED,
    },
    ("id", "name", "provider", "queue", "state", "version", "currency", "price", "enabled"),
)
OFFER_LIST = array(OFFER)
OFFER_VERSION = obj(
    {
        "version": {"type": "integer"},
        "valid_from": DATETIME,
        "currency": {"type": "string"},
        "price": PRICE_OUT,
        "terms": {"type": "string"},
        "availability": array({"type": "object"}),
        "visibility": VISIBILITY_OUT,
        "note": {"type": "string"},
        "created_by": {"type": "string"},
    },
    ("version", "valid_from", "currency", "price", "visibility"),
)
OFFER_VERSION_LIST = array(OFFER_VERSION)

APPLICATION_CREATE = obj(
    {
        "name": SLUG,
        "description": TEXT,
        "image": _str(
            max_length=1024,
            hint="container image: docker://, oras://, library://, shub://, s3://bucket/x.sif or registry/ref:tag",
        ),
        "parameters_schema": {"type": "object", "description": "JSON Schema of the run parameters"},
        "price": PRICE,
        "licence": _str(max_length=20000),
        "visibility": VISIBILITY,
    },
    ("name", "image"),
)
APPLICATION_PATCH = obj(
    {
        "image": APPLICATION_CREATE["properties"]["image"],
        "parameters_schema": {"type": "object"},
        "price": PRICE,
        "licence": _str(max_length=20000),
        "visibility": VISIBILITY,
        "note": NOTE,
    },
    minProperties=1,
)
APPLICATION = obj(
    {
        "id": {"type": "integer"},
        "name": {"type": "string"},
        "description": {"type": "string"},
        "provider": {"type": "string"},
        "provider_display_name": {"type": "string"},
        "state": {"type": "string", "enum": ["active", "withdrawn"]},
        "version": {"type": "integer"},
        "valid_from": DATETIME,
        "image": {"type": "string"},
        "parameters_schema": {"type": "object"},
        "currency": {"type": "string"},
        "price": PRICE_OUT,
        "licence": {"type": "string"},
        "visibility": {**VISIBILITY_OUT, "description": "for the provider and the platform only"},
        **_ENABLED,
    },
    ("id", "name", "provider", "state", "version", "image", "currency", "price", "enabled"),
)
APPLICATION_LIST = array(APPLICATION)
APPLICATION_VERSION = obj(
    {
        "version": {"type": "integer"},
        "valid_from": DATETIME,
        "image": {"type": "string"},
        "parameters_schema": {"type": "object"},
        "currency": {"type": "string"},
        "price": PRICE_OUT,
        "licence": {"type": "string"},
        "visibility": VISIBILITY_OUT,
        "note": {"type": "string"},
        "created_by": {"type": "string"},
    },
    ("version", "valid_from", "image", "currency", "price", "visibility"),
)
APPLICATION_VERSION_LIST = array(APPLICATION_VERSION)

# --- enabling -------------------------------------------------------------------------------------
ENABLEMENT = obj(
    {
        "kind": {"type": "string", "enum": ["offer", "application"]},
        "id": {"type": "integer", "description": "the offer's or application's id"},
        "name": {"type": "string"},
        "provider": {"type": "string"},
        "enabled": {"type": "boolean"},
        "accepted_version": {"type": "integer", "nullable": True},
        "current_version": {"type": "integer", "nullable": True},
        "terms_changed": {
            "type": "boolean",
            "description": "the provider published a version after the accepted one: enable again to accept it",
        },
        "usable": {"type": "boolean"},
        "problem": {"type": "string", "description": "why it cannot be used now (empty if usable)"},
        "enabled_by": {"type": "string"},
        "price": {**PRICE_OUT, "nullable": True},
    },
    ("kind", "id", "name", "enabled"),
)
ENABLEMENT_LIST = array(ENABLEMENT)

# --- budgets --------------------------------------------------------------------------------------
BUDGET_CREATE = obj(
    {
        "project": {
            **REF,
            "description": "a project (group) of the organization; omit for the whole organization",
        },
        "limit": AMOUNT,
        "currency": CURRENCY,
        "period_start": {**DATETIME, "description": "ISO 8601, e.g. 2025-01-01T00:00:00Z; omit: open"},
        "period_end": {**DATETIME, "description": "ISO 8601, exclusive; omit: open"},
        "on_exhausted": {"type": "string", "enum": ["hold", "cancel"]},
        "margin": {
            "type": "number",
            "minimum": 1,
            "maximum": 10,
            "description": "reserve prediction x margin",
        },
    },
    ("limit",),
)
BUDGET_PATCH = obj(
    {
        "limit": AMOUNT,
        "on_exhausted": BUDGET_CREATE["properties"]["on_exhausted"],
        "margin": BUDGET_CREATE["properties"]["margin"],
    },
    minProperties=1,
)
BUDGET = obj(
    {
        "id": {"type": "integer"},
        "organization": {"type": "string"},
        "project": {"type": "string", "nullable": True},
        "currency": {"type": "string"},
        "limit": {"type": "string"},
        "spent": {"type": "string"},
        "reserved": {"type": "string"},
        "available": {"type": "string"},
        "credits": {"type": "string"},
        "period_start": {**DATETIME, "nullable": True},
        "period_end": {**DATETIME, "nullable": True},
        "on_exhausted": {"type": "string"},
        "margin": {"type": "number"},
        "exhausted": {"type": "boolean"},
        "used_fraction": {"type": "number", "nullable": True},
    },
    ("id", "organization", "currency", "limit", "spent", "reserved", "available", "on_exhausted"),
)
BUDGET_LIST = array(BUDGET)
CREDIT_CREATE = obj(
    {
        "amount": AMOUNT,
        "reference": _str(max_length=255, hint="e.g. an invoice or purchase order number"),
        "note": _str(max_length=4000),
    },
    ("amount",),
)
CREDIT = obj(
    {
        "id": {"type": "integer"},
        "budget_id": {"type": "integer"},
        "amount": {"type": "string"},
        "currency": {"type": "string"},
        "reference": {"type": "string"},
        "note": {"type": "string"},
        "created": DATETIME,
        "created_by": {"type": "string"},
    },
    ("id", "budget_id", "amount", "currency"),
)
CREDIT_LIST = array(CREDIT)

# --- reports --------------------------------------------------------------------------------------
_METRICS: dict[str, Any] = {
    "jobs": {"type": "integer"},
    "core_hours": {"type": "number"},
    "node_hours": {"type": "number"},
    "gpu_hours": {"type": "number"},
    "mem_gb_hours": {"type": "number"},
    "energy_kwh": {"type": "number"},
    "energy_jobs": {"type": "integer", "description": "jobs whose energy was measured"},
}
USAGE_ROW = obj(
    {**_METRICS, "cost": MONEY, "licence": MONEY, "total": MONEY, "period": {"type": "string"}},
    ("jobs", "cost", "licence", "total"),
    closed=False,
    description="one group: its dimensions (project, user, ... with their *_id) and metrics",
)
USAGE_REPORT = array(USAGE_ROW)
REVENUE_ROW = obj(
    {
        **_METRICS,
        "kind": {"type": "string", "enum": ["offer", "application"]},
        "item": {"type": "string"},
        "item_id": {"type": "integer", "nullable": True},
        "organization": {"type": "string", "description": "the client organization"},
        "period": {"type": "string"},
        "revenue": MONEY,
    },
    ("kind", "jobs", "revenue"),
    description="revenue of one item / client organization / period; never users or projects",
)
REVENUE_REPORT = array(REVENUE_ROW)
RECORD = obj(
    {
        "job_id": {"type": "integer", "nullable": True},
        "instance_id": {"type": "string", "nullable": True},
        "step": {"type": "string", "nullable": True},
        "started": {"type": "string", "nullable": True},
        "finished": {"type": "string", "nullable": True},
        **{
            k: {"type": "string", "nullable": True}
            for k in ("project", "user", "template", "cluster", "queue", "offer", "application", "pricing")
        },
        "offer_version": {"type": "integer", "nullable": True},
        "application_version": {"type": "integer", "nullable": True},
        **{
            k: {"type": "number", "nullable": True}
            for k in ("core_hours", "node_hours", "gpu_hours", "mem_gb_hours", "elapsed_s", "energy_j")
        },
        "currency": {"type": "string", "nullable": True},
        "cost": {"type": "string", "nullable": True},
        "licence_currency": {"type": "string", "nullable": True},
        "licence": {"type": "string", "nullable": True},
    },
    ("job_id", "finished", "currency", "cost"),
)
RECORD_LIST = array(RECORD)

#: query parameters shared by the reports
DIMS_HINT = "comma-separated dimensions"
PERIOD = {"type": "string", "enum": ["day", "month", "year"], "description": "add a period dimension"}
WHEN = {"type": "string", "maxLength": 64, "description": "ISO 8601 date or time (UTC if no zone)"}
FORMAT = {
    "type": "string",
    "enum": ["json", "csv"],
    "default": "json",
    "description": "csv: text/csv (one column per metric and currency) instead of JSON",
}
REPORT_QUERY: dict[str, dict[str, Any]] = {
    "period": PERIOD,
    "start": {**WHEN, "description": "only jobs finished at or after this time (ISO 8601)"},
    "end": {**WHEN, "description": "only jobs finished before this time (ISO 8601)"},
    "currency": {**CURRENCY, "description": "convert every amount into this currency (ISO 4217)"},
    "format": FORMAT,
}
