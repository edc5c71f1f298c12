"""The engine's stager for organizations with an object store: inputs from the user's bucket to the
instance's work directory on the cluster, outputs back to ``results/<instance>/`` in the bucket.

:class:`ObjectStoreStager` implements the engine's :class:`~.staging.Stager` protocol on top of the
data layer's :class:`~jupyter_heroes.data.staging.Stager` (skip identical files, resume interrupted
copies, verify every checksum, refuse paths that leave the instance directory), through a file
target over the cluster's own connection: an SFTP client opened on the pooled SSH connection of the
cluster's :class:`~jupyter_heroes.clusters.ssh.SSHTransport` (``open_sftp``), or the local file
system for the local backend. Organizations without an object store are handed to the *fallback*
stager (the :class:`~.staging.LocalStoreStager` of the service's ``data_dir``).

Keys and paths keep the layout of :class:`~.staging.LocalStoreStager`, so a template behaves the same
on either store:

- an input key ``data/in.csv`` lands at ``<work>/data/in.csv``; an input ending in ``/`` stages the
  whole folder (``data/`` -> ``<work>/data/...``);
- an output path ``result.json`` (a file) or ``out`` (a directory, walked; symlinks refused) goes to
  ``results/<instance>/result.json`` / ``results/<instance>/out/...``; outputs that were not produced
  are skipped.

The user's bucket (``<org>--u-<user>``) is checked and quota-limited like any of their writes
(:class:`~jupyter_heroes.data.tenancy.DataAccess`); it is created for the first outputs if missing.
Every file's progress is published on the engine's :class:`~.events.EventBus` as an event of type
``staging`` (``direction`` in/out, ``file``, ``state`` start/progress/skip/done/error,
``bytes_done``, ``bytes_total``), progress at most every ``progress_interval`` seconds per file.

:class:`OrgStores` builds each organization's :class:`~jupyter_heroes.data.s3.S3Storage` from its
registered server (``/heroes/admin/organizations/{org}/servers``) on first use and keeps it; the
service's data API and this stager share it.
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from traitlets import Bool, Float, Integer
from traitlets.config import LoggingConfigurable

from .. import orm
from ..background import spawn
from ..clusters.local import LocalTransport
from ..clusters.transport import Transport
from ..data import names
from ..data.errors import DataError, InvalidName
from ..data.staging import RESULTS_PREFIX, StagingEvent, StagingReport, TransferRecord
from ..data.staging import Stager as DataStager
from ..data.storage import Storage
from ..data.target import FileTarget, LocalTarget, TargetStat
from ..data.tenancy import SCOPE_HOME, DataAccess, QuotaPolicy, Quotas
from ..dbutil import session_scope
from .events import EventBus
from .staging import StageContext, Stager, StagingError


@dataclass(frozen=True)
class OrgStore:
    """An organization's object store as the stager needs it."""

    org_id: int
    storage: Storage
    quotas: Quotas


class OrgStores(LoggingConfigurable):
    """Each organization's :class:`~jupyter_heroes.data.s3.S3Storage`, built from its first registered
    S3 server on first use and kept (it owns a thread pool and a connection pool). A server
    registered, replaced or removed through the API is noticed at the next lookup (one indexed query).

    *decrypt* turns the stored secret key into text (:meth:`jupyter_heroes.crypt.SecretBox.decrypt`);
    *policy* gives the quotas. Storages get ``parent=self`` so ``c.S3Storage.*`` settings apply.
    """

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        decrypt: Callable[[bytes], str],
        policy: QuotaPolicy | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.session_factory = session_factory
        self.decrypt = decrypt
        self.policy = policy or QuotaPolicy(parent=self)
        self._cache: dict[int, tuple[tuple[Any, ...], Storage]] = {}

    def storage(self, org_id: int) -> Storage | None:
        """The organization's storage, or None if it has no S3 server registered."""
        from ..data.s3 import S3Storage

        with session_scope(self.session_factory) as s:
            sv = s.scalar(
                select(orm.OrgServer)
                .where(orm.OrgServer.org_id == org_id, orm.OrgServer.kind == "s3")
                .order_by(orm.OrgServer.id)
                .limit(1)
            )
            if sv is None:
                self._drop(org_id)
                return None
            fingerprint = (sv.id, sv.endpoint, sv.secure, sv.region, sv.access_key, bytes(sv.secret_key_enc))
            cached = self._cache.get(org_id)
            if cached is not None and cached[0] == fingerprint:
                return cached[1]
            storage = S3Storage.from_org_server(sv, secret_key=self.decrypt(sv.secret_key_enc), parent=self)
        self._drop(org_id)
        self._cache[org_id] = (fingerprint, storage)
        self.log.info("object store of organization %d: %r", org_id, storage)
        return storage

    def for_org(self, org_name: str) -> OrgStore | None:
        """What the stager needs for organization *org_name*, or None without an object store."""
        with session_scope(self.session_factory) as s:
            org_id = s.scalar(select(orm.Organization.id).where(orm.Organization.name == org_name))
        if org_id is None:
            return None
        storage = self.storage(org_id)
        if storage is None:
            return None
        return OrgStore(org_id, storage, self.policy.quotas_for(org_name))

    def _drop(self, org_id: int) -> None:
        old = self._cache.pop(org_id, None)
        if old is not None:
            with contextlib.suppress(RuntimeError):  # no running loop: nothing in flight to wait for
                asyncio.get_running_loop()
                spawn(old[1].close(), f"closing the storage client of organization {org_id}")

    async def close(self) -> None:
        cached, self._cache = list(self._cache.values()), {}
        for _, storage in cached:
            await storage.close()


class _OutputStager(DataStager):
    """The data layer's stager, with outputs named by paths relative to the work directory (files or
    directories) rather than one whole sub-directory."""

    async def stage_out_paths(
        self, work: str, bucket: str, instance: str, paths: list[str]
    ) -> tuple[StagingReport, list[str]]:
        if self.access is not None:
            self.access.check(bucket)
        prefix = names.confine(f"{RESULTS_PREFIX}/", instance + "/")
        real_root = await self._real_root(work)
        files: list[tuple[str, TargetStat]] = []
        refused: list[tuple[str, str]] = []
        for raw in paths:
            rel = names.validate_key(raw, allow_folder=True, what="output path").rstrip("/")
            full = names.confine_path(work, rel)
            try:
                st = await self.target.stat(full)
            except FileNotFoundError:
                continue  # not produced (like LocalStoreStager: optional outputs)
            try:  # a parent directory that is a symlink out of the work directory
                await self._check_confined(real_root, posixpath.dirname(full), rel)
            except InvalidName as e:
                refused.append((rel, e.message.removeprefix(f"{rel}: ")))
                continue
            if st.is_link:
                refused.append((rel, "is a symbolic link; outputs are copied only from regular files"))
            elif st.is_dir:
                inner, bad = await self._walk(full)
                files += [(posixpath.join(rel, r), s) for r, s in inner]
                refused += [(posixpath.join(rel, r), why) for r, why in bad]
            else:
                files.append((rel, st))
        existing = {o.key: o async for o in self.storage.iter_objects(bucket, prefix)}
        jobs = []
        keys = []
        for rel, st in sorted(set(files)):
            key = names.confine(prefix, rel)
            keys.append(key)
            rec = TransferRecord("out", rel, posixpath.join(work, rel), f"s3://{bucket}/{key}", st.size)
            jobs.append((rec, self._job_out(bucket, key, posixpath.join(work, rel), st, existing.get(key))))
        for rel, why in refused:
            rec = TransferRecord("out", rel, posixpath.join(work, rel), "", 0)
            jobs.append((rec, _refuse(InvalidName(f"{rel}: {why}"))))
        need = sum(st.size for _, st in set(files))
        replacing = sum(existing[k].size for k in keys if k in existing)
        if self.access is not None:
            async with self.access.reserve(bucket, need, replacing=replacing):
                return await self._run_all("out", jobs, True), keys
        return await self._run_all("out", jobs, True), keys


def _refuse(error: DataError) -> Callable[[TransferRecord], Any]:
    async def refuse(rec: TransferRecord) -> None:
        raise error

    return refuse


class ObjectStoreStager(LoggingConfigurable):
    """The engine's :class:`~.staging.Stager` on the organizations' object stores (see the module
    documentation); organizations without one go to *fallback*."""

    parallel = Integer(
        2,
        config=True,
        help="""Files copied at once per staging run (each holds an SFTP channel and, to verify large
        files, briefly an exec channel: keep parallel + max_channels + 2 below the cluster's sshd
        MaxSessions, OpenSSH's default is 10, alongside the scheduler's own commands).""",
    )
    max_channels = Integer(
        3,
        config=True,
        help="""SFTP channels one staging run opens on the cluster's SSH connection (default 3).""",
    )
    prefer_aead = Bool(
        True,
        config=True,
        help="""Re-key the cluster's SSH connection to AES-GCM, once, before staging over it when it runs a
        cipher with a separate MAC (paramiko's default, aes128-ctr + hmac-sha2-256): about a quarter less
        CPU per byte copied. Re-keying is ordinary SSH and leaves the connection's other users alone;
        set False to keep the negotiated cipher.""",
    )
    progress_interval = Float(
        0.5,
        config=True,
        help="""Seconds between two 'progress' staging events of one file on the event stream (start,
        done, skip and error events are always sent).""",
    )
    timeout = Float(
        300.0,
        config=True,
        help="""Seconds one SFTP operation may take before the staging run fails as transient (the
        engine retries it and the copy resumes).""",
    )

    def __init__(
        self,
        stores: Callable[[str], OrgStore | None],
        fallback: Stager | None = None,
        events: EventBus | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.stores = stores
        self.fallback = fallback
        self.events = events

    # --- the engine's protocol --------------------------------------------------------------------
    async def stage_in(self, ctx: StageContext, transport: Transport, keys: list[str]) -> list[str]:
        store = self.stores(ctx.organization)
        if store is None:
            return await self._fallback().stage_in(ctx, transport, keys)
        access = self._access(ctx, store)
        bucket = access.home_bucket
        written: list[str] = []
        try:
            async with self._stager(ctx, transport, store, access) as stager:
                files = [k for k in keys if not k.endswith("/")]
                if files:
                    report = await stager.stage_in(bucket, ctx.dirs.work, keys=files)
                    written += [r.destination for r in report.records]
                for folder in (k for k in keys if k.endswith("/")):
                    names.validate_key(folder, allow_folder=True, what="input folder")
                    report = await stager.stage_in(
                        bucket, ctx.dirs.work, prefix=folder, subdir=folder.rstrip("/")
                    )
                    written += [r.destination for r in report.records]
        except DataError as e:
            raise StagingError(f"staging inputs from bucket {bucket} failed: {e.message}", e.transient) from e
        return written

    async def stage_out(self, ctx: StageContext, transport: Transport, paths: list[str]) -> list[str]:
        store = self.stores(ctx.organization)
        if store is None:
            return await self._fallback().stage_out(ctx, transport, paths)
        access = self._access(ctx, store)
        bucket = access.home_bucket
        try:
            await access.ensure_home_bucket()
            async with self._stager(ctx, transport, store, access) as stager:
                _, keys = await stager.stage_out_paths(ctx.dirs.work, bucket, ctx.instance_id, paths)
        except DataError as e:
            raise StagingError(f"copying outputs to bucket {bucket} failed: {e.message}", e.transient) from e
        return keys

    # --- plumbing -----------------------------------------------------------------------------------
    def _fallback(self) -> Stager:
        if self.fallback is None:
            raise StagingError(
                "this organization has no object store: ask the platform administrator to register one "
                "(POST /heroes/admin/organizations/{org}/servers)"
            )
        return self.fallback

    @staticmethod
    def _access(ctx: StageContext, store: OrgStore) -> DataAccess:
        # the engine acts for the user who submitted: their own bucket, within their quota
        return DataAccess(
            ctx.organization, ctx.user, roles=[SCOPE_HOME], storage=store.storage, quotas=store.quotas
        )

    @contextlib.asynccontextmanager
    async def _stager(
        self, ctx: StageContext, transport: Transport, store: OrgStore, access: DataAccess
    ) -> AsyncIterator[_OutputStager]:
        target, close = await self.open_target(transport)
        try:
            yield _OutputStager(
                store.storage,
                target,
                access=access,
                parallel=self.parallel,
                on_event=self._publisher(store.org_id, ctx.instance_id),
                logger=self.log,
            )
        finally:
            await close()

    async def open_target(self, transport: Transport) -> tuple[FileTarget, Callable[[], Any]]:
        """A file target on the cluster of *transport* and the coroutine function that closes it."""
        open_sftp = getattr(transport, "open_sftp", None)
        if open_sftp is not None:
            from ..data.sftp_target import SFTPTarget

            sftp = await open_sftp()
            sftp_target = SFTPTarget(
                sftp, max_channels=self.max_channels, timeout=self.timeout, prefer_aead=self.prefer_aead
            )

            async def close_sftp() -> None:
                await sftp_target.close()
                await asyncio.to_thread(sftp.close)

            return sftp_target, close_sftp
        if isinstance(transport, LocalTransport):
            local = LocalTarget(max_workers=self.parallel + 2)
            return local, local.close
        raise StagingError(
            f"the cluster's transport ({transport.name}) cannot stage files from the object store; "
            "use an SSH or local cluster"
        )

    def _publisher(self, org_id: int, instance_id: str) -> Callable[[StagingEvent], None] | None:
        bus = self.events
        if bus is None:
            return None
        last: dict[tuple[str, str], float] = {}
        interval = self.progress_interval

        def publish(ev: StagingEvent) -> None:
            if ev.kind == "progress":
                now = time.monotonic()
                if now - last.get((ev.direction, ev.file), 0.0) < interval and ev.bytes_done < ev.bytes_total:
                    return
                last[(ev.direction, ev.file)] = now
            event: dict[str, Any] = {
                "type": "staging",
                "instance": instance_id,
                "org_id": org_id,
                "direction": ev.direction,
                "file": ev.file,
                "state": ev.kind,
                "bytes_done": ev.bytes_done,
                "bytes_total": ev.bytes_total,
            }
            if ev.message:
                event["message"] = ev.message
            bus.publish(event)

        return publish


__all__ = ["ObjectStoreStager", "OrgStore", "OrgStores"]
