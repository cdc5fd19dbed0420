"""Plans of a subscription: add, edit, cancel (whole or one part), trials and their expiry.

A subscription has at most one plan at any time. A plan's terms are billing periods
(tapwatch.store.plan_models.BillingPeriod) laid end to end: an edit or a partial
cancellation closes the open period at the time it takes effect and opens the next, so the
ledger is the history billing reads pro rata, and the terms at any instant are the period
containing it. Changes take effect now or later, never in the past, and in order.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from tapwatch.console import rbac
from tapwatch.plans.access import SYSTEM, Actor, NotFound, PlanError, authorize
from tapwatch.plans.counting import COVERAGE_PARTS
from tapwatch.store.console_models import audit, utcnow
from tapwatch.store.inventory import iso
from tapwatch.store.plan_models import BillingPeriod, Plan, Subscription

KINDS = ("trial", "monthly", "annual")
COVERAGES = ("both", "eiot", "ot")
COVERAGE_LABELS = {"both": "Enterprise IoT and OT", "eiot": "Enterprise IoT", "ot": "OT"}
TRIAL_DAYS = 30
MAX_COMMITTED = 10_000_000


def naive_utc(value: datetime | None) -> datetime | None:
    """Stored times are naive UTC; an aware time is converted, a naive one is taken as UTC."""
    if value is None:
        return None
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def get_plan(session: Session, plan_id: int) -> Plan:
    plan = session.get(Plan, plan_id)
    if plan is None:
        raise NotFound(f"no plan with id {plan_id}")
    return plan


def periods(session: Session, plan_id: int) -> list[BillingPeriod]:
    q = select(BillingPeriod).where(BillingPeriod.plan_id == plan_id).order_by(
        BillingPeriod.start, BillingPeriod.id)
    return list(session.scalars(q))


def plans_of(session: Session, subscription_id: int) -> list[Plan]:
    q = select(Plan).where(Plan.subscription_id == subscription_id).order_by(Plan.start, Plan.id)
    return list(session.scalars(q))


def term_at(session: Session, subscription_id: int, at: datetime) -> tuple[Plan, BillingPeriod] | None:
    """The plan and its terms in force at `at`, or None when the subscription has none then."""
    q = (select(Plan, BillingPeriod).join(BillingPeriod, BillingPeriod.plan_id == Plan.id)
         .where(BillingPeriod.subscription_id == subscription_id, BillingPeriod.start <= at,
                or_(BillingPeriod.end.is_(None), BillingPeriod.end > at))
         .order_by(BillingPeriod.start.desc(), BillingPeriod.id.desc()).limit(1))
    row = session.execute(q).first()
    return (row[0], row[1]) if row else None


def state(plan: Plan, at: datetime) -> str:
    """scheduled, active, or how it ended (cancelled, trial_expired)."""
    if at < plan.start and (plan.end is None or plan.end > plan.start):
        return "scheduled"
    if plan.end is None or at < plan.end:
        return "active"
    return plan.end_reason or ("trial_expired" if plan.kind == "trial" else "cancelled")


def _committed(kind: str, committed: int | None) -> int | None:
    if kind == "trial":
        if committed is not None:
            raise PlanError("a trial has no device limit: leave committed devices out")
        return None
    if committed is None or isinstance(committed, bool) or not isinstance(committed, int):
        raise PlanError(f"a {kind} plan needs a number of committed devices")
    if not 1 <= committed <= MAX_COMMITTED:
        raise PlanError(f"committed devices must be from 1 to {MAX_COMMITTED:,}")
    return committed


def _when(value: datetime | None, now: datetime, what: str) -> datetime:
    when = naive_utc(value) or now
    if when < now:
        raise PlanError(f"{what} cannot take effect in the past ({iso(when)} is before now, {iso(now)})")
    return when


def add(session: Session, actor: Actor, sub: Subscription, kind: str, committed: int | None = None,
        coverage: str = "both", start: datetime | None = None) -> Plan:
    """Add a plan to `sub`; refused while another plan of it runs (or is scheduled) from `start`."""
    authorize(session, actor, sub.id, sub.name, rbac.PLANS_WRITE, "plan.add", "subscription", sub.id)
    now = utcnow()
    if kind not in KINDS:
        raise PlanError(f"plan kind must be one of {', '.join(KINDS)}")
    if coverage not in COVERAGES:
        raise PlanError(f"coverage must be one of {', '.join(COVERAGES)} (eiot = Enterprise IoT)")
    committed = _committed(kind, committed)
    begin = _when(start, now, "a plan")
    existing = plans_of(session, sub.id)
    for other in existing:
        if other.end is None or other.end > begin:
            until = f", until {iso(other.end)}" if other.end else ""
            raise PlanError(
                f"subscription {sub.name!r} already has plan {other.id} ({other.kind}, "
                f"{state(other, now)}{until}); a subscription has at most one plan: cancel it "
                "first (converting a trial = cancel it, then add)")
    if kind == "trial" and any(p.kind == "trial" for p in existing):
        raise PlanError(f"subscription {sub.name!r} has had its trial; add a monthly or annual plan")
    end = begin + timedelta(days=TRIAL_DAYS) if kind == "trial" else None
    plan = Plan(subscription_id=sub.id, kind=kind, start=begin, end=end, end_reason=None,
                created_at=now, created_by=actor.name)
    session.add(plan)
    session.flush()
    session.add(BillingPeriod(plan_id=plan.id, subscription_id=sub.id, kind=kind, coverage=coverage,
                              committed_devices=committed, start=begin, end=end, change="add",
                              recorded_at=now, recorded_by=actor.name))
    previous = existing[-1] if existing else None
    converted = previous is not None and previous.kind == "trial" and previous.end == begin
    audit(session, actor.name, "plan.add", "plan", plan.id, subscription=sub.name, kind=kind,
          coverage=coverage, committed_devices=committed, start=iso(begin), trial_end=iso(end),
          **({"converted_from": previous.id} if converted and previous else {}))
    return plan


def _prepare(session: Session, actor: Actor, plan: Plan, action: str,
             effective: datetime | None) -> tuple[Subscription, datetime, BillingPeriod]:
    sub = session.get(Subscription, plan.subscription_id)
    assert sub is not None
    authorize(session, actor, sub.id, sub.name, rbac.PLANS_WRITE, action, "plan", plan.id)
    now = utcnow()
    eff = max(_when(effective, now, "a change"), plan.start)
    if plan.end is not None and eff >= plan.end:
        raise PlanError(f"plan {plan.id} ends at {iso(plan.end)} ({state(plan, now)}); "
                        "a change must take effect before that")
    last = periods(session, plan.id)[-1]
    if eff < last.start:
        raise PlanError(f"a change of plan {plan.id} is already scheduled for {iso(last.start)}; "
                        "changes take effect in order")
    return sub, eff, last


def _next_period(session: Session, actor: Actor, plan: Plan, last: BillingPeriod, eff: datetime,
                 change: str, coverage: str, committed: int | None) -> None:
    now = utcnow()
    if eff == last.start:  # a change at the very start of the open period replaces its terms
        last.coverage, last.committed_devices, last.change = coverage, committed, change
        last.recorded_at, last.recorded_by = now, actor.name
        return
    last.end = eff
    session.add(BillingPeriod(plan_id=plan.id, subscription_id=plan.subscription_id, kind=plan.kind,
                              coverage=coverage, committed_devices=committed, start=eff, end=plan.end,
                              change=change, recorded_at=now, recorded_by=actor.name))


def edit(session: Session, actor: Actor, plan_id: int, committed: int | None = None,
         coverage: str | None = None, effective: datetime | None = None) -> Plan:
    """Change committed devices and/or coverage from `effective` (default now)."""
    plan = get_plan(session, plan_id)
    sub, eff, last = _prepare(session, actor, plan, "plan.edit", effective)
    if coverage is not None and coverage not in COVERAGES:
        raise PlanError(f"coverage must be one of {', '.join(COVERAGES)} (eiot = Enterprise IoT)")
    new_committed = last.committed_devices if committed is None else _committed(plan.kind, committed)
    new_coverage = coverage or last.coverage
    if (new_committed, new_coverage) == (last.committed_devices, last.coverage):
        raise PlanError("nothing to change: give committed devices or coverage different from now")
    audit(session, actor.name, "plan.edit", "plan", plan.id, subscription=sub.name, effective=iso(eff),
          old={"committed_devices": last.committed_devices, "coverage": last.coverage},
          new={"committed_devices": new_committed, "coverage": new_coverage})
    _next_period(session, actor, plan, last, eff, "edit", new_coverage, new_committed)
    return plan


def cancel(session: Session, actor: Actor, plan_id: int, part: str | None = None,
           effective: datetime | None = None) -> Plan:
    """Cancel the plan from `effective`, or only its Enterprise IoT ('eiot') or OT ('ot') part.

    Cancelling the only part a plan still covers cancels the plan.
    """
    plan = get_plan(session, plan_id)
    sub, eff, last = _prepare(session, actor, plan, "plan.cancel", effective)
    remaining: frozenset[str] = frozenset()
    if part is not None:
        if part not in ("eiot", "ot"):
            raise PlanError("the part to cancel is eiot (Enterprise IoT) or ot")
        covered = COVERAGE_PARTS[last.coverage]
        if part not in covered:
            raise PlanError(f"plan {plan.id} does not cover {COVERAGE_LABELS[part]} "
                            f"(it covers {COVERAGE_LABELS[last.coverage]})")
        remaining = covered - {part}
    audit(session, actor.name, "plan.cancel", "plan", plan.id, subscription=sub.name, effective=iso(eff),
          part=part, remaining=sorted(remaining) or None)
    if remaining:
        (left,) = remaining
        _next_period(session, actor, plan, last, eff, f"cancel_{part}", left, last.committed_devices)
        return plan
    last.end = eff
    plan.end, plan.end_reason = eff, "cancelled"
    return plan


def expire_trials(session: Session, at: datetime | None = None) -> list[Plan]:
    """Record trials that reached their end unconverted as cancelled (audited as the system).

    Entitlements already stop at the trial's end on their own; this leaves the trace.
    """
    at = at or utcnow()
    q = select(Plan).where(Plan.kind == "trial", Plan.end_reason.is_(None), Plan.end.is_not(None),
                           Plan.end <= at)
    expired = list(session.scalars(q))
    for plan in expired:
        plan.end_reason = "trial_expired"
        sub = session.get(Subscription, plan.subscription_id)
        audit(session, SYSTEM.name, "plan.trial_expired", "plan", plan.id,
              subscription=sub.name if sub else None, trial_end=iso(plan.end),
              services_stopped=["alerts", "recommendations", "vulnerabilities", "sensor_data"])
    return expired


def period_json(p: BillingPeriod) -> dict[str, Any]:
    return {"id": p.id, "plan_id": p.plan_id, "kind": p.kind, "coverage": p.coverage,
            "committed_devices": p.committed_devices, "start": iso(p.start), "end": iso(p.end),
            "change": p.change, "recorded_at": iso(p.recorded_at), "recorded_by": p.recorded_by,
            "billable_peak": p.billable_peak}


def plan_json(session: Session, plan: Plan, at: datetime | None = None) -> dict[str, Any]:
    at = at or utcnow()
    terms = periods(session, plan.id)
    now_terms = next((p for p in reversed(terms) if p.start <= at and (p.end is None or p.end > at)),
                     terms[-1] if terms else None)
    return {"id": plan.id, "subscription_id": plan.subscription_id, "kind": plan.kind,
            "state": state(plan, at), "start": iso(plan.start), "end": iso(plan.end),
            "end_reason": plan.end_reason,
            "trial_end": iso(plan.start + timedelta(days=TRIAL_DAYS)) if plan.kind == "trial" else None,
            "coverage": now_terms.coverage if now_terms else None,
            "committed_devices": now_terms.committed_devices if now_terms else None,
            "created_at": iso(plan.created_at), "created_by": plan.created_by,
            "periods": [period_json(p) for p in terms]}
