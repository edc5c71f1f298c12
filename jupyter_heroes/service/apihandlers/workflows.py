"""``/organization/workflow/...``: templates a researcher may run, submission, instances, cancel,
logs, and a progress event stream (D3.6 "Workflow Management").

A researcher sees their own instances; holders of ``workflows:manage`` see every instance of their
organization (``/organization/admin/workflow/instance``). Anything else — another user's instance,
another organization's — answers 404. Submissions are validated against the template (types,
ranges, enums, locked values) and persisted before anything reaches a cluster; the answer is 201
with the instance in state ``submitting``, and the engine hands the steps to the scheduler in the
background.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from sqlalchemy import or_, select
from tornado.iostream import StreamClosedError

from ... import orm
from ...workflows.engine import WorkflowError
from ...workflows.templates import ParameterError, TemplateError
from .. import schemas
from ..auth import ApiError, not_found
from ..handlers import APIHandler, endpoint, routes

SUBMIT = "submit"
MANAGE = "workflows:manage"
INSTANCE_ID = {"type": "string", "pattern": "^[0-9a-f]{32}$", "description": "a workflow instance id"}

JOB = schemas.obj(
    {
        "step": {"type": "string"},
        "state": {"type": "string"},
        "reason": {"type": "string"},
        "job_id": {"type": "string", "description": "the scheduler's job id (empty until submitted)"},
        "queue": {"type": "string"},
        "exit_code": {"type": "integer", "nullable": True},
        "submitted": {**schemas.DATETIME, "nullable": True},
        "started": {**schemas.DATETIME, "nullable": True},
        "finished": {**schemas.DATETIME, "nullable": True},
        "accounting": {"type": "object"},
    },
    closed=False,
)
INSTANCE = schemas.obj(
    {
        "id": INSTANCE_ID,
        "organization": {"type": "string"},
        "project": {"type": "string", "nullable": True},
        "user": {"type": "string"},
        "template": {"type": "string"},
        "template_version": {"type": "integer"},
        "cluster": {"type": "string"},
        "state": {"type": "string"},
        "params": {"type": "object"},
        "created": schemas.DATETIME,
        "updated": schemas.DATETIME,
        "jobs": schemas.array(JOB),
    },
    closed=False,
)
AVAILABLE_TEMPLATE = schemas.obj(
    {
        "id": {"type": "integer"},
        "name": {"type": "string"},
        "version": {"type": "integer"},
        "application_id": {"type": "string"},
        "description": {"type": "string"},
        "parameters": {
            "type": "object",
            "description": "name -> declaration (type, default, min, max, enum, ...)",
        },
        "steps": schemas.array({"type": "object"}),
    },
    closed=False,
)
PARAM_VALUE = {"description": "a string, number or boolean"}
SUBMIT_BODY = schemas.obj(
    {
        "template": schemas._str(schemas.NAME_PATTERN, "the template's name", 63),
        "version": {"type": "integer", "minimum": 1, "description": "default: the newest active version"},
        "params": {"type": "object", "additionalProperties": PARAM_VALUE, "maxProperties": 200},
        "cluster": schemas._str(schemas.REF_PATTERN, "an enrolled cluster of your organization", 63),
        "queue": schemas._str(schemas.QUEUE_PATTERN, schemas.QUEUE_HINT, 63),
        "project": schemas.REF,
    },
    ("template", "cluster"),
)


def job_view(j: orm.Job) -> dict[str, Any]:
    return {
        "step": j.step,
        "state": j.state,
        "reason": j.reason or "",
        "job_id": j.scheduler_job_id or "",
        "queue": j.queue or "",
        "exit_code": j.exit_code,
        "submitted": j.submitted,
        "started": j.started,
        "finished": j.finished,
        "accounting": dict(j.accounting or {}),
    }


def instance_view(s: Any, inst: orm.WorkflowInstance, org: orm.Organization) -> dict[str, Any]:
    t = s.get(orm.WorkflowTemplate, inst.template_id)
    c = s.get(orm.Cluster, inst.cluster_id) if inst.cluster_id else None
    u = s.get(orm.User, inst.user_id)
    p = s.get(orm.Project, inst.project_id) if inst.project_id else None
    return {
        "id": inst.id,
        "organization": org.name,
        "project": p.name if p else None,
        "user": u.name if u else "",
        "template": t.name if t else "",
        "template_version": t.version if t else 0,
        "cluster": c.name if c else "",
        "state": inst.state,
        "params": dict(inst.params or {}),
        "created": inst.created,
        "updated": inst.updated,
        "jobs": [job_view(j) for j in sorted(inst.jobs, key=lambda j: j.id)],
    }


class WorkflowMixin:
    """Lookups confined to the caller's organization (and to their own instances without MANAGE)."""

    def user_projects(self: Any) -> dict[str, orm.Project]:
        if self.context.user is None:
            return {}
        q = (
            select(orm.Project)
            .join(orm.ProjectMember, orm.ProjectMember.project_id == orm.Project.id)
            .where(orm.ProjectMember.user_id == self.context.user.id, orm.Project.org_id == self.org.id)
        )
        return {p.name: p for p in self.db.scalars(q)}

    def visible_templates(self: Any) -> list[orm.WorkflowTemplate]:
        """Active templates of the organization enabled for one of the caller's projects (or for all)."""
        q = select(orm.WorkflowTemplate).where(
            orm.WorkflowTemplate.org_id == self.org.id, orm.WorkflowTemplate.state == "active"
        )
        mine = set(self.user_projects())
        manage = self.context.has(MANAGE)
        return [t for t in self.db.scalars(q) if manage or not t.projects or mine & set(t.projects)]

    def require_submit_or_manage(self: Any) -> None:
        """Instances are read and cancelled by their owner (``submit``) or by the organization's
        workflow managers (``workflows:manage``)."""
        if not (self.context.has(SUBMIT) or self.context.has(MANAGE)):
            raise ApiError(
                403,
                f"{self.caller_name()} lacks the scope custom:heroes:submit (or custom:heroes:workflows:manage) in "
                f"organization {self.org.name}: ask an administrator of the organization for a role that grants it",
                "missing_scope",
            )

    def instance(self: Any, instance_id: str) -> orm.WorkflowInstance:
        self.require_submit_or_manage()
        self.path_arg("instance_id", instance_id, "instance id")
        inst = self.db.get(orm.WorkflowInstance, instance_id)
        own = inst is not None and self.context.user is not None and inst.user_id == self.context.user.id
        if inst is None or inst.org_id != self.org.id or not (own or self.context.has(MANAGE)):
            raise not_found(f"workflow instance '{instance_id}'")
        self.ecs_fields["heroes.workflow"] = instance_id
        return inst


class AvailableTemplatesAPIHandler(WorkflowMixin, APIHandler):
    path = "/organization/workflow/template"
    tag = "Workflows"

    @endpoint(
        summary="Workflow templates you may run", scope=SUBMIT, response=schemas.array(AVAILABLE_TEMPLATE)
    )
    def get(self) -> list[dict[str, Any]]:
        out = []
        for t in sorted(self.visible_templates(), key=lambda t: (t.name, -t.version)):
            spec = t.spec or {}
            out.append(
                {
                    "id": t.id,
                    "name": t.name,
                    "version": t.version,
                    "application_id": t.application_id or spec.get("application", t.name),
                    "description": t.description or spec.get("description", ""),
                    "parameters": spec.get("parameters", {}) or {},
                    "steps": [
                        {
                            "name": st.get("name"),
                            "resources": st.get("resources", {}),
                            "depends_on": st.get("depends_on", []),
                        }
                        for st in spec.get("steps", [])
                    ],
                }
            )
        return out


class SubmitAPIHandler(WorkflowMixin, APIHandler):
    path = "/organization/workflow/submit"
    tag = "Workflows"

    @endpoint(
        summary="Submit a workflow",
        scope=SUBMIT,
        body=SUBMIT_BODY,
        response=INSTANCE,
        status=201,
        action="workflow.submit",
        errors=(409,),
    )
    async def post(self) -> dict[str, Any]:
        """Validates every parameter against the template and persists the instance before anything
        is sent; the steps are then handed to the cluster's scheduler in the background."""
        s, org, body = self.db, self.org, self.body
        engine = self.heroes.workflows
        candidates = [t for t in self.visible_templates() if t.name == body["template"]]
        if "version" in body:
            candidates = [t for t in candidates if t.version == body["version"]]
        if not candidates:
            raise not_found(f"workflow template '{body['template']}'")
        trow = max(candidates, key=lambda t: t.version)
        cluster = s.scalar(
            select(orm.Cluster).where(orm.Cluster.org_id == org.id, orm.Cluster.name == body["cluster"])
        )
        if cluster is None:
            raise not_found(f"cluster '{body['cluster']}'")
        queue = body.get("queue", "")
        if queue and cluster.queues and queue not in {q.name for q in cluster.queues}:
            raise ApiError(
                400,
                f"cluster {cluster.name} has no queue '{queue}'; its queues are "
                f"{', '.join(sorted(q.name for q in cluster.queues))}",
                "unknown_queue",
            )
        project_id = None
        if "project" in body:
            projects = self.user_projects()
            if body["project"] not in projects:
                raise not_found(f"project '{body['project']}'")
            project_id = projects[body["project"]].id
        elif trow.projects:
            mine = [p for name, p in self.user_projects().items() if name in trow.projects]
            project_id = mine[0].id if len(mine) == 1 else None
        if self.context.user is None:
            raise ApiError(403, "only users (not services) submit workflows", "not_a_user")
        try:
            inst = engine.create_instance(
                s,
                org=org,
                user=self.context.user,
                template_row=trow,
                params=body.get("params", {}),
                cluster=cluster,
                queue=queue,
                project_id=project_id,
                admin=self.context.has(MANAGE),
            )
        except ParameterError as e:
            raise ApiError(400, str(e), "invalid_parameter") from None
        except TemplateError as e:
            raise ApiError(
                409, f"template {trow.name} v{trow.version} is not runnable: {e}", "invalid_template"
            ) from None
        except WorkflowError as e:
            raise ApiError(e.status, e.message, e.reason) from None
        self.audit(inst.id, template=trow.name, version=trow.version, cluster=cluster.name)
        self.ecs_fields["heroes.workflow"] = inst.id
        view = instance_view(s, inst, org)
        s.commit()  # persisted before anything is sent
        asyncio.ensure_future(engine.launch(inst.id))
        return view


class InstanceListAPIHandler(WorkflowMixin, APIHandler):
    path = "/organization/workflow/instance"
    tag = "Workflows"

    @endpoint(
        summary="Your workflow instances",
        scope=SUBMIT,
        response=schemas.array(INSTANCE),
        query={
            "state": {"type": "string", "enum": ["live", "final", "all"], "default": "all"},
            "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
        },
    )
    def get(self) -> list[dict[str, Any]]:
        if self.context.user is None:
            return []
        q = select(orm.WorkflowInstance).where(
            orm.WorkflowInstance.org_id == self.org.id, orm.WorkflowInstance.user_id == self.context.user.id
        )
        return _list(self, q)


def _list(handler: Any, q: Any) -> list[dict[str, Any]]:
    final = ("completed", "failed", "cancelled")
    state = handler.query_args.get("state", "all")
    if state == "live":
        q = q.where(orm.WorkflowInstance.state.not_in(final))
    elif state == "final":
        q = q.where(orm.WorkflowInstance.state.in_(final))
    q = q.order_by(orm.WorkflowInstance.created.desc()).limit(handler.query_args.get("limit", 100))
    return [instance_view(handler.db, i, handler.org) for i in handler.db.scalars(q)]


class OrgInstanceListAPIHandler(WorkflowMixin, APIHandler):
    path = "/organization/admin/workflow/instance"
    tag = "Organization admin"

    @endpoint(
        summary="Every workflow instance of the organization (filter by template)",
        scope=MANAGE,
        response=schemas.array(INSTANCE),
        query={
            "template": schemas.REF,
            "state": {"type": "string", "enum": ["live", "final", "all"], "default": "all"},
            "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
        },
    )
    def get(self) -> list[dict[str, Any]]:
        q = select(orm.WorkflowInstance).where(orm.WorkflowInstance.org_id == self.org.id)
        if "template" in self.query_args:
            ids = select(orm.WorkflowTemplate.id).where(
                orm.WorkflowTemplate.org_id == self.org.id,
                orm.WorkflowTemplate.name == self.query_args["template"],
            )
            q = q.where(orm.WorkflowInstance.template_id.in_(ids))
        return _list(self, q)


class InstanceAPIHandler(WorkflowMixin, APIHandler):
    path = "/organization/workflow/instance/{instance_id}"
    tag = "Workflows"
    path_params = {"instance_id": INSTANCE_ID}

    @endpoint(
        summary="A workflow instance with its jobs (yours, or any of the organization's with workflows:manage)",
        response=INSTANCE,
    )
    def get(self, instance_id: str) -> dict[str, Any]:
        return instance_view(self.db, self.instance(instance_id), self.org)

    @endpoint(
        summary="Cancel a workflow (every live step)",
        response=INSTANCE,
        status=202,
        action="workflow.cancel",
    )
    async def delete(self, instance_id: str) -> dict[str, Any]:
        inst = self.instance(instance_id)
        self.audit(inst.id)
        iid = inst.id
        self.db.commit()
        await self.heroes.workflows.cancel(iid)
        self.db.expire_all()
        return instance_view(self.db, self.db.get(orm.WorkflowInstance, iid), self.org)


class InstanceLogsAPIHandler(WorkflowMixin, APIHandler):
    path = "/organization/workflow/instance/{instance_id}/logs"
    tag = "Workflows"
    path_params = {"instance_id": INSTANCE_ID}

    @endpoint(
        summary="The end of a step's standard output or error",
        response=schemas.obj(
            {"step": {"type": "string"}, "stream": {"type": "string"}, "text": {"type": "string"}}
        ),
        query={
            "step": schemas._str(r"^[a-z][a-z0-9-]{0,62}$", "a step of the workflow", 63),
            "stream": {"type": "string", "enum": ["out", "err"], "default": "out"},
            "task": {"type": "integer", "minimum": 0, "maximum": 100000, "default": 0},
        },
        errors=(503,),
    )
    async def get(self, instance_id: str) -> dict[str, Any]:
        inst = self.instance(instance_id)
        steps = [j.step for j in inst.jobs]
        step = self.query_args.get("step") or (steps[0] if steps else "")
        if step not in steps:
            raise not_found(f"step '{step}'")
        stream = self.query_args.get("stream", "out")
        iid = inst.id
        self.db.commit()
        try:
            text = await self.heroes.workflows.tail(iid, step, stream, self.query_args.get("task", 0))
        except WorkflowError as e:
            raise ApiError(e.status, e.message, e.reason) from None
        return {"step": step, "stream": stream, "text": text}


class EventsAPIHandler(WorkflowMixin, APIHandler):
    path = "/organization/workflow/events"
    tag = "Workflows"

    @endpoint(
        summary="Progress of your workflows as a stream of server-sent events",
        scope=SUBMIT,
        response={"type": "string", "description": "text/event-stream: one JSON event per 'data:' line"},
        query={
            "instance": INSTANCE_ID,
            "timeout": {
                "type": "number",
                "minimum": 0.1,
                "maximum": 3600,
                "default": 300,
                "description": "close the stream after this many seconds (reconnect to go on)",
            },
        },
    )
    async def get(self) -> None:
        """Each event is a JSON object: ``type`` (``instance`` or ``job``), ``instance``, ``state``,
        and for jobs ``step``, ``reason``, ``job_id``, ``exit_code``. The stream begins with a
        ``snapshot`` event per matching live instance."""
        org_id = self.org.id
        user_id = self.context.user.id if self.context.user else -1
        manage = self.context.has(MANAGE)
        wanted = self.query_args.get("instance")
        if wanted:
            self.instance(wanted)  # 404 unless visible
        q = select(orm.WorkflowInstance).where(orm.WorkflowInstance.org_id == org_id)
        if not manage:
            q = q.where(orm.WorkflowInstance.user_id == user_id)
        if wanted:
            q = q.where(orm.WorkflowInstance.id == wanted)
        else:
            q = q.where(or_(orm.WorkflowInstance.state.not_in(("completed", "failed", "cancelled"))))
        snapshot = [instance_view(self.db, i, self.org) for i in self.db.scalars(q)]
        mine = {i["id"] for i in snapshot}
        self.db.commit()

        def accept(ev: dict[str, Any]) -> bool:
            if ev.get("org_id") != org_id:
                return False
            if wanted:
                return ev.get("instance") == wanted
            if manage:
                return True
            if ev.get("instance") in mine:
                return True
            with self.settings["db_factory"]() as s:  # a new instance of this user's
                inst = s.get(orm.WorkflowInstance, ev.get("instance"))
                ok = inst is not None and inst.user_id == user_id
            if ok:
                mine.add(ev["instance"])
            return ok

        self.set_header("Content-Type", "text/event-stream; charset=UTF-8")
        self.set_header("X-Accel-Buffering", "no")
        deadline = time.monotonic() + float(self.query_args.get("timeout", 300))
        try:
            for inst in snapshot:
                await self._send(
                    {"type": "snapshot", "instance": inst["id"], "state": inst["state"], "data": inst}
                )
            async with self.heroes.workflows.events.subscribe(accept) as queue:
                while (left := deadline - time.monotonic()) > 0:
                    try:
                        ev = await asyncio.wait_for(queue.get(), timeout=min(left, 15))
                    except asyncio.TimeoutError:
                        self.write(": keep-alive\n\n")
                        await self.flush()
                        continue
                    await self._send({k: v for k, v in ev.items() if k != "org_id"})
        except StreamClosedError:
            return
        self.finish()

    async def _send(self, ev: dict[str, Any]) -> None:
        self.write(f"event: {ev.get('type', 'message')}\ndata: {json.dumps(ev, default=str)}\n\n")
        await self.flush()


default_handlers = routes(
    AvailableTemplatesAPIHandler,
    SubmitAPIHandler,
    InstanceListAPIHandler,
    OrgInstanceListAPIHandler,
    InstanceAPIHandler,
    InstanceLogsAPIHandler,
    EventsAPIHandler,
)
