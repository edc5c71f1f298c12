"""``/organization/data/...``: the organization's object store (D3.6 "Data Management").

Buckets are derived, never named freely: ``<org>--u-<user>`` (a user's own) and
``<org>--p-<project>`` (a project's shared one). Who may touch which bucket is exactly what
:class:`~jupyter_heroes.data.tenancy.DataAccess` decides: ``data:home`` gives one's own bucket and
one's projects' buckets, ``data:manage`` every bucket of the organization (and alone deletes buckets
or creates them for others); another user's bucket is 403, another organization's (or any name the
platform could not have derived) 404, like a bucket that does not exist.

Downloads and uploads are streamed: a download is written and flushed chunk by chunk from the object
store, an upload (``@stream_request_body``) is fed part by part into a multipart upload as it
arrives, so neither is ever whole in memory whatever its size. An upload declares its size with
``Content-Length``; quotas are checked against it before the first byte of the body is read, and an
upload that fails or is interrupted leaves nothing behind. Presigned URLs let a client move large
files directly to or from the object store (a PUT URL is bound to the declared size).

Every mutating call is audited (``data.*`` actions). Data-layer errors are answered as JSON
``{message, reason}`` with their status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import posixpath
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

from sqlalchemy import select
from tornado import web
from tornado.http1connection import HTTP1Connection
from tornado.iostream import StreamClosedError

from ... import orm
from ...crypt import NoEncryptionKey
from ...data import names
from ...data.errors import DataError
from ...data.storage import Storage
from ...data.tenancy import SCOPE_HOME, SCOPE_MANAGE, DataAccess
from ...log import ecs
from .. import schemas
from ..auth import ApiError, get_user, is_member
from ..handlers import APIHandler, Endpoint, endpoint, routes

log = logging.getLogger("heroes.service")

TAG = "Data"
BUCKET = {
    "type": "string",
    "pattern": r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$",
    "maxLength": 63,
    "description": "a bucket from GET /organization/data/list (<org>--u-<user> or <org>--p-<project>)",
}
KEY = {
    "type": "string",
    "minLength": 1,
    "maxLength": 1024,
    "description": "object key relative to the bucket, '/' between folders (no '..', no leading '/')",
}
BUCKET_VIEW = schemas.obj(
    {
        "name": {"type": "string"},
        "kind": {"type": "string", "enum": ["user", "project"]},
        "owner": {"type": "string", "description": "the user or project the bucket belongs to"},
        "mine": {"type": "boolean", "description": "the caller's own bucket or one of their projects'"},
        "created": {**schemas.DATETIME, "nullable": True},
    }
)
OBJECT = schemas.obj(
    {
        "key": {"type": "string"},
        "size": {"type": "integer"},
        "etag": {"type": "string"},
        "last_modified": {**schemas.DATETIME, "nullable": True},
        "content_type": {"type": "string"},
        "sha256": {"type": "string", "nullable": True},
        "is_folder": {"type": "boolean"},
    }
)
OBJECT_PAGE = schemas.obj(
    {
        "bucket": {"type": "string"},
        "prefix": {"type": "string"},
        "objects": schemas.array(OBJECT),
        "folders": schemas.array({"type": "string"}, description="common prefixes (with delimiter '/')"),
        "next": {
            "type": "string",
            "nullable": True,
            "description": "pass as ?continuation= for the next page; null on the last page",
        },
    }
)
BUCKET_CREATE = schemas.obj(
    {
        "kind": {"type": "string", "enum": ["user", "project"], "description": "default: user"},
        "owner": schemas._str(
            r"^[^\x00-\x1f/]{1,128}$",
            "the user or project (default: yourself; others' buckets need data:manage)",
            128,
        ),
        "exist_ok": {"type": "boolean", "description": "answer 200 instead of 409 if it exists"},
    }
)
FOLDER_CREATE = schemas.obj(
    {"path": {**KEY, "description": "the folder to create, e.g. inputs/run1"}}, ("path",)
)
DELETE_OBJECTS = schemas.obj(
    {
        "keys": schemas.array(
            KEY, minItems=1, maxItems=1000, description="keys to delete (folder markers end in '/')"
        )
    },
    ("keys",),
)
DELETE_RESULT = schemas.obj(
    {
        "deleted": schemas.array({"type": "string"}),
        "errors": {"type": "object", "additionalProperties": {"type": "string"}},
    }
)
UPLOADED = schemas.obj(
    {
        "bucket": {"type": "string"},
        "key": {"type": "string"},
        "size": {"type": "integer"},
        "etag": {"type": "string"},
        "sha256": {"type": "string"},
        "parts": {"type": "integer"},
    }
)
PRESIGN = schemas.obj(
    {
        "bucket": BUCKET,
        "key": KEY,
        "method": {"type": "string", "enum": ["GET", "PUT"], "description": "default GET"},
        "size": {
            "type": "integer",
            "minimum": 0,
            "description": "PUT only, required: the exact number of bytes that will be sent",
        },
        "expires": {
            "type": "integer",
            "minimum": 1,
            "maximum": 7 * 24 * 3600,
            "description": "seconds the URL stays valid (default 3600)",
        },
    },
    ("bucket", "key"),
)
PRESIGNED = schemas.obj(
    {
        "url": {"type": "string"},
        "method": {"type": "string"},
        "expires": {"type": "integer"},
        "headers": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "headers the request must carry (Content-Length of a PUT is signed)",
        },
    }
)
BUCKET_QUERY = {"bucket": BUCKET}


class DataMixin:
    """The caller's :class:`DataAccess` and the mapping of data-layer errors to API errors."""

    def require_data_scope(self: Any) -> None:
        if not (self.context.has(SCOPE_HOME) or self.context.has(SCOPE_MANAGE)):
            raise ApiError(
                403,
                f"{self.caller_name()} lacks the scope {SCOPE_HOME} (or {SCOPE_MANAGE}) in organization "
                f"{self.org.name}: ask an administrator of the organization for a role that grants it "
                "(e.g. researcher)",
                "missing_scope",
            )

    def storage(self: Any) -> Storage:
        try:
            storage = self.heroes.org_stores.storage(self.org.id)
        except (NoEncryptionKey, ValueError) as e:
            log.error(
                "cannot use the object store of %s: %s",
                self.org.name,
                e,
                extra=ecs("data.store", "failure", organization=self.org.name, reason="store_credentials"),
            )
            raise ApiError(
                503,
                f"the object store of {self.org.name} cannot be used: its credentials cannot be decrypted "
                "with the service's key; the operator finds the cause in the service log",
                "store_credentials",
            ) from None
        if storage is None:
            raise ApiError(
                409,
                f"organization {self.org.name} has no object store yet: a platform administrator registers "
                f"one with POST /heroes/admin/organizations/{self.org.name}/servers",
                "no_object_store",
            )
        return storage

    def data_access(self: Any) -> DataAccess:
        """The caller's view of the organization's object store (scopes checked first)."""
        self.require_data_scope()
        ctx = self.context
        projects: list[str] = []
        if ctx.user is not None:
            q = (
                select(orm.Project.name)
                .join(orm.ProjectMember, orm.ProjectMember.project_id == orm.Project.id)
                .where(orm.ProjectMember.user_id == ctx.user.id, orm.Project.org_id == self.org.id)
            )
            projects = list(self.db.scalars(q))
        storage = self.storage()
        quotas = self.heroes.quota_policy.quotas_for(self.org.name)
        access = DataAccess(
            self.org.name, self.caller_name(), projects, ctx.scopes, storage=storage, quotas=quotas
        )
        self.db.commit()  # no transaction across the awaits that follow
        return access

    @contextlib.contextmanager
    def data_errors(self: Any) -> Iterator[None]:
        try:
            yield
        except DataError as e:
            if e.status >= 500:
                log.warning(
                    "object store of %s: %s (%s)",
                    self.org.name,
                    e.message,
                    e.reason,
                    extra=ecs("data.error", "failure", organization=self.org.name, reason=e.reason),
                )
            raise ApiError(e.status, e.message, e.reason) from None

    def raw_arg(self: Any, name: str) -> str | None:
        """A query parameter exactly as sent: tornado's own accessors strip white space and turn
        control characters into spaces, which would silently change an object key."""
        values = self.request.query_arguments.get(name)
        if not values:
            return None
        try:
            return values[-1].decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, f"query parameter '{name}' is not UTF-8 text", "invalid_field") from None

    def required(self: Any, name: str) -> str:
        value = self.raw_arg(name)
        if value is None or value == "":
            raise ApiError(400, f"give the query parameter '{name}'", "invalid_field")
        return value


class DataHandler(DataMixin, APIHandler):
    tag = TAG
    path_params = {"bucket": BUCKET}


class BucketListAPIHandler(DataHandler):
    path = "/organization/data/list"

    @endpoint(summary="Buckets you may use", response=schemas.array(BUCKET_VIEW))
    async def get(self) -> list[dict[str, Any]]:
        """Your own bucket and your projects' (``data:home``), or every bucket of the organization
        (``data:manage``), your own first. Buckets not created yet are not listed."""
        access = self.data_access()
        with self.data_errors():
            return [b.to_json() for b in await access.list_buckets()]


class BucketSizeAPIHandler(DataHandler):
    path = "/organization/data/size"

    @endpoint(
        summary="Size of a bucket",
        response=schemas.obj(
            {"bucket": {"type": "string"}, "bytes": {"type": "integer"}, "objects": {"type": "integer"}}
        ),
        query=BUCKET_QUERY,
    )
    async def get(self) -> dict[str, Any]:
        bucket = self.required("bucket")
        access = self.data_access()
        with self.data_errors():
            usage = await access.bucket_usage(bucket)
        return {"bucket": bucket, "bytes": usage.bytes, "objects": usage.objects}


class BucketAPIHandler(DataHandler):
    path = "/organization/data/bucket"

    @endpoint(
        summary="Create your bucket or a project's",
        body=BUCKET_CREATE,
        response=BUCKET_VIEW,
        status=201,
        action="data.bucket.create",
        errors=(409,),
    )
    async def post(self) -> dict[str, Any]:
        """Names are derived: ``{"kind": "user"}`` creates your own bucket, ``{"kind": "project",
        "owner": "<project>"}`` one of your projects'. Data managers (``data:manage``) may create
        them for any user or project of the organization."""
        body = self.body
        kind, owner = body.get("kind", "user"), body.get("owner")
        if kind == "user":
            self.audit(names.user_bucket(self.org.name, owner or self.caller_name()), kind=kind)
        elif owner:
            self.audit(names.project_bucket(self.org.name, owner), kind=kind)
        if owner is not None:
            self.check_owner(kind, owner)
        access = self.data_access()
        with self.data_errors():
            access.bucket_name(kind, owner)  # the caller's rights on it
            view = await access.create_bucket(kind, owner, exist_ok=bool(body.get("exist_ok")))
        return view.to_json()

    def check_owner(self, kind: str, owner: str) -> None:
        """Buckets are made only for users and projects that exist in the organization."""
        if kind == "project":
            q = select(orm.Project.id).where(orm.Project.org_id == self.org.id, orm.Project.name == owner)
            if self.db.scalar(q) is None:
                raise ApiError(404, f"project '{owner[:128]}' not found in {self.org.name}", "not_found")
        elif owner != self.caller_name():
            user = get_user(self.db, owner)
            if user is None or not is_member(self.db, user, self.org):
                raise ApiError(404, f"user '{owner[:128]}' is not a member of {self.org.name}", "not_found")

    @endpoint(
        summary="Delete a bucket (data managers)",
        status=204,
        action="data.bucket.delete",
        query={
            **BUCKET_QUERY,
            "force": {
                "type": "string",
                "enum": ["true", "false"],
                "default": "false",
                "description": "also delete every object in it (a non-empty bucket needs it)",
            },
        },
        errors=(409,),
    )
    async def delete(self) -> None:
        bucket = self.required("bucket")
        force = self.query_args.get("force") == "true"
        self.audit(bucket, force=force)
        access = self.data_access()
        with self.data_errors():
            await access.delete_bucket(bucket, force=force)
        return None


class BucketObjectsAPIHandler(DataHandler):
    path = "/organization/data/bucket/{bucket}"

    @endpoint(
        summary="Create a folder in a bucket",
        body=FOLDER_CREATE,
        response=OBJECT,
        status=201,
        action="data.folder.create",
    )
    async def post(self, bucket: str) -> dict[str, Any]:
        """D3.6 writes this path with a trailing slash (``POST .../bucket/{bucket}/``); both work. The
        folder is an empty object ``<path>/``, which S3 browsers and rclone show as a folder."""
        self.path_arg("bucket", bucket, "bucket")
        self.audit(f"{bucket}/{self.body['path']}")
        access = self.data_access()
        with self.data_errors():
            info = await access.create_folder(bucket, self.body["path"])
        return info.to_json()

    @endpoint(
        summary="Delete objects from a bucket",
        body=DELETE_OBJECTS,
        response=DELETE_RESULT,
        action="data.objects.delete",
    )
    async def delete(self, bucket: str) -> dict[str, Any]:
        """Body ``{"keys": [...]}`` (at most 1000). Keys that do not exist count as deleted (S3
        semantics); keys the store refused are listed under ``errors``."""
        self.path_arg("bucket", bucket, "bucket")
        keys = self.body["keys"]
        self.audit(bucket, keys=keys[:20], count=len(keys))
        access = self.data_access()
        with self.data_errors():
            result = await access.delete_objects(bucket, keys)
        return {"deleted": result.deleted, "errors": result.errors}


class ObjectListAPIHandler(DataHandler):
    path = "/organization/data/bucket/{bucket}/list"

    @endpoint(
        summary="List the objects of a bucket (paged)",
        response=OBJECT_PAGE,
        query={
            "prefix": {"type": "string", "maxLength": 1024, "default": "", "description": "e.g. inputs/"},
            "delimiter": {
                "type": "string",
                "enum": ["/", ""],
                "default": "/",
                "description": "'/' rolls keys up into folders; empty lists recursively",
            },
            "continuation": {
                "type": "string",
                "maxLength": 4096,
                "description": "'next' of the previous page",
            },
            "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 1000},
        },
    )
    async def get(self, bucket: str) -> dict[str, Any]:
        self.path_arg("bucket", bucket, "bucket")
        q = self.query_args
        prefix = self.raw_arg("prefix") or ""
        access = self.data_access()
        with self.data_errors():
            page = await access.list_objects(
                bucket,
                prefix,
                delimiter=q.get("delimiter") or None,
                token=q.get("continuation") or None,
                max_keys=q.get("limit", 1000),
            )
        return {
            "bucket": bucket,
            "prefix": prefix,
            # the folder marker of the listed folder itself is not one of its entries
            "objects": [o.to_json() for o in page.objects if not (prefix.endswith("/") and o.key == prefix)],
            "folders": page.prefixes,
            "next": page.next_token,
        }


class DownloadAPIHandler(DataHandler):
    path = "/organization/data/download"
    #: the answer is the object's bytes (documented as application/octet-stream)
    binary_response = "get"
    binary_headers = {
        "Content-Length": "the object's size in bytes",
        "ETag": "the object's ETag in the object store",
        "X-Heroes-Sha256": "the SHA-256 of the content, when recorded at upload",
        "Content-Disposition": "attachment, with the key's last segment as file name",
    }

    @endpoint(
        summary="Download an object (streamed, application/octet-stream)",
        query={**BUCKET_QUERY, "key": KEY},
        errors=(502, 503),
    )
    async def get(self) -> None:
        """The answer is the object's bytes (``Content-Type: application/octet-stream``,
        ``Content-Length``, ``ETag``, ``X-Heroes-Sha256`` when recorded), streamed from the object store
        chunk by chunk. The read is pinned to the version inspected first: an object replaced during the
        download ends the transfer early (the connection is closed short of Content-Length) rather than
        mixing versions."""
        bucket, key = self.required("bucket"), self.required("key")
        access = self.data_access()
        with self.data_errors():
            info, chunks = await access.open_download(bucket, key)
        if info.is_folder:
            await chunks.aclose()  # type: ignore[attr-defined]
            raise ApiError(400, f"{key!r} is a folder; download the files in it", "is_folder")
        self.ecs_fields["heroes.data.bytes"] = info.size
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Content-Length", str(info.size))
        name = posixpath.basename(key) or "download"
        self.set_header("Content-Disposition", f"attachment; filename*=UTF-8''{quote(name, safe='')}")
        if info.etag:
            self.set_header("ETag", f'"{info.etag}"')
        if info.sha256:
            self.set_header("X-Heroes-Sha256", info.sha256)
        sent = 0
        try:
            async with contextlib.aclosing(chunks):  # type: ignore[type-var]
                async for chunk in chunks:
                    self.write(chunk)
                    sent += len(chunk)
                    await self.flush()  # waits until the socket took it: the client sets the pace
        except StreamClosedError:
            return  # the client went away; the object-store read was closed
        except DataError as e:
            if sent == 0 and not self._headers_written:
                with self.data_errors():
                    raise
            log.warning(
                "download of %s/%s stopped after %d of %d bytes: %s",
                bucket,
                key,
                sent,
                info.size,
                e.message,
                extra=ecs("data.download", "failure", organization=self.org.name, reason=e.reason),
            )
            conn = self.request.connection
            if isinstance(conn, HTTP1Connection):
                conn.close()  # short of Content-Length: the client sees the failure
            return
        self.finish()


@web.stream_request_body
class UploadAPIHandler(DataHandler):
    """The body streams through :meth:`data_received` into a bounded queue that the multipart upload
    consumes, so memory stays bounded whatever the size; tornado stops reading the socket while the
    queue is full."""

    path = "/organization/data/upload"
    #: the request body is the file's bytes (documented as application/octet-stream)
    binary_request = "post"
    _task: asyncio.Task[Any] | None = None
    _expected: int | None = None  # Content-Length, once checked
    _received = 0
    #: chunks (tornado reads at most 64 KiB at a time) waiting between the socket and the upload
    queue_depth = 64

    @endpoint(
        summary="Upload an object (the request body, streamed)",
        query={**BUCKET_QUERY, "key": KEY},
        response=UPLOADED,
        status=201,
        action="data.upload",
        errors=(409, 411, 413, 502, 503),
    )
    async def post(self) -> dict[str, Any]:
        """Send the file's bytes as the request body (any ``Content-Type``; it is stored with the
        object) with ``Content-Length``: chunked uploads are refused (411), since the size is checked
        against the quotas and ``c.HeroesService.max_upload_size`` before a byte is read (413). An
        existing object of that key is replaced. The body goes to the object store as it arrives
        (multipart, verified part by part); if the upload fails or the connection drops, nothing is
        stored."""
        task = self._task
        if task is None:  # pragma: no cover - prepare() always starts it or answers an error
            raise ApiError(500, "the upload did not start", "internal_error")
        if not task.done():
            await self._queue.put(None)  # end of the body
        with self.data_errors():
            result = await task
        return {
            "bucket": result.bucket,
            "key": result.key,
            "size": result.size,
            "etag": result.etag,
            "sha256": result.sha256,
            "parts": result.parts,
        }

    async def prepare(self) -> None:
        self._task: asyncio.Task[Any] | None = None
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(self.queue_depth)
        await super().prepare()
        if self.request.method != "POST":
            return
        # everything is decided before the first byte of the body is read
        ep: Endpoint = type(self).post.__heroes_endpoint__  # type: ignore[attr-defined]
        self.endpoint = ep
        self.authorize(ep)
        self.query_args = self.parse_query(ep.query)
        bucket, key = self.required("bucket"), self.required("key")
        self.audit(f"{bucket}/{key}")
        size = self._declared_size()
        self.audit(size=size)
        self.ecs_fields["heroes.data.bytes"] = size
        ctype = self.request.headers.get("Content-Type", "").strip()
        if not ctype or len(ctype) > 255 or not ctype.isprintable():
            ctype = "application/octet-stream"
        access = self.data_access()
        stack = contextlib.AsyncExitStack()
        with self.data_errors():
            names.validate_key(key)
            await stack.enter_async_context(access.reserve(bucket, size, key=key))
        # the server-wide body limit is for JSON requests; this one streams
        conn = self.request.connection
        if isinstance(conn, HTTP1Connection):
            conn.set_max_body_size(max(size, 1))
        self._task = asyncio.ensure_future(self._upload(stack, access.storage, bucket, key, size, ctype))
        self._task.add_done_callback(self._upload_done)

    def set_default_headers(self) -> None:
        super().set_default_headers()
        if self.request.method == "POST" and (self._expected is None or self._received < self._expected):
            # answered before the whole body was read: tornado closes the connection after this
            # answer, so say so (a proxy must not send the next request on it)
            self.set_header("Connection", "close")

    def _declared_size(self) -> int:
        headers = self.request.headers
        if "Transfer-Encoding" in headers or "Content-Length" not in headers:
            raise ApiError(
                411,
                "send the file with a Content-Length header (its size in bytes); chunked uploads are not "
                "accepted because the size is checked against your quota first",
                "length_required",
            )
        raw = headers["Content-Length"].strip()
        if not raw.isdigit():
            raise ApiError(400, "Content-Length must be a whole number of bytes", "invalid_field")
        size = int(raw)
        self._expected = size
        limit = self.heroes.max_upload_size
        if size > limit:
            raise ApiError(
                413,
                f"the file is {size} bytes, more than the largest upload of {limit} bytes "
                "(c.HeroesService.max_upload_size); split it, or ask for a presigned URL",
                "upload_too_large",
            )
        return size

    async def _upload(
        self, stack: contextlib.AsyncExitStack, storage: Storage, bucket: str, key: str, size: int, ctype: str
    ) -> Any:
        async with stack:  # the quota reservation ends with the upload
            return await storage.upload(bucket, key, self._body(), size, content_type=ctype)

    async def _body(self) -> AsyncIterator[bytes]:
        while True:
            chunk = await self._queue.get()
            if chunk is None:
                return
            yield chunk

    def _upload_done(self, task: asyncio.Task[Any]) -> None:
        # a failed upload reads no more: empty the queue so a blocked data_received() goes on
        # (what still arrives is discarded) and post() reports the error
        if task.cancelled() or task.exception() is not None:
            while not self._queue.empty():
                self._queue.get_nowait()

    async def data_received(self, chunk: bytes) -> None:
        self._received += len(chunk)
        task = self._task
        if task is None or task.done() or self._finished:
            return
        await self._queue.put(chunk)  # waits while the queue is full: tornado stops reading

    def on_connection_close(self) -> None:
        # the client went away mid-body: abort the multipart upload, nothing is stored
        if self._task is not None and not self._task.done():
            self._task.cancel()
        super().on_connection_close()

    def on_finish(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        super().on_finish()


class PresignAPIHandler(DataHandler):
    path = "/organization/data/presign"

    @endpoint(
        summary="A presigned URL to download or upload one object directly",
        body=PRESIGN,
        response=PRESIGNED,
        action="data.presign",
    )
    async def post(self) -> dict[str, Any]:
        """``GET``: the object must exist. ``PUT``: give ``size``, checked against your quota now;
        ``Content-Length`` is part of the signature, so the object store refuses a body of another
        size. The URL goes straight to the organization's object store, which must be reachable
        from where it is used."""
        body = self.body
        bucket, key = body["bucket"], body["key"]
        method = body.get("method", "GET")
        expires = body.get("expires", 3600)
        self.audit(f"{bucket}/{key}", method=method, expires=expires)
        if method == "PUT" and "size" not in body:
            raise ApiError(400, "give 'size', the exact number of bytes you will PUT", "invalid_field")
        access = self.data_access()
        headers: dict[str, str] = {}
        with self.data_errors():
            if method == "GET":
                url = await access.presign_get(bucket, key, expires)
            else:
                url = await access.presign_put(bucket, key, body["size"], expires)
                headers["Content-Length"] = str(body["size"])
        return {"url": url, "method": method, "expires": expires, "headers": headers}


default_handlers = routes(
    BucketListAPIHandler,
    BucketSizeAPIHandler,
    BucketAPIHandler,
    ObjectListAPIHandler,
    BucketObjectsAPIHandler,
    DownloadAPIHandler,
    UploadAPIHandler,
    PresignAPIHandler,
)
