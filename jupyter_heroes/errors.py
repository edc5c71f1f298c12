"""The base of the domain's errors: what the service needs to answer them.

Each carries ``message`` (for the user: says what to do), ``reason`` (a short machine code) and
``status`` (the HTTP status the REST layer answers with, as JSON ``{message, reason}``). Subclasses set
class defaults for ``reason`` and ``status``; an instance may override either.
"""

from __future__ import annotations


class DomainError(Exception):
    status = 400
    reason = "error"

    def __init__(self, message: str, reason: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        if status is not None:
            self.status = status
