"""Budgets per organization and per project, reservations at submission, settlement at the end.

A :class:`~jupyter_heroes.orm.Budget` has a limit (``amount_cents``) in a currency, an optional
period (``period_start`` <= t < ``period_end``; open ends allowed), a safety ``margin`` and a policy
``on_exhausted`` (``hold`` or ``cancel``). The organization's budget (``project_id`` NULL) and the
project's budget both apply to a run of that project; an organization or project without an active
budget is not limited. Two budgets of the same scope may not overlap in time.

**Reserve** (:func:`reserve`): when a workflow is submitted, its predicted cost x the budget's margin
is held on every applicable budget. Each hold is one conditional statement::

    UPDATE budgets SET reserved_cents = reserved_cents + :need
    WHERE id = :id AND amount_cents - reserved_cents - spent_cents >= :need

whose row count says whether it fitted. On PostgreSQL (READ COMMITTED) a concurrent update of the row
makes the statement wait and re-check its condition on the committed row. On SQLite writers are
serialised by the database lock, and with the driver's default transaction handling (used by
:func:`jupyter_heroes.dbutil.make_engine`) a transaction begins at its first write, so the statement
always reads the latest committed state, whether it is the transaction's first write or it follows
others (the engine writes the instance first, then reserves). Either way exactly as many reservations are accepted as the budget allows,
however many arrive at once. Budgets are taken in id order (no deadlock); if a later one refuses,
the earlier holds of the same call are given back before :class:`BudgetExceeded` is raised, so the
caller's transaction stays usable.

**Settle** (:func:`settle`): the actual cost replaces the hold: ``reserved -= hold``,
``spent += actual`` (converted to each budget's currency), exactly once (a repeated settlement with the
same amount returns the first; a different amount is a :class:`~..marketplace.errors.Conflict`).
:func:`release` ends a reservation with nothing spent (submission failed, run cancelled before it
started). A run can cost more than was reserved: the spend is recorded in full, never lost.

**Exhausted budgets** (D3.1 4.6.6's open question): when ``spent >= limit``,
:func:`exhausted_actions` lists the live workflow instances under that budget with the budget's
policy, ``hold`` (keep what runs, start nothing more) or ``cancel`` (stop them); the workflow engine
acts on the list. New submissions are refused by :func:`reserve` anyway.

**Credits** (prepayments, D3.1 4.9): :func:`add_credit` records a prepayment and raises the budget's
limit by its amount; :func:`budget_status` shows the credits next to the spend.

All functions flush and never commit: the caller's transaction decides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.orm import Session

from ..decision.cost import CurrencyRates, PriceError
from ..marketplace.common import get_org, naive_utc, rowcount
from ..marketplace.errors import Conflict, InvalidInput, MarketError, NotFound
from ..orm import Budget, Project, WorkflowInstance, utcnow
from ..orm_market import BudgetCredit, BudgetHold, BudgetReservation
from .money import ceil_cents, check_currency, convert_cents, fmt, from_cents, to_cents

ON_EXHAUSTED = ("hold", "cancel")
DEFAULT_MARGIN = 1.2
MAX_MARGIN = 10.0


class BudgetExceeded(MarketError):
    """A reservation does not fit in a budget. Carries the numbers (in the budget's currency)."""

    status = 409
    reason = "budget_exceeded"

    def __init__(
        self,
        budget: Budget,
        scope: str,
        *,
        limit: int,
        spent: int,
        reserved: int,
        requested: int,
        predicted: int,
        margin: Decimal,
    ) -> None:
        cur = budget.currency
        available = max(limit - spent - reserved, 0)
        super().__init__(
            f"The {scope} budget cannot cover this run: limit {fmt(limit, cur)}, spent {fmt(spent, cur)}, "
            f"reserved by running work {fmt(reserved, cur)}, available {fmt(available, cur)}; this run needs "
            f"{fmt(requested, cur)} (predicted cost {fmt(predicted, cur)} x margin {margin}). Choose a "
            "cheaper option in the decision table, wait for running work to finish, or ask a billing "
            "admin of your organization to raise the budget or add credit."
        )
        self.budget_id = budget.id
        self.currency = cur
        self.limit, self.spent, self.reserved = from_cents(limit), from_cents(spent), from_cents(reserved)
        self.requested, self.available = from_cents(requested), from_cents(available)


@dataclass(frozen=True)
class BudgetAction:
    """What the engine should do to a live instance because a budget is exhausted."""

    instance_id: str
    action: str  # hold | cancel
    budget_id: int
    reason: str


@dataclass(frozen=True)
class Settlement:
    reservation: BudgetReservation
    actual: Decimal
    currency: str
    #: budget id -> cents charged in that budget's currency
    charged: dict[int, int] = field(default_factory=dict)
    #: instances to hold or cancel because a budget is now exhausted
    actions: list[BudgetAction] = field(default_factory=list)
    already_settled: bool = False


# --- budgets ------------------------------------------------------------------------------------


def _scope(session: Session, b: Budget) -> str:
    org = get_org(session, b.org_id)
    if b.project_id is None:
        return f"organization {org.name}"
    p = session.get(Project, b.project_id)
    return f"project {org.name}/{p.name if p else b.project_id}"


def _check_project(session: Session, org_id: int, project_id: int | None) -> None:
    if project_id is None:
        return
    p = session.get(Project, project_id)
    if p is None or p.org_id != org_id:
        raise NotFound.of("project", project_id)


def _check_margin(margin: Any) -> float:
    ok = isinstance(margin, int | float | Decimal) and not isinstance(margin, bool)
    if not ok or not math.isfinite(float(margin)) or not 1.0 <= float(margin) <= MAX_MARGIN:
        raise InvalidInput(
            f"margin: {margin!r} must be a number from 1 (reserve exactly the prediction) to {MAX_MARGIN:g}; "
            f"the default {DEFAULT_MARGIN} reserves 20% more than predicted"
        )
    return float(margin)


def _limit_cents(limit: Any) -> int:
    try:
        cents = to_cents(limit, "limit")
    except PriceError as e:
        raise InvalidInput(str(e)) from None
    if cents <= 0:
        raise InvalidInput(
            f"limit: {limit!r} is not a usable budget; a budget of zero would refuse every run. Give a "
            "positive amount such as 1000.00, or delete the budget to stop limiting spending"
        )
    return cents


def _overlap(a_start, a_end, b_start, b_end) -> bool:
    return (a_start is None or b_end is None or a_start < b_end) and (
        b_start is None or a_end is None or b_start < a_end
    )


def create_budget(
    session: Session,
    org_id: int,
    *,
    limit: Any,
    currency: str = "EUR",
    project_id: int | None = None,
    period_start: datetime | None = None,
    period_end: datetime | None = None,
    on_exhausted: str = "hold",
    margin: Any = DEFAULT_MARGIN,
) -> Budget:
    """A budget of *limit* (> 0) in *currency* for the organization or one of its projects.

    Raises :class:`~..marketplace.errors.InvalidInput` for a zero or negative limit, an unknown
    currency, a bad policy, margin or period, or a period overlapping another budget of the same scope;
    :class:`~..marketplace.errors.NotFound` for a project of another organization."""
    get_org(session, org_id)
    _check_project(session, org_id, project_id)
    cents = _limit_cents(limit)
    try:
        check_currency(currency, "currency")
    except PriceError as e:
        raise InvalidInput(str(e), reason="invalid_currency") from None
    if on_exhausted not in ON_EXHAUSTED:
        raise InvalidInput(
            f"on_exhausted: {on_exhausted!r}; one of 'hold' (start nothing more) or 'cancel' (stop running work)"
        )
    m = _check_margin(margin)
    start = naive_utc(period_start) if period_start else None
    end = naive_utc(period_end) if period_end else None
    if start and end and start >= end:
        raise InvalidInput(f"period: start {start} is not before end {end}")
    same = select(Budget).where(
        Budget.org_id == org_id,
        Budget.project_id.is_(None) if project_id is None else Budget.project_id == project_id,
    )
    for other in session.scalars(same).all():
        if _overlap(start, end, other.period_start, other.period_end):
            raise InvalidInput(
                f"period: overlaps budget {other.id} of the same scope "
                f"({other.period_start or 'open'} to {other.period_end or 'open'}); end that one first or "
                "choose another period",
                reason="budget_overlap",
            )
    b = Budget(
        org_id=org_id,
        project_id=project_id,
        currency=currency,
        amount_cents=cents,
        reserved_cents=0,
        spent_cents=0,
        period_start=start,
        period_end=end,
        on_exhausted=on_exhausted,
        margin=m,
    )
    session.add(b)
    session.flush()
    return b


def get_budget(session: Session, budget_id: int, org_id: int) -> Budget:
    b = session.get(Budget, budget_id)
    if b is None or b.org_id != org_id:
        raise NotFound.of("budget", budget_id)
    return b


def list_budgets(session: Session, org_id: int, project_id: int | None = None) -> list[Budget]:
    q = (
        select(Budget)
        .where(Budget.org_id == org_id)
        .order_by(Budget.project_id, Budget.period_start, Budget.id)
    )
    if project_id is not None:
        q = q.where(Budget.project_id == project_id)
    return list(session.scalars(q).all())


def update_budget(
    session: Session,
    budget_id: int,
    org_id: int,
    *,
    limit: Any = None,
    on_exhausted: str | None = None,
    margin: Any = None,
) -> Budget:
    """Change a budget's limit, policy or margin. Lowering the limit below what is spent is allowed
    (the budget is then exhausted); reservations already held are kept."""
    b = get_budget(session, budget_id, org_id)
    values: dict[str, Any] = {}
    if limit is not None:
        values["amount_cents"] = _limit_cents(limit)
    if on_exhausted is not None:
        if on_exhausted not in ON_EXHAUSTED:
            raise InvalidInput(f"on_exhausted: {on_exhausted!r}; one of {list(ON_EXHAUSTED)}")
        values["on_exhausted"] = on_exhausted
    if margin is not None:
        values["margin"] = _check_margin(margin)
    if values:
        session.execute(
            update(Budget)
            .where(Budget.id == b.id)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        session.expire(b)
    return b


def active_budgets(
    session: Session, org_id: int, project_id: int | None, at: datetime | None = None
) -> list[Budget]:
    """The budgets a run of *project_id* (or of the organization) falls under at *at*, in id order."""
    t = naive_utc(at)
    scope: ColumnElement[bool] = Budget.project_id.is_(None)
    if project_id is not None:
        scope = or_(scope, Budget.project_id == project_id)
    q = (
        select(Budget)
        .where(
            Budget.org_id == org_id,
            scope,
            or_(Budget.period_start.is_(None), Budget.period_start <= t),
            or_(Budget.period_end.is_(None), Budget.period_end > t),
        )
        .order_by(Budget.id)
    )
    return list(session.scalars(q).all())


def budget_status(session: Session, budget: Budget) -> dict[str, Any]:
    """JSON-ready state of a budget (amounts as decimal strings in its currency)."""
    session.refresh(budget)
    credits = session.scalar(
        select(func.coalesce(func.sum(BudgetCredit.amount_cents), 0)).where(
            BudgetCredit.budget_id == budget.id
        )
    )
    project = session.get(Project, budget.project_id) if budget.project_id else None
    available = budget.amount_cents - budget.reserved_cents - budget.spent_cents
    return {
        "id": budget.id,
        "project": project.name if project else None,
        "currency": budget.currency,
        "limit": str(from_cents(budget.amount_cents)),
        "spent": str(from_cents(budget.spent_cents)),
        "reserved": str(from_cents(budget.reserved_cents)),
        "available": str(from_cents(max(available, 0))),
        "credits": str(from_cents(int(credits or 0))),
        "period_start": budget.period_start.isoformat() + "Z" if budget.period_start else None,
        "period_end": budget.period_end.isoformat() + "Z" if budget.period_end else None,
        "on_exhausted": budget.on_exhausted,
        "margin": budget.margin,
        "exhausted": budget.spent_cents >= budget.amount_cents,
        "used_fraction": budget.spent_cents / budget.amount_cents if budget.amount_cents else None,
    }


def add_credit(
    session: Session,
    budget_id: int,
    org_id: int,
    amount: Any,
    *,
    reference: str = "",
    note: str = "",
    created_by: str = "",
) -> BudgetCredit:
    """Record a prepayment of *amount* (> 0, in the budget's currency) and raise the limit by it."""
    b = get_budget(session, budget_id, org_id)
    cents = _limit_cents(amount)
    session.execute(
        update(Budget)
        .where(Budget.id == b.id)
        .values(amount_cents=Budget.amount_cents + cents)
        .execution_options(synchronize_session=False)
    )
    c = BudgetCredit(
        budget_id=b.id, amount_cents=cents, reference=str(reference)[:255], note=note, created_by=created_by
    )
    session.add(c)
    session.flush()
    session.expire(b)
    return c


# --- reservations -------------------------------------------------------------------------------


def _convert(cents: int, frm: str, to: str, rates: CurrencyRates | None) -> int:
    try:
        return convert_cents(cents, frm, to, rates)
    except PriceError as e:
        raise InvalidInput(str(e), reason="invalid_currency") from None


def reserve(
    session: Session,
    org_id: int,
    project_id: int | None,
    amount: Any,
    *,
    currency: str = "EUR",
    instance_id: str | None = None,
    user_id: int | None = None,
    margin: Any = None,
    at: datetime | None = None,
    rates: CurrencyRates | None = None,
    note: str = "",
) -> BudgetReservation:
    """Hold *amount* (the predicted cost, in *currency*) x margin on every budget that applies.

    *margin* overrides the budgets' own. Raises :class:`BudgetExceeded` (with limit, spent, reserved
    and requested) when one budget cannot cover it, leaving no hold behind;
    :class:`~..marketplace.errors.InvalidInput` for a negative amount or an unknown currency."""
    get_org(session, org_id)
    _check_project(session, org_id, project_id)
    try:
        check_currency(currency, "currency")
        predicted = to_cents(amount, "predicted cost")
    except PriceError as e:
        raise InvalidInput(str(e)) from None
    override = _check_margin(margin) if margin is not None else None
    budgets = active_budgets(session, org_id, project_id, at)
    taken: list[tuple[int, int]] = []
    for b in budgets:
        m = Decimal(repr(override if override is not None else b.margin))
        in_b = _convert(predicted, currency, b.currency, rates)
        need = ceil_cents(from_cents(in_b) * m)
        res = session.execute(
            update(Budget)
            .where(
                Budget.id == b.id,
                Budget.amount_cents - Budget.reserved_cents - Budget.spent_cents >= need,
                Budget.spent_cents < Budget.amount_cents,  # an exhausted budget admits nothing, not even 0
            )
            .values(reserved_cents=Budget.reserved_cents + need)
            .execution_options(synchronize_session=False)
        )
        if rowcount(res) != 1:
            for bid, n in taken:  # give back what this call already held
                session.execute(
                    update(Budget)
                    .where(Budget.id == bid)
                    .values(reserved_cents=Budget.reserved_cents - n)
                    .execution_options(synchronize_session=False)
                )
            for x in budgets:
                session.expire(x)
            row = session.execute(
                select(Budget.amount_cents, Budget.spent_cents, Budget.reserved_cents).where(
                    Budget.id == b.id
                )
            ).one()
            raise BudgetExceeded(
                b,
                _scope(session, b),
                limit=row[0],
                spent=row[1],
                reserved=row[2],
                requested=need,
                predicted=in_b,
                margin=m,
            )
        taken.append((b.id, need))
    r = BudgetReservation(
        org_id=org_id,
        project_id=project_id,
        user_id=user_id,
        instance_id=instance_id,
        currency=currency,
        predicted_cents=predicted,
        state="held",
        note=note,
        holds=[BudgetHold(budget_id=bid, amount_cents=n) for bid, n in taken],
    )
    session.add(r)
    session.flush()
    for x in budgets:
        session.expire(x)
    return r


def get_reservation(session: Session, reservation_id: str, org_id: int | None = None) -> BudgetReservation:
    r = session.get(BudgetReservation, reservation_id)
    if r is None or (org_id is not None and r.org_id != org_id):
        raise NotFound.of("reservation", reservation_id)
    return r


def _close(
    session: Session,
    reservation: BudgetReservation | str,
    actual_cost: Any,
    currency: str | None,
    rates: CurrencyRates | None,
    state: str,
) -> Settlement:
    r = get_reservation(session, reservation) if isinstance(reservation, str) else reservation
    cur = currency or r.currency
    try:
        check_currency(cur, "currency")
        cents = to_cents(actual_cost, "actual cost")
    except PriceError as e:
        raise InvalidInput(str(e)) from None
    actual = _convert(cents, cur, r.currency, rates)

    def repeat() -> Settlement:
        if r.state == state and r.actual_cents == actual:
            return Settlement(
                r,
                from_cents(actual),
                r.currency,
                {h.budget_id: h.spent_cents or 0 for h in r.holds},
                already_settled=True,
            )
        raise Conflict(
            f"reservation {r.id} is already {r.state} with {fmt(r.actual_cents or 0, r.currency)}; "
            "a reservation is settled once"
        )

    if r.state != "held":
        return repeat()
    res = session.execute(
        update(BudgetReservation)
        .where(BudgetReservation.id == r.id, BudgetReservation.state == "held")
        .values(state=state, actual_cents=actual, closed=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.refresh(r)
    if rowcount(res) != 1:  # settled concurrently
        return repeat()
    charged: dict[int, int] = {}
    for h in r.holds:
        b = session.get(Budget, h.budget_id)
        spent = _convert(actual, r.currency, b.currency, rates) if b is not None else 0
        session.execute(
            update(Budget)
            .where(Budget.id == h.budget_id)
            .values(
                reserved_cents=Budget.reserved_cents - h.amount_cents, spent_cents=Budget.spent_cents + spent
            )
            .execution_options(synchronize_session=False)
        )
        h.spent_cents = spent
        charged[h.budget_id] = spent
        if b is not None:
            session.expire(b)
    session.flush()
    actions = exhausted_actions(session, budget_ids=list(charged)) if any(charged.values()) else []
    return Settlement(r, from_cents(actual), r.currency, charged, actions)


def settle(
    session: Session,
    reservation: BudgetReservation | str,
    actual_cost: Any,
    *,
    currency: str | None = None,
    rates: CurrencyRates | None = None,
) -> Settlement:
    """Release the hold and record *actual_cost* (in *currency*, default the reservation's) as spent on
    every budget the reservation held. Returns the :class:`Settlement`, whose ``actions`` list the
    instances to hold or cancel if a budget is now exhausted."""
    return _close(session, reservation, actual_cost, currency, rates, "settled")


def release(session: Session, reservation: BudgetReservation | str) -> Settlement:
    """End a reservation with nothing spent (the run never started)."""
    return _close(session, reservation, 0, None, None, "released")


# --- exhausted budgets --------------------------------------------------------------------------


def exhausted_actions(
    session: Session,
    org_id: int | None = None,
    *,
    budget_ids: list[int] | None = None,
    at: datetime | None = None,
) -> list[BudgetAction]:
    """Live instances under an exhausted budget (``spent >= limit``), each with the budget's policy;
    an instance under two exhausted budgets gets ``cancel`` if either says so. Restricted to one
    organization or to *budget_ids*; budgets whose period is over are not considered."""
    from ..workflows.engine import FINAL_INSTANCE_STATES

    t = naive_utc(at)
    q = select(Budget).where(
        Budget.spent_cents >= Budget.amount_cents,
        or_(Budget.period_end.is_(None), Budget.period_end > t),
    )
    if org_id is not None:
        q = q.where(Budget.org_id == org_id)
    if budget_ids is not None:
        q = q.where(Budget.id.in_(budget_ids))
    actions: dict[str, BudgetAction] = {}
    for b in session.scalars(q.order_by(Budget.id)).all():
        iq = select(WorkflowInstance.id).where(
            WorkflowInstance.org_id == b.org_id, WorkflowInstance.state.not_in(FINAL_INSTANCE_STATES)
        )
        if b.project_id is not None:
            iq = iq.where(WorkflowInstance.project_id == b.project_id)
        reason = (
            f"the {_scope(session, b)} budget is exhausted: spent {fmt(b.spent_cents, b.currency)} of "
            f"{fmt(b.amount_cents, b.currency)}"
        )
        for iid in session.scalars(iq.order_by(WorkflowInstance.created)).all():
            old = actions.get(iid)
            if old is None or (old.action == "hold" and b.on_exhausted == "cancel"):
                actions[iid] = BudgetAction(iid, b.on_exhausted, b.id, reason)
    return list(actions.values())


def reservation_totals(session: Session, budget_id: int) -> dict[str, int]:
    """Sums over the budget's holds, for audits: ``held`` (open reservations) and ``spent``
    (settled ones), to compare with the budget's ``reserved_cents`` and ``spent_cents``."""
    held = session.scalar(
        select(func.coalesce(func.sum(BudgetHold.amount_cents), 0))
        .join(BudgetReservation, BudgetReservation.id == BudgetHold.reservation_id)
        .where(BudgetHold.budget_id == budget_id, BudgetReservation.state == "held")
    )
    spent = session.scalar(
        select(func.coalesce(func.sum(BudgetHold.spent_cents), 0))
        .join(BudgetReservation, BudgetReservation.id == BudgetHold.reservation_id)
        .where(and_(BudgetHold.budget_id == budget_id, BudgetReservation.state.in_(("settled", "released"))))
    )
    return {"held": int(held or 0), "spent": int(spent or 0)}
