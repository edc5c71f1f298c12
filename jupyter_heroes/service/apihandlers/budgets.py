"""``/organization/budgets``: budgets of the organization and of its projects, and their credits.

Scope ``billing`` (D3.1 Table 1: ``billing-admin`` and ``org-admin``; the platform's
``tenant-admin``). A budget limits what runs may cost (reserved at submission, settled with the
ledger's actual cost); see :mod:`jupyter_heroes.accounting.budgets` and ``docs/admin/billing.md``.
Amounts are decimal strings in the budget's currency.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from ... import orm
from ...accounting import budgets as acct
from ...accounting.money import fmt, from_cents
from ...orm_market import BudgetCredit
from .. import schemas_market as sm
from ..auth import ApiError
from ..handlers import APIHandler, endpoint, routes
from ..views import projects_by_name
from ._market import check_amounts, domain_errors, jsonable, parse_time

SCOPE = "billing"
ID = {"type": "integer", "minimum": 1, "maximum": 2147483647}


def budget_view(handler: APIHandler, b: orm.Budget) -> dict[str, Any]:
    d = acct.budget_status(handler.db, b)
    d["organization"] = handler.org.name
    return jsonable(d)


def credit_view(c: BudgetCredit, currency: str) -> dict[str, Any]:
    return jsonable(
        {
            "id": c.id,
            "budget_id": c.budget_id,
            "amount": from_cents(c.amount_cents),
            "currency": currency,
            "reference": c.reference,
            "note": c.note,
            "created": c.created,
            "created_by": c.created_by,
        }
    )


class BudgetHandlerMixin(APIHandler):
    def find(self, budget_id: str) -> orm.Budget:
        bid = self.int_arg(budget_id, "Budget")
        with domain_errors():
            return acct.get_budget(self.db, bid, self.org.id)


class BudgetListAPIHandler(APIHandler):
    path = "/organization/budgets"
    tag = "Billing"

    @endpoint(
        summary="List the organization's budgets",
        scope=SCOPE,
        response=sm.BUDGET_LIST,
        query={"project": {"type": "string", "maxLength": 63, "description": "only this project's budgets"}},
    )
    def get(self) -> list[dict[str, Any]]:
        s = self.db
        project_id = None
        if "project" in self.query_args:
            project_id = projects_by_name(s, self.org, [self.query_args["project"]])[0].id
        return [budget_view(self, b) for b in acct.list_budgets(s, self.org.id, project_id)]

    @endpoint(
        summary="Create a budget for the organization or one of its projects",
        scope=SCOPE,
        body=sm.BUDGET_CREATE,
        response=sm.BUDGET,
        status=201,
        action="budget.create",
    )
    def post(self) -> dict[str, Any]:
        """``limit`` > 0 in ``currency`` (ISO 4217, default EUR). Without ``project`` it covers the
        whole organization. Two budgets of the same scope may not overlap in time (400
        ``budget_overlap``)."""
        s, body = self.db, self.body
        project = body.get("project")
        self.audit(f"project:{project}" if project else "organization", currency=body.get("currency", "EUR"))
        check_amounts(body, ["limit"])
        project_id = projects_by_name(s, self.org, [project])[0].id if project else None
        start = parse_time(body.get("period_start"), "period_start")
        end = parse_time(body.get("period_end"), "period_end")
        with domain_errors():
            b = acct.create_budget(
                s,
                self.org.id,
                limit=body["limit"],
                currency=body.get("currency", "EUR"),
                project_id=project_id,
                period_start=start,
                period_end=end,
                on_exhausted=body.get("on_exhausted", "hold"),
                margin=body.get("margin", acct.DEFAULT_MARGIN),
            )
            s.commit()
        self.audit(str(b.id), limit=str(from_cents(b.amount_cents)))
        return budget_view(self, b)


class BudgetAPIHandler(BudgetHandlerMixin):
    path = "/organization/budgets/{budget_id}"
    tag = "Billing"
    path_params = {"budget_id": ID}

    @endpoint(
        summary="Get a budget: limit, spent, reserved, available, credits", scope=SCOPE, response=sm.BUDGET
    )
    def get(self, budget_id: str) -> dict[str, Any]:
        return budget_view(self, self.find(budget_id))

    @endpoint(
        summary="Change a budget's limit, policy or margin",
        scope=SCOPE,
        body=sm.BUDGET_PATCH,
        response=sm.BUDGET,
        action="budget.update",
    )
    def patch(self, budget_id: str) -> dict[str, Any]:
        """Lowering the limit below what is spent is allowed (the budget is then exhausted);
        reservations already held are kept."""
        self.audit(budget_id)
        b = self.find(budget_id)
        body = self.body
        self.audit(str(b.id), **{k: str(v) for k, v in body.items()})
        check_amounts(body, ["limit"])
        with domain_errors():
            acct.update_budget(
                self.db,
                b.id,
                self.org.id,
                limit=body.get("limit"),
                on_exhausted=body.get("on_exhausted"),
                margin=body.get("margin"),
            )
            self.db.commit()
        return budget_view(self, b)

    @endpoint(summary="Delete a budget", scope=SCOPE, status=204, action="budget.delete", errors=(409,))
    def delete(self, budget_id: str) -> None:
        """Stops limiting spending under it. Refused (409 ``budget_in_use``) while runs hold part of
        it; the ledger keeps every job's cost either way."""
        self.audit(budget_id)
        b = self.find(budget_id)
        self.audit(str(b.id), spent=str(from_cents(b.spent_cents)))
        if b.reserved_cents:
            raise ApiError(
                409,
                f"budget {b.id} holds {fmt(b.reserved_cents, b.currency)} reserved by running work; wait for "
                "it to finish (or lower the limit to stop new runs) before deleting the budget",
                "budget_in_use",
            )
        self.db.delete(b)
        self.db.commit()
        return None


class BudgetCreditAPIHandler(BudgetHandlerMixin):
    path = "/organization/budgets/{budget_id}/credits"
    tag = "Billing"
    path_params = {"budget_id": ID}

    @endpoint(summary="List a budget's credits (prepayments)", scope=SCOPE, response=sm.CREDIT_LIST)
    def get(self, budget_id: str) -> list[dict[str, Any]]:
        b = self.find(budget_id)
        rows = self.db.scalars(
            select(BudgetCredit).where(BudgetCredit.budget_id == b.id).order_by(BudgetCredit.id)
        )
        return [credit_view(c, b.currency) for c in rows]

    @endpoint(
        summary="Record a prepayment: the budget's limit grows by its amount",
        scope=SCOPE,
        body=sm.CREDIT_CREATE,
        response=sm.CREDIT,
        status=201,
        action="budget.credit",
    )
    def post(self, budget_id: str) -> dict[str, Any]:
        """``amount`` > 0 in the budget's currency; ``reference`` e.g. the purchase order number."""
        self.audit(budget_id)
        b = self.find(budget_id)
        body = self.body
        self.audit(str(b.id), reference=body.get("reference", ""))
        check_amounts(body, ["amount"])
        with domain_errors():
            c = acct.add_credit(
                self.db,
                b.id,
                self.org.id,
                body["amount"],
                reference=body.get("reference", ""),
                note=body.get("note", ""),
                created_by=self.caller_name(),
            )
            self.db.commit()
        self.audit(amount=str(from_cents(c.amount_cents)))
        return credit_view(c, b.currency)


default_handlers = routes(BudgetListAPIHandler, BudgetAPIHandler, BudgetCreditAPIHandler)
