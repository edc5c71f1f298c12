"""Data management (D3.1 module 4): each organization's object store, who may use which bucket,
quotas, and the staging of workflow inputs and outputs between the store and the clusters.

- :mod:`.names`: derived bucket names (``<org>--u-<user>``, ``<org>--p-<project>``), key validation
- :mod:`.storage` / :mod:`.s3`: the async :class:`~.storage.Storage` and :class:`~.s3.S3Storage`
- :mod:`.tenancy`: :class:`~.tenancy.DataAccess`, the caller's view (rights, quotas)
- :mod:`.staging`: :class:`~.staging.Stager`, bucket <-> instance directory through a
  :class:`~.target.FileTarget` (:class:`~.target.LocalTarget`, :class:`~.sftp_target.SFTPTarget`)
- :mod:`.errors`: the :class:`~.errors.DataError` family (message, reason, HTTP status)

See ``docs/developer/data.md``.
"""

from .errors import (
    Conflict,
    DataError,
    Forbidden,
    IntegrityError,
    InvalidName,
    InvalidRequest,
    NotFound,
    QuotaExceeded,
    Unavailable,
)

__all__ = [
    "Conflict",
    "DataError",
    "Forbidden",
    "IntegrityError",
    "InvalidName",
    "InvalidRequest",
    "NotFound",
    "QuotaExceeded",
    "Unavailable",
]
