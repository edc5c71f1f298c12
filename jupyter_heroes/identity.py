"""Identity: Keycloak claims to organizations, projects and roles, and their provisioning into the DB.

D3.1 section 3.1: a user account belongs to one organization (tenant) and, inside it, to one or more
projects (groups); it holds one or more roles in the organization. In Keycloak these are modelled as

* **groups** with their full path (group mapper "Full group path" on): ``/org`` makes the user a
  member of organization ``org``; ``/org/project`` a member of ``org`` and of its project ``project``.
  Deeper paths (``/org/project/sub``) count for their first two levels. Names are sanitised into
  lowercase DNS-like labels (``/ACME Corp/Crash Sim`` -> ``acme-corp`` / ``crash-sim``); a group
  without a leading ``/`` (mapper with "Full group path" off) cannot be placed and is ignored;
* **realm roles** (``realm_access.roles`` of the access token): ``role`` applies in every organization
  the user belongs to, ``org:role`` in organization ``org`` only (and only if the user belongs to it).
  Roles that are neither built in (:mod:`jupyter_heroes.roles`) nor defined by the organization are
  ignored (Keycloak's own ``offline_access``, ``default-roles-<realm>``...), as are built-in roles
  that the organization's kind does not allow (``solution-admin`` outside the platform organization).

:func:`map_claims` is the pure part; :func:`provision` writes the result into the database at every
login and token refresh. Memberships and role assignments it makes carry ``source="idp"`` and are
*replaced* each time, so a group or role removed in Keycloak is gone after the next refresh; those
made by administrators through the API carry ``source="local"`` and are never touched here.
"""

from __future__ import annotations

import logging
import re
import time
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from . import orm
from .dbutil import session_scope
from .roles import BUILTIN_ROLES, ROLE_NAME_RE

log = logging.getLogger(__name__)

#: organization and project names after sanitising: lowercase DNS labels of at most 63 characters
NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_ROLE_RE = re.compile(ROLE_NAME_RE)

IDP = "idp"
LOCAL = "local"

#: name of the organization of kind ``platform`` (the HEROES organization of D3.1 section 3.1.2)
DEFAULT_PLATFORM_ORG = "heroes"


def sanitize_name(raw: str) -> str | None:
    """A Keycloak group name as an organization/project name, or None if nothing usable is left.

    Accents are dropped, letters lowercased, every other run of characters becomes one ``-``,
    the result is cut to 63 characters: ``"ACME Corp."`` -> ``"acme-corp"``.
    """
    s = unicodedata.normalize("NFKD", raw).encode("ascii", "ignore").decode("ascii").lower()
    s = re.sub(r"[^a-z0-9]+", "-", s).strip("-")
    s = s[:63].rstrip("-")
    return s if s and NAME_RE.match(s) else None


def parse_group_path(path: str) -> tuple[str, str | None] | None:
    """``"/org/project/..."`` -> ``("org", "project")``; ``"/org"`` -> ``("org", None)``; None if the
    path is relative (no leading ``/``) or its organization part sanitises to nothing. A project part
    that sanitises to nothing leaves the membership of the organization alone."""
    if not isinstance(path, str) or not path.startswith("/"):
        return None
    parts = [p for p in path.split("/") if p.strip()]
    if not parts:
        return None
    org = sanitize_name(parts[0])
    if org is None:
        return None
    project = sanitize_name(parts[1]) if len(parts) > 1 else None
    return org, project


@dataclass
class ClaimsMapping:
    """What the claims ask for, before it is checked against the database."""

    #: organization name -> names of its projects the user is a member of
    memberships: dict[str, set[str]] = field(default_factory=dict)
    #: organization/project name -> the name as written in Keycloak (for ``display_name``)
    display_names: dict[str, str] = field(default_factory=dict)
    #: roles without an organization: held in every organization of the user
    global_roles: set[str] = field(default_factory=set)
    #: organization name -> roles held in that organization only
    org_roles: dict[str, set[str]] = field(default_factory=dict)
    #: claim values that could not be used, with the reason (logged, never an error)
    ignored: list[str] = field(default_factory=list)


def map_claims(groups: Iterable[str] | None, roles: Iterable[str] | None) -> ClaimsMapping:
    """Map Keycloak group paths and realm role names (pure: no database)."""
    m = ClaimsMapping()
    for g in groups or ():
        parsed = parse_group_path(g)
        if parsed is None:
            m.ignored.append(f"group {g!r}: not a full group path /org[/project]")
            continue
        org, project = parsed
        parts = [p for p in g.split("/") if p.strip()]
        m.display_names.setdefault(org, parts[0])
        projects = m.memberships.setdefault(org, set())
        if project:
            projects.add(project)
            m.display_names.setdefault(f"{org}/{project}", parts[1])
        elif len(parts) > 1:
            m.ignored.append(
                f"group {g!r}: project name {parts[1]!r} is not usable; membership of {org!r} kept"
            )
    for r in roles or ():
        if not isinstance(r, str):
            continue
        if ":" in r:
            org_raw, _, role = r.partition(":")
            org = sanitize_name(org_raw)
            if org is None or not _ROLE_RE.match(role):
                m.ignored.append(f"role {r!r}: not of the form org:role")
                continue
            m.org_roles.setdefault(org, set()).add(role)
        elif _ROLE_RE.match(r):
            m.global_roles.add(r)
        else:
            m.ignored.append(f"role {r!r}: not a role name")
    return m


@dataclass
class OrgAccess:
    """The user's effective standing in one organization after provisioning (idp and local)."""

    name: str
    kind: str
    projects: list[str]
    roles: list[str]


@dataclass
class ProvisionResult:
    username: str
    organizations: dict[str, OrgAccess]
    ignored: list[str]

    def as_dict(self) -> dict:
        return {
            "username": self.username,
            "organizations": {
                n: {"kind": o.kind, "projects": o.projects, "roles": o.roles}
                for n, o in self.organizations.items()
            },
        }


def _role_allowed(role: str, org: orm.Organization, custom: set[str]) -> bool:
    if role in custom:
        return True
    rd = BUILTIN_ROLES.get(role)
    return rd is not None and org.kind in rd.kinds


def _get_or_create_org(session: Session, name: str, display: str, platform_org: str) -> orm.Organization:
    org = session.scalar(select(orm.Organization).where(orm.Organization.name == name))
    if org is None:
        org = orm.Organization(
            name=name, display_name=display, kind="platform" if name == platform_org else "client"
        )
        session.add(org)
        session.flush()
        log.info("Created organization %s from the identity provider's groups", name)
    return org


def _get_or_create_project(session: Session, org: orm.Organization, name: str, display: str) -> orm.Project:
    p = session.scalar(select(orm.Project).where(orm.Project.org_id == org.id, orm.Project.name == name))
    if p is None:
        p = orm.Project(org_id=org.id, name=name, description=display if display != name else "")
        session.add(p)
        session.flush()
        log.info("Created project %s/%s from the identity provider's groups", org.name, name)
    return p


def provision(
    session: Session,
    username: str,
    email: str | None = None,
    full_name: str | None = None,
    groups: Iterable[str] | None = None,
    roles: Iterable[str] | None = None,
    *,
    platform_org: str = DEFAULT_PLATFORM_ORG,
) -> ProvisionResult:
    """Bring the database in line with the identity provider's view of *username*.

    Upserts the user (email and full name are updated when given), creates missing organizations
    and projects, and replaces the user's ``source="idp"`` memberships, project memberships and role
    assignments with those the claims give; ``source="local"`` ones stay. Flushes but does not
    commit: the caller owns the transaction (see :func:`provision_user`, which also retries when a
    concurrent login created the same rows first).
    """
    if not username:
        raise ValueError("provision() needs a username")
    mapping = map_claims(groups, roles)
    ignored = list(mapping.ignored)

    user = session.scalar(select(orm.User).where(orm.User.name == username))
    if user is None:
        user = orm.User(name=username)
        session.add(user)
    if email is not None:
        user.email = email
    if full_name is not None:
        user.full_name = full_name
    user.last_login = orm.utcnow()
    session.flush()

    # organizations and projects the claims name
    wanted_orgs: dict[int, orm.Organization] = {}
    wanted_projects: dict[int, orm.Project] = {}
    for org_name, project_names in mapping.memberships.items():
        org = _get_or_create_org(
            session, org_name, mapping.display_names.get(org_name, org_name), platform_org
        )
        wanted_orgs[org.id] = org
        for pname in project_names:
            p = _get_or_create_project(
                session, org, pname, mapping.display_names.get(f"{org_name}/{pname}", pname)
            )
            wanted_projects[p.id] = p

    # organization memberships: replace idp, keep local
    members = session.scalars(select(orm.OrgMember).where(orm.OrgMember.user_id == user.id)).all()
    have = {m.org_id: m for m in members}
    for m in members:
        if m.source == IDP and m.org_id not in wanted_orgs:
            session.delete(m)
    for org_id in wanted_orgs.keys() - have.keys():
        session.add(orm.OrgMember(user_id=user.id, org_id=org_id, source=IDP))

    pmembers = session.scalars(select(orm.ProjectMember).where(orm.ProjectMember.user_id == user.id)).all()
    have_p = {m.project_id: m for m in pmembers}
    for m in pmembers:
        if m.source == IDP and m.project_id not in wanted_projects:
            session.delete(m)
    for pid in wanted_projects.keys() - have_p.keys():
        session.add(orm.ProjectMember(user_id=user.id, project_id=pid, source=IDP))
    session.flush()

    # the user's organizations now (idp and local): where roles may apply
    orgs = session.scalars(
        select(orm.Organization)
        .join(orm.OrgMember, orm.OrgMember.org_id == orm.Organization.id)
        .where(orm.OrgMember.user_id == user.id)
    ).all()
    by_name = {o.name: o for o in orgs}
    custom: dict[int, set[str]] = {o.id: set() for o in orgs}
    if orgs:
        for org_id, rname in session.execute(
            select(orm.Role.org_id, orm.Role.name).where(orm.Role.org_id.in_([o.id for o in orgs]))
        ):
            custom[org_id].add(rname)

    wanted_roles: set[tuple[int, str]] = set()
    for o in orgs:
        for r in mapping.global_roles | mapping.org_roles.get(o.name, set()):
            if _role_allowed(r, o, custom[o.id]):
                wanted_roles.add((o.id, r))
    for r in sorted(mapping.global_roles):
        if not any(_role_allowed(r, o, custom[o.id]) for o in orgs):
            ignored.append(f"role {r!r}: not a role of any of the user's organizations")
    for org_name, rs in mapping.org_roles.items():
        o = by_name.get(org_name)
        for r in sorted(rs):
            if o is None:
                ignored.append(f"role {org_name}:{r}: the user is not a member of organization {org_name!r}")
            elif not _role_allowed(r, o, custom[o.id]):
                ignored.append(f"role {org_name}:{r}: not a role of organization {org_name!r} ({o.kind})")

    assignments = session.scalars(
        select(orm.RoleAssignment).where(orm.RoleAssignment.user_id == user.id)
    ).all()
    have_r = {(a.org_id, a.role): a for a in assignments}
    for a in assignments:
        if a.source == IDP and (a.org_id, a.role) not in wanted_roles:
            session.delete(a)
    for org_id, r in wanted_roles - have_r.keys():
        session.add(orm.RoleAssignment(user_id=user.id, org_id=org_id, role=r, source=IDP))
    session.flush()

    result = _effective(session, user)
    if ignored:
        log.info("Provisioning %s ignored: %s", username, "; ".join(ignored))
    return ProvisionResult(username=username, organizations=result, ignored=ignored)


def _effective(session: Session, user: orm.User) -> dict[str, OrgAccess]:
    out: dict[str, OrgAccess] = {}
    id_to_name: dict[int, str] = {}
    for org_id, name, kind in session.execute(
        select(orm.Organization.id, orm.Organization.name, orm.Organization.kind)
        .join(orm.OrgMember, orm.OrgMember.org_id == orm.Organization.id)
        .where(orm.OrgMember.user_id == user.id)
        .order_by(orm.Organization.name)
    ):
        out[name] = OrgAccess(name=name, kind=kind, projects=[], roles=[])
        id_to_name[org_id] = name
    for org_id, pname in session.execute(
        select(orm.Project.org_id, orm.Project.name)
        .join(orm.ProjectMember, orm.ProjectMember.project_id == orm.Project.id)
        .where(orm.ProjectMember.user_id == user.id)
        .order_by(orm.Project.name)
    ):
        if org_id in id_to_name:
            out[id_to_name[org_id]].projects.append(pname)
    for org_id, role in session.execute(
        select(orm.RoleAssignment.org_id, orm.RoleAssignment.role)
        .where(orm.RoleAssignment.user_id == user.id)
        .order_by(orm.RoleAssignment.role)
    ):
        if org_id in id_to_name:
            out[id_to_name[org_id]].roles.append(role)
    return out


def provision_user(
    factory: sessionmaker[Session],
    username: str,
    email: str | None = None,
    full_name: str | None = None,
    groups: Iterable[str] | None = None,
    roles: Iterable[str] | None = None,
    *,
    platform_org: str = DEFAULT_PLATFORM_ORG,
    attempts: int = 3,
) -> ProvisionResult:
    """:func:`provision` in its own transaction, committed. Blocking: call it from a thread.

    Two logins at once may both try to create the same organization or membership; the loser's
    transaction fails on the unique constraint and is retried from the start (up to *attempts*).
    """
    for attempt in range(1, attempts + 1):
        try:
            with session_scope(factory) as session:
                return provision(
                    session, username, email, full_name, groups, roles, platform_org=platform_org
                )
        except IntegrityError:
            if attempt == attempts:
                raise
            log.info("Provisioning %s raced with another login (attempt %d), retrying", username, attempt)
            time.sleep(0.05 * attempt)
    raise AssertionError("unreachable")
