"""``/organization/admin/audit``: the audit trail of the selected organization.

Every mutating API call (allowed, denied or failed) leaves an entry: who, what action on which
target, the HTTP status and the outcome. Platform administrators read any organization's trail by
selecting it (``?organization=``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from ... import orm
from .. import schemas
from ..handlers import APIHandler, endpoint, routes


class AuditAPIHandler(APIHandler):
    path = "/organization/admin/audit"
    tag = "Organization admin"

    @endpoint(
        summary="Read the organization's audit log, newest first",
        scope="audit:read",
        response=schemas.AUDIT_LIST,
        query={
            "limit": {
                "type": "integer",
                "minimum": 1,
                "maximum": 1000,
                "default": 100,
                "description": "entries per page",
            },
            "before": {
                "type": "integer",
                "minimum": 1,
                "maximum": 2**31 - 1,
                "description": "only entries with a smaller id (paging)",
            },
            "action": {
                "type": "string",
                "maxLength": 128,
                "description": "only this action, e.g. user.create",
            },
            "user": {"type": "string", "maxLength": 255, "description": "only calls by this user"},
            "outcome": {"type": "string", "enum": ["success", "failure", "denied"]},
        },
    )
    def get(self) -> list[dict[str, Any]]:
        a = self.query_args
        q = select(orm.AuditEntry).where(orm.AuditEntry.org_id == self.org.id)
        if "before" in a:
            q = q.where(orm.AuditEntry.id < a["before"])
        if "action" in a:
            q = q.where(orm.AuditEntry.action == a["action"])
        if "user" in a:
            q = q.where(orm.AuditEntry.user == a["user"])
        if "outcome" in a:
            q = q.where(orm.AuditEntry.outcome == a["outcome"])
        q = q.order_by(orm.AuditEntry.id.desc()).limit(a["limit"])
        org = self.org.name
        return [
            {
                "id": e.id,
                "ts": e.ts,
                "organization": org,
                "user": e.user,
                "action": e.action,
                "method": e.method,
                "path": e.path,
                "target": e.target,
                "status": e.status,
                "outcome": e.outcome,
                "detail": e.detail or {},
            }
            for e in self.db.scalars(q)
        ]


default_handlers = routes(AuditAPIHandler)
