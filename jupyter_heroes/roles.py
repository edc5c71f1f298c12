"""Roles of D3.1 Table 1 and the ``custom:heroes:*`` scopes they grant.

A caller's scopes are always *per organization*: a membership grants its role's scopes inside the
organization it belongs to and nowhere else. Platform roles (members of the platform organization)
additionally grant platform-wide scopes such as managing every organization.

Table 1 ("Example of possible actions by roles"), as implemented here:

=====================  ======  =====  ========  ========  =======  =======  ========  ========  =======
role                   submit  data   manage    manage    users,   package  publish   publish   billing
                               (home) data      workflows groups,  app      apps      resources
                                      access              roles
=====================  ======  =====  ========  ========  =======  =======  ========  ========  =======
researcher             x       x
workflow-admin         x       x                x
application-packager   x                                           x
project-admin                         x                   x
billing-admin                                                                                  x
org-admin                                                 x                                    x
solution-admin         x       x      x         x         x        x                           x
tenant-admin                                              x                                    x
infrastructure-admin   (service accounts: clusters)
resource-provider                                                                    x
application-provider   x                                           x        x
=====================  ======  =====  ========  ========  =======  =======  ========  ========  =======

``org-admin`` is the "Organization admin" of the table, held inside a client organization; the
platform's ``tenant-admin`` holds the same rights over every organization.
"""

from __future__ import annotations

from dataclasses import dataclass

SCOPE_PREFIX = "custom:heroes:"


def _s(name: str) -> str:
    return SCOPE_PREFIX + name


# every scope the service knows, with the description shown in the hub's role/scope UI
SCOPES: dict[str, str] = {
    _s("submit"): "Submit, watch and cancel one's own workflows and jobs",
    _s("data:home"): "Read and write one's own bucket and one's projects' buckets",
    _s("data:manage"): "Manage data access (buckets, quotas) of the organization",
    _s(
        "workflows:manage"
    ): "Create, version and retire workflow templates; see all instances of the organization",
    _s("users:manage"): "Manage the organization's users, groups (projects) and roles",
    _s("apps:package"): "Package applications (containers)",
    _s("apps:publish"): "Publish applications in the marketplace",
    _s("resources:publish"): "Publish resources (clusters, queues) in the marketplace",
    _s("billing"): "See costs, budgets and usage reports of the organization",
    _s("clusters:manage"): "Enrol and manage clusters and their service accounts",
    _s("audit:read"): "Read the organization's audit log",
    _s("organizations:manage"): "Create, read and delete any organization (platform administration)",
}


@dataclass(frozen=True)
class RoleDef:
    name: str
    description: str
    scopes: frozenset[str]
    # where the role may be held: "client" organizations, the "platform" organization, "provider"s
    kinds: frozenset[str]


def _role(name: str, description: str, scopes: list[str], kinds: tuple[str, ...]) -> RoleDef:
    return RoleDef(name, description, frozenset(_s(s) for s in scopes), frozenset(kinds))


_CLIENT = ("client", "platform")
BUILTIN_ROLES: dict[str, RoleDef] = {
    r.name: r
    for r in [
        _role(
            "researcher",
            "Engineer / researcher: submits workflows, uses own data",
            ["submit", "data:home"],
            _CLIENT,
        ),
        _role(
            "workflow-admin",
            "Workflow admin: defines workflow templates",
            ["submit", "data:home", "workflows:manage"],
            _CLIENT,
        ),
        _role(
            "application-packager", "Packages applications (containers)", ["submit", "apps:package"], _CLIENT
        ),
        _role(
            "project-admin",
            "User / project administrator",
            ["data:manage", "users:manage", "audit:read"],
            _CLIENT,
        ),
        _role("billing-admin", "Billing access and cost management", ["billing"], _CLIENT),
        _role(
            "org-admin",
            "Organization administrator: users, roles, clusters, billing of the organization",
            ["users:manage", "billing", "clusters:manage", "workflows:manage", "data:manage", "audit:read"],
            _CLIENT,
        ),
        _role(
            "solution-admin",
            "HEROES solution administrator (platform)",
            [s.removeprefix(SCOPE_PREFIX) for s in SCOPES],
            ("platform",),
        ),
        _role(
            "tenant-admin",
            "HEROES tenant administrator: manages organizations",
            ["users:manage", "billing", "organizations:manage", "audit:read"],
            ("platform",),
        ),
        _role(
            "infrastructure-admin",
            "HEROES infrastructure administrator: HPC centre and cloud access (service accounts)",
            ["clusters:manage"],
            ("platform",),
        ),
        _role(
            "resource-provider",
            "Publishes resources in the marketplace",
            ["resources:publish"],
            ("provider",),
        ),
        _role(
            "application-provider",
            "Publishes applications in the marketplace",
            ["submit", "apps:package", "apps:publish"],
            ("provider",),
        ),
    ]
}

#: scopes that reach across organizations when held in the platform organization
PLATFORM_SCOPES = frozenset({_s("organizations:manage")})

ROLE_NAME_RE = r"^[a-z][a-z0-9-]{1,62}$"


def scopes_for_roles(roles: set[str] | list[str], custom: dict[str, set[str]] | None = None) -> set[str]:
    """Union of the scopes granted by *roles*; *custom* maps organization-defined role names to scopes."""
    out: set[str] = set()
    for r in roles:
        if r in BUILTIN_ROLES:
            out |= BUILTIN_ROLES[r].scopes
        elif custom and r in custom:
            out |= custom[r]
    return out


def hub_custom_scopes() -> dict[str, dict[str, str]]:
    """The ``c.JupyterHub.custom_scopes`` entries for every HEROES scope."""
    return {name: {"description": desc} for name, desc in SCOPES.items()}
