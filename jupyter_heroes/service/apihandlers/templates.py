"""``/organization/admin/workflow/template``: the organization's workflow templates.

A template is validated by :func:`jupyter_heroes.workflows.templates.load_template` (its name and
version come from the document). Versions are immutable: publishing a change means a new
``version``. ``DELETE`` retires a template (no new submissions) but keeps it, since workflow
instances refer to it.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from ... import orm
from .. import schemas
from ..auth import ApiError, not_found
from ..handlers import APIHandler, endpoint, routes
from ..views import projects_by_name

SCOPE = "workflows:manage"


def template_view(t: orm.WorkflowTemplate, org: orm.Organization) -> dict[str, Any]:
    return {
        "id": t.id,
        "organization": org.name,
        "name": t.name,
        "version": t.version,
        "application_id": t.application_id or "",
        "description": t.description or "",
        "spec": t.spec or {},
        "projects": list(t.projects or []),
        "state": t.state,
        "created_by": t.created_by or "",
        "created": t.created,
    }


class TemplateListAPIHandler(APIHandler):
    path = "/organization/admin/workflow/template"
    tag = "Organization admin"

    @endpoint(
        summary="List the organization's workflow templates (every version)",
        scope=SCOPE,
        response=schemas.TEMPLATE_LIST,
        query={
            "state": {
                "type": "string",
                "enum": ["active", "retired", "all"],
                "default": "all",
                "description": "filter on state",
            }
        },
    )
    def get(self) -> list[dict[str, Any]]:
        q = select(orm.WorkflowTemplate).where(orm.WorkflowTemplate.org_id == self.org.id)
        state = self.query_args.get("state", "all")
        if state != "all":
            q = q.where(orm.WorkflowTemplate.state == state)
        q = q.order_by(orm.WorkflowTemplate.name, orm.WorkflowTemplate.version)
        return [template_view(t, self.org) for t in self.db.scalars(q)]

    @endpoint(
        summary="Create a workflow template (a new version)",
        scope=SCOPE,
        body=schemas.TEMPLATE_CREATE,
        response=schemas.TEMPLATE,
        status=201,
        action="template.create",
        errors=(409,),
    )
    def post(self) -> dict[str, Any]:
        """``template`` is the template document (object or YAML text); ``projects`` restricts it to
        some projects of the organization (default: all)."""
        from ...workflows.templates import TemplateError, load_template

        s, org, body = self.db, self.org, self.body
        try:
            t = load_template(body["template"])
        except TemplateError as e:
            raise ApiError(
                400, f"field 'template' is not a valid workflow template: {e}", "invalid_template"
            ) from None
        self.audit(f"{t.name}:{t.version}")
        self.ecs_fields["heroes.workflow"] = t.name
        try:
            spec = json.loads(json.dumps(t.source))
        except (TypeError, ValueError):
            raise ApiError(
                400,
                "field 'template' holds values JSON cannot represent (YAML dates or timestamps?); quote them",
                "invalid_template",
            ) from None
        projects = [p.name for p in projects_by_name(s, org, body.get("projects", []))]
        exists = s.scalar(
            select(orm.WorkflowTemplate.id).where(
                orm.WorkflowTemplate.org_id == org.id,
                orm.WorkflowTemplate.name == t.name,
                orm.WorkflowTemplate.version == t.version,
            )
        )
        if exists:
            raise ApiError(
                409,
                f"template {t.name} version {t.version} already exists in {org.name}; versions are immutable, "
                "publish a change with a higher 'version'",
                "exists",
            )
        row = orm.WorkflowTemplate(
            org_id=org.id,
            name=t.name,
            version=t.version,
            application_id=t.application,
            description=t.description,
            spec=spec,
            projects=projects,
            state="active",
            created_by=self.caller_name(),
        )
        s.add(row)
        s.commit()
        return template_view(row, org)


class TemplateAPIHandler(APIHandler):
    path = "/organization/admin/workflow/template/{template_id}"
    tag = "Organization admin"
    path_params = {"template_id": {"type": "integer", "minimum": 1, "maximum": 2147483647}}

    def find(self, template_id: str) -> orm.WorkflowTemplate:
        tid = self.int_arg(template_id, "Workflow template")
        t = self.db.get(orm.WorkflowTemplate, tid)
        if t is None or t.org_id != self.org.id:
            raise not_found(f"Workflow template {tid}")
        return t

    @endpoint(summary="Get a workflow template", scope=SCOPE, response=schemas.TEMPLATE)
    def get(self, template_id: str) -> dict[str, Any]:
        return template_view(self.find(template_id), self.org)

    @endpoint(
        summary="Retire a workflow template", scope=SCOPE, response=schemas.TEMPLATE, action="template.retire"
    )
    def delete(self, template_id: str) -> dict[str, Any]:
        """The template stays (instances refer to it) but no longer accepts submissions."""
        self.audit(template_id)
        t = self.find(template_id)
        self.audit(f"{t.name}:{t.version}", id=t.id)
        self.ecs_fields["heroes.workflow"] = t.name
        t.state = "retired"
        self.db.commit()
        return template_view(t, self.org)


default_handlers = routes(TemplateListAPIHandler, TemplateAPIHandler)
