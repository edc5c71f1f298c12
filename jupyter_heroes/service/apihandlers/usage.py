"""Usage and cost reports on the ledger (D3.1 4.8, 4.9), and vendor revenue.

- ``GET /organization/usage`` (scope ``billing``): the organization's usage and cost grouped by any
  of project, user, template, cluster, offer, application, provider and a period;
- ``GET /organization/usage/records`` (``billing``): the ledger itself, one line per job;
- ``GET /organization/usage/me`` (``submit``): the same report restricted to the caller's own jobs;
- ``GET /marketplace/revenue`` (``resources:publish`` for offers, ``apps:publish`` for
  applications): what a vendor earned per item, client organization and period, never per user or
  project (asking for those is a 400).

Every report accepts ``format=csv`` for a ``text/csv`` download (one column per metric and per
currency). Money is a decimal string per currency unless ``currency=`` converts it (with the
platform's exchange-rate table). See :mod:`jupyter_heroes.accounting.reports`.
"""

from __future__ import annotations

from typing import Any

from ...accounting import reports
from ...accounting.money import check_currency
from ...decision.cost import PriceError
from .. import schemas_market as sm
from ..auth import ApiError
from ..handlers import APIHandler, endpoint, routes
from ..views import members_by_name, projects_by_name
from ._market import domain_errors, jsonable, parse_dims, parse_time, write_csv

ORG_DIMS = sorted(k for k in reports.DIMENSIONS if k != "organization") + ["period"]
BY = {
    "type": "string",
    "maxLength": 200,
    "default": "project",
    "description": f"{sm.DIMS_HINT} among {', '.join(ORG_DIMS)}",
}
PROJECT = {"type": "string", "maxLength": 63, "description": "only this project's jobs"}
USER = {"type": "string", "maxLength": 128, "description": "only this user's jobs"}
VENDOR_BY = {
    "type": "string",
    "maxLength": 200,
    "default": "item",
    "description": f"{sm.DIMS_HINT} among {', '.join(reports.VENDOR_DIMENSIONS)} (never users or projects)",
}
#: revenue kind -> the scope that shows it
VENDOR_SCOPES = {"offer": "custom:heroes:resources:publish", "application": "custom:heroes:apps:publish"}


class ReportMixin(APIHandler):
    def report_args(self) -> dict[str, Any]:
        a = self.query_args
        currency = a.get("currency")
        if currency is not None:
            try:
                check_currency(currency, "currency")
            except PriceError as e:
                raise ApiError(400, str(e), "invalid_currency") from None
        return {
            "period": a.get("period"),
            "start": parse_time(a.get("start"), "start"),
            "end": parse_time(a.get("end"), "end"),
            "currency": currency,
        }

    def answer(self, rows: list[dict[str, Any]], name: str) -> list[dict[str, Any]] | None:
        if self.query_args.get("format") == "csv":
            write_csv(self, reports.report_csv(rows), f"{self.org.name}-{name}.csv")
            return None
        return jsonable(rows)

    def filters(self) -> dict[str, int | None]:
        """``project`` and ``user`` query parameters as ``project_id`` / ``user_id`` (400 for a name
        that is not in the organization)."""
        a = self.query_args
        return {
            "project_id": projects_by_name(self.db, self.org, [a["project"]])[0].id
            if "project" in a
            else None,
            "user_id": members_by_name(self.db, self.org, [a["user"]])[0].id if "user" in a else None,
        }


class UsageAPIHandler(ReportMixin):
    path = "/organization/usage"
    tag = "Billing"

    @endpoint(
        summary="Usage and cost of the organization's jobs, grouped",
        scope="billing",
        response=sm.USAGE_REPORT,
        query={"by": BY, "project": PROJECT, "user": USER, **sm.REPORT_QUERY},
    )
    def get(self) -> list[dict[str, Any]] | None:
        """One row per group: jobs, core/node/GPU/memory hours, energy, and ``cost`` (resources),
        ``licence`` (applications) and ``total`` per currency."""
        args = self.report_args()
        dims = parse_dims(self.query_args["by"])
        with domain_errors():
            f = self.filters()
            rows = reports.usage_report(
                self.db, self.org.id, by=dims, project_id=f["project_id"], user_id=f["user_id"], **args
            )
        return self.answer(rows, "usage")


class UsageRecordsAPIHandler(ReportMixin):
    path = "/organization/usage/records"
    tag = "Billing"

    @endpoint(
        summary="The organization's ledger: one line per finished job",
        scope="billing",
        response=sm.RECORD_LIST,
        query={
            "project": PROJECT,
            "user": USER,
            "start": sm.REPORT_QUERY["start"],
            "end": sm.REPORT_QUERY["end"],
            "format": sm.FORMAT,
        },
    )
    def get(self) -> list[dict[str, Any]] | None:
        """For billing outside the platform: who ran what where, for how long, at which price
        version, and what it cost. ``format=csv`` is the export (``reports.read_records_csv`` reads
        it back); cells a spreadsheet would run as a formula start with ``'``."""
        a = self.query_args
        start, end = parse_time(a.get("start"), "start"), parse_time(a.get("end"), "end")
        with domain_errors():
            f = self.filters()
            text = reports.records_csv(
                self.db, self.org.id, start=start, end=end, project_id=f["project_id"], user_id=f["user_id"]
            )
        if a.get("format") == "csv":
            write_csv(self, text, f"{self.org.name}-ledger.csv")
            return None
        return jsonable(reports.read_records_csv(text))


class MyUsageAPIHandler(ReportMixin):
    path = "/organization/usage/me"
    tag = "Billing"

    @endpoint(
        summary="Usage and cost of the caller's own jobs, grouped",
        scope="submit",
        response=sm.USAGE_REPORT,
        query={"by": BY, **sm.REPORT_QUERY},
    )
    def get(self) -> list[dict[str, Any]] | None:
        """Any member who submits work sees their own jobs here, and nobody else's."""
        args = self.report_args()
        dims = parse_dims(self.query_args["by"])
        user = self.context.user
        with domain_errors():
            rows = (
                reports.usage_report(self.db, self.org.id, by=dims, user_id=user.id, **args)
                if user is not None
                else []
            )
        return self.answer(rows, "my-usage")


class RevenueAPIHandler(ReportMixin):
    path = "/marketplace/revenue"
    tag = "Marketplace"

    @endpoint(
        summary="A vendor's revenue per offer or application, client organization and period",
        response=sm.REVENUE_REPORT,
        query={"by": VENDOR_BY, **sm.REPORT_QUERY},
    )
    def get(self) -> list[dict[str, Any]] | None:
        """Requires ``custom:heroes:resources:publish`` (revenue of resource offers) or
        ``custom:heroes:apps:publish`` (application licences) in the selected organization. Only
        the organization's own items are counted; client organizations are the finest grain (a
        vendor never sees a client's users or projects: ``by=user`` is a 400)."""
        kinds = [k for k, scope in VENDOR_SCOPES.items() if scope in self.context.scopes]
        if not kinds:
            raise ApiError(
                403,
                f"{self.caller_name()} lacks the scope {VENDOR_SCOPES['offer']} or "
                f"{VENDOR_SCOPES['application']} in organization {self.org.name}: only vendors see revenue",
                "missing_scope",
            )
        args = self.report_args()
        dims = parse_dims(self.query_args["by"])
        with domain_errors():
            rows = reports.vendor_revenue(self.db, self.org.id, by=dims, **args)
        return self.answer([r for r in rows if r["kind"] in kinds], "revenue")


default_handlers = routes(UsageAPIHandler, UsageRecordsAPIHandler, MyUsageAPIHandler, RevenueAPIHandler)
