"""``/organization/admin/users``: the members of the selected organization, their roles and projects.

Users are keyed by their hub username. Adding a member creates the HEROES user record if needed (the
hub account itself is created by the hub's authenticator at first login, or by a hub admin).
Memberships, roles and projects made here are ``local``; those synchronised from Keycloak (``idp``)
are shown but not changed.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from ... import orm
from .. import schemas
from ..auth import ApiError, get_user
from ..handlers import APIHandler, endpoint, routes
from ..views import (
    check_roles,
    find_member,
    list_members,
    member_view,
    membership,
    project_memberships,
    projects_by_name,
    remove_member,
)

SCOPE = "users:manage"


class UserListAPIHandler(APIHandler):
    path = "/organization/admin/users"
    tag = "Organization admin"

    @endpoint(summary="List the organization's users", scope=SCOPE, response=schemas.MEMBER_LIST)
    def get(self) -> list[dict[str, Any]]:
        return list_members(self.db, self.org)

    @endpoint(
        summary="Add a user to the organization, with roles and projects",
        scope=SCOPE,
        body=schemas.USER_CREATE,
        response=schemas.MEMBER,
        status=201,
        action="user.create",
        errors=(409,),
    )
    def post(self) -> dict[str, Any]:
        """Creates the user record if the hub username is new; ``roles`` and ``projects`` must exist
        in the organization, and you can only grant roles whose administrative scopes you hold."""
        s, org, body = self.db, self.org, self.body
        username = body["username"]
        self.audit(username, roles=body.get("roles", []), projects=body.get("projects", []))
        self.ecs_fields["heroes.user"] = username
        user = get_user(s, username)
        if user is not None and membership(s, user, org) is not None:
            raise ApiError(
                409,
                f"{username} is already a member of {org.name}; change their roles and projects with "
                f"PATCH /organization/admin/users/{username}",
                "exists",
            )
        role_names = body.get("roles", [])
        check_roles(s, self.context, role_names)
        projects = projects_by_name(s, org, body.get("projects", []))
        if user is None:
            user = orm.User(name=username, email=body.get("email", ""), full_name=body.get("full_name", ""))
            s.add(user)
            s.flush()
        else:
            # identity fields are global; only fill what is unknown (Keycloak refreshes them at login)
            user.email = user.email or body.get("email", "")
            user.full_name = user.full_name or body.get("full_name", "")
        om = orm.OrgMember(user_id=user.id, org_id=org.id, source="local")
        s.add(om)
        for r in role_names:
            s.add(orm.RoleAssignment(user_id=user.id, org_id=org.id, role=r, source="local"))
        for p in projects:
            s.add(orm.ProjectMember(user_id=user.id, project_id=p.id, source="local"))
        s.commit()
        return member_view(s, user, org, om)


class UserAPIHandler(APIHandler):
    path = "/organization/admin/users/{username}"
    tag = "Organization admin"
    path_params = {"username": schemas.USERNAME}

    @endpoint(summary="Get a user of the organization", scope=SCOPE, response=schemas.MEMBER)
    def get(self, username: str) -> dict[str, Any]:
        self.path_arg("username", username, "User")
        user, om = find_member(self.db, self.org, username)
        return member_view(self.db, user, self.org, om)

    @endpoint(
        summary="Update a user's details, roles and projects",
        scope=SCOPE,
        body=schemas.USER_PATCH,
        response=schemas.MEMBER,
        action="user.update",
    )
    def patch(self, username: str) -> dict[str, Any]:
        """``roles`` and ``projects`` replace those made through this API; those from Keycloak stay.
        Granting or revoking a role needs its administrative scopes."""
        s, org, body = self.db, self.org, self.body
        self.path_arg("username", username, "User")
        self.audit(username, fields=sorted(body))
        self.ecs_fields["heroes.user"] = username
        user, om = find_member(s, org, username)
        if "email" in body:
            user.email = body["email"]
        if "full_name" in body:
            user.full_name = body["full_name"]
        if "roles" in body:
            current = {
                a.role: a
                for a in s.scalars(
                    select(orm.RoleAssignment).where(
                        orm.RoleAssignment.user_id == user.id, orm.RoleAssignment.org_id == org.id
                    )
                )
            }
            wanted = set(body["roles"])
            local = {r for r, a in current.items() if a.source == "local"}
            to_add = wanted - set(current)
            to_remove = local - wanted
            check_roles(s, self.context, sorted(to_add))
            check_roles(s, self.context, sorted(to_remove), verb="revoke")
            for r in sorted(to_remove):
                s.delete(current[r])
            for r in sorted(to_add):
                s.add(orm.RoleAssignment(user_id=user.id, org_id=org.id, role=r, source="local"))
            self.audit(added_roles=sorted(to_add), removed_roles=sorted(to_remove))
        if "projects" in body:
            wanted_p = {p.id: p for p in projects_by_name(s, org, body["projects"])}
            current_p = {p.id: pm for pm, p in project_memberships(s, user, org)}
            for pid, pm in current_p.items():
                if pm.source == "local" and pid not in wanted_p:
                    s.delete(pm)
            for pid in wanted_p:
                if pid not in current_p:
                    s.add(orm.ProjectMember(user_id=user.id, project_id=pid, source="local"))
        s.commit()
        return member_view(s, user, org, om)

    @endpoint(
        summary="Remove a user from the organization",
        scope=SCOPE,
        status=204,
        action="user.delete",
        errors=(409,),
    )
    def delete(self, username: str) -> None:
        """Removes the membership, the user's roles and project memberships in this organization (the
        hub account and memberships elsewhere stay). A membership from Keycloak is refused (409)."""
        s, org = self.db, self.org
        self.path_arg("username", username, "User")
        self.audit(username)
        self.ecs_fields["heroes.user"] = username
        user, om = find_member(s, org, username)
        if om.source == "idp":
            raise ApiError(
                409,
                f"{username}'s membership of {org.name} comes from the identity provider (Keycloak) and would "
                "be restored at their next login: remove it there",
                "idp_managed",
            )
        held = {
            a.role
            for a in s.scalars(
                select(orm.RoleAssignment).where(
                    orm.RoleAssignment.user_id == user.id, orm.RoleAssignment.org_id == org.id
                )
            )
        }
        check_roles(s, self.context, sorted(held), verb="revoke")
        remove_member(s, user, org)
        s.commit()
        return None


default_handlers = routes(UserListAPIHandler, UserAPIHandler)
