"""JSON schemas of the REST API's request and response bodies.

They serve twice: requests are validated against them (:func:`validate_body`, which words its
errors so they name the field and never echo a submitted value), and the OpenAPI document
(:mod:`jupyter_heroes.service.openapi`) publishes them. They are written in the subset common to
JSON Schema and OpenAPI 3.0 (no type lists, no ``const``; ``nullable`` only in responses).
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from .. import roles

# --- names -----------------------------------------------------------------------------------------
#: names given to new organizations, projects, clusters and templates: DNS labels (and S3-safe parts
#: of bucket names) of 3-63 characters, lowercase letters, digits and '-', starting with a letter
SLUG_PATTERN = r"^[a-z][a-z0-9-]{1,61}[a-z0-9]$"
SLUG_HINT = "3-63 lowercase letters, digits and '-', starting with a letter and not ending with '-'"
NAME_PATTERN = SLUG_PATTERN
NAME_HINT = SLUG_HINT
#: names that *refer* to an existing organization or project: also those synchronised from Keycloak
#: group names (jupyter_heroes.identity.NAME_RE: any lowercase DNS label)
REF_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
REF_HINT = "the name of an existing organization or project (a lowercase DNS label)"
ROLE_PATTERN = roles.ROLE_NAME_RE
ROLE_HINT = "2-63 lowercase letters, digits and '-', starting with a letter"
#: hub usernames as JupyterHub normalizes them (lowercase); '@' and '.' allowed for e-mail-like names
USERNAME_PATTERN = r"^[a-z0-9][a-z0-9._@+-]{0,127}$"
USERNAME_HINT = "1-128 lowercase letters, digits and ._@+-, starting with a letter or digit"
#: Slurm partition names
QUEUE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
QUEUE_HINT = "1-63 letters, digits and _.-, starting with a letter or digit"
HOST_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$|^\[?[0-9A-Fa-f:.]+\]?$"
HOST_KEY_PATTERN = r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521) [A-Za-z0-9+/]+={0,3}( \S*)?$"
ENDPOINT_PATTERN = r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$"


def _str(
    pattern: str | None = None, hint: str = "", max_length: int | None = None, **kw: Any
) -> dict[str, Any]:
    s: dict[str, Any] = {"type": "string", **kw}
    if pattern:
        s["pattern"] = pattern
    if hint:
        s["description"] = hint
    if max_length is not None:
        s["maxLength"] = max_length
    return s


def obj(
    properties: dict[str, Any], required: tuple[str, ...] = (), *, closed: bool = True, **kw: Any
) -> dict:
    s: dict[str, Any] = {"type": "object", "properties": properties, **kw}
    if required:
        s["required"] = list(required)
    if closed:
        s["additionalProperties"] = False
    return s


def array(items: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {"type": "array", "items": items, **kw}


SLUG = _str(SLUG_PATTERN, SLUG_HINT, 63)
NAME = SLUG
REF = _str(REF_PATTERN, REF_HINT, 63)
ROLE_NAME = _str(ROLE_PATTERN, ROLE_HINT, 63)
USERNAME = _str(USERNAME_PATTERN, USERNAME_HINT, 128)
SCOPE = {"type": "string", "enum": sorted(roles.SCOPES)}
TEXT = _str(max_length=4000)
SHORT = _str(max_length=255)
DATETIME = {"type": "string", "format": "date-time"}
SOURCE = {
    "type": "string",
    "enum": ["idp", "local"],
    "description": "idp: from Keycloak at login; local: made through this API",
}

ERROR = obj(
    {
        "message": {"type": "string", "description": "what went wrong and what to do"},
        "reason": {"type": "string", "description": "short machine-readable reason"},
    },
    ("message", "reason"),
    closed=False,
)

NAMED_SOURCE = obj({"name": {"type": "string"}, "source": SOURCE}, ("name", "source"))

# --- identity -------------------------------------------------------------------------------------
ORG_MEMBERSHIP = obj(
    {
        "name": {"type": "string"},
        "display_name": {"type": "string"},
        "kind": {"type": "string", "enum": ["client", "platform", "provider"]},
        "roles": array(NAMED_SOURCE),
        "projects": array(NAMED_SOURCE),
        "scopes": array({"type": "string"}),
    },
    ("name", "kind", "roles", "projects", "scopes"),
)
ME = obj(
    {
        "name": {"type": "string"},
        "kind": {"type": "string", "enum": ["user", "service"]},
        "admin": {"type": "boolean", "description": "JupyterHub admin"},
        "email": {"type": "string"},
        "full_name": {"type": "string"},
        "organizations": array(ORG_MEMBERSHIP),
        "platform_scopes": array(
            {"type": "string"},
            description="scopes held in the platform organization (reach every organization)",
        ),
    },
    ("name", "organizations", "platform_scopes"),
)

# --- users ----------------------------------------------------------------------------------------
MEMBER = obj(
    {
        "name": {"type": "string"},
        "email": {"type": "string"},
        "full_name": {"type": "string"},
        "organization": {"type": "string"},
        "source": SOURCE,
        "roles": array(NAMED_SOURCE),
        "projects": array(NAMED_SOURCE),
    },
    ("name", "organization", "source", "roles", "projects"),
)
MEMBER_LIST = array(MEMBER)
USER_CREATE = obj(
    {
        "username": USERNAME,
        "email": _str(max_length=255),
        "full_name": SHORT,
        "roles": array(ROLE_NAME, maxItems=50, uniqueItems=True),
        "projects": array(REF, maxItems=200, uniqueItems=True),
    },
    ("username",),
)
USER_PATCH = obj(
    {
        "email": _str(max_length=255),
        "full_name": SHORT,
        "roles": array(
            ROLE_NAME, maxItems=50, uniqueItems=True, description="replaces the roles made through this API"
        ),
        "projects": array(
            REF, maxItems=200, uniqueItems=True, description="replaces the projects joined through this API"
        ),
    },
    minProperties=1,
)

# --- groups (projects) ----------------------------------------------------------------------------
GROUP = obj(
    {
        "name": {"type": "string"},
        "organization": {"type": "string"},
        "description": {"type": "string"},
        "members": array(NAMED_SOURCE),
        "created": DATETIME,
    },
    ("name", "organization", "description", "members"),
)
GROUP_LIST = array(GROUP)
GROUP_CREATE = obj(
    {"name": SLUG, "description": TEXT, "members": array(USERNAME, maxItems=1000, uniqueItems=True)},
    ("name",),
)
GROUP_PATCH = obj(
    {
        "description": TEXT,
        "members": array(
            USERNAME,
            maxItems=1000,
            uniqueItems=True,
            description="replaces the members added through this API",
        ),
        "add_members": array(USERNAME, maxItems=1000, uniqueItems=True),
        "remove_members": array(USERNAME, maxItems=1000, uniqueItems=True),
    },
    minProperties=1,
)

# --- roles ----------------------------------------------------------------------------------------
ROLE = obj(
    {
        "name": {"type": "string"},
        "description": {"type": "string"},
        "scopes": array({"type": "string"}),
        "builtin": {"type": "boolean"},
        "users": array(NAMED_SOURCE, description="members of the organization holding the role (GET one)"),
    },
    ("name", "description", "scopes", "builtin"),
)
ROLE_LIST = array(ROLE)
ROLE_CREATE = obj(
    {"name": ROLE_NAME, "description": TEXT, "scopes": array(SCOPE, minItems=1, uniqueItems=True)},
    ("name", "scopes"),
    title="RoleCreate",
)
ROLE_ASSIGN = obj({"username": USERNAME, "role": ROLE_NAME}, ("username", "role"), title="RoleAssign")
ROLE_POST = {"oneOf": [ROLE_CREATE, ROLE_ASSIGN]}
ROLE_ASSIGNMENT = obj(
    {
        "username": {"type": "string"},
        "role": {"type": "string"},
        "organization": {"type": "string"},
        "source": SOURCE,
    },
    ("username", "role", "organization", "source"),
)
ROLE_POST_RESPONSE = {"oneOf": [ROLE, ROLE_ASSIGNMENT]}

# --- clusters -------------------------------------------------------------------------------------
QUEUE = obj(
    {
        "name": _str(QUEUE_PATTERN, QUEUE_HINT, 63),
        "max_nodes": {"type": "integer", "minimum": 1, "maximum": 1000000},
        "cpus_per_node": {"type": "integer", "minimum": 1, "maximum": 100000},
        "mem_per_node_mb": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
        "gpus_per_node": {"type": "integer", "minimum": 0, "maximum": 1024},
        "max_walltime_s": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
        "arch": _str(r"^[A-Za-z0-9_-]{1,32}$", "CPU architecture, e.g. x86_64, aarch64", 32),
    },
    ("name",),
)
QUEUE_OUT = obj(
    {
        "name": {"type": "string"},
        "max_nodes": {"type": "integer", "nullable": True},
        "cpus_per_node": {"type": "integer", "nullable": True},
        "mem_per_node_mb": {"type": "integer", "nullable": True},
        "gpus_per_node": {"type": "integer"},
        "max_walltime_s": {"type": "integer", "nullable": True},
        "arch": {"type": "string"},
    },
    ("name",),
)
CLUSTER = obj(
    {
        "id": {"type": "integer"},
        "name": {"type": "string"},
        "organization": {"type": "string"},
        "description": {"type": "string"},
        "transport": {"type": "string"},
        "scheduler": {"type": "string"},
        "host": {"type": "string"},
        "port": {"type": "integer"},
        "username": {"type": "string"},
        "host_key": {"type": "string", "description": "the pinned public host key"},
        "has_private_key": {"type": "boolean", "description": "the private key itself is never returned"},
        "scratch_root": {"type": "string"},
        "container_runtime": {"type": "string"},
        "site": {"type": "object"},
        "enabled": {"type": "boolean"},
        "created": DATETIME,
        "queues": array(QUEUE_OUT),
    },
    ("id", "name", "organization", "transport", "scheduler", "has_private_key", "queues"),
)
CLUSTER_LIST = array(CLUSTER)


def cluster_create_schema(transports: list[str], schedulers: list[str]) -> dict[str, Any]:
    return obj(
        {
            "name": NAME,
            "description": TEXT,
            "transport": {
                "type": "string",
                "enum": transports,
                "description": "how commands reach the cluster",
            },
            "scheduler": {"type": "string", "enum": schedulers},
            "host": _str(HOST_PATTERN, "host name or IP address of the login node", 255),
            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
            "username": _str(r"^[a-z_][a-z0-9_.-]{0,31}$", "the service account's Unix user name", 32),
            "host_key": _str(
                HOST_KEY_PATTERN, "the login node's public host key to pin, e.g. 'ssh-ed25519 AAAA...'", 16384
            ),
            "private_key": _str(
                hint="the service account's OpenSSH/PEM private key (unencrypted); stored encrypted, never returned",
                max_length=16384,
            ),
            "scratch_root": _str(r"^/[^\x00]*$", "absolute path of the shared directory jobs run in", 1024),
            "container_runtime": {"type": "string", "enum": ["", "apptainer", "singularity"]},
            "site": obj({}, closed=False, description="site facts: pue, grid_zone, power model ..."),
            "enabled": {"type": "boolean"},
            "queues": array(QUEUE, maxItems=100),
        },
        ("name",),
    )


# --- workflow templates ---------------------------------------------------------------------------
TEMPLATE = obj(
    {
        "id": {"type": "integer"},
        "organization": {"type": "string"},
        "name": {"type": "string"},
        "version": {"type": "integer"},
        "application_id": {"type": "string"},
        "description": {"type": "string"},
        "spec": {"type": "object"},
        "projects": array({"type": "string"}, description="projects allowed to use it; empty: all"),
        "state": {"type": "string", "enum": ["active", "retired"]},
        "created_by": {"type": "string"},
        "created": DATETIME,
    },
    ("id", "name", "version", "state", "spec", "projects"),
)
TEMPLATE_LIST = array(TEMPLATE)
TEMPLATE_CREATE = obj(
    {
        "template": {
            "description": "the template document (see docs/workflows), as an object or as YAML text",
            "oneOf": [{"type": "object"}, {"type": "string", "maxLength": 262144}],
        },
        "projects": array(REF, maxItems=200, uniqueItems=True),
    },
    ("template",),
)

# --- platform: organizations, clients, servers ----------------------------------------------------
ORGANIZATION = obj(
    {
        "name": {"type": "string"},
        "display_name": {"type": "string"},
        "kind": {"type": "string", "enum": ["client", "platform", "provider"]},
        "active": {"type": "boolean"},
        "created": DATETIME,
        "members": {"type": "integer"},
        "projects": {"type": "integer"},
    },
    ("name", "kind", "active"),
)
ORGANIZATION_LIST = array(ORGANIZATION)
ORGANIZATION_CREATE = obj(
    {"name": SLUG, "display_name": SHORT, "kind": {"type": "string", "enum": ["client", "provider"]}},
    ("name",),
)
CLIENT = obj(
    {
        "client_id": {"type": "string"},
        "organization": {"type": "string"},
        "description": {"type": "string"},
        "created": DATETIME,
    },
    ("client_id", "organization"),
)
CLIENT_LIST = array(CLIENT)
CLIENT_CREATED = obj(
    {
        **CLIENT["properties"],
        "client_secret": {"type": "string", "description": "shown once: only its hash is stored"},
    },
    ("client_id", "organization", "client_secret"),
)
CLIENT_CREATE = obj({"description": TEXT})
SERVER = obj(
    {
        "id": {"type": "integer"},
        "organization": {"type": "string"},
        "kind": {"type": "string"},
        "endpoint": {"type": "string"},
        "secure": {"type": "boolean"},
        "region": {"type": "string"},
        "access_key": {"type": "string"},
        "has_secret_key": {"type": "boolean"},
        "created": DATETIME,
    },
    ("id", "organization", "kind", "endpoint", "access_key"),
)
SERVER_LIST = array(SERVER)
SERVER_CREATE = obj(
    {
        "kind": {"type": "string", "enum": ["s3"]},
        "endpoint": _str(ENDPOINT_PATTERN, "host[:port] of the S3-protocol server, no scheme", 255),
        "secure": {"type": "boolean", "description": "https (default true)"},
        "region": _str(r"^[a-z0-9-]{1,64}$", "", 64),
        "access_key": _str(r"^\S{1,255}$", "access key id", 255),
        "secret_key": _str(r"^\S{1,255}$", "secret key; stored encrypted, never returned", 255),
    },
    ("endpoint", "access_key", "secret_key"),
)

# --- audit ----------------------------------------------------------------------------------------
AUDIT_ENTRY = obj(
    {
        "id": {"type": "integer"},
        "ts": DATETIME,
        "organization": {"type": "string", "nullable": True},
        "user": {"type": "string"},
        "action": {"type": "string"},
        "method": {"type": "string"},
        "path": {"type": "string"},
        "target": {"type": "string"},
        "status": {"type": "integer"},
        "outcome": {"type": "string", "enum": ["success", "failure", "denied"]},
        "detail": {"type": "object"},
    },
    ("id", "ts", "user", "action", "method", "path", "status", "outcome"),
)
AUDIT_LIST = array(AUDIT_ENTRY)


# --- validation -----------------------------------------------------------------------------------
def _where(path: list[Any]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def describe_error(error: ValidationError) -> str:
    """A message naming the field and the rule, never the submitted value (it may be a secret)."""
    where = _where(list(error.absolute_path))
    field = f"field '{where}'" if where else "the request body"
    v, vv, schema = error.validator, error.validator_value, error.schema
    if v == "required":
        missing = [k for k in vv if isinstance(error.instance, dict) and k not in error.instance]
        names = ", ".join(f"'{_where([*error.absolute_path, k])}'" for k in missing)
        return f"missing required field {names}"
    if v == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        names = ", ".join(f"'{_where([*error.absolute_path, k])}'" for k in extra)
        return f"unknown field {names}; allowed fields: {', '.join(allowed) or '(none)'}"
    if v == "type":
        return f"{field} must be of type {vv}, not {_type_name(error.instance)}"
    if v == "pattern":
        return f"{field} is invalid: expected {schema.get('description') or 'a value matching ' + vv}"
    if v == "enum":
        return f"{field} must be one of: {', '.join(map(str, vv))}"
    if v in ("maxLength", "minLength"):
        hint = f" ({schema['description']})" if schema.get("description") else ""
        return f"{field} must be {'at most' if v == 'maxLength' else 'at least'} {vv} characters long{hint}"
    if v in ("maxItems", "minItems"):
        return f"{field} must have {'at most' if v == 'maxItems' else 'at least'} {vv} items"
    if v in ("maximum", "minimum"):
        return f"{field} must be {'at most' if v == 'maximum' else 'at least'} {vv}"
    if v == "uniqueItems":
        return f"{field} has duplicate items"
    if v == "minProperties":
        return f"{field} must set at least {vv} field(s): {', '.join(sorted(schema.get('properties', {})))}"
    if v == "oneOf":
        titles = [s.get("title", "?") for s in vv]
        return f"{field} must match exactly one of: {', '.join(titles)}"
    return f"{field} is invalid ({v})"


def validate_body(body: Any, schema: dict[str, Any]) -> str | None:
    """``None`` if *body* is valid, else a message for the first (most relevant) error."""
    validator = Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(body), key=lambda e: (len(list(e.absolute_path)), str(e.validator)))
    if not errors:
        return None
    # prefer errors that name a field over generic ones, and "unknown field" / "required" first
    rank = {"additionalProperties": 0, "required": 1, "type": 2}
    errors.sort(key=lambda e: (len(list(e.absolute_path)), rank.get(str(e.validator), 3)))
    return describe_error(errors[0])
