"""``/organization/workflow/...``: templates a researcher may run, submission, instances, cancel,
logs, and a progress event stream (D3.6 "Workflow Management").

A researcher sees their own instances; holders of ``workflows:manage`` see every instance of their
organization (``/organization/admin/workflow/instance``). Anything else — another user's instance,
another organization's — answers 404. Submissions are validated against the template (types,
ranges, enums, locked values) and persisted before anything reaches a cluster; the answer is 201
with the instance in state ``submitting``, and the engine hands the steps to the scheduler in the
background.

A submission runs on a cluster of the caller's organization or, named ``provider/cluster``, on the
queue of an offer the organization enabled and can use now (``GET /organization/workflow/clusters``
lists both; anything else is 404). In the transaction that creates the instance its predicted cost
(the decision's, with ``decision``, else the requested walltime x resources under the offer version
in force) x each budget's margin is reserved on the organization's and project's budgets: a budget
that cannot cover it answers 409 ``budget_exceeded`` (the status of the budget API) with the
numbers, and nothing is left behind. See ``docs/admin/billing.md``.

A submission may set a step's walltime and memory (``resources``) or take the decision's advice for
its cluster and queue (``accept_advice``); the user's values win, then the advice, then the template
(:mod:`jupyter_heroes.workflows.overrides`). They are checked against the queue's limits, stored on
the instance, shown in its ``resources``, and the jobs and the reservation's upper bound follow them.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from sqlalchemy import or_, select
from tornado.iostream import StreamClosedError

from ... import orm
from ...accounting.money import from_cents
from ...background import spawn
from ...marketplace.common import describe_availability
from ...marketplace.offers import EnabledOffer, enabled_offer_for, enabled_offers, queue_limits
from ...orm_market import BudgetReservation, JobOfferPin, MarketOfferVersion
from ...workflows.engine import WorkflowError
from ...workflows.overrides import MAX_MEMORY_MB, ResourceError, resources_view
from ...workflows.templates import ParameterError, TemplateError, load_template
from .. import schemas
from ..auth import ApiError, not_found
from ..handlers import APIHandler, endpoint, routes
from ._market import domain_errors

SUBMIT = "submit"
MANAGE = "workflows:manage"
_REF = schemas.REF_PATTERN.strip("^$")
CLUSTER_REF_PATTERN = f"^{_REF}(/{_REF})?$"
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
        "offer": {"type": "integer", "nullable": True, "description": "the offer it runs under"},
        "reservation": {
            "type": "object",
            "nullable": True,
            "description": "the budget reservation: predicted (and its basis), reserved per budget, actual "
            "(decimal strings)",
        },
        "resources": {
            "type": "object",
            "description": "per step, what its jobs ask the scheduler for: walltime_s, walltime, memory_mb, "
            "source (template, user, advice or user+advice), walltime_source, memory_source, "
            "template_walltime_s, template_memory_mb, and the advice's basis when it applies",
        },
    },
    closed=False,
)
QUEUE_VIEW = schemas.obj(
    {
        "name": {"type": "string"},
        "limits": {"type": "object", "nullable": True},
    },
    closed=False,
)
CLUSTER_VIEW = schemas.obj(
    {
        "cluster": {"type": "string", "description": "what to put in the submission's 'cluster'"},
        "provider": {"type": "string", "description": "the organization that operates it"},
        "own": {"type": "boolean"},
        "description": {"type": "string"},
        "queues": schemas.array(QUEUE_VIEW),
        "offer": {
            "type": "object",
            "nullable": True,
            "description": "id, name, version, currency, price, terms, availability_text, terms_changed",
        },
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
STEP_RESOURCES = schemas.obj(
    {
        "walltime": {
            "oneOf": [
                {
                    "title": "a positive number of seconds",
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 2**31 - 1,
                },
                schemas._str(
                    r"^(\d+-)?\d{1,3}:\d{2}:\d{2}$",
                    "[D-]HH:MM:SS, e.g. 01:30:00",
                    20,
                    title="a string [D-]HH:MM:SS such as 01:30:00",
                ),
            ],
            "description": "seconds, or [D-]HH:MM:SS",
        },
        "memory_mb": {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_MEMORY_MB,
            "description": "MB per node",
        },
    },
    minProperties=1,
)
SUBMIT_BODY = schemas.obj(
    {
        "template": schemas._str(schemas.NAME_PATTERN, "the template's name", 63),
        "version": {"type": "integer", "minimum": 1, "description": "default: the newest active version"},
        "params": {"type": "object", "additionalProperties": PARAM_VALUE, "maxProperties": 200},
        "cluster": schemas._str(
            CLUSTER_REF_PATTERN,
            "a cluster of your organization, or provider/cluster of an offer your organization enabled "
            "(GET /organization/workflow/clusters lists both)",
            127,
        ),
        "queue": schemas._str(schemas.QUEUE_PATTERN, schemas.QUEUE_HINT, 63),
        "project": schemas.REF,
        "decision": schemas._str(
            r"^[A-Za-z0-9_-]{1,64}$",
            "the id of the decision this submission follows (its predicted cost is reserved)",
            64,
        ),
        "resources": {
            "type": "object",
            "additionalProperties": STEP_RESOURCES,
            "maxProperties": 100,
            "description": "per step of the template, the walltime and/or memory to ask for instead of "
            "the template's (within the queue's limits)",
        },
        "accept_advice": {
            "type": "boolean",
            "description": "with 'decision': ask for the walltime and memory the decision advised for "
            "this cluster and queue ('resources' still wins)",
        },
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


def cluster_label(s: Any, c: orm.Cluster | None, org_id: int) -> str:
    """A cluster as the submitting organization names it: ``name`` if its own, else ``provider/name``."""
    if c is None:
        return ""
    if c.org_id == org_id:
        return c.name
    provider = s.get(orm.Organization, c.org_id)
    return f"{provider.name if provider else '?'}/{c.name}"


def reservation_view(s: Any, inst: orm.WorkflowInstance) -> tuple[int | None, dict[str, Any] | None]:
    """(offer id, reservation summary) of an instance."""
    pins = s.scalars(
        select(JobOfferPin.offer_version_id)
        .join(orm.Job, orm.Job.id == JobOfferPin.job_id)
        .where(orm.Job.instance_id == inst.id, JobOfferPin.offer_version_id.is_not(None))
    ).all()
    offer_id = None
    if pins:
        v = s.get(MarketOfferVersion, pins[0])
        offer_id = v.offer_id if v else None
    r = s.scalar(select(BudgetReservation).where(BudgetReservation.instance_id == inst.id))
    if r is None:
        return offer_id, None
    return offer_id, {
        "id": r.id,
        "state": r.state,
        "currency": r.currency,
        "predicted": str(from_cents(r.predicted_cents)),
        "basis": r.note.split(": ", 1)[-1],
        "actual": str(from_cents(r.actual_cents)) if r.actual_cents is not None else None,
        "holds": [
            {
                "budget_id": h.budget_id,
                "reserved": str(from_cents(h.amount_cents)),
                "spent": str(from_cents(h.spent_cents)) if h.spent_cents is not None else None,
            }
            for h in r.holds
        ],
    }


def effective_resources(t: orm.WorkflowTemplate | None, inst: orm.WorkflowInstance) -> dict[str, Any]:
    """Per step, the walltime and memory the instance's jobs ask for, and where each comes from."""
    if t is None:
        return {}
    try:
        return resources_view(load_template(t.spec), inst.resource_overrides)
    except TemplateError:
        return {}


def instance_view(s: Any, inst: orm.WorkflowInstance, org: orm.Organization) -> dict[str, Any]:
    t = s.get(orm.WorkflowTemplate, inst.template_id)
    c = s.get(orm.Cluster, inst.cluster_id) if inst.cluster_id else None
    offer_id, reservation = reservation_view(s, inst)
    u = s.get(orm.User, inst.user_id)
    p = s.get(orm.Project, inst.project_id) if inst.project_id else None
    return {
        "id": inst.id,
        "organization": org.name,
        "project": p.name if p else None,
        "user": u.name if u else "",
        "template": t.name if t else "",
        "template_version": t.version if t else 0,
        "cluster": cluster_label(s, c, inst.org_id),
        "state": inst.state,
        "params": dict(inst.params or {}),
        "created": inst.created,
        "updated": inst.updated,
        "jobs": [job_view(j) for j in sorted(inst.jobs, key=lambda j: j.id)],
        "offer": offer_id,
        "reservation": reservation,
        "resources": effective_resources(t, inst),
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

    def resolve_cluster(self: Any, ref: str, queue: str) -> tuple[orm.Cluster, EnabledOffer | None, str]:
        """(cluster, offer or None, queue) a submission of the caller's organization may run on: one
        of its own clusters by name, or ``provider/cluster`` (or a bare name no own cluster has) of an
        offer the organization enabled and can use now, on the offered queue. Anything else is 404,
        whether it exists elsewhere or not."""
        s, org = self.db, self.org
        if "/" not in ref:
            own = s.scalar(select(orm.Cluster).where(orm.Cluster.org_id == org.id, orm.Cluster.name == ref))
            if own is not None:
                if queue and own.queues and queue not in {q.name for q in own.queues}:
                    raise ApiError(
                        400,
                        f"cluster {own.name} has no queue '{queue}'; its queues are "
                        f"{', '.join(sorted(q.name for q in own.queues))}",
                        "unknown_queue",
                    )
                return own, None, queue
        offers = [
            e
            for e in enabled_offers(s, org.id)
            if e.cluster is not None
            and (e.cluster_label == ref or ("/" not in ref and e.cluster.name == ref))
        ]
        clusters = {e.cluster.id for e in offers if e.cluster is not None}
        if len(clusters) > 1:
            raise ApiError(
                400,
                f"several providers offer a cluster named {ref}: write provider/cluster, one of "
                f"{', '.join(sorted({e.cluster_label for e in offers}))}",
                "ambiguous_cluster",
            )
        if not offers:
            raise not_found(f"cluster '{ref}'")
        cluster = offers[0].cluster
        assert cluster is not None
        chosen = enabled_offer_for(s, org.id, cluster.id, queue)
        if chosen is None:
            if queue:
                raise not_found(f"queue '{queue}' of cluster '{ref}'")
            raise ApiError(
                400,
                f"your organization enabled several offers on {ref}: name the queue, one of "
                f"{', '.join(sorted(e.offer.queue for e in offers))}",
                "ambiguous_queue",
            )
        return cluster, chosen, chosen.offer.queue

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
        cluster, offer, queue = self.resolve_cluster(body["cluster"], body.get("queue", ""))
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
        label = cluster_label(s, cluster, org.id)
        decision = body.get("decision")
        if decision:  # the decision's own refusals (not a candidate, already used) come first
            _link_decision(s, org.id, decision, None, label, queue)
        advice = _decision_advice(s, org.id, decision, label, queue) if body.get("accept_advice") else None
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
                offer=offer,
                resources=body.get("resources"),
                advice=advice,
            )
        except ResourceError as e:
            raise ApiError(e.status, e.message, e.reason) from None
        except ParameterError as e:
            raise ApiError(400, str(e), "invalid_parameter") from None
        except TemplateError as e:
            raise ApiError(
                409, f"template {trow.name} v{trow.version} is not runnable: {e}", "invalid_template"
            ) from None
        except WorkflowError as e:
            raise ApiError(e.status, e.message, e.reason) from None
        predicted = _decision_cost(s, org.id, decision, label, queue) if decision else None
        with domain_errors():  # BudgetExceeded: 409 budget_exceeded, with the numbers
            reservation = engine.admit(s, inst, offer=offer, predicted=predicted)
        if decision:
            _link_decision(s, org.id, decision, inst.id, label, queue)
        self.audit(
            inst.id,
            template=trow.name,
            version=trow.version,
            cluster=label,
            offer=offer.offer.id if offer else None,
            reserved=str(from_cents(sum(h.amount_cents for h in reservation.holds))),
            currency=reservation.currency,
        )
        self.ecs_fields["heroes.workflow"] = inst.id
        view = instance_view(s, inst, org)
        s.commit()  # persisted before anything is sent
        spawn(engine.launch(inst.id), f"launching workflow {inst.id}", engine.log)
        return view


def _decision_cost(s: Any, org_id: int, decision_id: str, cluster: str, queue: str) -> tuple[int, str] | None:
    """The decision's predicted cost of this placement, or None (no decision module yet, or the
    decision did not price it): then the walltime upper bound is reserved."""
    try:
        from ...decision.store import predicted_cost
    except ImportError:
        return None
    return predicted_cost(s, decision_id, cluster, queue, org_id=org_id)


def _decision_advice(
    s: Any, org_id: int, decision_id: str | None, cluster: str, queue: str
) -> dict[str, Any]:
    """The walltime and memory advice decision *decision_id* gave for *cluster*/*queue* (for a
    submission with ``accept_advice``): 404 for an unknown decision, 400 without a decision or
    when it gave no advice for this placement."""
    if not decision_id:
        raise _api_error(
            ResourceError(
                "accept_advice applies the advice of a decision: give its id as 'decision' (the answer "
                "of POST /organization/decision/decide), or leave accept_advice out",
                "advice_without_decision",
            )
        )
    from ...decision.store import advice_for, get_decision

    try:
        get_decision(s, org_id, decision_id)
    except Exception as e:
        raise _api_error(e) from None
    advice = advice_for(s, decision_id, cluster, queue, org_id=org_id)
    if not advice:
        raise _api_error(
            ResourceError(
                f"decision {decision_id} has no walltime and memory advice for {cluster}/"
                f"{queue or '(default queue)'}: it did not rank that placement, or was made without "
                "advice. Submit to one of its ranked candidates, ask for a new decision, or leave "
                "accept_advice out",
                "no_advice",
            )
        )
    return advice


def _api_error(e: Exception) -> Exception:
    """A domain error (with ``status``, ``reason`` and ``message``) as the API's error; anything
    else as it is."""
    status, reason = getattr(e, "status", None), getattr(e, "reason", None)
    if not isinstance(status, int) or not isinstance(reason, str):
        return e
    return ApiError(status, getattr(e, "message", str(e)), reason.replace("-", "_"))


def _link_decision(
    s: Any, org_id: int, decision_id: str, instance_id: str | None, cluster: str, queue: str
) -> None:
    """Record which decision a submission followed (with *instance_id* None: check that it may); the
    store's errors (unknown decision: 404, a placement the decision did not rank: 400, a decision
    already followed: 409) carry their status and reason."""
    try:
        from ...decision.store import link_submission
    except ImportError:
        return
    try:
        link_submission(
            s, org_id=org_id, decision_id=decision_id, instance_id=instance_id, cluster=cluster, queue=queue
        )
    except Exception as e:
        status, reason = getattr(e, "status", None), getattr(e, "reason", None)
        if not isinstance(status, int) or not isinstance(reason, str):
            raise
        raise ApiError(status, getattr(e, "message", str(e)), reason.replace("-", "_")) from None


class ClusterListAPIHandler(WorkflowMixin, APIHandler):
    path = "/organization/workflow/clusters"
    tag = "Workflows"

    @endpoint(
        summary="Clusters and queues you may submit to: your organization's and its enabled offers",
        scope=SUBMIT,
        response=schemas.array(CLUSTER_VIEW),
    )
    def get(self) -> list[dict[str, Any]]:
        """Only what a researcher needs to choose (names, queues and their limits, the offer's price
        and terms); never hosts, accounts or keys. Offers unusable now (outside their availability
        windows, cluster disabled by its provider) are left out."""
        s, org = self.db, self.org
        out: list[dict[str, Any]] = []
        own = s.scalars(
            select(orm.Cluster)
            .where(orm.Cluster.org_id == org.id, orm.Cluster.enabled.is_(True))
            .order_by(orm.Cluster.name)
        )
        for c in own:
            out.append(
                {
                    "cluster": c.name,
                    "provider": org.name,
                    "own": True,
                    "description": c.description or "",
                    "queues": [
                        {"name": q.name, "limits": queue_limits(q)}
                        for q in sorted(c.queues, key=lambda q: q.name)
                    ],
                    "offer": None,
                }
            )
        for e in enabled_offers(s, org.id):
            assert e.cluster is not None
            v = e.version
            out.append(
                {
                    "cluster": e.cluster_label,
                    "provider": e.provider.name,
                    "own": False,
                    "description": e.offer.description or "",
                    "queues": [{"name": e.offer.queue, "limits": queue_limits(e.queue)}],
                    "offer": {
                        "id": e.offer.id,
                        "name": e.offer.name,
                        "version": v.version,
                        "currency": v.currency,
                        "price": dict(v.price),
                        "terms": v.terms,
                        "availability_text": describe_availability(v.availability),
                        "terms_changed": e.terms_changed,
                    },
                }
            )
        return out


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
            self.write(": connected\n\n")  # clients (and proxies) see the stream open at once
            await self.flush()
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
    ClusterListAPIHandler,
    InstanceListAPIHandler,
    OrgInstanceListAPIHandler,
    InstanceAPIHandler,
    InstanceLogsAPIHandler,
    EventsAPIHandler,
)
