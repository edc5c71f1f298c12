"""``/organization/admin/roles``: built-in roles (D3.1 Table 1) and the organization's own roles.

``POST`` either creates an organization role (``{name, scopes}``: ``custom:heroes:*`` scopes, the
administrative ones held by you) or assigns a role to a member (``{username, role}``). Unassign with
``PATCH /organization/admin/users/{username}``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select

from ... import orm, roles
from .. import schemas
from ..auth import ApiError
from ..handlers import APIHandler, endpoint, routes
from ..views import check_roles, find_member, lacking_scopes, role_def, users_with_role

SCOPE = "users:manage"


def role_view(name: str, description: str, scopes: set[str], builtin: bool) -> dict[str, Any]:
    return {"name": name, "description": description, "scopes": sorted(scopes), "builtin": builtin}


class RoleListAPIHandler(APIHandler):
    path = "/organization/admin/roles"
    tag = "Organization admin"

    @endpoint(
        summary="List the roles that can be held in the organization", scope=SCOPE, response=schemas.ROLE_LIST
    )
    def get(self) -> list[dict[str, Any]]:
        org = self.org
        out = [
            role_view(r.name, r.description, set(r.scopes), True)
            for r in roles.BUILTIN_ROLES.values()
            if org.kind in r.kinds
        ]
        q = select(orm.Role).where(orm.Role.org_id == org.id).order_by(orm.Role.name)
        out += [
            role_view(r.name, r.description or "", set(r.scopes or []), False) for r in self.db.scalars(q)
        ]
        return out

    @endpoint(
        summary="Create an organization role, or assign a role to a user",
        scope=SCOPE,
        body=schemas.ROLE_POST,
        response=schemas.ROLE_POST_RESPONSE,
        status=201,
        action="role.create",
        errors=(409,),
    )
    def post(self) -> dict[str, Any]:
        """With ``{name, scopes, description}``: create a role of this organization (its
        administrative scopes must be ones you hold). With ``{username, role}``: give that member
        the role (same rule). Ordinary scopes (submit, data:home, apps:package) anyone managing
        users may grant."""
        if "username" in self.body or "role" in self.body:
            return self.assign()
        return self.create()

    def parse_body(self, schema: dict[str, Any]) -> Any:
        body = super().parse_body({"type": "object"})
        which = schemas.ROLE_ASSIGN if ("username" in body or "role" in body) else schemas.ROLE_CREATE
        self.validate(body, which)
        return body

    def create(self) -> dict[str, Any]:
        s, org, body = self.db, self.org, self.body
        name = body["name"]
        scopes = set(body["scopes"])
        self.audit(name, scopes=sorted(scopes))
        if name in roles.BUILTIN_ROLES:
            raise ApiError(409, f"{name} is a built-in role; choose another name", "exists")
        if s.scalar(select(orm.Role.id).where(orm.Role.org_id == org.id, orm.Role.name == name)):
            raise ApiError(409, f"role {name} already exists in {org.name}", "exists")
        lacking = lacking_scopes(self.context, scopes)
        if lacking:
            raise ApiError(
                403,
                f"a role can only hold administrative scopes you hold yourself; you lack {', '.join(sorted(lacking))}",
                "scope_escalation",
            )
        r = orm.Role(org_id=org.id, name=name, description=body.get("description", ""), scopes=sorted(scopes))
        s.add(r)
        s.commit()
        return role_view(r.name, r.description, set(r.scopes), False)

    def assign(self) -> dict[str, Any]:
        s, org, body = self.db, self.org, self.body
        username, role = body["username"], body["role"]
        self.audit(username, action="role.assign", role=role)
        self.ecs_fields["heroes.user"] = username
        user, _ = find_member(s, org, username)
        check_roles(s, self.context, [role])
        existing = s.scalar(
            select(orm.RoleAssignment).where(
                orm.RoleAssignment.user_id == user.id,
                orm.RoleAssignment.org_id == org.id,
                orm.RoleAssignment.role == role,
            )
        )
        if existing is not None:
            raise ApiError(
                409, f"{username} already holds role {role} in {org.name} ({existing.source})", "exists"
            )
        s.add(orm.RoleAssignment(user_id=user.id, org_id=org.id, role=role, source="local"))
        s.commit()
        return {"username": username, "role": role, "organization": org.name, "source": "local"}


class RoleAPIHandler(APIHandler):
    path = "/organization/admin/roles/{rolename}"
    tag = "Organization admin"
    path_params = {"rolename": schemas.ROLE_NAME}

    @endpoint(summary="Get a role and the members holding it", scope=SCOPE, response=schemas.ROLE)
    def get(self, rolename: str) -> dict[str, Any]:
        self.path_arg("rolename", rolename, "Role")
        view = role_view(*role_def(self.db, self.org, rolename))
        view["users"] = users_with_role(self.db, self.org, rolename)
        return view

    @endpoint(summary="Delete an organization role", scope=SCOPE, status=204, action="role.delete")
    def delete(self, rolename: str) -> None:
        """Deletes a role of this organization and its assignments; built-in roles cannot be
        deleted (400). You must hold all the role's scopes."""
        s, org = self.db, self.org
        self.path_arg("rolename", rolename, "Role")
        self.audit(rolename)
        _, _, _, builtin = role_def(s, org, rolename)
        if builtin:
            raise ApiError(
                400,
                f"{rolename} is a built-in role and cannot be deleted; to take it from a user, "
                "PATCH /organization/admin/users/{username} with their new roles",
                "builtin_role",
            )
        check_roles(s, self.context, [rolename], verb="delete")
        s.execute(
            delete(orm.RoleAssignment).where(
                orm.RoleAssignment.org_id == org.id, orm.RoleAssignment.role == rolename
            )
        )
        s.execute(delete(orm.Role).where(orm.Role.org_id == org.id, orm.Role.name == rolename))
        s.commit()
        return None


default_handlers = routes(RoleListAPIHandler, RoleAPIHandler)
