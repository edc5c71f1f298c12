"""The OpenAPI 3 document of the REST API, generated from the ``@endpoint`` declarations.

Served at ``<prefix>/api/v1/openapi.json`` (no authentication needed: it describes, it does not
reveal). Since it is built from the same declarations the handlers enforce, it cannot drift from
them; ``tests/service/test_openapi.py`` checks it against the routes and schemathesis checks the
running service against it.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from .. import __version__
from . import apihandlers, schemas
from .auth import ORG_HEADER, ORG_QUERY
from .handlers import APIHandler, BaseHandler, Endpoint

METHODS = ("get", "post", "put", "patch", "delete")
_PARAM_RE = re.compile(r"\{([a-z_]+)\}")

STATUS_TEXT = {
    400: "Invalid request: malformed JSON, unknown or invalid field, body too large, several organizations",
    401: "Not authenticated: send 'Authorization: token <JupyterHub API token>'",
    403: "Authenticated, but missing the required scope in the selected organization",
    404: "No such object in the selected organization (or no such organization)",
    409: "Conflicts with an existing object, or owned by the identity provider",
    411: "Length required: send the body with a Content-Length header (chunked bodies are refused)",
    413: "Too large: the declared body exceeds the upload limit or the remaining quota",
    502: "A backend (the organization's object store, a cluster) refused or failed the request",
    503: "The service is not configured for this (e.g. no encryption key)",
}

#: an opaque body or answer: the bytes of a file
BINARY = {"type": "string", "format": "binary"}

DESCRIPTION = f"""REST API of Jupyter HEROES, served by the HEROES JupyterHub service.

**Authentication**: a JupyterHub API token (`Authorization: token <token>`) or the service's login
cookie (browsers log in through the hub).

**Organization**: every `/organization/...` call acts in one organization. Choose it with the
`{ORG_HEADER}` header or the `?{ORG_QUERY}=` query parameter; a member of exactly one organization
may omit it. An organization (or an object of one) the caller cannot reach answers 404.

**Authorization**: each operation names the `custom:heroes:*` scope it needs (`x-heroes-scope`),
which the caller must hold through their roles in the selected organization (or, for
`/heroes/admin/...`, in the platform organization).

**Errors** are JSON `{{"message": ..., "reason": ...}}`.
"""


def endpoints() -> list[tuple[str, type[APIHandler], str, Endpoint]]:
    """``(path template, handler class, method, Endpoint)`` for every declared operation."""
    out = []
    for _regex, handler in apihandlers.default_handlers:
        for m in METHODS:
            ep = getattr(getattr(handler, m, None), "__heroes_endpoint__", None)
            if ep is not None:
                out.append((handler.path, handler, m, ep))
    return out


def _operation(path: str, handler: type[APIHandler], method: str, ep: Endpoint) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {
            "name": p,
            "in": "path",
            "required": True,
            "schema": copy.deepcopy(handler.path_params.get(p, schemas.REF)),
        }
        for p in _PARAM_RE.findall(path)
    ]
    if ep.org:
        params += [
            {
                "name": ORG_HEADER,
                "in": "header",
                "required": False,
                "description": "the organization to act in (default: the caller's only one)",
                "schema": copy.deepcopy(schemas.REF),
            },
            {
                "name": ORG_QUERY,
                "in": "query",
                "required": False,
                "description": f"the organization to act in (same as the {ORG_HEADER} header)",
                "schema": copy.deepcopy(schemas.REF),
            },
        ]
    for name, schema in ep.query.items():
        params.append({"name": name, "in": "query", "required": False, "schema": copy.deepcopy(schema)})
    description = ep.description
    if ep.scope:
        where = "the platform organization" if ep.platform else "the selected organization"
        description = (description + "\n\n" if description else "") + f"Requires `{ep.scope}` in {where}."
    op: dict[str, Any] = {
        "operationId": f"{handler.__name__.removesuffix('APIHandler')}_{method}",
        "summary": ep.summary,
        "description": description,
        "tags": [handler.tag or "API"],
        "parameters": params,
        "security": [{"token": []}, {"cookie": []}],
        "responses": {},
    }
    if ep.scope:
        op["x-heroes-scope"] = ep.scope
    if ep.action:
        op["x-heroes-audit-action"] = ep.action
    if ep.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": copy.deepcopy(ep.body)}},
        }
    # handlers that take or give raw bytes say so: ``binary_request`` / ``binary_response`` name the
    # method, ``binary_headers`` the answer's headers
    if getattr(handler, "binary_request", None) == method:
        op["requestBody"] = {
            "required": True,
            "description": "the file's bytes, sent with Content-Length (streamed, never chunked)",
            "content": {"application/octet-stream": {"schema": dict(BINARY)}},
        }
    ok: dict[str, Any] = {
        "description": "OK" if ep.status == 200 else ("Created" if ep.status == 201 else "Done")
    }
    if ep.status != 204 and ep.response is not None:
        ok["content"] = {"application/json": {"schema": copy.deepcopy(ep.response)}}
    if getattr(handler, "binary_response", None) == method:
        ok["content"] = {"application/octet-stream": {"schema": dict(BINARY)}}
        headers = getattr(handler, "binary_headers", {})
        if headers:
            ok["headers"] = {
                name: {"description": text, "schema": {"type": "string"}} for name, text in headers.items()
            }
    op["responses"][str(ep.status)] = ok
    codes = {400, 401, 403, *ep.errors}
    if ep.org or _PARAM_RE.search(path):
        codes.add(404)
    for code in sorted(codes):
        op["responses"][str(code)] = {"$ref": f"#/components/responses/E{code}"}
    return op


def build_openapi(api_prefix: str = "/services/heroes/api/v1") -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for path, handler, method, ep in endpoints():
        paths.setdefault(path, {})[method] = _operation(path, handler, method, ep)
    return {
        "openapi": "3.0.3",
        "info": {"title": "Jupyter HEROES API", "version": __version__, "description": DESCRIPTION},
        "servers": [{"url": api_prefix}],
        "paths": paths,
        "components": {
            "schemas": {"Error": schemas.ERROR},
            "responses": {
                f"E{code}": {
                    "description": text,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                }
                for code, text in STATUS_TEXT.items()
            },
            "securitySchemes": {
                "token": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "'token <JupyterHub API token>'",
                },
                "cookie": {"type": "apiKey", "in": "cookie", "name": "heroes-login"},
            },
        },
    }


class OpenAPIHandler(BaseHandler):
    """``GET <prefix>/api/v1/openapi.json`` (public)."""

    _cache: dict[str, str] = {}

    async def prepare(self) -> None:  # no authentication needed
        self._hub_auth_user_cache = None
        self.audit_target = ""
        self.audit_detail = {}
        self.error_reason = ""
        self.error_message = ""
        self.ecs_fields = {}

    def allowed_methods(self) -> list[str]:
        return ["GET"]

    def get(self) -> None:
        import json

        prefix = self.api_prefix
        if prefix not in self._cache:
            self._cache[prefix] = json.dumps(build_openapi(prefix))
        self.finish(self._cache[prefix])


class IndexHandler(OpenAPIHandler):
    """``GET <prefix>/api/v1/`` (public): where the API describes itself."""

    def get(self) -> None:
        import json

        self.finish(
            json.dumps(
                {
                    "name": "Jupyter HEROES API",
                    "version": __version__,
                    "openapi": f"{self.api_prefix}/openapi.json",
                    "documentation": "docs/api.md",
                }
            )
        )
