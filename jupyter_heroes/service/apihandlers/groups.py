"""``/organization/admin/groups``: the organization's groups, which HEROES calls projects.

A project is a Keycloak group ``/<organization>/<project>``; its members share workflows, data and
budget. Projects and memberships made here are ``local``; those from Keycloak are shown, not changed.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from ... import orm
from .. import schemas
from ..auth import ApiError
from ..handlers import APIHandler, endpoint, routes
from ..views import find_project, members_by_name, project_view

SCOPE = "users:manage"


def _idp_refusal(what: str) -> ApiError:
    return ApiError(
        409,
        f"{what} comes from the identity provider (Keycloak) and would be restored at the next login: "
        "change it there",
        "idp_managed",
    )


class GroupListAPIHandler(APIHandler):
    path = "/organization/admin/groups"
    tag = "Organization admin"

    @endpoint(summary="List the organization's groups (projects)", scope=SCOPE, response=schemas.GROUP_LIST)
    def get(self) -> list[dict[str, Any]]:
        q = select(orm.Project).where(orm.Project.org_id == self.org.id).order_by(orm.Project.name)
        return [project_view(self.db, p) for p in self.db.scalars(q)]

    @endpoint(
        summary="Create a group (project)",
        scope=SCOPE,
        body=schemas.GROUP_CREATE,
        response=schemas.GROUP,
        status=201,
        action="group.create",
        errors=(409,),
    )
    def post(self) -> dict[str, Any]:
        """``members`` must already be members of the organization."""
        s, org, body = self.db, self.org, self.body
        name = body["name"]
        self.audit(name, members=body.get("members", []))
        self.ecs_fields["heroes.project"] = name
        if s.scalar(select(orm.Project.id).where(orm.Project.org_id == org.id, orm.Project.name == name)):
            raise ApiError(409, f"group (project) {name} already exists in {org.name}", "exists")
        users = members_by_name(s, org, body.get("members", []))
        p = orm.Project(org_id=org.id, name=name, description=body.get("description", ""))
        s.add(p)
        s.flush()
        for u in users:
            s.add(orm.ProjectMember(user_id=u.id, project_id=p.id, source="local"))
        s.commit()
        return project_view(s, p)


class GroupAPIHandler(APIHandler):
    path = "/organization/admin/groups/{groupname}"
    tag = "Organization admin"

    @endpoint(summary="Get a group (project) and its members", scope=SCOPE, response=schemas.GROUP)
    def get(self, groupname: str) -> dict[str, Any]:
        self.path_arg("groupname", groupname, "Group")
        return project_view(self.db, find_project(self.db, self.org, groupname))

    @endpoint(
        summary="Update a group's description and members",
        scope=SCOPE,
        body=schemas.GROUP_PATCH,
        response=schemas.GROUP,
        action="group.update",
        errors=(409,),
    )
    def patch(self, groupname: str) -> dict[str, Any]:
        """``members`` replaces the members added through this API (Keycloak's stay);
        ``add_members`` / ``remove_members`` change them one by one."""
        s, org, body = self.db, self.org, self.body
        self.path_arg("groupname", groupname, "Group")
        self.audit(groupname, fields=sorted(body))
        self.ecs_fields["heroes.project"] = groupname
        p = find_project(s, org, groupname)
        if "description" in body:
            p.description = body["description"]
        current = {
            pm.user_id: pm
            for pm in s.scalars(select(orm.ProjectMember).where(orm.ProjectMember.project_id == p.id))
        }
        if "members" in body:
            wanted = {u.id for u in members_by_name(s, org, body["members"])}
            for uid, pm in current.items():
                if pm.source == "local" and uid not in wanted:
                    s.delete(pm)
            for uid in wanted - set(current):
                s.add(orm.ProjectMember(user_id=uid, project_id=p.id, source="local"))
            s.flush()
            current = {
                pm.user_id: pm
                for pm in s.scalars(select(orm.ProjectMember).where(orm.ProjectMember.project_id == p.id))
            }
        for u in members_by_name(s, org, body.get("add_members", [])):
            if u.id not in current:
                pm = orm.ProjectMember(user_id=u.id, project_id=p.id, source="local")
                s.add(pm)
                current[u.id] = pm
        for u in members_by_name(s, org, body.get("remove_members", [])):
            existing = current.get(u.id)
            if existing is None:
                continue
            if existing.source == "idp":
                raise _idp_refusal(f"{u.name}'s membership of {groupname}")
            s.delete(existing)
        s.commit()
        s.refresh(p)
        return project_view(s, p)

    @endpoint(
        summary="Delete a group (project)", scope=SCOPE, status=204, action="group.delete", errors=(409,)
    )
    def delete(self, groupname: str) -> None:
        """Deletes the project and its memberships and budgets. A project with members from
        Keycloak is refused (409): remove the Keycloak group first."""
        s, org = self.db, self.org
        self.path_arg("groupname", groupname, "Group")
        self.audit(groupname)
        self.ecs_fields["heroes.project"] = groupname
        p = find_project(s, org, groupname)
        idp = s.scalar(
            select(orm.ProjectMember.id).where(
                orm.ProjectMember.project_id == p.id, orm.ProjectMember.source == "idp"
            )
        )
        if idp is not None:
            raise _idp_refusal(f"group {groupname} (Keycloak group /{org.name}/{groupname})")
        s.delete(p)
        s.commit()
        return None


default_handlers = routes(GroupListAPIHandler, GroupAPIHandler)
