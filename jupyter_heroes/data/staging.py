"""Staging: copy a workflow instance's inputs from the object store to its directory on a cluster,
and its outputs back, the way ``rclone copy --checksum`` would.

- **Inputs** (:meth:`Stager.stage_in`): objects under a prefix of a bucket go to
  ``<instance_dir>/<subdir>/<path relative to the prefix>``.
- **Outputs** (:meth:`Stager.stage_out`): regular files under ``<instance_dir>/<subdir>`` go to
  ``results/<instance>/<relative path>`` in a bucket (symlinks are never followed).

For each file:

1. **Skip** it if the destination already has the same size and the same SHA-256 (the object's
   recorded ``heroes-sha256``, or its content; the file's checksum computed on the cluster if the
   target can, else read back).
2. **Resume**: an input is written to ``<file>.part`` with ``<file>.part.meta`` recording the source
   object's ETag and size. If an earlier run was interrupted and the source is unchanged, the copy
   continues from the ``.part`` file's size with a ranged, ETag-conditional read; otherwise it
   starts over.
3. **Verify**: the checksum of the file as it landed on the cluster must be the object's recorded
   SHA-256; only then is ``.part`` renamed over the destination. For an object without one, the
   bytes received are hashed on the way: their MD5 must be the ETag of a single-part object, and
   the landed file must have their SHA-256. Outputs are checked by the object store's
   ETag (MD5 per part, computed on the server) and the file's checksum on the cluster (computed
   there while the file is read). A mismatch
   removes what was written and fails that file with :class:`IntegrityError`.

At most ``parallel`` files move at once, each as a pipeline of at most ``queue_depth`` chunks, so
memory stays bounded whatever the sizes. Every file produces a :class:`StagingEvent` stream
(``start``, ``progress``, ``skip``, ``done``, ``error``) for the caller's ``on_event`` callback and
one :class:`TransferRecord`, logged as an ECS document (file, bytes, seconds, outcome). Paths are
confined under the instance directory: keys and relative paths are validated, and when the target
can resolve symlinks, a destination whose directory resolves outside the instance directory is
refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import json
import logging
import posixpath
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from . import names
from .errors import Conflict, DataError, IntegrityError, InvalidName, InvalidRequest, NotFound
from .storage import SHA256_META, ObjectInfo, Storage, UploadResult
from .target import FileTarget, TargetStat

log = logging.getLogger("jupyter_heroes.data.staging")

MiB = 1024 * 1024
PART_SUFFIX = ".part"
META_SUFFIX = ".part.meta"
RESULTS_PREFIX = "results"
_PLAIN_ETAG = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class StagingEvent:
    kind: str  # start | progress | skip | done | error
    direction: str  # in | out
    file: str  # path relative to the instance sub-directory
    bytes_done: int = 0
    bytes_total: int = 0
    message: str = ""


@dataclass
class TransferRecord:
    """What happened to one file; :meth:`to_ecs` is the log document."""

    direction: str
    file: str
    source: str
    destination: str
    size: int
    outcome: str = "failed"  # copied | resumed | skipped | failed
    bytes: int = 0  # bytes moved by this run
    seconds: float = 0.0
    sha256: str | None = None
    resumed_from: int = 0
    error: str | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome != "failed"

    def to_ecs(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "event": {
                "action": f"data.stage_{self.direction}",
                "outcome": "success" if self.ok else "failure",
                "duration": int(self.seconds * 1e9),
            },
            "file": {"path": self.file, "size": self.size},
            "heroes": {
                "transfer": {
                    "direction": self.direction,
                    "source": self.source,
                    "destination": self.destination,
                    "outcome": self.outcome,
                    "bytes": self.bytes,
                    "seconds": round(self.seconds, 6),
                    "sha256": self.sha256,
                    "resumed_from": self.resumed_from,
                }
            },
        }
        if self.error:
            doc["error"] = {"message": self.error, "code": self.reason}
        return doc


@dataclass
class StagingReport:
    direction: str
    records: list[TransferRecord] = field(default_factory=list)
    seconds: float = 0.0

    def _count(self, *outcomes: str) -> int:
        return sum(1 for r in self.records if r.outcome in outcomes)

    @property
    def copied(self) -> int:
        return self._count("copied", "resumed")

    @property
    def skipped(self) -> int:
        return self._count("skipped")

    @property
    def failed(self) -> list[TransferRecord]:
        return [r for r in self.records if not r.ok]

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.records)

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "files": len(self.records),
            "copied": self.copied,
            "skipped": self.skipped,
            "failed": len(self.failed),
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
        }


class StagingError(DataError):
    """Some files could not be staged; ``report`` holds every file's record. ``transient`` if every
    failure was (a lost connection, an unavailable store): running the staging again resumes."""

    default_reason = "staging_failed"
    default_status = 502

    def __init__(self, report: StagingReport, errors: list[DataError]) -> None:
        first = report.failed[0]
        more = f" (and {len(report.failed) - 1} more)" if len(report.failed) > 1 else ""
        super().__init__(
            f"staging {report.direction} failed for {len(report.failed)} of {len(report.records)} files: "
            f"{first.file}: {first.error}{more}",
            reason=errors[0].reason if errors else None,
            transient=bool(errors) and all(e.transient for e in errors),
        )
        self.report = report


class _Dirs:
    """Destination directories of one staging run: each is made, its real path checked against the
    instance directory, and its entries listed, once, however many files land in it (one listing
    instead of three ``stat`` calls per file)."""

    def __init__(self, stager: Stager, real_root: str | None) -> None:
        self._stager = stager
        self._real_root = real_root
        self._made: dict[str, asyncio.Future[dict[str, TargetStat]]] = {}

    async def ensure(self, path: str) -> dict[str, TargetStat]:
        """Make *path* (checked) and return its entries as they were before this run wrote there."""
        fut = self._made.get(path)
        if fut is None:
            fut = self._made[path] = asyncio.ensure_future(self._make(path))
        return await asyncio.shield(fut)

    async def _make(self, path: str) -> dict[str, TargetStat]:
        target = self._stager.target
        await target.makedirs(path)
        await self._stager._check_confined(self._real_root, path, path)
        return {e.name: e.stat for e in await target.listdir(path)}


class Stager:
    """Copies between one :class:`Storage` and one :class:`FileTarget`.

    With *access* (a :class:`~jupyter_heroes.data.tenancy.DataAccess`) every bucket is checked
    against the caller's rights and outputs must fit the quota before the first byte is written.

    *parallel* files move at once, each through a pipeline of *queue_depth* chunks of *chunk_size*
    bytes. Inputs of at least *resumable_size* bytes keep a ``.part.meta`` record so an interrupted
    copy resumes; smaller ones simply start over. Files under *readback_below* bytes are verified by
    reading them back rather than by the target's ``checksum`` (default 64 KiB: below that, three
    SFTP round trips cost less than starting a hashing process on the cluster).

    An input of at least *follow_above* bytes (32 MiB) copied in one stream is hashed on the cluster
    while it lands, when the target can (``checksum_follow``): the digest of the file as stored is
    ready soon after its last byte instead of after a second pass over it. A digest that does not
    match is checked again by a pass over the file before the copy counts as failed.

    With *segments* > 1 (default 1: off), an input of at least *segment_threshold* bytes (still to
    copy) moves as segments of *segment_size* bytes, *segments* at once, each with its own ranged
    GET and its own file handle (one large file then uses several connections to the store and
    several SFTP channels); the segments are hashed in order as they complete, at most
    ``segments + 1`` ahead, so a large file holds about ``(2 * segments + 1) * segment_size`` bytes.
    Its ``.part.meta`` records the complete prefix every *checkpoint_bytes*, where an interrupted copy
    resumes. Off by default: moto_server (the test bed's store) copies the whole object for every
    ranged GET, which makes segments far slower there; whether they pay on MinIO is not measured yet.
    """

    def __init__(
        self,
        storage: Storage,
        target: FileTarget,
        *,
        access: Any = None,
        parallel: int = 4,
        queue_depth: int = 4,
        chunk_size: int = 1 * MiB,
        resumable_size: int = 8 * MiB,
        readback_below: int = 64 * 1024,
        follow_above: int = 32 * MiB,
        segments: int = 1,
        segment_size: int = 8 * MiB,
        segment_threshold: int = 64 * MiB,
        checkpoint_bytes: int = 64 * MiB,
        on_event: Callable[[StagingEvent], Any] | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        if parallel < 1 or queue_depth < 1 or chunk_size < 1:
            raise ValueError("parallel, queue_depth and chunk_size must be at least 1")
        self.storage = storage
        self.target = target
        self.access = access
        self.parallel = parallel
        self.queue_depth = queue_depth
        self.chunk_size = chunk_size
        self.resumable_size = resumable_size
        self.readback_below = readback_below
        self.follow_above = follow_above
        if segments < 1 or segment_size < 1:
            raise ValueError("segments and segment_size must be at least 1")
        self.segments = segments
        self.segment_size = segment_size
        self.segment_threshold = segment_threshold
        self.checkpoint_bytes = checkpoint_bytes
        self.on_event = on_event
        self.log = logger or log

    # --- plumbing -------------------------------------------------------------------------------
    async def _emit(self, event: StagingEvent) -> None:
        if self.on_event is None:
            return
        try:
            res = self.on_event(event)
            if inspect.isawaitable(res):
                await res
        except Exception:  # a broken progress consumer must not break a transfer
            self.log.exception("staging progress callback failed")

    async def _stat_or_none(self, path: str) -> TargetStat | None:
        try:
            return await self.target.stat(path)
        except FileNotFoundError:
            return None

    async def _remove_quietly(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError, OSError, DataError):
            await self.target.remove(path)

    async def _read_target(self, path: str, limit: int | None = None) -> AsyncIterator[bytes]:
        """The file's bytes as chunks (only the first *limit* bytes, if given)."""
        left = limit
        f = await self.target.open(path, "rb")
        try:
            while left is None or left > 0:
                data = await f.read(self.chunk_size if left is None else min(self.chunk_size, left))
                if not data:
                    return
                if left is not None:
                    left -= len(data)
                yield data
        finally:
            await f.close()

    async def _target_sha256(self, path: str, size: int | None = None) -> str:
        """SHA-256 of a file on the target: computed there when the target can and the file is not
        tiny (see ``readback_below``), else by reading it back."""
        checksum = getattr(self.target, "checksum", None)
        if checksum is not None and (size is None or size >= self.readback_below):
            value = await checksum(path)
            if value:
                return value
        h = hashlib.sha256()
        async for chunk in self._read_target(path):
            await asyncio.to_thread(h.update, chunk)
        return h.hexdigest()

    async def _real_root(self, root: str) -> str | None:
        realpath = getattr(self.target, "realpath", None)
        return await realpath(root) if realpath is not None else None

    async def _check_confined(self, real_root: str | None, directory: str, rel: str) -> None:
        """Refuse a destination whose directory resolves (through symlinks) outside the root."""
        if real_root is None:
            return
        real = await self.target.realpath(directory)  # type: ignore[attr-defined]
        if real != real_root and not real.startswith(real_root.rstrip("/") + "/"):
            raise InvalidName(
                f"{rel}: its directory resolves outside the instance directory (a symlink?); refusing to write there"
            )

    def _record(self, rec: TransferRecord) -> None:
        level = logging.INFO if rec.ok else logging.WARNING
        self.log.log(
            level,
            "stage %s %s: %s (%d bytes in %.2fs)%s",
            rec.direction,
            rec.file,
            rec.outcome,
            rec.bytes,
            rec.seconds,
            f": {rec.error}" if rec.error else "",
            extra={
                "event.action": f"data.stage_{rec.direction}",
                "event.outcome": "success" if rec.ok else "failure",
                "event.duration": int(rec.seconds * 1e9),
                "heroes.transfer": rec.to_ecs()["heroes"]["transfer"] | {"file": rec.file, "size": rec.size},
            },
        )

    async def _run_all(
        self, direction: str, jobs: list[tuple[TransferRecord, Callable[[TransferRecord], Any]]], check: bool
    ) -> StagingReport:
        report = StagingReport(direction)
        sem = asyncio.Semaphore(self.parallel)
        errors: list[DataError] = []
        t0 = time.monotonic()

        async def one(rec: TransferRecord, fn: Callable[[TransferRecord], Any]) -> None:
            async with sem:
                start = time.monotonic()
                await self._emit(StagingEvent("start", direction, rec.file, 0, rec.size))
                try:
                    await fn(rec)
                except DataError as e:
                    rec.outcome, rec.error, rec.reason = "failed", e.message, e.reason
                    errors.append(e)
                except (OSError, ValueError) as e:  # the target refused (permissions, disk full...)
                    rec.outcome, rec.error, rec.reason = "failed", f"{type(e).__name__}: {e}", "target_error"
                    errors.append(DataError(rec.error, "target_error"))
                finally:
                    rec.seconds = time.monotonic() - start
                    report.records.append(rec)
                    self._record(rec)
                kind = {"skipped": "skip", "failed": "error"}.get(rec.outcome, "done")
                await self._emit(
                    StagingEvent(kind, direction, rec.file, rec.bytes, rec.size, rec.error or "")
                )

        await asyncio.gather(*(one(r, fn) for r, fn in jobs))
        report.records.sort(key=lambda r: r.file)
        report.seconds = time.monotonic() - t0
        if check and report.failed:
            raise StagingError(report, errors)
        return report

    async def _pump(
        self, source: AsyncIterator[bytes], sink: Callable[[bytes], Any], progress: Callable[[int], Any]
    ) -> None:
        """Move chunks from *source* to *sink* with up to ``queue_depth`` chunks in between, so reading
        the next chunk overlaps writing the last one."""
        queue: asyncio.Queue[bytes | Exception | None] = asyncio.Queue(self.queue_depth)

        async def produce() -> None:
            try:
                async with contextlib.aclosing(source):  # type: ignore[type-var]
                    async for chunk in source:
                        await queue.put(chunk)
            except Exception as e:  # handed to the consumer, which raises it
                await queue.put(e)
                return
            await queue.put(None)

        producer = asyncio.ensure_future(produce())
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                if isinstance(item, Exception):
                    raise item
                await sink(item)
                await progress(len(item))
        finally:
            # stop the producer for good: cancel it and empty the queue so that a put() cannot hold
            # it, until it has ended (never leave a reader running behind a failed transfer)
            while not producer.done():
                producer.cancel()
                while not queue.empty():
                    queue.get_nowait()
                await asyncio.wait({producer}, timeout=0.1)
            if not producer.cancelled():
                producer.exception()  # retrieved: its error, if any, was already raised above

    # --- inputs: bucket -> instance directory ---------------------------------------------------
    async def stage_in(
        self,
        bucket: str,
        instance_dir: str,
        *,
        prefix: str = "",
        keys: list[str] | None = None,
        subdir: str = "",
        check: bool = True,
    ) -> StagingReport:
        """Copy the objects under *prefix* (or just *keys*, each under *prefix*) of *bucket* to
        ``instance_dir/subdir``, keeping their paths relative to *prefix*."""
        if self.access is not None:
            self.access.check(bucket)
        prefix = names.validate_prefix(prefix)
        if prefix and not prefix.endswith("/"):
            raise InvalidRequest("the input prefix must name a folder (end with '/')")
        root = _root(instance_dir, subdir)
        if keys is not None:
            objects = []
            for k in keys:
                names.validate_key(k, allow_folder=True)
                if not names.is_within(prefix, k) or k == prefix:
                    raise InvalidName(f"input {k!r} is not under the prefix {prefix!r}")
                objects.append(await self.storage.stat(bucket, k))
        else:
            objects = [o async for o in self.storage.iter_objects(bucket, prefix)]
        await self.target.makedirs(root)
        real_root = await self._real_root(instance_dir)
        if real_root is not None:
            await self._check_confined(real_root, root, subdir or ".")
        dirs = _Dirs(self, real_root)
        jobs = []
        for o in objects:
            rel = o.key[len(prefix) :]
            if not rel:  # the folder marker of the prefix itself
                continue
            rec = TransferRecord("in", rel, f"s3://{bucket}/{o.key}", "", o.size)
            try:
                rec.destination = names.confine_path(root, rel)
            except InvalidName as e:  # a key S3 accepted but no file may be named after
                jobs.append((rec, _refusal(e)))
                continue
            jobs.append((rec, self._job_in(bucket, o, rec.destination, dirs)))
        return await self._run_all("in", jobs, check)

    def _job_in(
        self, bucket: str, obj: ObjectInfo, dest: str, dirs: _Dirs
    ) -> Callable[[TransferRecord], Any]:
        async def job(rec: TransferRecord) -> None:
            await self._copy_in(rec, bucket, obj, dest, dirs)

        return job

    async def _copy_in(
        self, rec: TransferRecord, bucket: str, listed: ObjectInfo, dest: str, dirs: _Dirs
    ) -> None:
        followers: list[Any] = []  # checksums computed on the cluster as files land
        try:
            await self._copy_in_file(rec, bucket, listed, dest, dirs, followers)
        finally:
            for follower in followers:  # a failed copy: stop them (done ones are closed already)
                with contextlib.suppress(Exception):
                    await asyncio.shield(follower.close())

    async def _copy_in_file(
        self,
        rec: TransferRecord,
        bucket: str,
        listed: ObjectInfo,
        dest: str,
        dirs: _Dirs,
        followers: list[Any],
    ) -> None:
        entries = await dirs.ensure(posixpath.dirname(dest))
        if listed.is_folder:
            existed = await self._stat_or_none(dest)
            if existed is not None and not existed.is_dir:
                raise InvalidName(f"{rec.file}: {dest} exists and is not a directory; refusing to replace it")
            await dirs.ensure(dest)
            rec.outcome = "skipped" if existed else "copied"
            return
        part, meta = dest + PART_SUFFIX, dest + META_SUFFIX
        name = posixpath.basename(dest)
        current, part_st, meta_st = (entries.get(n) for n in (name, name + PART_SUFFIX, name + META_SUFFIX))
        for p, st in ((dest, current), (part, part_st), (meta, meta_st)):
            if st is not None and not st.is_file:
                raise InvalidName(
                    f"{rec.file}: {p} exists and is not a regular file (a symlink?); refusing to write there"
                )
        resumable = listed.size >= self.resumable_size
        # The listing gives size and ETag; the recorded SHA-256 of a single-part object comes with
        # the GET's headers. A HEAD (and, for multipart objects, the tag holding the SHA-256) is
        # needed only to compare with a file already there, to resume, or when the ETag is no MD5.
        need_stat = not listed.sha256 and (
            not _PLAIN_ETAG.match(listed.etag)
            or (current is not None and current.size == listed.size)
            or (resumable and part_st is not None and meta_st is not None)
        )
        obj = await self.storage.stat(bucket, listed.key) if need_stat else listed
        rec.size = obj.size
        resumable = obj.size >= self.resumable_size

        # 1. skip when the same content is already there
        if current is not None and current.size == obj.size:
            source_sha = obj.sha256 or await self._object_sha256(bucket, obj)
            if await self._target_sha256(dest, current.size) == source_sha:
                rec.outcome, rec.sha256 = "skipped", source_sha
                if meta_st is not None:
                    await self._remove_quietly(meta)
                return

        # 2. resume an interrupted copy of the same source version, or start afresh; files smaller
        # than resumable_size always start afresh (cheaper than the bookkeeping)
        offset = 0
        # The file as it lands is always checked against the source (step 4). Where the source's
        # SHA-256 is recorded that check is the whole verification and the bytes passing through
        # are not hashed here; otherwise their SHA-256 (and, for an MD5 ETag, MD5) is computed on
        # the way. Not knowing yet (no HEAD), the digest decides when the GET's headers arrive.
        digest = _Digest(
            sha=not obj.sha256,
            md5=not obj.sha256 and bool(_PLAIN_ETAG.match(obj.etag)),
            decided=bool(obj.sha256) or need_stat,
        )
        got_headers: dict[str, str] = {}
        saved = (
            await self._read_meta(meta)
            if resumable and part_st is not None and meta_st is not None and part_st.size <= obj.size
            else None
        )
        identity = self._meta(bucket, obj)
        if saved is not None and part_st is not None and {k: saved.get(k) for k in identity} == identity:
            # the prefix known to be complete: recorded as segments land in order (a copy written
            # in one stream, or by an earlier version, is complete up to the .part's size)
            durable = saved.get("done", part_st.size)
            offset = min(durable, part_st.size) if isinstance(durable, int) and durable >= 0 else 0
            digest.decided = True
            if digest.active:  # no recorded checksum: the bytes already there count in the digest
                async for chunk in self._read_target(part, limit=offset):
                    await asyncio.to_thread(digest.update, chunk)
            rec.resumed_from = offset
        elif resumable:
            await self._write_meta(meta, identity)
        elif meta_st is not None:
            await self._remove_quietly(meta)

        # 3. copy the rest, hashing as it goes (the hash runs in a thread while the chunk is written)
        done = offset
        landing: Any = None  # a FollowedChecksum of the target

        async def progress(n: int) -> None:
            nonlocal done
            done += n
            rec.bytes += n
            await self._emit(StagingEvent("progress", "in", rec.file, done, obj.size))

        if self.segments > 1 and obj.size - offset >= self.segment_threshold:
            await self._copy_segments(
                bucket, obj, part, offset, digest, got_headers, progress, meta if resumable else None
            )
        elif offset < obj.size or obj.size == 0:
            f = await self.target.open(part, "r+b" if offset else "wb")
            try:
                if offset:
                    await f.seek(offset)
                follow_checksum = getattr(self.target, "checksum_follow", None)
                if follow_checksum is not None and obj.size - offset >= self.follow_above:
                    # the cluster hashes the .part as it lands: its digest is ready soon after the
                    # last byte, instead of a second pass over the whole file after the copy
                    landing = await follow_checksum(part, obj.size)
                    if landing is not None:
                        followers.append(landing)

                async def write(chunk: bytes) -> None:
                    digest.decide(got_headers)
                    if digest.active:
                        await asyncio.gather(asyncio.to_thread(digest.update, chunk), f.write(chunk))
                    else:
                        await f.write(chunk)

                if offset < obj.size:
                    src = self.storage.download(
                        bucket,
                        obj.key,
                        offset=offset,
                        if_match=obj.etag,
                        chunk_size=self.chunk_size,
                        headers=got_headers,
                    )
                    await self._pump(src, write, progress)
            finally:
                await f.close()
        expected = obj.sha256 or _recorded_sha256(got_headers)

        # 4. verify, then move into place
        if done != obj.size:
            await self._discard(part, meta)
            raise IntegrityError(
                f"{rec.file}: received {done} bytes, expected {obj.size}; run the staging again"
            )
        if digest.sha is not None:  # no recorded SHA-256 when the copy began: hashed on the way
            got = digest.sha.hexdigest()
            if expected:
                intact = got == expected
            else:  # objects not uploaded through HEROES: a single-part object's ETag is its MD5
                intact = digest.md5 is None or digest.md5.hexdigest() == obj.etag
            if not intact:
                await self._discard(part, meta)
                raise IntegrityError(
                    f"{rec.file}: the bytes received do not match the object's checksum; the partial copy was "
                    "removed, run the staging again"
                )
        elif expected:
            got = expected
        else:  # cannot happen: the digest stops hashing only for a recorded SHA-256
            raise IntegrityError(f"{rec.file}: no checksum to verify against; run the staging again")
        rec.sha256 = got
        landed = await landing.result() if landing is not None else None
        if landed != got:  # not followed, or the follower could not tell: a pass over the file
            landed = await self._target_sha256(part, done)
        if landed != got:
            await self._discard(part, meta)
            raise IntegrityError(
                f"{rec.file}: the file on the cluster does not match the object's checksum (sha256 "
                f"{landed[:12]}... vs {got[:12]}...); the partial copy was removed, run the staging again"
            )
        await self.target.rename(part, dest)
        if resumable:
            await self._remove_quietly(meta)
        rec.outcome = "resumed" if rec.resumed_from else "copied"

    async def _copy_segments(
        self,
        bucket: str,
        obj: ObjectInfo,
        part: str,
        offset: int,
        digest: _Digest,
        got_headers: dict[str, str],
        progress: Callable[[int], Any],
        meta: str | None,
    ) -> None:
        """Copy ``obj[offset:]`` into *part* (which holds ``offset`` good bytes) as segments of
        ``segment_size`` bytes: ``segments`` workers, each with its own ranged GET and its own file
        handle writing at the segment's offset. Segments are hashed in order as they complete; a
        worker runs at most ``segments + 1`` segments ahead of the hash, so memory stays bounded. The
        complete in-order prefix is recorded in *meta* every ``checkpoint_bytes``, for resuming."""
        size = obj.size
        bounds = [(a, min(a + self.segment_size, size)) for a in range(offset, size, self.segment_size)]
        window = self.segments + 1
        cond = asyncio.Condition()
        received: dict[int, list[bytes]] = {}
        state = {"next": 0, "hashed": 0}
        saved = offset

        async def worker() -> None:
            f = await self.target.open(part, "r+b")
            try:
                while True:
                    async with cond:
                        await cond.wait_for(
                            lambda: state["next"] >= len(bounds) or state["next"] < state["hashed"] + window
                        )
                        i = state["next"]
                        if i >= len(bounds):
                            return
                        state["next"] = i + 1
                    a, b = bounds[i]
                    await f.seek(a)
                    chunks: list[bytes] = []
                    src = self.storage.download(
                        bucket,
                        obj.key,
                        offset=a,
                        length=b - a,
                        if_match=obj.etag,
                        chunk_size=self.chunk_size,
                        headers=got_headers if i == 0 else None,
                    )
                    async with contextlib.aclosing(src):  # type: ignore[type-var]
                        async for chunk in src:
                            await f.write(chunk)
                            chunks.append(chunk)
                            await progress(len(chunk))
                    if sum(map(len, chunks)) != b - a:
                        raise IntegrityError(
                            f"{obj.key}: the object store sent {sum(map(len, chunks))} bytes of the range "
                            f"{a}-{b - 1}; run the staging again"
                        )
                    await f.flush()  # on the cluster before it counts as done
                    async with cond:
                        received[i] = chunks
                        cond.notify_all()
            finally:
                await f.close()

        async def hasher() -> None:
            nonlocal saved
            while state["hashed"] < len(bounds):
                async with cond:
                    await cond.wait_for(lambda: state["hashed"] in received)
                    chunks = received.pop(state["hashed"])
                digest.decide(got_headers)
                if digest.active:
                    await asyncio.to_thread(digest.update_all, chunks)
                del chunks
                async with cond:
                    state["hashed"] += 1
                    cond.notify_all()
                durable = bounds[state["hashed"] - 1][1]
                if meta is not None and durable < size and durable - saved >= self.checkpoint_bytes:
                    saved = durable
                    await self._write_meta(meta, self._meta(bucket, obj) | {"done": durable})

        if meta is not None:  # segments land out of order: until a checkpoint, only *offset* is known good
            await self._write_meta(meta, self._meta(bucket, obj) | {"done": offset})
        if offset == 0:  # create (or empty) the .part once; the workers write into it
            await (await self.target.open(part, "wb")).close()
        tasks = [asyncio.ensure_future(worker()) for _ in range(min(self.segments, len(bounds)))]
        tasks.append(asyncio.ensure_future(hasher()))
        try:
            # the first failure ends the copy: the other workers are cancelled and waited for
            for fut in asyncio.as_completed(tasks):
                await fut
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _write_meta(self, path: str, value: dict[str, Any]) -> None:
        f = await self.target.open(path, "wb")
        try:
            await f.write(json.dumps(value).encode())
        finally:
            await f.close()

    @staticmethod
    def _meta(bucket: str, obj: ObjectInfo) -> dict[str, Any]:
        return {"bucket": bucket, "key": obj.key, "etag": obj.etag, "size": obj.size}

    async def _read_meta(self, path: str) -> dict[str, Any] | None:
        try:
            raw = b"".join([c async for c in self._read_target(path)])
            value = json.loads(raw.decode())
            return value if isinstance(value, dict) else None
        except (FileNotFoundError, ValueError, UnicodeDecodeError):
            return None

    async def _discard(self, part: str, meta: str) -> None:
        await self._remove_quietly(part)
        await self._remove_quietly(meta)

    async def _object_sha256(self, bucket: str, obj: ObjectInfo) -> str:
        h = hashlib.sha256()
        async with contextlib.aclosing(self.storage.download(bucket, obj.key, if_match=obj.etag)) as chunks:  # type: ignore[type-var]
            async for chunk in chunks:
                await asyncio.to_thread(h.update, chunk)
        return h.hexdigest()

    # --- outputs: instance directory -> bucket --------------------------------------------------
    async def stage_out(
        self,
        instance_dir: str,
        bucket: str,
        instance: str,
        *,
        subdir: str = "",
        check: bool = True,
    ) -> StagingReport:
        """Copy the regular files under ``instance_dir/subdir`` to ``results/<instance>/`` in
        *bucket*. With an ``access``, everything must fit the quota before the first byte moves."""
        if self.access is not None:
            self.access.check(bucket)
        if not isinstance(instance, str) or "/" in instance or not instance:
            raise InvalidName("the instance id must be a single path segment")
        prefix = names.confine(f"{RESULTS_PREFIX}/", instance + "/")
        root = _root(instance_dir, subdir)
        real_root = await self._real_root(instance_dir)
        if real_root is not None:
            await self._check_confined(real_root, root, subdir or ".")
        files, refused = await self._walk(root)
        existing = {o.key: o for o in [o async for o in self.storage.iter_objects(bucket, prefix)]}
        jobs = []
        for rel, st in files:
            key = names.confine(prefix, rel)
            rec = TransferRecord("out", rel, posixpath.join(root, rel), f"s3://{bucket}/{key}", st.size)
            jobs.append((rec, self._job_out(bucket, key, posixpath.join(root, rel), st, existing.get(key))))
        for rel, why in refused:
            rec = TransferRecord("out", rel, posixpath.join(root, rel), "", 0)
            jobs.append((rec, _refusal(InvalidName(f"{rel}: {why}"))))
        need = sum(st.size for _, st in files)
        replacing = sum(
            existing[k].size for k in (names.confine(prefix, rel) for rel, _ in files) if k in existing
        )
        if self.access is not None:
            async with self.access.reserve(bucket, need, replacing=replacing):
                return await self._run_all("out", jobs, check)
        return await self._run_all("out", jobs, check)

    async def _walk(self, root: str) -> tuple[list[tuple[str, TargetStat]], list[tuple[str, str]]]:
        """Regular files under *root* (relative paths), and what was refused (symlinks, specials)."""
        files: list[tuple[str, TargetStat]] = []
        refused: list[tuple[str, str]] = []
        stack = [""]
        while stack:
            rel_dir = stack.pop()
            try:
                entries = await self.target.listdir(posixpath.join(root, rel_dir) if rel_dir else root)
            except FileNotFoundError:
                if rel_dir == "":
                    raise NotFound(f"the output directory {root} does not exist on the cluster") from None
                continue
            for e in entries:
                rel = posixpath.join(rel_dir, e.name) if rel_dir else e.name
                if e.name.endswith((PART_SUFFIX, META_SUFFIX)):
                    continue
                try:
                    names.validate_key(rel)
                except InvalidName as err:
                    refused.append((rel, f"cannot be stored as an object ({err.message})"))
                    continue
                if e.stat.is_link:
                    refused.append((rel, "is a symbolic link; outputs are copied only from regular files"))
                elif e.stat.is_dir:
                    stack.append(rel)
                else:
                    files.append((rel, e.stat))
        return sorted(files), refused

    def _job_out(
        self, bucket: str, key: str, path: str, st: TargetStat, existing: ObjectInfo | None
    ) -> Callable[[TransferRecord], Any]:
        async def job(rec: TransferRecord) -> None:
            await self._copy_out(rec, bucket, key, path, st, existing)

        return job

    async def _copy_out(
        self,
        rec: TransferRecord,
        bucket: str,
        key: str,
        path: str,
        st: TargetStat,
        existing: ObjectInfo | None,
    ) -> None:
        if existing is not None and existing.size == st.size:
            obj = await self.storage.stat(bucket, key)
            if obj.sha256 and obj.sha256 == await self._target_sha256(path, st.size):
                rec.outcome, rec.sha256 = "skipped", obj.sha256
                return
        # the file's checksum on the cluster is computed while it is read (the size and mtime are
        # checked after the copy: a file that changed meanwhile fails with Conflict either way)
        checksum = getattr(self.target, "checksum", None)
        landing = (
            asyncio.ensure_future(checksum(path))
            if checksum is not None and st.size >= self.readback_below  # small files: the ETag check suffices
            else None
        )
        try:
            result = await self._upload_out(rec, bucket, key, path, st)
            landed = await landing if landing is not None else None
        finally:
            if landing is not None and not landing.done():
                landing.cancel()
                await asyncio.gather(landing, return_exceptions=True)
        after = await self.target.stat(path)
        if (after.size, after.mtime) != (st.size, st.mtime):
            await self.storage.delete_objects(bucket, [key])
            raise Conflict(
                f"{rec.file} changed while it was being copied; the copy was removed, run the staging again"
            )
        if landed and landed != result.sha256:
            await self.storage.delete_objects(bucket, [key])
            raise IntegrityError(
                f"{rec.file}: the bytes read do not match the file's checksum on the cluster; the copy was "
                "removed, run the staging again"
            )
        rec.sha256 = result.sha256
        rec.outcome = "copied"

    async def _upload_out(
        self, rec: TransferRecord, bucket: str, key: str, path: str, st: TargetStat
    ) -> UploadResult:
        done = 0

        async def chunks() -> AsyncIterator[bytes]:
            nonlocal done
            async for chunk in self._read_target(path):
                done += len(chunk)
                rec.bytes = done
                await self._emit(StagingEvent("progress", "out", rec.file, done, st.size))
                yield chunk

        return await self.storage.upload(bucket, key, chunks(), size=st.size)


def _refusal(error: DataError) -> Callable[[TransferRecord], Any]:
    async def refuse(rec: TransferRecord) -> None:
        raise error

    return refuse


def _root(instance_dir: str, subdir: str) -> str:
    if not isinstance(instance_dir, str) or not instance_dir.startswith("/"):
        raise InvalidRequest(
            f"the instance directory must be an absolute path on the cluster, got {instance_dir!r}"
        )
    if "\x00" in instance_dir or "/../" in instance_dir + "/" or instance_dir.rstrip("/") == "":
        raise InvalidName("the instance directory must not contain '..' or NUL and must not be '/'")
    return names.confine_path(instance_dir, subdir) if subdir else posixpath.normpath(instance_dir)


class _Digest:
    """The SHA-256 (and, for objects whose only checksum is an MD5 ETag, the MD5) of the bytes
    received, for sources without a recorded SHA-256. Without a HEAD it is not known yet whether
    one is recorded: :meth:`decide` stops hashing once the GET's headers show it (the file as it
    lands is then checked against it, and hashing the bytes on the way would add nothing)."""

    def __init__(self, *, sha: bool, md5: bool, decided: bool) -> None:
        self.sha: Any = hashlib.sha256() if sha else None
        self.md5: Any = hashlib.md5(usedforsecurity=False) if md5 else None
        self._hashes: tuple[Any, ...] = tuple(h for h in (self.sha, self.md5) if h is not None)
        self.decided = decided

    @property
    def active(self) -> bool:
        return bool(self._hashes)

    def decide(self, headers: dict[str, str]) -> None:
        if not self.decided and headers:
            self.decided = True
            if _recorded_sha256(headers):
                self.sha = self.md5 = None
                self._hashes = ()

    def update(self, chunk: bytes) -> None:
        for h in self._hashes:
            h.update(chunk)

    def update_all(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self.update(chunk)


def _recorded_sha256(headers: dict[str, str]) -> str | None:
    """The SHA-256 recorded in an object's metadata, from its GET response headers."""
    value = headers.get("x-amz-meta-" + SHA256_META, "").strip().lower()
    return value if re.fullmatch(r"[0-9a-f]{64}", value) else None
