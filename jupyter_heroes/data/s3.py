"""S3Storage: :class:`~jupyter_heroes.data.storage.Storage` on an S3-protocol server through the
minio SDK (MinIO per organization in production, moto_server in the test bed, AWS S3 too).

Every blocking minio call goes through :meth:`S3Storage._call`: a bounded thread pool, a time limit,
a debug log line with the operation and duration only, and the mapping of S3 error codes to the
:class:`~jupyter_heroes.data.errors.DataError` family. The SDK's public API does not expose the
paging token of ListObjectsV2 nor part-by-part multipart uploads, so those go through its internal
``_execute`` / ``_create_multipart_upload`` / ``_upload_part`` / ``_complete_multipart_upload`` /
``_abort_multipart_upload`` / ``_list_multipart_uploads``, all used here and only here (minio 7.2;
the tests exercise each against a real server).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import math
import ssl
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterable, AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import unquote_plus

import urllib3
from minio import Minio
from minio.commonconfig import Tags
from minio.datatypes import Object, Part
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, S3Error, ServerError
from minio.helpers import MIN_PART_SIZE
from minio.xml import findall, findtext
from traitlets import Bool, Float, Integer, TraitError, Unicode

from . import sigv4
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
from .names import validate_key, validate_prefix
from .storage import (
    MAX_PART_SIZE,
    MAX_PARTS,
    SHA256_META,
    BucketInfo,
    BucketUsage,
    DeleteResult,
    MiB,
    ObjectInfo,
    ObjectPage,
    Storage,
    UploadResult,
    _aiter_bytes,
    log,
    multipart_etag,
)

T = TypeVar("T")


# S3 error codes -> (error class, message template); {what} is "bucket X" or "object X in bucket Y"
_DAMAGED = "the object store received {what} damaged on the way; nothing was stored, try again"
_S3_ERRORS: dict[str, tuple[type[DataError], str]] = {
    "NoSuchBucket": (NotFound, "{bucket_what} does not exist"),
    "NoSuchKey": (NotFound, "{what} does not exist"),
    "NoSuchUpload": (Conflict, "the upload of {what} was aborted meanwhile; start it again"),
    "AccessDenied": (Forbidden, "the object store refused access to {what}"),
    "BucketAlreadyOwnedByYou": (Conflict, "{bucket_what} already exists"),
    "BucketAlreadyExists": (Conflict, "{bucket_what} already exists"),
    "BucketNotEmpty": (
        Conflict,
        "{bucket_what} is not empty; delete its objects first or delete it with force",
    ),
    "InvalidBucketName": (InvalidName, "{bucket_what}: the object store refused the name"),
    "KeyTooLongError": (InvalidName, "the object key is too long for the object store"),
    "PreconditionFailed": (Conflict, "{what} changed while it was being read; start again"),
    "InvalidRange": (Conflict, "{what} is shorter than expected (it changed); start again"),
    "QuotaExceeded": (QuotaExceeded, "the object store's quota for {bucket_what} is exhausted"),
    "XMinioAdminBucketQuotaExceeded": (
        QuotaExceeded,
        "the object store's quota for {bucket_what} is exhausted",
    ),
    "EntityTooLarge": (QuotaExceeded, "{what} is larger than the object store accepts"),
    # the store computed another checksum of the body than the Content-MD5 or signed SHA-256 sent
    "BadDigest": (IntegrityError, _DAMAGED),
    "XAmzContentSHA256Mismatch": (IntegrityError, _DAMAGED),
    "SlowDown": (Unavailable, "the object store is busy; try again in a moment"),
    "ServiceUnavailable": (Unavailable, "the object store is unavailable; try again later"),
    "InternalError": (Unavailable, "the object store failed internally; try again later"),
}


async def _within(fut: asyncio.Future[T], timeout: float) -> T:
    """Await *fut*, failing with TimeoutError after *timeout* seconds. Unlike ``asyncio.wait_for``
    before Python 3.12, a cancellation that arrives as *fut* completes is never swallowed (a
    swallowed cancel leaves a cancelled transfer running forever)."""
    expired = False

    def expire() -> None:
        nonlocal expired
        if not fut.done():
            expired = True
            fut.cancel()

    handle = asyncio.get_running_loop().call_later(timeout, expire)
    try:
        return await fut
    except asyncio.CancelledError:
        if expired:
            raise TimeoutError from None
        raise
    finally:
        handle.cancel()


def _check_ca_file(path: str) -> None:
    try:
        text = Path(path).read_bytes()
    except FileNotFoundError:
        raise TraitError(f"S3Storage.ca_file {path!r} does not exist; give the PEM file of the CA") from None
    except OSError as e:
        raise TraitError(f"S3Storage.ca_file {path!r} cannot be read: {e.strerror}") from None
    if b"-----BEGIN CERTIFICATE-----" not in text:
        raise TraitError(f"S3Storage.ca_file {path!r} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")


def _tls_failure(e: BaseException) -> str | None:
    """Why the server's certificate was refused, if that is what *e* (or what it wraps) says."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ssl.SSLCertVerificationError):  # also ssl.CertificateError, its alias
            return cur.verify_message or str(cur)
        cur = (
            getattr(cur, "reason", None)
            if isinstance(cur, urllib3.exceptions.MaxRetryError)
            else (cur.args[0] if cur.args and isinstance(cur.args[0], BaseException) else cur.__cause__)
        )
    return None


class S3Storage(Storage):
    """:class:`Storage` on an S3-protocol server (MinIO, AWS S3, moto) through the minio SDK.

    Build it from an organization's :class:`~jupyter_heroes.orm.OrgServer` with
    :meth:`from_org_server` (the caller decrypts the secret key), or directly with ``endpoint``,
    ``access_key`` and ``secret_key``.
    """

    endpoint = Unicode(
        "",
        config=True,
        help="""host:port of the S3 server, without scheme (e.g. ``minio.example.org:9000``).""",
    )
    secure = Bool(True, config=True, help="""Use HTTPS to reach the S3 server (default True).""")
    ca_file = Unicode(
        "",
        config=True,
        help="""PEM file of the certificate authorities that may sign the S3 server's TLS certificate,
        e.g. the centre's own CA in front of its MinIO. Empty (the default): the system's CAs.""",
    )
    region = Unicode(
        "us-east-1",
        config=True,
        help="""Region used to sign requests; MinIO accepts its configured region (default us-east-1).""",
    )
    access_key = Unicode(
        "", config=True, help="""Access key id of the account the platform uses on the server."""
    )
    secret_key = Unicode(
        "",
        config=True,
        help="""Secret key of that account. Never logged; prefer the encrypted OrgServer record.""",
    )
    connect_timeout = Float(
        10.0, config=True, help="""Seconds to wait for a TCP connection to the S3 server."""
    )
    retries = Integer(
        3,
        config=True,
        help="""Retries of a request after a connection error or a 5xx answer (urllib3 Retry, with
        backoff); 0 disables them.""",
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not self.endpoint:
            raise ValueError(
                "S3Storage needs endpoint (host:port of the S3 server), e.g. endpoint='127.0.0.1:9000'"
            )
        if "://" in self.endpoint:
            raise ValueError(
                f"S3Storage.endpoint is host:port without scheme (set secure=True for https), got {self.endpoint!r}"
            )
        if self.part_size < MIN_PART_SIZE:
            raise ValueError(
                f"S3Storage.part_size must be at least {MIN_PART_SIZE} bytes (5 MiB), got {self.part_size}"
            )
        if self.max_workers < 2:
            raise ValueError("S3Storage.max_workers must be at least 2")
        if self.ca_file:
            _check_ca_file(self.ca_file)
        http = urllib3.PoolManager(
            maxsize=self.max_workers,
            timeout=urllib3.Timeout(connect=self.connect_timeout, read=self.timeout),
            # other=0: a certificate that fails verification (an "other" error) is not tried again
            retries=urllib3.Retry(
                total=self.retries, other=0, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]
            )
            if self.retries
            else False,
            **({"cert_reqs": "CERT_REQUIRED", "ca_certs": self.ca_file} if self.ca_file else {}),
        )
        self._client = Minio(
            self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=self.secure,
            region=self.region,
            http_client=http,
        )
        self._pool = ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="heroes-s3")
        self.stats: dict[str, int] = {}

    @classmethod
    def from_org_server(cls, server: Any, secret_key: str, **kwargs: Any) -> S3Storage:
        """From an :class:`~jupyter_heroes.orm.OrgServer` row and its decrypted secret key."""
        return cls(
            endpoint=server.endpoint,
            secure=server.secure,
            region=server.region,
            access_key=server.access_key,
            secret_key=secret_key,
            **kwargs,
        )

    def __repr__(self) -> str:  # never shows the keys
        return f"<S3Storage {'https' if self.secure else 'http'}://{self.endpoint}>"

    # --- the choke point --------------------------------------------------------------------
    async def _call(
        self, op: str, fn: Callable[..., T], *args: Any, bucket: str = "", key: str = "", **kw: Any
    ) -> T:
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()
        self.stats[op] = self.stats.get(op, 0) + 1
        outcome = "failure"
        try:
            fut = loop.run_in_executor(self._pool, functools.partial(fn, *args, **kw))
            result = await _within(fut, self.timeout)
            outcome = "success"
            return result
        except DataError:
            raise
        except S3Error as e:
            raise self._map_s3_error(e, bucket, key) from None
        except (asyncio.TimeoutError, TimeoutError):
            raise Unavailable(
                f"the object store at {self.endpoint} did not answer {op} within {self.timeout:.0f}s; try again later",
                reason="timeout",
            ) from None
        except (ServerError, InvalidResponseError) as e:
            raise Unavailable(
                f"the object store at {self.endpoint} failed ({type(e).__name__}); try again later"
            ) from None
        except (urllib3.exceptions.HTTPError, OSError) as e:
            tls = _tls_failure(e)
            if tls is not None:
                raise DataError(
                    f"the object store at https://{self.endpoint} presented a TLS certificate that could "
                    f"not be verified ({tls}); if a private certificate authority signed it, set "
                    "c.S3Storage.ca_file to that CA's PEM file",
                    reason="s3_tls_certificate",
                    status=502,
                ) from None
            raise Unavailable(
                f"cannot reach the object store at {self.endpoint} ({type(e).__name__}); check that it runs, then try again"
            ) from None
        except ValueError as e:  # the SDK's own argument checks
            raise InvalidName(f"the object store client refused the request: {e}") from None
        finally:
            log.debug(
                "s3 %s %s/%s %s in %.3fs",
                op,
                bucket,
                key,
                outcome,
                time.monotonic() - t0,
                extra={"event.action": f"data.s3.{op}", "event.outcome": outcome},
            )

    def _map_s3_error(self, e: S3Error, bucket: str, key: str) -> DataError:
        what = f"object {key!r} in bucket {bucket}" if key else f"bucket {bucket}"
        cls, template = _S3_ERRORS.get(
            e.code or "", (DataError, "the object store refused the request on {what}")
        )
        message = template.format(what=what, bucket_what=f"bucket {bucket}")
        if cls is DataError:
            message += f" ({e.code}); try again or contact your administrator"
            return DataError(message, reason=f"s3_{(e.code or 'error').lower()}", status=502)
        return cls(message)

    # --- buckets ----------------------------------------------------------------------------
    async def list_buckets(self) -> list[BucketInfo]:
        buckets = await self._call("list_buckets", self._client.list_buckets)
        return [BucketInfo(b.name, b.creation_date) for b in buckets]

    async def bucket_exists(self, bucket: str) -> bool:
        return await self._call("bucket_exists", self._client.bucket_exists, bucket, bucket=bucket)

    async def create_bucket(self, bucket: str) -> None:
        # AWS and moto answer 200 to re-creating one's own bucket in us-east-1 (MinIO answers
        # BucketAlreadyOwnedByYou): look first so every server reports the conflict
        if await self.bucket_exists(bucket):
            raise Conflict(f"bucket {bucket} already exists")
        await self._call("make_bucket", self._client.make_bucket, bucket, bucket=bucket)

    async def delete_bucket(self, bucket: str, *, force: bool = False) -> None:
        if not force:
            page = await self.list_objects(bucket, delimiter=None, max_keys=1)
            if page.objects:
                raise Conflict(
                    f"bucket {bucket} is not empty; delete its objects first, or delete the bucket with force "
                    "to remove everything in it"
                )
        else:
            await self._call("abort_uploads", self._abort_all_uploads, bucket, bucket=bucket)
            while True:
                page = await self.list_objects(bucket, delimiter=None, max_keys=1000)
                if not page.objects:
                    break
                res = await self.delete_objects(bucket, [o.key for o in page.objects])
                if res.errors:
                    k, why = next(iter(res.errors.items()))
                    raise Conflict(f"could not empty bucket {bucket}: deleting {k!r} failed ({why})")
        await self._call("remove_bucket", self._client.remove_bucket, bucket, bucket=bucket)

    async def bucket_usage(self, bucket: str) -> BucketUsage:
        def count() -> BucketUsage:
            n = total = 0
            for o in self._client.list_objects(bucket, recursive=True):
                n += 1
                total += o.size or 0
            return BucketUsage(total, n)

        return await self._call("bucket_usage", count, bucket=bucket)

    # --- listing ----------------------------------------------------------------------------
    async def list_objects(
        self,
        bucket: str,
        prefix: str = "",
        *,
        delimiter: str | None = "/",
        token: str | None = None,
        max_keys: int = 1000,
    ) -> ObjectPage:
        """One page (at most *max_keys* entries) of ListObjectsV2; pass ``next_token`` back for the
        next page. ``delimiter=None`` lists recursively."""
        prefix = validate_prefix(prefix)
        if delimiter not in (None, "/"):
            raise InvalidRequest("delimiter must be '/' (folders) or none (recursive listing)")
        if not 1 <= int(max_keys) <= 1000:
            raise InvalidRequest("max_keys must be between 1 and 1000")
        if token is not None and (not isinstance(token, str) or not token.isprintable() or len(token) > 4096):
            raise InvalidRequest("the paging token is not one this service returned; start the listing again")
        query = {
            "list-type": "2",
            "prefix": prefix,
            "delimiter": delimiter or "",
            "max-keys": str(int(max_keys)),
        }
        query["encoding-type"] = "url"
        if token:
            query["continuation-token"] = token

        def page() -> ObjectPage:
            # one ListObjectsV2 request; the SDK's public list_objects hides the paging token
            response = self._client._execute("GET", bucket, query_params=cast(Any, query))
            element = ET.fromstring(response.data.decode())
            encoding = findtext(element, "EncodingType")
            truncated = (findtext(element, "IsTruncated") or "").lower() == "true"
            nxt = findtext(element, "NextContinuationToken")
            # Contents are objects (a key ending in "/" is a folder marker object); CommonPrefixes
            # are the folders a delimited listing rolls keys up into
            objs = []
            for tag in findall(element, "Contents"):
                o = Object.fromxml(tag, bucket, encoding_type=encoding)
                name = o.object_name or ""
                objs.append(
                    ObjectInfo(
                        key=name,
                        size=o.size or 0,
                        etag=(o.etag or "").strip('"'),
                        last_modified=o.last_modified,
                        is_folder=name.endswith("/"),
                    )
                )
            prefixes = []
            for tag in findall(element, "CommonPrefixes"):
                name = findtext(tag, "Prefix", True) or ""
                prefixes.append(unquote_plus(name) if encoding == "url" else name)
            return ObjectPage(objs, prefixes, nxt if truncated else None)

        return await self._call("list_objects", page, bucket=bucket)

    # --- objects ----------------------------------------------------------------------------
    async def stat(self, bucket: str, key: str) -> ObjectInfo:
        validate_key(key, allow_folder=True)
        st = await self._call("stat", self._client.stat_object, bucket, key, bucket=bucket, key=key)
        meta = {k.lower(): v for k, v in (st.metadata or {}).items()}
        etag = (st.etag or "").strip('"')
        digest = meta.get("x-amz-meta-" + SHA256_META)
        if digest is None and "-" in etag:  # multipart uploads record it as a tag
            tags = await self._call("tags", self._client.get_object_tags, bucket, key, bucket=bucket, key=key)
            digest = tags.get(SHA256_META) if tags else None
        return ObjectInfo(
            key=key,
            size=st.size or 0,
            etag=etag,
            last_modified=st.last_modified,
            content_type=st.content_type or "",
            sha256=digest if digest and len(digest) == 64 else None,
            is_folder=key.endswith("/"),
        )

    async def delete_objects(self, bucket: str, keys: list[str]) -> DeleteResult:
        for k in keys:
            validate_key(k, allow_folder=True)
        if not keys:
            return DeleteResult()

        def remove() -> DeleteResult:
            res = DeleteResult()
            failed = {}
            for i in range(0, len(keys), 1000):
                batch = keys[i : i + 1000]
                for err in self._client.remove_objects(bucket, [DeleteObject(k) for k in batch]):
                    failed[err.name or ""] = err.code or "error"
            res.errors = failed
            res.deleted = [k for k in keys if k not in failed]
            return res

        return await self._call("remove_objects", remove, bucket=bucket)

    async def download(
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
        """Stream an object (or the range ``offset``..``offset+length``) as chunks. With *if_match*
        (an ETag) the read fails with :class:`Conflict` if the object changed; *headers* (a dict) is
        filled with the response headers, names in lower case, before the first chunk. Close the
        iterator (``contextlib.aclosing``) when stopping early so the connection is released at once."""
        validate_key(key, allow_folder=True)
        if offset < 0 or (length is not None and length < 0):
            raise InvalidRequest("offset and length must not be negative")
        if length == 0:
            return
        chunk = chunk_size or self.chunk_size
        conditions = {"If-Match": f'"{if_match.strip(chr(34))}"'} if if_match else None
        resp = await self._call(
            "get",
            self._client.get_object,
            bucket,
            key,
            offset=offset,
            length=length or 0,
            request_headers=conditions,
            bucket=bucket,
            key=key,
        )
        if headers is not None:
            headers.update({k.lower(): v for k, v in resp.headers.items()})
        try:
            while True:
                data = await self._call("read", resp.read, chunk, bucket=bucket, key=key)
                if not data:
                    return
                yield data
        finally:

            def release() -> None:
                resp.close()
                resp.release_conn()

            await asyncio.shield(asyncio.get_running_loop().run_in_executor(self._pool, release))

    def _part_size_for(self, size: int | None) -> int:
        part = self.part_size
        if size is not None and size > part * MAX_PARTS:
            part = math.ceil(size / MAX_PARTS / MiB) * MiB
        if part > MAX_PART_SIZE:
            raise QuotaExceeded(f"an object of {size} bytes is larger than S3 allows (5 TiB)")
        return part

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
        """Store the chunks of *source* as object *key*. With *size*, exactly that many bytes must
        come (more or fewer aborts the upload). Objects larger than ``part_size`` go up as a
        multipart upload, part by part, never whole in memory. On any failure or cancellation the
        multipart upload is aborted, so the object is either complete and verified or absent."""
        validate_key(key, allow_folder=True)
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            raise InvalidRequest("size must be a whole number of bytes, 0 or more")
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
            if size is not None and size != len(data):
                raise InvalidRequest(f"size={size} but {len(data)} bytes were given")
            size = len(data)
            source = _aiter_bytes(data, self.chunk_size)
        part_size = self._part_size_for(size)
        meta = {k: v for k, v in (metadata or {}).items() if k.lower() != SHA256_META}
        loop = asyncio.get_running_loop()
        sha = hashlib.sha256()
        buf = bytearray()
        total = 0
        upload_id: str | None = None
        md5s: dict[int, bytes] = {}
        etags: dict[int, str] = {}
        inflight: set[asyncio.Future[None]] = set()
        slots = asyncio.Semaphore(max(1, self.parallel_parts))
        part_no = 0
        headers = {"Content-Type": content_type or "application/octet-stream"}
        headers.update({f"x-amz-meta-{k}": v for k, v in meta.items()})

        # the MD5 of an object that goes up in one PUT (to check its ETag) is computed alongside the
        # SHA-256, chunk by chunk in the pool, never in one piece on the event loop
        whole_md5: Any = hashlib.md5(usedforsecurity=False)

        def absorb(chunk: bytes) -> None:
            sha.update(chunk)
            if whole_md5 is not None:
                whole_md5.update(chunk)

        def put_part(n: int, data: bytearray, uid: str) -> None:
            digest = hashlib.md5(data).digest()
            # sent as Content-MD5: the store checks it before storing the part, and the SDK does not
            # compute the MD5 a second time (over HTTPS it would)
            md5_header = {"Content-MD5": base64.b64encode(digest).decode("ascii")}
            etag = self._client._upload_part(bucket, key, cast(bytes, data), md5_header, uid, n).strip('"')
            if etag != digest.hex():
                raise IntegrityError(
                    f"the object store stored part {n} of {key!r} with a different checksum than sent "
                    f"(ETag {etag}, MD5 {digest.hex()}); the upload was aborted, try again"
                )
            md5s[n] = digest
            etags[n] = etag

        async def start_part(data: bytearray) -> None:
            nonlocal upload_id, part_no, whole_md5
            whole_md5 = None  # multipart: each part's MD5 is checked instead
            if upload_id is None:
                upload_id = await self._call(
                    "create_multipart",
                    self._client._create_multipart_upload,
                    bucket,
                    key,
                    dict(headers),
                    bucket=bucket,
                    key=key,
                )
            part_no += 1
            await slots.acquire()
            fut = asyncio.ensure_future(
                self._call("upload_part", put_part, part_no, data, upload_id, bucket=bucket, key=key)
            )
            inflight.add(fut)

            def done(f: asyncio.Future[None]) -> None:
                inflight.discard(f)
                slots.release()

            fut.add_done_callback(done)

        async def wait_inflight() -> None:
            if inflight:
                done, _ = await asyncio.wait(set(inflight))
                for f in done:
                    if not f.cancelled() and f.exception() is not None:
                        raise f.exception()  # type: ignore[misc]

        try:
            async for chunk in source:
                if not chunk:
                    continue
                total += len(chunk)
                if size is not None and total > size:
                    raise InvalidRequest(
                        f"the upload of {key!r} sent more than the {size} bytes declared; nothing was stored"
                    )
                await loop.run_in_executor(self._pool, absorb, chunk)
                buf += chunk
                if progress:
                    progress(len(chunk))
                while len(buf) > part_size:
                    # hand the filled buffer itself to the part upload (no copy of the part) and
                    # carry the few bytes past the part boundary over to a new buffer
                    filled, buf = buf, buf[part_size:]
                    del filled[part_size:]
                    for f in [f for f in inflight if f.done() and not f.cancelled() and f.exception()]:
                        raise f.exception()  # type: ignore[misc]
                    await start_part(filled)
            if size is not None and total != size:
                raise InvalidRequest(
                    f"the upload of {key!r} ended after {total} of the {size} bytes declared; nothing was stored"
                )
            digest = sha.hexdigest()
            if upload_id is None:
                data = bytes(buf)
                buf.clear()
                md5_digest = whole_md5.digest()
                md5 = md5_digest.hex()
                put_headers = {
                    **headers,
                    f"x-amz-meta-{SHA256_META}": digest,
                    "Content-MD5": base64.b64encode(md5_digest).decode("ascii"),
                }
                result = await self._call(
                    "put", self._client._put_object, bucket, key, data, put_headers, bucket=bucket, key=key
                )
                etag = (result.etag or "").strip('"')
                if etag != md5:
                    await self._remove_quietly(bucket, key)
                    raise IntegrityError(
                        f"the object store stored {key!r} with a different checksum than sent; it was removed, try again"
                    )
                return UploadResult(bucket, key, total, etag, digest, 1)
            if buf:
                last, buf = buf, bytearray()
                await start_part(last)
            await wait_inflight()
            parts = [Part(n, etags[n]) for n in sorted(etags)]
            done = await self._call(
                "complete_multipart",
                self._client._complete_multipart_upload,
                bucket,
                key,
                upload_id,
                parts,
                bucket=bucket,
                key=key,
            )
            upload_id = None  # completed: nothing to abort any more
            expected = multipart_etag([md5s[n] for n in sorted(md5s)])
            etag = (done.etag or "").strip('"')
            if etag != expected:
                await self._remove_quietly(bucket, key)
                raise IntegrityError(
                    f"the object store assembled {key!r} with a different checksum than sent; it was removed, try again"
                )
            await self._record_sha256(bucket, key, digest)
            return UploadResult(bucket, key, total, etag, digest, len(parts))
        except BaseException:
            if inflight:
                await asyncio.shield(asyncio.wait(set(inflight)))
            if upload_id is not None:
                uid = upload_id
                try:
                    await asyncio.shield(
                        self._call(
                            "abort_multipart",
                            self._client._abort_multipart_upload,
                            bucket,
                            key,
                            uid,
                            bucket=bucket,
                            key=key,
                        )
                    )
                except DataError as e:
                    log.warning("could not abort the multipart upload of %s/%s: %s", bucket, key, e)
            raise

    async def _record_sha256(self, bucket: str, key: str, digest: str) -> None:
        """Record the SHA-256 of a multipart upload, known only at its end, as an object tag: unlike
        rewriting the metadata (a self-copy, which copies the data on AWS S3 and moto), tagging
        leaves the object and its ETag alone."""
        tags = Tags.new_object_tags()
        tags[SHA256_META] = digest
        try:
            await self._call("tag", self._client.set_object_tags, bucket, key, tags, bucket=bucket, key=key)
        except DataError as e:  # the object is complete and verified; only the recorded checksum is missing
            log.warning("could not record the sha256 of %s/%s: %s", bucket, key, e)

    async def _remove_quietly(self, bucket: str, key: str) -> None:
        try:
            await self._call("remove", self._client.remove_object, bucket, key, bucket=bucket, key=key)
        except DataError as e:
            log.warning("could not remove %s/%s: %s", bucket, key, e)

    def _abort_all_uploads(self, bucket: str) -> int:
        # list from the start again after each batch: aborted uploads drop out of the listing (and
        # minio 7.2's ListMultipartUploadsResult loses next_upload_id_marker)
        n = 0
        for _ in range(10000):
            res = self._client._list_multipart_uploads(bucket)
            if not res.uploads:
                break
            for u in res.uploads:
                self._client._abort_multipart_upload(bucket, u.object_name, u.upload_id or "")
                n += 1
        return n

    async def incomplete_uploads(self, bucket: str) -> list[str]:
        """Keys of multipart uploads started and neither completed nor aborted (for checks)."""

        def lst() -> list[str]:
            res = self._client._list_multipart_uploads(bucket)
            return [u.object_name for u in res.uploads]

        return await self._call("list_uploads", lst, bucket=bucket)

    # --- presigned URLs ---------------------------------------------------------------------
    async def presign_get(self, bucket: str, key: str, expires: int = 3600) -> str:
        validate_key(key)
        expires = self._check_expiry(expires)
        return await self._call(
            "presign_get",
            self._client.presigned_get_object,
            bucket,
            key,
            expires=timedelta(seconds=expires),
            bucket=bucket,
            key=key,
        )

    async def presign_put(self, bucket: str, key: str, size: int, expires: int = 3600) -> str:
        """A URL to PUT exactly *size* bytes to *key*: ``Content-Length`` is part of the signature,
        so the server refuses a body of another size."""
        validate_key(key)
        expires = self._check_expiry(expires)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidRequest("size must be the whole number of bytes the client will upload")
        if size > MAX_PART_SIZE:
            raise InvalidRequest(
                "a presigned PUT carries at most 5 GiB; upload larger files through the service"
            )
        host = self.endpoint
        for default in (":443",) if self.secure else (":80",):
            host = host.removesuffix(default)
        return sigv4.presign(
            method="PUT",
            scheme="https" if self.secure else "http",
            host=host,
            bucket=bucket,
            key=key,
            region=self.region,
            access_key=self.access_key,
            secret_key=self.secret_key,
            expires=expires,
            headers={"content-length": str(size)},
        )

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
