"""Who is calling, in which organization, with which scopes.

Authentication is JupyterHub's (``HubOAuthenticated`` in :mod:`.handlers`): it yields a hub username.
Authorization is HEROES's own and always *per organization*:

* the caller selects an organization with the ``X-Heroes-Organization`` header or the
  ``?organization=`` query parameter; a caller in exactly one organization may omit it;
* the caller's effective scopes there are those of the roles assigned to them in that organization
  (:func:`jupyter_heroes.roles.scopes_for_roles`; built-in roles count only in organizations of a
  kind they are meant for; organization-defined roles come from the ``roles`` table);
* a caller holding ``custom:heroes:organizations:manage`` in the platform organization reaches every
  organization, with the scopes their platform roles grant;
* an organization the caller cannot reach is answered exactly like one that does not exist (404).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session
from tornado import web

from .. import orm, roles

ORG_HEADER = "X-Heroes-Organization"
ORG_QUERY = "organization"
ORGS_MANAGE = roles.SCOPE_PREFIX + "organizations:manage"
_REF_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")  # schemas.REF_PATTERN


class ApiError(web.HTTPError):
    """An error answered as JSON ``{message, reason}`` with *status*."""

    def __init__(self, status: int, message: str, reason: str) -> None:
        super().__init__(status)
        self.status = status
        self.message = message
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.status} {self.reason}: {self.message}"


def not_found(what: str) -> ApiError:
    return ApiError(404, f"{what} not found", "not_found")


@dataclass
class OrgContext:
    """The organization a request acts in and what the caller may do there."""

    username: str
    user: orm.User | None
    org: orm.Organization
    scopes: frozenset[str]
    #: the caller is not a member and reaches the organization through platform organizations:manage
    via_platform: bool = False
    platform_scopes: frozenset[str] = field(default_factory=frozenset)

    def has(self, scope: str) -> bool:
        return full_scope(scope) in self.scopes


def full_scope(scope: str) -> str:
    return scope if scope.startswith(roles.SCOPE_PREFIX) else roles.SCOPE_PREFIX + scope


def custom_roles(session: Session, org_id: int) -> dict[str, set[str]]:
    return {
        r.name: set(r.scopes or [])
        for r in session.scalars(select(orm.Role).where(orm.Role.org_id == org_id))
    }


def role_scopes(session: Session, org: orm.Organization, role_names: set[str] | list[str]) -> set[str]:
    """Scopes granted in *org* by *role_names* (built-in roles only where their kind allows)."""
    valid = {
        r for r in role_names if r not in roles.BUILTIN_ROLES or org.kind in roles.BUILTIN_ROLES[r].kinds
    }
    return roles.scopes_for_roles(valid, custom_roles(session, org.id)) & set(roles.SCOPES)


def get_user(session: Session, username: str) -> orm.User | None:
    return session.scalar(select(orm.User).where(orm.User.name == username))


def get_org(session: Session, name: str) -> orm.Organization | None:
    return session.scalar(select(orm.Organization).where(orm.Organization.name == name))


def member_orgs(session: Session, user: orm.User | None) -> list[orm.Organization]:
    if user is None:
        return []
    q = (
        select(orm.Organization)
        .join(orm.OrgMember, orm.OrgMember.org_id == orm.Organization.id)
        .where(orm.OrgMember.user_id == user.id)
        .order_by(orm.Organization.name)
    )
    return list(session.scalars(q))


def assigned_roles(
    session: Session, user: orm.User | None, org: orm.Organization
) -> list[orm.RoleAssignment]:
    if user is None:
        return []
    q = select(orm.RoleAssignment).where(
        orm.RoleAssignment.user_id == user.id, orm.RoleAssignment.org_id == org.id
    )
    return list(session.scalars(q.order_by(orm.RoleAssignment.role)))


def is_member(session: Session, user: orm.User | None, org: orm.Organization) -> bool:
    if user is None:
        return False
    q = select(orm.OrgMember.id).where(orm.OrgMember.user_id == user.id, orm.OrgMember.org_id == org.id)
    return session.scalar(q) is not None


def scopes_in(session: Session, user: orm.User | None, org: orm.Organization) -> set[str]:
    """The caller's scopes from their own role assignments in *org* (membership required)."""
    if user is None or not is_member(session, user, org):
        return set()
    return role_scopes(session, org, {a.role for a in assigned_roles(session, user, org)})


def platform_scopes(session: Session, user: orm.User | None, platform_org: str) -> set[str]:
    org = get_org(session, platform_org)
    if org is None or org.kind != "platform":
        return set()
    return scopes_in(session, user, org)


def select_org(session: Session, username: str, requested: str | None, platform_org: str) -> OrgContext:
    """Resolve the organization a request acts in (see the module docstring) or raise :class:`ApiError`."""
    user = get_user(session, username)
    pscopes = frozenset(platform_scopes(session, user, platform_org))
    reach_all = ORGS_MANAGE in pscopes
    if requested:
        org = get_org(session, requested) if _REF_RE.match(requested) else None
        if org is None:
            raise not_found(f"Organization '{requested[:63]}'")
        if is_member(session, user, org):
            own = scopes_in(session, user, org)
            extra = pscopes if reach_all else frozenset()
            return OrgContext(username, user, org, frozenset(own | extra), False, pscopes)
        if reach_all:
            return OrgContext(username, user, org, pscopes, True, pscopes)
        raise not_found(f"Organization '{requested[:63]}'")
    orgs = member_orgs(session, user)
    if not orgs:
        raise ApiError(
            403,
            f"{username} is not a member of any HEROES organization; ask your organization's "
            "administrator to add you",
            "no_organization",
        )
    if len(orgs) > 1:
        names = ", ".join(o.name for o in orgs)
        raise ApiError(
            400,
            f"{username} is a member of several organizations ({names}): choose one with the "
            f"{ORG_HEADER} header or the ?{ORG_QUERY}= query parameter",
            "organization_required",
        )
    org = orgs[0]
    own = scopes_in(session, user, org)
    extra = pscopes if reach_all else frozenset()
    return OrgContext(username, user, org, frozenset(own | extra), False, pscopes)
