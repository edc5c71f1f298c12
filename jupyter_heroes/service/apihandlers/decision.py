"""``/organization/decision/...``: where should a workflow run (D3.1 4.7), the organization's decision
policy, EAR energy measurements, and how good the predictions were.

- ``POST /organization/decision/decide`` (``submit``): rank every queue the organization can use
  (its own enabled clusters and the vendor offers it enabled) for a template and its parameters;
  infeasible candidates are listed with their reasons. The decision is stored: pass its id as
  ``decision`` when submitting, so the pick and the outcome are recorded beside the prediction.
- ``GET /organization/decision/policies`` (``submit`` or ``clusters:manage``) and ``PUT``
  (``clusters:manage``): the strategy, weights and what users may choose.
- ``POST /organization/decision/ingest_ear_files`` (``clusters:manage``): ``eacct -c`` or EAR
  HEROES plugin CSV for one cluster; later decisions use the measured node power.
- ``GET /organization/decision/performance`` (``clusters:manage``): predicted vs actual runtime of
  every finished job submitted from a decision, per model version.
- ``GET /organization/decision/{decision_id}``: a past decision (the caller's own, or any of the
  organization's with ``clusters:manage``); another organization's is 404.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ...decision import store
from ...decision.candidates import Requirements
from ...decision.cost import PriceError, default_rates, parse_amount
from ...decision.ear import EarError, detect_format, read_ear_csv
from ...decision.ranking import CRITERIA, STRATEGIES, DecisionError, PolicyError, UserChoice
from ...decision.service import DecideRequest, DecisionService
from ...workflows.templates import ParameterError, TemplateError
from .. import schemas
from ..auth import ApiError
from ..handlers import APIHandler, endpoint, routes
from ._market import parse_time
from .workflows import PARAM_VALUE, WorkflowMixin

SUBMIT = "submit"
ADMIN = "clusters:manage"
DECISION_ID = {"type": "string", "pattern": "^[0-9a-f]{32}$", "description": "a decision id"}
CURRENCY = schemas._str(r"^[A-Z]{3}$", "an ISO 4217 currency code of the exchange-rate table (EUR, USD)", 3)
WEIGHTS = schemas.obj(
    {c: {"type": "number", "minimum": 0} for c in CRITERIA},
    description="criterion -> non-negative weight (strategy 'weighted')",
)
AMOUNT = {
    "oneOf": [
        {"type": "number", "minimum": 0},
        {"type": "string", "pattern": r"^[0-9]{1,12}(\.[0-9]{1,6})?$", "maxLength": 20},
    ],
    "description": 'a non-negative amount, e.g. 12.50 or "12.50"',
}
DECIDE_BODY = schemas.obj(
    {
        "template": schemas._str(schemas.NAME_PATTERN, "the template's name", 63),
        "version": {"type": "integer", "minimum": 1, "description": "default: the newest active version"},
        "params": {"type": "object", "additionalProperties": PARAM_VALUE, "maxProperties": 200},
        "strategy": {"type": "string", "enum": list(STRATEGIES)},
        "weights": WEIGHTS,
        "deadline": {**schemas.DATETIME, "description": "the run must end by then (ISO 8601 with a zone)"},
        "budget": AMOUNT,
        "budget_currency": CURRENCY,
        "currency": CURRENCY,
        "requirements": {
            "type": "object",
            "description": "arch, licences, data_location, data_locality (prefer|require), input_gb, "
            "output_gb, storage_months",
        },
    },
    ("template",),
)
ROW = schemas.obj(
    {
        "rank": {"type": "integer", "nullable": True},
        "cluster": {"type": "string"},
        "queue": {"type": "string"},
        "status": {"type": "string"},
        "why": {"type": "string", "nullable": True},
        "advice": {
            "type": "object",
            "description": "ranked rows: step -> {walltime_s, walltime, memory_mb, basis, memory_basis, "
            "requested_walltime_s, requested_memory_mb}: what to ask the scheduler for",
            "additionalProperties": {"type": "object"},
        },
    },
    closed=False,
)
DECISION = schemas.obj(
    {
        "decision": DECISION_ID,
        "template": {"type": "string"},
        "template_version": {"type": "integer"},
        "strategy": {"type": "string"},
        "weights": {"type": "object"},
        "currency": {"type": "string"},
        "model_version": {"type": "string"},
        "recommendation": {"type": "object", "nullable": True},
        "message": {"type": "string"},
        "notes": schemas.array({"type": "string"}),
        "steps": schemas.array({"type": "object"}),
        "candidates": schemas.array(ROW),
    },
    closed=False,
)
STORED = schemas.obj(
    {
        "decision": DECISION_ID,
        "user": {"type": "string"},
        "template": {"type": "string"},
        "strategy": {"type": "string"},
        "recommended": {"type": "string", "nullable": True},
        "chosen": {"type": "string", "nullable": True},
        "accepted": {"type": "boolean", "nullable": True},
        "instance": {"type": "string", "nullable": True},
        "created": {"type": "string"},
        "candidates": schemas.array(ROW),
        "outcome": schemas.array({"type": "object"}),
    },
    closed=False,
)
POLICY = schemas.obj(
    {
        "strategy": {"type": "string", "enum": list(STRATEGIES)},
        "weights": WEIGHTS,
        "allow_user_strategy": {"type": "boolean"},
        "allow_user_weights": {"type": "boolean"},
        "platforms": {
            "type": "object",
            "additionalProperties": schemas.array(schemas.REF, maxItems=100),
            "maxProperties": 200,
            "description": "template name -> the clusters it may run on (unlisted templates: all)",
        },
        "currency": CURRENCY,
        "intensity_basis": {"type": "string", "enum": ["lifecycle", "direct"]},
    }
)
POLICY_OUT = schemas.obj(
    {
        **POLICY["properties"],
        "updated_by": {"type": "string", "nullable": True},
        "updated": {"type": "string", "nullable": True},
    },
    closed=False,
)
PERF_GROUP = schemas.obj(
    {
        "model_version": {"type": "string"},
        "count": {"type": "integer"},
        "accuracy": {"type": "number"},
        "mae_s": {"type": "number"},
        "under_predicted_share": {"type": "number"},
        "coverage": {"type": "number"},
        "jobs": schemas.array({"type": "object"}),
    },
    closed=False,
)
INGEST_OUT = schemas.obj(
    {
        "cluster": {"type": "string"},
        "files": schemas.array({"type": "object"}),
        "added": {"type": "integer"},
        "duplicates": {"type": "integer"},
        "applications": {"type": "object"},
    },
    closed=False,
)
#: a cluster of the organization, or ``provider/cluster`` of an enabled vendor offer
CLUSTER_LABEL = schemas._str(
    r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(/[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)?$",
    "a cluster of your organization, or provider/cluster of an offer it enabled",
    127,
)


def _reason(e: Exception, default: str) -> str:
    return str(getattr(e, "reason", default) or default).replace("-", "_")


class DecisionMixin(WorkflowMixin):
    def decisions(self: Any) -> DecisionService:
        """The service's decision module (made at start, see ``HeroesService.init_decisions``)."""
        svc = getattr(self.heroes, "decisions", None)
        if svc is None:
            raise ApiError(
                503,
                "the decision module is not running in this service; ask the platform administrator to "
                "check the service's start-up log",
                "unavailable",
            )
        return svc

    def require_any(self: Any, *scopes: str) -> None:
        if not any(self.context.has(s) for s in scopes):
            names = " or ".join(f"custom:heroes:{s}" for s in scopes)
            raise ApiError(
                403,
                f"{self.caller_name()} lacks the scope {names} in organization {self.org.name}: ask an "
                "administrator of the organization for a role that grants it",
                "missing_scope",
            )


class DecideAPIHandler(DecisionMixin, APIHandler):
    path = "/organization/decision/decide"
    tag = "Decision"

    @endpoint(
        summary="Rank where a workflow can run: time to result, cost, energy, carbon",
        scope=SUBMIT,
        body=DECIDE_BODY,
        response=DECISION,
        status=201,
        action="decision.decide",
    )
    async def post(self) -> dict[str, Any]:
        """One row per candidate queue (the organization's enabled clusters and the queues of the
        vendor offers it enabled), ranked by the strategy in force (the organization's, or the one
        asked for where the policy allows). Excluded candidates are listed with every reason. The
        answer's ``decision`` id goes into the submission (``decision`` field) so the pick and the
        outcome are recorded beside the prediction."""
        body = self.body
        if self.context.user is None:
            raise ApiError(403, "only users (not services) ask for decisions", "not_a_user")
        rows = [t for t in self.visible_templates() if t.name == body["template"]]
        if "version" in body:
            rows = [t for t in rows if t.version == body["version"]]
        if not rows:
            names = sorted({t.name for t in self.visible_templates()})
            raise ApiError(
                400,
                f"unknown template '{body['template']}'"
                + (f" (version {body['version']})" if "version" in body else "")
                + f"; the templates you may run are: {', '.join(names) or 'none'}",
                "unknown_template",
            )
        trow = max(rows, key=lambda t: t.version)
        choice = self.user_choice(body)
        requirements = None
        if "requirements" in body:
            try:
                requirements = Requirements.from_dict(body["requirements"])
            except (ValueError, TypeError) as e:
                raise ApiError(400, str(e), "invalid_requirements") from None
        currency = body.get("currency")
        if currency is not None and currency not in default_rates().rates:
            raise ApiError(
                400,
                f"currency {currency}: not in the exchange-rate table "
                f"({', '.join(sorted(default_rates().rates))})",
                "invalid_currency",
            )
        req = DecideRequest(
            org_id=self.org.id,
            user=self.context.user,
            user_name=self.caller_name(),
            template_row=trow,
            params=body.get("params", {}),
            choice=choice,
            requirements=requirements,
            currency=currency,
            admin=self.context.has("workflows:manage"),
        )
        self.db.commit()
        try:
            result = await self.decisions().decide(req)
        except ParameterError as e:
            raise ApiError(400, str(e), "invalid_parameter") from None
        except TemplateError as e:
            raise ApiError(
                409, f"template {trow.name} v{trow.version} is not runnable: {e}", "invalid_template"
            ) from None
        except PolicyError as e:
            raise ApiError(400, str(e), "not_allowed_by_policy") from None
        except DecisionError as e:
            raise ApiError(400, str(e), _reason(e, "invalid_decision")) from None
        except store.DecisionStoreError as e:
            raise ApiError(e.status, e.message, e.reason) from None
        d = result.to_dict()
        self.audit(
            result.decision_id,
            template=trow.name,
            version=trow.version,
            strategy=result.decision.strategy,
            recommended=result.decision.recommendation.key if result.decision.recommendation else None,
        )
        self.ecs_fields["heroes.decision"] = result.decision_id
        return {
            "decision": result.decision_id,
            "template": trow.name,
            "template_version": trow.version,
            "model_version": result.model_version,
            "notes": list(result.decision.notes),
            **d,
        }

    def user_choice(self, body: dict[str, Any]) -> UserChoice:
        deadline = None
        if "deadline" in body:
            try:
                deadline = datetime.fromisoformat(body["deadline"])
            except ValueError:
                deadline = None
            if deadline is None or deadline.tzinfo is None:
                raise ApiError(
                    400,
                    "field 'deadline': an ISO 8601 time with its zone, e.g. 2026-11-23T18:00:00Z",
                    "invalid_field",
                )
        budget = None
        if "budget" in body:
            try:
                budget = parse_amount(body["budget"], "budget")
            except PriceError as e:
                raise ApiError(400, str(e), "invalid_field") from None
        bc = body.get("budget_currency")
        if bc is not None and bc not in default_rates().rates:
            raise ApiError(
                400,
                f"budget_currency {bc}: not in the exchange-rate table ({', '.join(sorted(default_rates().rates))})",
                "invalid_currency",
            )
        return UserChoice(
            strategy=body.get("strategy"),
            weights=body.get("weights"),
            deadline=deadline,
            budget=budget,
            budget_currency=bc,
        )


def _policy_view(s: Any, org_id: int) -> dict[str, Any]:
    p = store.get_policy(s, org_id)
    row = store.policy_row(s, org_id)
    return {
        **store.policy_to_dict(p),
        "updated_by": row.updated_by if row else None,
        "updated": row.updated.isoformat(timespec="seconds") + "Z" if row else None,
    }


class PolicyAPIHandler(DecisionMixin, APIHandler):
    path = "/organization/decision/policies"
    tag = "Decision"

    @endpoint(summary="The organization's decision policy", response=POLICY_OUT)
    def get(self) -> dict[str, Any]:
        """Readable by every member who submits work (``submit``) and by those who manage it
        (``clusters:manage``). Until a policy is set, the defaults apply."""
        self.require_any(SUBMIT, ADMIN)
        return _policy_view(self.db, self.org.id)

    @endpoint(
        summary="Replace the organization's decision policy",
        scope=ADMIN,
        body=POLICY,
        response=POLICY_OUT,
        action="decision.policy",
    )
    def put(self) -> dict[str, Any]:
        """Fields left out take their defaults (strategy ``weighted``, weights time 1, cost 1,
        energy 0, carbon 1, users may choose the strategy but not the weights, currency EUR,
        life-cycle carbon intensities)."""
        try:
            p = store.set_policy(self.db, self.org.id, self.body, updated_by=self.caller_name())
        except store.InvalidPolicy as e:
            raise ApiError(400, e.message, "invalid_policy") from None
        self.audit(self.org.name, strategy=p.strategy)
        view = _policy_view(self.db, self.org.id)
        self.db.commit()
        return view


class IngestEarAPIHandler(DecisionMixin, APIHandler):
    path = "/organization/decision/ingest_ear_files"
    tag = "Decision"

    @endpoint(
        summary="Ingest EAR energy measurements (eacct -c or EAR HEROES plugin CSV) of a cluster",
        scope=ADMIN,
        response=INGEST_OUT,
        action="decision.ingest",
        query={
            "cluster": CLUSTER_LABEL,
            "application": schemas._str(
                r"^[A-Za-z0-9._:/-]{1,128}$",
                "the application id (default: from the HEROES ids of each row, else EAR's APPID)",
                128,
            ),
        },
    )
    def post(self) -> dict[str, Any]:
        """Send the CSV as the body (``Content-Type: text/csv``) or as files of a
        ``multipart/form-data`` form. Both layouts are ``;``-separated with a header; a row's energy is
        ``DC_NODE_POWER_W x TIME_SEC``. A malformed file is refused whole (400 naming the line and the
        column); a row already ingested (same job, step and node) is counted as a duplicate."""
        cluster = self.query_args.get("cluster")
        if not cluster:
            raise ApiError(
                400, "name the cluster the measurements come from: ?cluster=<name>", "invalid_field"
            )
        known = self.cluster_labels()
        if cluster not in known:
            raise ApiError(
                400,
                f"cluster '{cluster}' is not one of your organization's clusters or enabled offers "
                f"({', '.join(sorted(known)) or 'none'})",
                "unknown_cluster",
            )
        files = self.csv_files()
        parsed = []
        for name, text in files:
            try:
                parsed.append((name, detect_format(text.split("\n", 1)[0]), read_ear_csv(text, name=name)))
            except EarError as e:
                raise ApiError(400, str(e), "invalid_ear_csv") from None
        added = dup = 0
        apps: dict[str, Any] = {}
        try:
            for _name, fmt, recs in parsed:
                res = store.ingest_ear(
                    self.db,
                    org_id=self.org.id,
                    org_name=self.org.name,
                    cluster=cluster,
                    records=recs,
                    source=fmt,
                    application=self.query_args.get("application"),
                    user=self.caller_name(),
                )
                added += res.added
                dup += res.duplicates
                apps.update(res.to_dict()["applications"])
        except store.DecisionStoreError as e:
            raise ApiError(e.status, e.message, e.reason) from None
        self.audit(cluster, added=added, duplicates=dup, files=[n for n, _f, _r in parsed])
        self.db.commit()
        return {
            "cluster": cluster,
            "files": [{"name": n, "format": f, "rows": len(r)} for n, f, r in parsed],
            "added": added,
            "duplicates": dup,
            "applications": apps,
        }

    def cluster_labels(self) -> set[str]:
        from sqlalchemy import select

        from ... import orm
        from ...marketplace.offers import enabled_offers

        names = set(self.db.scalars(select(orm.Cluster.name).where(orm.Cluster.org_id == self.org.id)))
        return names | {e.cluster_label for e in enabled_offers(self.db, self.org.id, include_unusable=True)}

    def csv_files(self) -> list[tuple[str, str]]:
        ctype = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        raw: list[tuple[str, bytes]]
        if ctype == "multipart/form-data":
            raw = [(f.filename or k, f.body) for k, fs in self.request.files.items() for f in fs]
            if not raw:
                raise ApiError(400, "the form holds no file; attach the EAR CSV file(s)", "invalid_ear_csv")
        elif ctype in ("text/csv", "text/plain", "application/csv"):
            raw = [("EAR CSV", self.request.body or b"")]
        else:
            raise ApiError(
                400,
                f"send the EAR CSV as the body with Content-Type: text/csv, or as files of a "
                f"multipart/form-data form, not {ctype[:60] or 'no Content-Type'}",
                "unsupported_content_type",
            )
        out = []
        for name, data in raw:
            try:
                text = data.decode("utf-8-sig")
            except UnicodeDecodeError:
                raise ApiError(400, f"{name}: not UTF-8 text", "invalid_ear_csv") from None
            if not text.strip():
                raise ApiError(
                    400, f"{name}: empty; send the EAR CSV with its header line", "invalid_ear_csv"
                )
            if "\x00" in text:
                raise ApiError(400, f"{name}: holds a NUL character", "invalid_ear_csv")
            out.append((name[:255], text if "\n" in text else text + "\n"))
        return out


class PerformanceAPIHandler(DecisionMixin, APIHandler):
    path = "/organization/decision/performance"
    tag = "Decision"

    @endpoint(
        summary="Predicted vs actual runtime of finished jobs, per model version",
        scope=ADMIN,
        response=schemas.array(PERF_GROUP),
        query={"since": {"type": "string", "maxLength": 40, "description": "ISO 8601 date or time"}},
    )
    def get(self) -> list[dict[str, Any]]:
        """Every completed job of a workflow submitted from a decision: the runtime predicted for its
        step on the queue it ran on beside the scheduler's elapsed time; per model version the
        ``accuracy`` (mean of min/max), ``mae_s``, ``under_predicted_share`` and ``coverage`` (share
        inside the predicted interval)."""
        since = parse_time(self.query_args.get("since"), "since")
        return store.performance(self.db, self.org.id, since=since)


class DecisionAPIHandler(DecisionMixin, APIHandler):
    path = "/organization/decision/{decision_id}"
    tag = "Decision"
    path_params = {"decision_id": DECISION_ID}

    @endpoint(summary="A past decision, with the pick and the outcome", response=STORED)
    def get(self, decision_id: str) -> dict[str, Any]:
        """Yours (``submit``), or any of the organization's with ``clusters:manage``."""
        self.require_any(SUBMIT, ADMIN)
        self.path_arg("decision_id", decision_id, "decision")
        try:
            row = store.get_decision(self.db, self.org.id, decision_id)
        except store.DecisionNotFound as e:
            raise ApiError(404, e.message, "not_found") from None
        mine = self.context.user is not None and row.user_id == self.context.user.id
        if not (mine or self.context.has(ADMIN)):
            raise ApiError(404, f"decision '{decision_id}' not found in your organization", "not_found")
        view = store.decision_view(row)
        view["outcome"] = store.performance_rows(self.db, self.org.id, decision_id=row.id)
        return view


default_handlers = routes(
    DecideAPIHandler, PolicyAPIHandler, IngestEarAPIHandler, PerformanceAPIHandler, DecisionAPIHandler
)
