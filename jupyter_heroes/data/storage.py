"""Object storage: the async :class:`Storage` interface, its result types, and :class:`S3Storage`
on the minio SDK (defined in :mod:`.s3`, importable from here).

:class:`Storage` knows nothing about tenants: :class:`~jupyter_heroes.data.tenancy.DataAccess`
decides who may touch which bucket and calls it. Every call of the blocking minio client goes
through one choke point, :meth:`S3Storage._call`, which runs it in a bounded thread pool (never on
the event loop), under ``asyncio.wait_for`` with :attr:`Storage.timeout`, logs the operation and its
duration (never credentials, presigned URLs or object contents) and maps failures to the
:class:`~jupyter_heroes.data.errors.DataError` family.

Data never has to fit in memory: :meth:`Storage.download` is an async iterator of chunks (ranged
and conditional, for resumed transfers) and :meth:`Storage.upload` consumes an async iterator of
chunks into a multipart upload with at most :attr:`Storage.parallel_parts` parts in flight, so the
memory an upload holds is bounded by about ``part_size * (parallel_parts + 1)``. An upload that
fails or is cancelled aborts its multipart upload: nothing partial is left behind. Uploads record
the SHA-256 of the content (user metadata ``x-amz-meta-heroes-sha256`` for a single PUT, the object
tag ``heroes-sha256`` after a multipart upload, when it is known), which the staging layer
uses to skip files that are already in place, and check the ETag the server computed against the MD5
of the bytes sent (per part and for the whole object), so a corrupted upload is detected.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from traitlets import Float, Integer
from traitlets.config import LoggingConfigurable

from .errors import InvalidRequest
from .names import validate_key

if TYPE_CHECKING:
    from .s3 import S3Storage

__all__ = [
    "BucketInfo",
    "BucketUsage",
    "DeleteResult",
    "ObjectInfo",
    "ObjectPage",
    "S3Storage",
    "Storage",
    "UploadResult",
    "multipart_etag",
]

log = logging.getLogger("jupyter_heroes.data")

MiB = 1024 * 1024
#: S3's limits on multipart uploads
MAX_PARTS = 10000
MAX_PART_SIZE = 5 * 1024 * MiB
#: user metadata key (``x-amz-meta-heroes-sha256``), or object tag after a multipart upload, holding
#: the SHA-256 of an object's content
SHA256_META = "heroes-sha256"


@dataclass(frozen=True)
class BucketInfo:
    name: str
    created: datetime | None = None


@dataclass(frozen=True)
class ObjectInfo:
    """One object (or, with ``is_folder``, a common prefix of a delimited listing)."""

    key: str
    size: int = 0
    etag: str = ""
    last_modified: datetime | None = None
    content_type: str = ""
    sha256: str | None = None
    is_folder: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "size": self.size,
            "etag": self.etag,
            "last_modified": self.last_modified.isoformat() if self.last_modified else None,
            "content_type": self.content_type,
            "sha256": self.sha256,
            "is_folder": self.is_folder,
        }


@dataclass(frozen=True)
class ObjectPage:
    """One page of a listing: objects, common prefixes ("folders") and the token of the next page."""

    objects: list[ObjectInfo]
    prefixes: list[str]
    next_token: str | None


@dataclass(frozen=True)
class UploadResult:
    bucket: str
    key: str
    size: int
    etag: str
    sha256: str
    parts: int


@dataclass(frozen=True)
class BucketUsage:
    bytes: int
    objects: int


@dataclass
class DeleteResult:
    deleted: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


def multipart_etag(md5_digests: list[bytes]) -> str:
    """The ETag S3 gives a multipart object: MD5 of the concatenated part MD5s, ``-<parts>``."""
    return hashlib.md5(b"".join(md5_digests)).hexdigest() + f"-{len(md5_digests)}"


async def _aiter_bytes(data: bytes, chunk: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), chunk):
        yield data[i : i + chunk]


class Storage(LoggingConfigurable):
    """An object store as the data layer sees it; every method is a coroutine (or an async iterator)
    and raises :class:`DataError` subclasses. Subclasses implement the ``async def`` methods."""

    max_workers = Integer(
        8,
        config=True,
        help="""Threads running blocking object-store calls (requests, chunk reads, part uploads).
        Bounds the concurrency against the store; also the size of the HTTP connection pool.""",
    )
    chunk_size = Integer(
        1 * MiB,
        config=True,
        help="""Bytes per chunk yielded by downloads (default 1 MiB). Memory held by one download is
        about one chunk.""",
    )
    part_size = Integer(
        16 * MiB,
        config=True,
        help="""Part size of multipart uploads in bytes (default 16 MiB, minimum 5 MiB as S3 requires).
        Uploads up to this size go in a single PUT. Raised automatically for uploads of declared size
        that would need more than 10000 parts.""",
    )
    parallel_parts = Integer(
        2,
        config=True,
        help="""Parts of one multipart upload in flight at once. Memory held by one upload is about
        part_size * (parallel_parts + 1).""",
    )
    timeout = Float(
        300.0,
        config=True,
        help="""Time limit in seconds of one blocking call (one request, one chunk read, one part
        upload). A call that passes it fails with a transient 'unavailable' error.""",
    )
    presign_max_expiry = Integer(
        7 * 24 * 3600,
        config=True,
        help="""Longest validity, in seconds, of a presigned URL (S3 allows at most 7 days). Requests
        for longer are refused with a clear error.""",
    )

    # --- buckets ----------------------------------------------------------------------------
    async def list_buckets(self) -> list[BucketInfo]:
        raise NotImplementedError

    async def bucket_exists(self, bucket: str) -> bool:
        raise NotImplementedError

    async def create_bucket(self, bucket: str) -> None:
        raise NotImplementedError

    async def delete_bucket(self, bucket: str, *, force: bool = False) -> None:
        raise NotImplementedError

    async def bucket_usage(self, bucket: str) -> BucketUsage:
        raise NotImplementedError

    async def bucket_size(self, bucket: str) -> int:
        return (await self.bucket_usage(bucket)).bytes

    # --- objects ----------------------------------------------------------------------------
    async def list_objects(
        self,
        bucket: str,
        prefix: str = "",
        *,
        delimiter: str | None = "/",
        token: str | None = None,
        max_keys: int = 1000,
    ) -> ObjectPage:
        raise NotImplementedError

    async def iter_objects(self, bucket: str, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Every object under *prefix*, recursively, page by page."""
        token: str | None = None
        while True:
            page = await self.list_objects(bucket, prefix, delimiter=None, token=token)
            for o in page.objects:
                yield o
            token = page.next_token
            if not token:
                return

    async def create_folder(self, bucket: str, path: str) -> ObjectInfo:
        """An empty ``path/`` object, which S3 browsers show as a folder."""
        key = validate_key(
            path.rstrip("/") + "/" if isinstance(path, str) else path, allow_folder=True, what="folder"
        )
        await self.upload(bucket, key, b"", size=0, content_type="application/x-directory")
        return ObjectInfo(key=key, is_folder=True)

    async def stat(self, bucket: str, key: str) -> ObjectInfo:
        raise NotImplementedError

    async def delete_objects(self, bucket: str, keys: list[str]) -> DeleteResult:
        raise NotImplementedError

    def download(
        self,
        bucket: str,
        key: str,
        *,
        offset: int = 0,
        length: int | None = None,
        if_match: str | None = None,
        chunk_size: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> AsyncIterator[bytes]:
        """Stream an object (or a range of it) as chunks; with *headers* (a dict), fill it with the
        response's headers (lower-case names) before the first chunk, so a caller learns the
        object's recorded SHA-256 (``x-amz-meta-heroes-sha256``) without a separate HEAD."""
        raise NotImplementedError

    async def upload(
        self,
        bucket: str,
        key: str,
        source: AsyncIterable[bytes] | bytes,
        size: int | None = None,
        *,
        content_type: str = "application/octet-stream",
        metadata: dict[str, str] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> UploadResult:
        raise NotImplementedError

    async def presign_get(self, bucket: str, key: str, expires: int = 3600) -> str:
        raise NotImplementedError

    async def presign_put(self, bucket: str, key: str, size: int, expires: int = 3600) -> str:
        raise NotImplementedError

    async def close(self) -> None:
        """Release threads and connections."""

    def _check_expiry(self, expires: int) -> int:
        if not isinstance(expires, int) or isinstance(expires, bool) or expires < 1:
            raise InvalidRequest("expires must be a whole number of seconds, at least 1")
        if expires > self.presign_max_expiry:
            raise InvalidRequest(
                f"expires={expires}s is longer than the longest allowed, {self.presign_max_expiry}s; ask for less"
            )
        return expires


def __getattr__(name: str) -> Any:
    # S3Storage lives in .s3, which imports this module; resolve it lazily to avoid the cycle
    if name == "S3Storage":
        from .s3 import S3Storage

        return S3Storage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
