"""Queries and JSON views shared by the resource handlers, always confined to one organization.

Membership rows carry ``source``: ``idp`` rows are owned by the identity provider (Keycloak, written
at each login by :mod:`jupyter_heroes.identity`) and are never changed here; the API creates and
removes ``local`` rows only, and refuses (409 ``idp_managed``) to remove what Keycloak owns.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from .. import orm, roles
from .auth import (
    ORGS_MANAGE,
    ApiError,
    OrgContext,
    assigned_roles,
    custom_roles,
    get_user,
    not_found,
    role_scopes,
)


# --- members --------------------------------------------------------------------------------------
def membership(s: Session, user: orm.User | None, org: orm.Organization) -> orm.OrgMember | None:
    if user is None:
        return None
    return s.scalar(
        select(orm.OrgMember).where(orm.OrgMember.user_id == user.id, orm.OrgMember.org_id == org.id)
    )


def find_member(s: Session, org: orm.Organization, username: str) -> tuple[orm.User, orm.OrgMember]:
    """The member *username* of *org*, or 404 (also when the user exists elsewhere)."""
    user = get_user(s, username)
    om = membership(s, user, org)
    if user is None or om is None:
        raise not_found(f"User '{username}' in organization '{org.name}'")
    return user, om


def project_memberships(
    s: Session, user: orm.User, org: orm.Organization
) -> list[tuple[orm.ProjectMember, orm.Project]]:
    q = (
        select(orm.ProjectMember, orm.Project)
        .join(orm.Project, orm.Project.id == orm.ProjectMember.project_id)
        .where(orm.ProjectMember.user_id == user.id, orm.Project.org_id == org.id)
        .order_by(orm.Project.name)
    )
    return [(pm, p) for pm, p in s.execute(q)]


def member_view(s: Session, user: orm.User, org: orm.Organization, om: orm.OrgMember) -> dict[str, Any]:
    return {
        "name": user.name,
        "email": user.email or "",
        "full_name": user.full_name or "",
        "organization": org.name,
        "source": om.source,
        "roles": [{"name": a.role, "source": a.source} for a in assigned_roles(s, user, org)],
        "projects": [{"name": p.name, "source": pm.source} for pm, p in project_memberships(s, user, org)],
    }


def list_members(s: Session, org: orm.Organization) -> list[dict[str, Any]]:
    q = (
        select(orm.User, orm.OrgMember)
        .join(orm.OrgMember, orm.OrgMember.user_id == orm.User.id)
        .where(orm.OrgMember.org_id == org.id)
        .order_by(orm.User.name)
    )
    return [member_view(s, u, org, om) for u, om in s.execute(q)]


def remove_member(s: Session, user: orm.User, org: orm.Organization) -> None:
    project_ids = select(orm.Project.id).where(orm.Project.org_id == org.id)
    s.execute(
        delete(orm.ProjectMember).where(
            orm.ProjectMember.user_id == user.id, orm.ProjectMember.project_id.in_(project_ids)
        )
    )
    s.execute(
        delete(orm.RoleAssignment).where(
            orm.RoleAssignment.user_id == user.id, orm.RoleAssignment.org_id == org.id
        )
    )
    s.execute(delete(orm.OrgMember).where(orm.OrgMember.user_id == user.id, orm.OrgMember.org_id == org.id))


# --- projects -------------------------------------------------------------------------------------
def find_project(s: Session, org: orm.Organization, name: str) -> orm.Project:
    p = s.scalar(select(orm.Project).where(orm.Project.org_id == org.id, orm.Project.name == name))
    if p is None:
        raise not_found(f"Group (project) '{name}' in organization '{org.name}'")
    return p


def projects_by_name(s: Session, org: orm.Organization, names: list[str]) -> list[orm.Project]:
    found = {
        p.name: p
        for p in s.scalars(
            select(orm.Project).where(orm.Project.org_id == org.id, orm.Project.name.in_(names))
        )
    }
    missing = [n for n in names if n not in found]
    if missing:
        raise ApiError(
            400,
            f"no group (project) {', '.join(repr(n) for n in missing)} in organization {org.name}; "
            "create it first with POST /organization/admin/groups",
            "unknown_project",
        )
    return [found[n] for n in names]


def project_view(s: Session, p: orm.Project) -> dict[str, Any]:
    q = (
        select(orm.User.name, orm.ProjectMember.source)
        .join(orm.ProjectMember, orm.ProjectMember.user_id == orm.User.id)
        .where(orm.ProjectMember.project_id == p.id)
        .order_by(orm.User.name)
    )
    return {
        "name": p.name,
        "organization": p.organization.name,
        "description": p.description or "",
        "members": [{"name": n, "source": src} for n, src in s.execute(q)],
        "created": p.created,
    }


def members_by_name(s: Session, org: orm.Organization, names: list[str]) -> list[orm.User]:
    """Users of *names* who are members of *org*; a name that is not is a 400 naming it."""
    q = (
        select(orm.User)
        .join(orm.OrgMember, orm.OrgMember.user_id == orm.User.id)
        .where(orm.OrgMember.org_id == org.id, orm.User.name.in_(names))
    )
    found = {u.name: u for u in s.scalars(q)}
    missing = [n for n in names if n not in found]
    if missing:
        raise ApiError(
            400,
            f"{', '.join(repr(n) for n in missing)} not a member of organization {org.name}; "
            "add them first with POST /organization/admin/users",
            "not_a_member",
        )
    return [found[n] for n in names]


# --- roles ----------------------------------------------------------------------------------------
#: scopes of ordinary work (Table 1's researcher and packager columns) that anyone managing users may
#: grant; every other (administrative) scope can only be granted or revoked by someone holding it
ORDINARY_SCOPES = frozenset(roles.SCOPE_PREFIX + s for s in ("submit", "data:home", "apps:package"))


def lacking_scopes(ctx: OrgContext, scopes: set[str]) -> set[str]:
    """Administrative scopes of *scopes* the caller does not hold (platform managers hold all)."""
    if ORGS_MANAGE in ctx.platform_scopes:
        return set()
    return set(scopes) - ORDINARY_SCOPES - ctx.scopes


def role_def(s: Session, org: orm.Organization, name: str) -> tuple[str, str, set[str], bool]:
    """``(name, description, scopes, builtin)`` of a role holdable in *org*, or 404."""
    b = roles.BUILTIN_ROLES.get(name)
    if b is not None and org.kind in b.kinds:
        return b.name, b.description, set(b.scopes), True
    r = s.scalar(select(orm.Role).where(orm.Role.org_id == org.id, orm.Role.name == name))
    if r is None:
        raise not_found(f"Role '{name}' in organization '{org.name}'")
    return r.name, r.description or "", set(r.scopes or []), False


def check_roles(s: Session, ctx: OrgContext, names: list[str] | set[str], verb: str = "grant") -> None:
    """Every role of *names* exists in the organization and the caller holds its administrative
    scopes (no one grants or revokes more power than they have; ordinary scopes excepted, see
    :data:`ORDINARY_SCOPES`; platform organization managers may grant anything)."""
    org = ctx.org
    custom = custom_roles(s, org.id)
    if verb == "revoke":  # a role name that grants nothing here (unknown, wrong kind) needs nothing to revoke
        names = [
            n
            for n in names
            if n in custom or (n in roles.BUILTIN_ROLES and org.kind in roles.BUILTIN_ROLES[n].kinds)
        ]
    for name in names:
        b = roles.BUILTIN_ROLES.get(name)
        if b is not None and org.kind not in b.kinds:
            raise ApiError(
                400,
                f"role '{name}' cannot be held in a {org.kind} organization (only in: {', '.join(sorted(b.kinds))})",
                "invalid_role",
            )
        if b is None and name not in custom:
            raise ApiError(
                400,
                f"no role '{name}' in organization {org.name}; list them with GET /organization/admin/roles",
                "unknown_role",
            )
    for name in names:
        lacking = lacking_scopes(ctx, role_scopes(s, org, {name}))
        if lacking:
            raise ApiError(
                403,
                f"to {verb} role '{name}' you must hold its administrative scopes; you lack "
                f"{', '.join(sorted(lacking))}",
                "scope_escalation",
            )


def users_with_role(s: Session, org: orm.Organization, role: str) -> list[dict[str, str]]:
    q = (
        select(orm.User.name, orm.RoleAssignment.source)
        .join(orm.RoleAssignment, orm.RoleAssignment.user_id == orm.User.id)
        .where(orm.RoleAssignment.org_id == org.id, orm.RoleAssignment.role == role)
        .order_by(orm.User.name)
    )
    return [{"name": n, "source": src} for n, src in s.execute(q)]


# --- organizations --------------------------------------------------------------------------------
def find_org(s: Session, name: str) -> orm.Organization:
    org = s.scalar(select(orm.Organization).where(orm.Organization.name == name))
    if org is None:
        raise not_found(f"Organization '{name}'")
    return org


def org_view(s: Session, org: orm.Organization) -> dict[str, Any]:
    members = s.scalar(select(func.count()).select_from(orm.OrgMember).where(orm.OrgMember.org_id == org.id))
    projects = s.scalar(select(func.count()).select_from(orm.Project).where(orm.Project.org_id == org.id))
    return {
        "name": org.name,
        "display_name": org.display_name or "",
        "kind": org.kind,
        "active": bool(org.active),
        "created": org.created,
        "members": int(members or 0),
        "projects": int(projects or 0),
    }
