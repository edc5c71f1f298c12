"""Errors of the marketplace and accounting domain, with what the service needs to answer them.

Each carries ``message`` (for the user: says what to do), ``reason`` (a short machine code) and
``status`` (the HTTP status the REST layer answers with, as JSON ``{message, reason}``). Bad input is
also a :class:`ValueError` and a missing object a :class:`LookupError`, so plain callers can catch
those. An object of another organization is always :class:`NotFound` (404), never "forbidden".
"""

from __future__ import annotations

from ..errors import DomainError


class MarketError(DomainError):
    status = 400
    reason = "market_error"


class InvalidInput(MarketError, ValueError):
    """A request's field is invalid; the message names the field and a valid example."""

    status = 400
    reason = "invalid_input"


class NotFound(MarketError, LookupError):
    """The object does not exist *for the caller* (it may exist in another organization)."""

    status = 404
    reason = "not_found"

    @classmethod
    def of(cls, what: str, ident: object) -> NotFound:
        return cls(f"{what} {ident} not found")


class Conflict(MarketError):
    """The request contradicts the current state (duplicate name, withdrawn offer, ...)."""

    status = 409
    reason = "conflict"


class NotAllowed(MarketError):
    """The organization's kind does not allow this (a client organization publishing an offer)."""

    status = 403
    reason = "not_allowed"
