"""Who may touch which bucket, and how much they may store: :class:`DataAccess`.

One :class:`DataAccess` is built per request from the caller's organization, user name, projects
and roles (or scopes), around the organization's :class:`~jupyter_heroes.data.storage.Storage`. Its
coroutines are what the REST handlers call; each checks the caller's rights first:

- with ``custom:heroes:data:home`` a caller reads and writes their own bucket
  (``<org>--u-<user>``) and the buckets of their projects (``<org>--p-<project>``);
- with ``custom:heroes:data:manage`` (data managers, organization admins) a caller sees and manages
  every bucket of their organization, and alone creates buckets for others and deletes buckets;
- a bucket of another organization, or any name the platform could not have derived, is answered
  exactly like a bucket that does not exist (:class:`NotFound`, 404); a bucket of the caller's own
  organization that is not theirs is :class:`Forbidden` (403).

Quotas (:class:`Quotas`: per user bucket, per project bucket, per organization) are enforced
*before* anything is written: an upload declares its size, and :meth:`DataAccess.reserve` refuses it
with :class:`QuotaExceeded` if the bytes already stored plus the bytes reserved by uploads in progress
plus this one would pass a limit. The reservation is held in a :class:`QuotaLedger` (one per service
process) until the upload ends, so two concurrent uploads cannot pass a quota together. Replacing an
object counts only the growth. A presigned PUT is issued only for a declared size within the
remaining quota, and the size is signed into the URL.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from traitlets import Dict, Integer
from traitlets.config import LoggingConfigurable

from ..roles import SCOPE_PREFIX, scopes_for_roles
from . import names
from .errors import Conflict, DataError, Forbidden, InvalidRequest, NotFound, QuotaExceeded
from .storage import BucketUsage, DeleteResult, ObjectInfo, ObjectPage, Storage, UploadResult

SCOPE_HOME = SCOPE_PREFIX + "data:home"
SCOPE_MANAGE = SCOPE_PREFIX + "data:manage"


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


@dataclass(frozen=True)
class Quotas:
    """Limits in bytes; None means unlimited."""

    user_bytes: int | None = None
    project_bytes: int | None = None
    org_bytes: int | None = None


class QuotaPolicy(LoggingConfigurable):
    """Quota configuration of the service: defaults and per-organization overrides."""

    user_quota = Integer(
        0,
        config=True,
        help="""Bytes a user may store in their own bucket (default 0 = unlimited). Counted before each
        upload together with uploads in progress; per-organization values in org_quotas win.""",
    )
    project_quota = Integer(
        0,
        config=True,
        help="""Bytes a project may store in its shared bucket (default 0 = unlimited).""",
    )
    org_quota = Integer(
        0,
        config=True,
        help="""Bytes an organization may store across all its buckets (default 0 = unlimited). An
        upload must fit both this and the user's or project's quota.""",
    )
    org_quotas = Dict(
        {},
        config=True,
        help="""Per-organization overrides: {"acme": {"user": 10e9, "project": 50e9, "org": 1e12}}; keys
        missing from an entry fall back to user_quota / project_quota / org_quota; 0 = unlimited.""",
    )

    def quotas_for(self, org: object) -> Quotas:
        name = getattr(org, "name", org)
        o = self.org_quotas.get(name, {}) if isinstance(name, str) else {}
        unknown = set(o) - {"user", "project", "org"}
        if unknown:
            raise ValueError(
                f"QuotaPolicy.org_quotas[{name!r}] has unknown keys {sorted(unknown)}; use 'user', 'project', 'org'"
            )

        def pick(key: str, default: int) -> int | None:
            v = int(o.get(key, default))
            return v if v > 0 else None

        return Quotas(
            pick("user", self.user_quota), pick("project", self.project_quota), pick("org", self.org_quota)
        )


class QuotaLedger:
    """Bytes reserved by writes in progress, per (store, bucket). One per service process."""

    def __init__(self) -> None:
        self._reserved: dict[tuple[str, str], int] = {}
        self._locks: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}

    @property
    def lock(self) -> asyncio.Lock:
        """Serialises quota checks (one lock per event loop, so the ledger survives loop changes)."""
        loop = asyncio.get_running_loop()
        for other in [lp for lp in self._locks if lp.is_closed()]:
            del self._locks[other]
        return self._locks.setdefault(loop, asyncio.Lock())

    def reserved(self, store: str, bucket: str) -> int:
        return self._reserved.get((store, bucket), 0)

    def reserved_in_org(self, store: str, org_part: str) -> int:
        total = 0
        for (s, b), n in self._reserved.items():
            parsed = names.parse_bucket(b)
            if s == store and parsed and parsed.org == org_part:
                total += n
        return total

    def add(self, store: str, bucket: str, n: int) -> None:
        left = self._reserved.get((store, bucket), 0) + n
        if left:
            self._reserved[(store, bucket)] = left
        else:
            self._reserved.pop((store, bucket), None)


#: the ledger shared by every DataAccess that is not given its own
DEFAULT_LEDGER = QuotaLedger()


@dataclass(frozen=True)
class BucketView:
    """A bucket as the caller sees it."""

    name: str
    kind: str  # "user" | "project"
    owner: str  # the user or project name when the caller knows it, else the name part in the bucket
    mine: bool  # the caller's own bucket or one of their projects'
    created: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "owner": self.owner,
            "mine": self.mine,
            "created": self.created.isoformat() if self.created else None,
        }


class DataAccess:
    """The caller's view of their organization's object store.

    *org*, *user* and *projects* are names or ORM objects (``.name``); *roles* are role names
    (built-in or listed in *custom_roles*) and/or ``custom:heroes:*`` scopes, which are taken as
    they are. The caller (the service) vouches that *user* belongs to *org* and *projects* are the
    user's projects in *org*.
    """

    def __init__(
        self,
        org: object,
        user: object,
        projects: Iterable[object] = (),
        roles: Iterable[str] = (),
        *,
        storage: Storage,
        quotas: Quotas | None = None,
        ledger: QuotaLedger | None = None,
        custom_roles: dict[str, set[str]] | None = None,
    ) -> None:
        self.org = str(getattr(org, "name", org))
        self.user = str(getattr(user, "name", user))
        self.projects = sorted({str(getattr(p, "name", p)) for p in projects})
        roles = list(roles)
        self.scopes = {r for r in roles if r.startswith(SCOPE_PREFIX)} | scopes_for_roles(
            [r for r in roles if not r.startswith(SCOPE_PREFIX)], custom_roles
        )
        self.storage = storage
        self.quotas = quotas or Quotas()
        self.ledger = ledger or DEFAULT_LEDGER
        self.org_part = names.org_part(self.org)
        self.home_bucket = names.user_bucket(self.org, self.user)
        self.project_buckets = {names.project_bucket(self.org, p): p for p in self.projects}
        self._store_id = repr(storage)

    # --- rights -------------------------------------------------------------------------------
    @property
    def is_manager(self) -> bool:
        return SCOPE_MANAGE in self.scopes

    @property
    def has_home(self) -> bool:
        return SCOPE_HOME in self.scopes

    def _not_found(self, bucket: object) -> NotFound:
        shown = (
            bucket
            if isinstance(bucket, str) and bucket.isprintable() and len(bucket) <= 80
            else "(not shown)"
        )
        return NotFound(f"bucket {shown} not found; pick one from your bucket list")

    def check(self, bucket: object) -> names.BucketName:
        """The parsed *bucket* if the caller may use it; NotFound for other organizations' buckets
        and non-platform names, Forbidden for buckets of the caller's organization that are not theirs."""
        parsed = names.parse_bucket(bucket) if isinstance(bucket, str) else None
        if parsed is None or parsed.org != self.org_part:
            raise self._not_found(bucket)
        if self.is_manager:
            return parsed
        if not self.has_home:
            raise Forbidden(
                "your roles give no access to data; ask your organization admin for a role with "
                f"{SCOPE_HOME} (e.g. researcher)",
                reason="no_data_scope",
            )
        if parsed.name == self.home_bucket or parsed.name in self.project_buckets:
            return parsed
        raise Forbidden(
            f"bucket {parsed.name} belongs to another user or project of {self.org}; you can use your own "
            f"bucket {self.home_bucket} and those of your projects"
        )

    def _require_manager(self, what: str) -> None:
        if not self.is_manager:
            raise Forbidden(f"only data managers ({SCOPE_MANAGE}) may {what}; ask your organization admin")

    def _view(self, name: str, created: datetime | None = None) -> BucketView:
        parsed = names.parse_bucket(name)
        assert parsed is not None
        if name == self.home_bucket:
            return BucketView(name, "user", self.user, True, created)
        if name in self.project_buckets:
            return BucketView(name, "project", self.project_buckets[name], True, created)
        return BucketView(name, parsed.kind, parsed.owner, False, created)

    # --- buckets ------------------------------------------------------------------------------
    async def list_buckets(self) -> list[BucketView]:
        """Existing buckets the caller may see (sorted: their own first)."""
        if not self.is_manager and not self.has_home:
            return []
        out = []
        for b in await self.storage.list_buckets():
            parsed = names.parse_bucket(b.name)
            if parsed is None or parsed.org != self.org_part:
                continue
            if self.is_manager or b.name == self.home_bucket or b.name in self.project_buckets:
                out.append(self._view(b.name, b.created))
        return sorted(out, key=lambda v: (not v.mine, v.kind != "user", v.name))

    def bucket_name(self, kind: str = "user", owner: str | None = None) -> str:
        """The bucket of *owner* (default: the caller, for kind "user"), if the caller may use it."""
        if kind not in ("user", "project"):
            raise InvalidRequest("kind must be 'user' or 'project'")
        if kind == "user":
            name = names.user_bucket(self.org, owner or self.user)
        else:
            if not owner:
                raise InvalidRequest("give the project whose bucket you mean")
            name = names.project_bucket(self.org, owner)
        self.check(name)
        return name

    async def create_bucket(
        self, kind: str = "user", owner: str | None = None, *, exist_ok: bool = False
    ) -> BucketView:
        """Create the bucket of *owner* (a user or project of the organization). Users create their
        own and their projects'; data managers any."""
        name = self.bucket_name(kind, owner)
        try:
            await self.storage.create_bucket(name)
        except Conflict:
            if not exist_ok:
                raise Conflict(f"bucket {name} already exists") from None
        view = self._view(name)
        if owner and not view.mine:
            view = BucketView(name, kind, owner, False)
        return view

    async def ensure_home_bucket(self) -> str:
        await self.create_bucket("user", exist_ok=True)
        return self.home_bucket

    async def delete_bucket(self, bucket: str, *, force: bool = False) -> None:
        """Delete a bucket (data managers only); a non-empty one only with *force*."""
        self.check(bucket)
        self._require_manager("delete buckets")
        await self.storage.delete_bucket(bucket, force=force)

    async def bucket_usage(self, bucket: str) -> BucketUsage:
        self.check(bucket)
        return await self.storage.bucket_usage(bucket)

    async def bucket_size(self, bucket: str) -> int:
        return (await self.bucket_usage(bucket)).bytes

    # --- objects ------------------------------------------------------------------------------
    async def list_objects(
        self,
        bucket: str,
        prefix: str = "",
        *,
        delimiter: str | None = "/",
        token: str | None = None,
        max_keys: int = 1000,
    ) -> ObjectPage:
        self.check(bucket)
        return await self.storage.list_objects(
            bucket, prefix, delimiter=delimiter, token=token, max_keys=max_keys
        )

    async def stat(self, bucket: str, key: str) -> ObjectInfo:
        self.check(bucket)
        names.validate_key(key, allow_folder=True)
        return await self.storage.stat(bucket, key)

    async def create_folder(self, bucket: str, path: str) -> ObjectInfo:
        self.check(bucket)
        return await self.storage.create_folder(bucket, path)

    async def delete_objects(self, bucket: str, keys: list[str]) -> DeleteResult:
        self.check(bucket)
        if not isinstance(keys, list) or not keys:
            raise InvalidRequest("give a non-empty list of object keys to delete")
        for k in keys:
            names.validate_key(k, allow_folder=True)
        return await self.storage.delete_objects(bucket, keys)

    async def open_download(
        self, bucket: str, key: str, *, offset: int = 0, length: int | None = None
    ) -> tuple[ObjectInfo, AsyncIterator[bytes]]:
        """The object's metadata (for Content-Length/Type) and an async iterator of its chunks,
        pinned to the version just inspected (a concurrent overwrite fails the read, never mixes)."""
        info = await self.stat(bucket, key)
        return info, self.storage.download(bucket, key, offset=offset, length=length, if_match=info.etag)

    async def upload(
        self,
        bucket: str,
        key: str,
        source: AsyncIterable[bytes] | bytes,
        size: int,
        *,
        content_type: str = "application/octet-stream",
    ) -> UploadResult:
        """Upload exactly *size* bytes from *source* to *key*, within quota (checked first)."""
        self.check(bucket)
        names.validate_key(key)
        if isinstance(source, (bytes, bytearray)) and size is None:
            size = len(source)
        async with self.reserve(bucket, size, key=key):
            return await self.storage.upload(bucket, key, source, size, content_type=content_type)

    async def presign_get(self, bucket: str, key: str, expires: int = 3600) -> str:
        """A URL that downloads *key* for *expires* seconds (the object must exist)."""
        self.check(bucket)
        names.validate_key(key)
        await self.storage.stat(bucket, key)
        return await self.storage.presign_get(bucket, key, expires)

    async def presign_put(self, bucket: str, key: str, size: int, expires: int = 3600) -> str:
        """A URL that uploads exactly *size* bytes to *key*, issued only within the remaining quota."""
        self.check(bucket)
        names.validate_key(key)
        async with self.reserve(bucket, size, key=key):
            pass  # the size fits now; Content-Length is signed into the URL
        return await self.storage.presign_put(bucket, key, size, expires)

    # --- quotas -------------------------------------------------------------------------------
    async def _org_usage(self) -> int:
        total = 0
        for b in await self.storage.list_buckets():
            parsed = names.parse_bucket(b.name)
            if parsed and parsed.org == self.org_part:
                total += await self.storage.bucket_size(b.name)
        return total

    async def usage(self) -> dict[str, Any]:
        """Bytes used and quotas of the caller's bucket and organization."""
        home = 0
        if await self.storage.bucket_exists(self.home_bucket):
            home = await self.storage.bucket_size(self.home_bucket)
        return {
            "user": {"bucket": self.home_bucket, "used": home, "quota": self.quotas.user_bytes},
            "organization": {"used": await self._org_usage(), "quota": self.quotas.org_bytes},
        }

    @contextlib.asynccontextmanager
    async def reserve(
        self, bucket: str, size: int, *, key: str | None = None, replacing: int = 0
    ) -> AsyncIterator[None]:
        """Hold *size* bytes of quota in *bucket* while writing; :class:`QuotaExceeded` if they do not
        fit. With *key*, an existing object of that key counts as freed (it is replaced); *replacing*
        says how many bytes of existing objects the write replaces when the caller already knows."""
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidRequest("declare the size of the upload in bytes (a whole number, 0 or more)")
        parsed = self.check(bucket)
        q = self.quotas
        async with self.ledger.lock:
            if key is not None:
                try:
                    replacing = (await self.storage.stat(bucket, key)).size
                except NotFound:
                    replacing = 0
            delta = max(0, size - replacing)
            limit = q.user_bytes if parsed.kind == "user" else q.project_bytes
            if delta and limit is not None:
                used = await self.storage.bucket_size(bucket)
                held = self.ledger.reserved(self._store_id, bucket)
                self._refuse_if(
                    used + held + delta > limit,
                    size,
                    used,
                    held,
                    limit,
                    f"the {parsed.kind} quota of {bucket}",
                )
            if delta and q.org_bytes is not None:
                used = await self._org_usage()
                held = self.ledger.reserved_in_org(self._store_id, self.org_part)
                self._refuse_if(
                    used + held + delta > q.org_bytes,
                    size,
                    used,
                    held,
                    q.org_bytes,
                    f"the quota of {self.org}",
                )
            self.ledger.add(self._store_id, bucket, delta)
        try:
            yield
        finally:
            self.ledger.add(self._store_id, bucket, -delta)

    def _refuse_if(self, over: bool, size: int, used: int, held: int, limit: int, what: str) -> None:
        if not over:
            return
        in_flight = f" plus {human_bytes(held)} being uploaded" if held else ""
        raise QuotaExceeded(
            f"storing {human_bytes(size)} would exceed {what}: {human_bytes(used)}{in_flight} of "
            f"{human_bytes(limit)} used, {human_bytes(max(0, limit - used - held))} left. Delete files you no "
            "longer need, or ask your organization's data manager for more space."
        )


__all__ = [
    "DEFAULT_LEDGER",
    "SCOPE_HOME",
    "SCOPE_MANAGE",
    "BucketView",
    "DataAccess",
    "DataError",
    "QuotaLedger",
    "QuotaPolicy",
    "Quotas",
]
