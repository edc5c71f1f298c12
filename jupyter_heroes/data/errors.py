"""Errors of the data layer: one family, each with a user message, a short machine reason and the
HTTP status the REST handlers answer with.

The message says what happened *and what to do*; it never holds credentials, presigned URLs or
another organization's names. ``transient`` tells a caller whether trying again later can help
(the object store was unreachable) or not (the key is invalid, the quota is used up).
"""

from __future__ import annotations


class DataError(Exception):
    """Base of every data-layer error: ``DataError(message, reason, status)``."""

    default_reason = "data_error"
    default_status = 500

    def __init__(
        self, message: str, reason: str | None = None, status: int | None = None, *, transient: bool = False
    ):
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.status = status or self.default_status
        self.transient = transient

    def __str__(self) -> str:
        return self.message

    def to_json(self) -> dict[str, str]:
        """The API answer body: ``{"message": ..., "reason": ...}``."""
        return {"message": self.message, "reason": self.reason}


class NotFound(DataError):
    """No such bucket or object, or one the caller may not know exists (another organization's)."""

    default_reason = "not_found"
    default_status = 404


class Forbidden(DataError):
    """The bucket belongs to the caller's organization but not to the caller."""

    default_reason = "forbidden"
    default_status = 403


class QuotaExceeded(DataError):
    """The write would take the user, project or organization over its quota."""

    default_reason = "quota_exceeded"
    default_status = 413


class InvalidName(DataError):
    """A bucket name or object key is not acceptable (traversal, control characters, too long...)."""

    default_reason = "invalid_name"
    default_status = 400


class InvalidRequest(DataError):
    """A request is malformed in another way (missing size, bad expiry, bad paging token)."""

    default_reason = "invalid_request"
    default_status = 400


class Conflict(DataError):
    """The bucket already exists, is not empty, or the object changed under us."""

    default_reason = "conflict"
    default_status = 409


class IntegrityError(DataError):
    """Bytes written do not match the bytes read (checksum or size mismatch after a copy)."""

    default_reason = "checksum_mismatch"
    default_status = 502


class Unavailable(DataError):
    """The object store or the cluster could not be reached; trying again later may help."""

    default_reason = "unavailable"
    default_status = 503

    def __init__(
        self, message: str, reason: str | None = None, status: int | None = None, *, transient: bool = True
    ):
        super().__init__(message, reason, status, transient=transient)
