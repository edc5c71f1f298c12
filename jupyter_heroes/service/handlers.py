"""Base class of every REST handler of the HEROES service, and the ``@endpoint`` declaration.

A resource module (``apihandlers/<resource>.py``) declares handlers like this::

    class UserListAPIHandler(APIHandler):
        path = "/organization/admin/users"

        @endpoint(summary="List the organization's users", scope="users:manage", response=schemas.MEMBER_LIST)
        def get(self):
            return [...]                       # written as JSON with the declared status

    default_handlers = routes(UserListAPIHandler)

The declaration is used three times: the decorator enforces it (authentication, organization
selection, the ``custom:heroes:*`` scope, body size, JSON parsing and schema validation, audit
action); :mod:`.openapi` publishes it; the tests read it to cover every endpoint.

Errors are JSON ``{message, reason}`` with no traceback (:meth:`APIHandler.write_error`), and every
mutating call (POST/PATCH/PUT/DELETE), allowed or not, leaves an audit row and an ECS log line
(:meth:`APIHandler.on_finish`).
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from jupyterhub.services.auth import HubOAuthenticated, UserNotAllowed
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from tornado import web
from tornado.httputil import responses

from .. import dbutil, orm
from ..log import audit_log, ecs, redact_text, strip_query
from . import schemas
from .auth import ORG_HEADER, ORG_QUERY, ApiError, OrgContext, full_scope, select_org

if TYPE_CHECKING:
    from .app import HeroesService

log = logging.getLogger("heroes.service")

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: largest id of an Integer primary key (PostgreSQL's integer)
MAX_ID = 2**31 - 1
_PARAM_RE = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True)
class Endpoint:
    """What one HTTP method of one handler does and needs (see :func:`endpoint`)."""

    summary: str
    scope: str | None = None
    platform: bool = False
    org: bool = True
    body: dict[str, Any] | None = None
    response: dict[str, Any] | None = None
    status: int = 200
    action: str | None = None
    query: dict[str, dict[str, Any]] = field(default_factory=dict)
    description: str = ""
    errors: tuple[int, ...] = ()
    method: str = ""


def endpoint(
    *,
    summary: str,
    scope: str | None = None,
    platform: bool = False,
    org: bool = True,
    body: dict[str, Any] | None = None,
    response: dict[str, Any] | None = None,
    status: int = 200,
    action: str | None = None,
    query: dict[str, dict[str, Any]] | None = None,
    description: str = "",
    errors: tuple[int, ...] = (),
) -> Callable:
    """Declare an API method.

    *scope*: the ``custom:heroes:*`` scope required (short names allowed: ``"users:manage"``), held in
    the selected organization, or in the platform organization if *platform*. *org*: whether the
    request acts in an organization selected by ``X-Heroes-Organization`` / ``?organization=``.
    *body*: JSON schema the request body must satisfy (parsed into ``self.body``). *response*: schema
    of the answer, written with *status*. *action*: the audit/ECS ``event.action`` of a mutating call.
    *query*: query parameters (name -> schema) accepted. The decorated method may be sync or async;
    it returns the JSON answer (or ``None`` for an empty 204).
    """

    def decorate(fn: Callable) -> Callable:
        ep = Endpoint(
            summary=summary,
            scope=full_scope(scope) if scope else None,
            platform=platform,
            org=org,
            body=body,
            response=response,
            status=status,
            action=action,
            query=dict(query or {}),
            description=description or (inspect.getdoc(fn) or ""),
            errors=errors,
            method=fn.__name__.upper(),
        )

        @functools.wraps(fn)
        async def wrapper(self: APIHandler, *args: Any, **kwargs: Any) -> None:
            self.endpoint = ep
            kwargs = {k: v for k, v in kwargs.items() if v is not None}
            try:
                self.authorize(ep)
                if ep.body is not None:
                    self.body = self.parse_body(ep.body)
                self.query_args = self.parse_query(ep.query)
                self.db.commit()  # end the read transaction of authorization: no transaction across awaits
                result = fn(self, *args, **kwargs)
                if inspect.isawaitable(result):
                    result = await result
            except IntegrityError:
                self.db.rollback()
                raise ApiError(
                    409,
                    "the change conflicts with an existing object (perhaps made concurrently); reload and retry",
                    "conflict",
                ) from None
            if self._finished:
                return
            if result is None and ep.status == 204:
                self.set_status(204)
                self.finish()
            else:
                self.write_json(result, ep.status)

        wrapper.__heroes_endpoint__ = ep  # type: ignore[attr-defined]
        return wrapper

    return decorate


def json_default(o: Any) -> Any:
    if isinstance(o, datetime):
        return o.isoformat(timespec="seconds") + "Z"
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    if isinstance(o, bytes):
        raise TypeError("refusing to serialize bytes (a secret?) into an API answer")
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


class BaseHandler(HubOAuthenticated, web.RequestHandler):
    """JSON errors, security headers, the database session and hub authentication."""

    @property
    def heroes(self) -> HeroesService:
        return self.settings["heroes"]

    @property
    def api_prefix(self) -> str:
        return self.settings["api_prefix"]

    @property
    def db(self) -> Session:
        """A session for this request; commit before any ``await``."""
        if getattr(self, "_db", None) is None:
            self._db = self.settings["db_factory"]()
        return self._db

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")

    def check_xsrf_cookie(self) -> None:
        # token-authenticated requests need no xsrf; cookie-authenticated ones are checked by HubOAuth
        return self.hub_auth.check_xsrf_cookie(self)

    async def prepare(self) -> None:
        self.ctx: OrgContext | None = None
        self.audit_org_id: int | None = None
        self.audit_org_name: str | None = None
        self.audit_target = ""
        self.audit_action: str | None = None
        self.audit_detail: dict[str, Any] = {}
        self.error_reason = ""
        self.error_message = ""
        self.ecs_fields: dict[str, Any] = {}
        # authenticate without blocking the loop: HubAuth.get_user(sync=False) awaits the hub's answer
        try:
            model = await self.hub_auth.get_user(self, sync=False)
        except web.HTTPError as e:
            if e.status_code < 500:
                raise
            log.error(
                "cannot check credentials with the hub: %s",
                e.log_message,
                extra=ecs("hub.auth", "failure", reason="hub_unavailable"),
            )
            raise ApiError(
                503,
                "the HEROES service cannot check your credentials with JupyterHub right now; retry in a "
                "moment (the operator finds the cause in the service log)",
                "hub_unavailable",
            ) from None
        if model:
            try:
                model = self.check_hub_user(model)
            except UserNotAllowed:
                raise ApiError(
                    403,
                    f"{model.get('kind', 'user')} {model.get('name')} may not use the HEROES service: the token "
                    "lacks the access:services!service=heroes scope",
                    "hub_scope_missing",
                ) from None
        self._hub_auth_user_cache = model or None

    # --- errors ----------------------------------------------------------------------------------
    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message: str
        reason: str
        if getattr(self, "_db", None) is not None:
            self._db.rollback()
        if isinstance(exc, ApiError):
            message, reason = exc.message, exc.reason or "error"
        elif isinstance(exc, web.HTTPError) and status_code < 500:
            message, reason = self.default_error(status_code, exc)
        else:
            message = (
                "internal error in the HEROES service; it has been logged for the operator, "
                "retry later or report it with the time of the request"
            )
            reason = "internal_error"
        self.error_message, self.error_reason = message, reason
        self.clear()
        self.set_status(status_code)
        self.set_default_headers()
        if status_code == 405:
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        self.finish(json.dumps({"message": message, "reason": reason}))

    def default_error(self, status_code: int, exc: web.HTTPError) -> tuple[str, str]:
        if status_code == 405:
            return (
                f"{self.request.method} is not allowed on {self.request.path}; allowed: "
                f"{', '.join(self.allowed_methods()) or 'none'}",
                "method_not_allowed",
            )
        if status_code == 404:
            return (
                f"no such endpoint: {self.request.path}; the API is described at {self.api_prefix}/openapi.json",
                "not_found",
            )
        if status_code in (401, 403) and not self.current_user:
            return self.unauthenticated_message(), "not_authenticated"
        text = exc.log_message % exc.args if exc.log_message and exc.args else (exc.log_message or "")
        return redact_text(text) or responses.get(status_code, "error"), responses.get(
            status_code, "error"
        ).lower().replace(" ", "_")

    def unauthenticated_message(self) -> str:
        return (
            "authentication required: send 'Authorization: token <your JupyterHub API token>' "
            "(create one on the hub's token page) or log in through the hub"
        )

    def allowed_methods(self) -> list[str]:
        return [
            m
            for m in ("GET", "POST", "PATCH", "PUT", "DELETE")
            if hasattr(getattr(type(self), m.lower(), None), "__heroes_endpoint__")
        ]

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, ApiError):
            return  # expected; logged with the request
        if isinstance(value, web.HTTPError) and value.status_code < 500:
            return
        log.error(
            "unexpected error in %s %s",
            self.request.method,
            strip_query(self.request.uri or ""),
            exc_info=(typ, value, tb),
            extra=ecs("api.error", "failure", method=self.request.method, path=self.request.path, status=500),
        )

    # --- audit ---------------------------------------------------------------------------------
    def finish(self, chunk: Any = None) -> Any:
        # audit before the answer leaves: a client that sees the answer finds the entry
        if self.request.method in MUTATING and not getattr(self, "_audited", False):
            self._audited = True
            self.write_audit()
        return super().finish(chunk)

    def on_finish(self) -> None:
        try:
            if self.request.method in MUTATING and not getattr(self, "_audited", False):
                self._audited = True  # finished without finish() (e.g. the client went away)
                self.write_audit()
        finally:
            if getattr(self, "_db", None) is not None:
                self._db.close()
                self._db = None

    def outcome(self) -> str:
        status = self.get_status()
        if status < 400:
            return "success"
        if status in (401, 403):
            return "denied"
        return "failure"

    def caller_name(self) -> str:
        model = self.current_user
        if not model:
            return ""
        return model["name"] if model.get("kind", "user") == "user" else f"service:{model['name']}"

    def write_audit(self) -> None:
        ep: Endpoint | None = getattr(self, "endpoint", None)
        action = getattr(self, "audit_action", None) or (ep.action if ep and ep.action else "")
        action = action or f"{self.request.method.lower()} {self.request.path}"
        status = self.get_status()
        outcome = self.outcome()
        detail = dict(getattr(self, "audit_detail", {}) or {})
        if status >= 400:
            detail.update(reason=self.error_reason, message=self.error_message)
        user = self.caller_name()
        org_id = getattr(self, "audit_org_id", None)
        org_name = getattr(self, "audit_org_name", None)
        target = getattr(self, "audit_target", "") or ""
        path = self.request.path[:1024]
        try:
            with dbutil.session_scope(self.settings["db_factory"]) as s:
                s.add(
                    orm.AuditEntry(
                        org_id=org_id,
                        user=user,
                        action=action[:128],
                        method=self.request.method,
                        path=path,
                        target=target[:255],
                        status=status,
                        outcome=outcome,
                        detail=detail,
                    )
                )
        except Exception:  # an audit failure must be visible but not break the answer
            log.exception(
                "could not write the audit row for %s %s",
                self.request.method,
                path,
                extra=ecs("audit.write", "failure"),
            )
        audit_log.info(
            "%s %s by %s: %s (%d)",
            action,
            target or path,
            user or "(unauthenticated)",
            outcome,
            status,
            extra=ecs(
                action,
                outcome,
                organization=org_name,
                user=user or None,
                method=self.request.method,
                path=path,
                status=status,
                reason=self.error_reason or None,
                heroes__target=target or None,
                **{k.replace(".", "__"): v for k, v in getattr(self, "ecs_fields", {}).items()},
            ),
        )

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(data, default=json_default))


class APIHandler(BaseHandler):
    """Base of every ``/api/v1`` handler: a class per path (``path`` attribute, ``{param}`` segments)."""

    path: str = ""
    tag: str = ""
    #: schemas of the ``{param}`` segments of :attr:`path` (default: a slug)
    path_params: dict[str, dict[str, Any]] = {}

    endpoint: Endpoint | None = None
    body: Any = None
    query_args: dict[str, Any]

    # --- authorization ---------------------------------------------------------------------------
    def authorize(self, ep: Endpoint) -> None:
        if not self.current_user:
            raise ApiError(401, self.unauthenticated_message(), "not_authenticated")
        self.check_body_size()
        if ep.org:
            requested = self.requested_org()
            self.ctx = select_org(self.db, self.caller_name(), requested, self.heroes.platform_org)
            self.audit_org_id, self.audit_org_name = self.ctx.org.id, self.ctx.org.name
            if ep.scope and ep.scope not in self.ctx.scopes:
                raise ApiError(
                    403,
                    f"{self.caller_name()} lacks the scope {ep.scope} in organization {self.ctx.org.name}: "
                    "ask an administrator of the organization for a role that grants it",
                    "missing_scope",
                )
            self.ecs_fields["heroes.organization"] = self.ctx.org.name
        elif ep.scope:
            held = self.platform_scopes() if ep.platform else frozenset()
            if ep.scope not in held:
                raise ApiError(
                    403,
                    f"{self.caller_name()} lacks the scope {ep.scope} in the platform organization "
                    f"{self.heroes.platform_org}: only platform administrators may do this",
                    "missing_scope",
                )

    def platform_scopes(self) -> frozenset[str]:
        from .auth import get_user, platform_scopes

        return frozenset(
            platform_scopes(self.db, get_user(self.db, self.caller_name()), self.heroes.platform_org)
        )

    def requested_org(self) -> str | None:
        header = self.request.headers.get(ORG_HEADER, "").strip() or None
        query = self.get_query_argument(ORG_QUERY, None)
        query = query.strip() if query else None
        if header and query and header != query:
            raise ApiError(
                400,
                f"the {ORG_HEADER} header ({header}) and ?{ORG_QUERY}= ({query}) name different organizations; "
                "send one of them",
                "organization_conflict",
            )
        return header or query

    # --- input -----------------------------------------------------------------------------------
    def check_body_size(self) -> None:
        limit = self.heroes.max_body_size
        size = len(self.request.body or b"")
        if size > limit:
            raise ApiError(
                400,
                f"the request body is {size} bytes, more than the limit of {limit} bytes "
                "(c.HeroesService.max_body_size)",
                "body_too_large",
            )

    def parse_body(self, schema: dict[str, Any]) -> Any:
        raw = self.request.body or b""
        ctype = self.request.headers.get("Content-Type", "application/json").split(";")[0].strip().lower()
        if raw and ctype not in ("application/json", "") and not ctype.endswith("+json"):
            raise ApiError(
                400,
                f"send the body as JSON (Content-Type: application/json), not {ctype[:60]}",
                "unsupported_content_type",
            )
        if not raw.strip():
            raise ApiError(400, "the request body is empty; send a JSON object", "invalid_json")
        try:
            text = raw.decode("utf-8")
            body = json.loads(text, parse_constant=_reject_constant)
        except UnicodeDecodeError:
            raise ApiError(400, "the request body is not UTF-8 text", "invalid_json") from None
        except json.JSONDecodeError as e:
            raise ApiError(
                400,
                f"malformed JSON in the request body: {e.msg} at line {e.lineno} column {e.colno}",
                "invalid_json",
            ) from None
        except ValueError as e:
            raise ApiError(400, f"malformed JSON in the request body: {e}", "invalid_json") from None
        bad = _bad_text(body)
        if bad is not None:
            where = f"field '{bad}'" if bad else "the request body"
            raise ApiError(400, f"{where} holds a NUL character or an unpaired surrogate", "invalid_field")
        self.validate(body, schema)
        return body

    def validate(self, body: Any, schema: dict[str, Any]) -> None:
        problem = schemas.validate_body(body, schema)
        if problem:
            raise ApiError(400, problem, "invalid_field")

    def parse_query(self, declared: dict[str, dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, schema in declared.items():
            raw = self.get_query_argument(name, None)
            if raw is None:
                if "default" in schema:
                    out[name] = schema["default"]
                continue
            value: Any = raw
            if _bad_text(raw) is not None:
                raise ApiError(400, f"query parameter '{name}' holds a NUL character", "invalid_field")
            if schema.get("type") in ("integer", "number"):
                kind = schema["type"]
                try:
                    value = int(raw) if kind == "integer" else float(raw)
                except ValueError:
                    raise ApiError(
                        400,
                        f"query parameter '{name}' must be an {kind}"
                        if kind == "integer"
                        else f"query parameter '{name}' must be a number",
                        "invalid_field",
                    ) from None
                if value != value or value in (float("inf"), float("-inf")):
                    raise ApiError(400, f"query parameter '{name}' must be a finite number", "invalid_field")
            problem = schemas.validate_body({name: value}, {"type": "object", "properties": {name: schema}})
            if problem:
                raise ApiError(400, problem.replace("field", "query parameter", 1), "invalid_field")
            out[name] = value
        return out

    def path_arg(self, name: str, value: str, what: str) -> str:
        """Check a ``{param}`` segment; one that cannot name an object is simply not found."""
        schema = self.path_params.get(name, schemas.REF)
        if schemas.validate_body(value, schema):
            raise ApiError(404, f"{what} '{value[:80]}' not found", "not_found")
        return value

    def int_arg(self, value: str, what: str) -> int:
        """A ``{..._id}`` segment: database ids are positive 32-bit integers; anything else is not found."""
        if not value.isdigit() or len(value) > 10 or not 0 < int(value) <= MAX_ID:
            raise ApiError(404, f"{what} '{value[:80]}' not found", "not_found")
        return int(value)

    # --- helpers for resource handlers -------------------------------------------------------------
    @property
    def context(self) -> OrgContext:
        """The selected organization and the caller's scopes there (endpoints with ``org=True``)."""
        assert self.ctx is not None, "endpoint declared org=False"
        return self.ctx

    @property
    def org(self) -> orm.Organization:
        return self.context.org

    def audit(self, target: str = "", *, action: str | None = None, **detail: Any) -> None:
        """Record the object a mutating call acts on (and non-secret details) for the audit row;
        *action* overrides the endpoint's declared one."""
        if target:
            self.audit_target = target
        if action:
            self.audit_action = action
        self.audit_detail.update(detail)


def _bad_text(value: Any, where: str = "") -> str | None:
    """Where (dotted path) a string holds text no database stores (NUL, lone surrogates), else None."""
    if isinstance(value, str):
        if "\x00" in value:
            return where
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            sub = f"{where}.{k}" if where else str(k)
            if _bad_text(k, sub) is not None:
                return sub
            found = _bad_text(v, sub)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = _bad_text(v, f"{where}[{i}]")
            if found is not None:
                return found
    return None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def path_regex(template: str) -> str:
    """``/a/{name}/b`` -> ``/a/(?P<name>[^/]+)/b/?`` (a trailing slash is accepted)."""
    return _PARAM_RE.sub(lambda m: f"(?P<{m.group(1)}>[^/]+)", template.rstrip("/")) + "/?"


def routes(*handlers: type[APIHandler]) -> list[tuple[str, type[APIHandler]]]:
    """The ``default_handlers`` of a resource module: ``(regex relative to /api/v1, handler)``."""
    return [(path_regex(h.path), h) for h in handlers]


class NotFoundHandler(BaseHandler):
    """Every unknown path under the service: JSON 404, whatever the method."""

    async def prepare(self) -> None:
        await super().prepare()
        raise web.HTTPError(404)


class RootHandler(BaseHandler):
    """``<prefix>/``: a browser landing here logs in through the hub (OAuth) and is sent to ``me``."""

    @web.authenticated
    def get(self) -> None:
        self.redirect(f"{self.api_prefix}/organization/auth/me")
