"""Billing: daily billable-count snapshots (the trend), committed vs actual, and pro-rata periods.

A snapshot per subscription and day is taken whenever plans are looked at or changed and by
`tapwatch plans snapshot` (run it daily from cron on a console nobody opens). A billing
period that has closed gets its peak daily count, so the ledger holds both what was
committed and what was seen for each stretch of time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tapwatch.plans import plans as plan_rules
from tapwatch.plans import subscriptions
from tapwatch.plans.counting import COVERAGE_PARTS, Count, billable
from tapwatch.plans.features import entitlements
from tapwatch.store.console_models import utcnow
from tapwatch.store.inventory import iso
from tapwatch.store.plan_models import BillableSnapshot, BillingPeriod, Subscription

DAY = timedelta(days=1)


def snapshot(session: Session, sub: Subscription, at: datetime | None = None) -> BillableSnapshot:
    """Record (or refresh) the day's billable count of `sub`."""
    at = at or utcnow()
    count = billable(session, sub.id, at)
    ent = entitlements(session, sub.id, at)
    covered = count.billable(ent.coverage)
    row = session.scalar(select(BillableSnapshot).where(
        BillableSnapshot.subscription_id == sub.id, BillableSnapshot.day == at.date()))
    if row is None:
        row = BillableSnapshot(subscription_id=sub.id, day=at.date(), eiot=count.eiot, ot=count.ot,
                               billable=covered, committed=ent.committed_devices, taken_at=at)
        session.add(row)
    else:
        row.eiot, row.ot, row.billable = count.eiot, count.ot, covered
        row.committed, row.taken_at = ent.committed_devices, at
    session.flush()
    return row


def finalize(session: Session, sub: Subscription, at: datetime | None = None) -> int:
    """Fill the peak billable count of periods that have closed by `at`; returns how many."""
    at = at or utcnow()
    q = select(BillingPeriod).where(BillingPeriod.subscription_id == sub.id,
                                    BillingPeriod.end.is_not(None), BillingPeriod.end <= at,
                                    BillingPeriod.billable_peak.is_(None))
    done = 0
    for p in session.scalars(q):
        assert p.end is not None
        last_day = (p.end - timedelta(microseconds=1)).date() if p.end > p.start else p.start.date()
        peak = session.scalar(select(func.max(BillableSnapshot.billable)).where(
            BillableSnapshot.subscription_id == sub.id, BillableSnapshot.day >= p.start.date(),
            BillableSnapshot.day <= last_day))
        p.billable_peak = int(peak or 0)
        done += 1
    return done


def refresh(session: Session, at: datetime | None = None) -> None:
    """Housekeeping before plans are read or changed: expire trials, snapshot, close periods."""
    at = at or utcnow()
    plan_rules.expire_trials(session, at)
    for sub in subscriptions.all_subscriptions(session):
        snapshot(session, sub, at)
        finalize(session, sub, at)


def trend(session: Session, subscription_id: int, days: int = 90,
          at: datetime | None = None) -> list[dict[str, Any]]:
    """Daily snapshots of the last `days` days, oldest first."""
    at = at or utcnow()
    q = (select(BillableSnapshot).where(BillableSnapshot.subscription_id == subscription_id,
                                        BillableSnapshot.day > (at - days * DAY).date(),
                                        BillableSnapshot.day <= at.date())
         .order_by(BillableSnapshot.day))
    return [{"day": s.day.isoformat(), "eiot": s.eiot, "ot": s.ot, "billable": s.billable,
             "committed": s.committed} for s in session.scalars(q)]


@dataclass
class Usage:
    """Committed vs actual for one subscription now."""

    subscription_id: int
    count: Count
    coverage: frozenset[str]
    committed: int | None
    kind: str | None

    @property
    def actual(self) -> int:
        return self.count.billable(self.coverage)

    @property
    def warning(self) -> str | None:
        if self.committed is not None and self.actual > self.committed:
            return (f"{self.actual:,} billable devices exceed the {self.committed:,} committed; "
                    "raise the committed number (tapwatch plans edit) or review the inventory")
        return None

    def as_dict(self) -> dict[str, Any]:
        return {"subscription_id": self.subscription_id, "kind": self.kind,
                "coverage": sorted(self.coverage), "committed_devices": self.committed,
                "billable_devices": self.actual, "counts": self.count.as_dict(),
                "over_committed": self.warning is not None, "warning": self.warning}


def usage(session: Session, sub: Subscription, at: datetime | None = None) -> Usage:
    at = at or utcnow()
    ent = entitlements(session, sub.id, at)
    return Usage(sub.id, billable(session, sub.id, at), ent.coverage, ent.committed_devices, ent.kind)


def prorate(session: Session, subscription_id: int, start: datetime, end: datetime,
            at: datetime | None = None) -> dict[str, Any]:
    """Each period's share of [start, end): days and committed device-days (the pro-rata base).

    An open period runs until `at` (now) at most: the future is not billed yet.
    """
    at = at or utcnow()
    stop = min(end, at)
    q = (select(BillingPeriod).where(BillingPeriod.subscription_id == subscription_id)
         .order_by(BillingPeriod.start, BillingPeriod.id))
    rows, total = [], 0.0
    for p in session.scalars(q):
        lo, hi = max(p.start, start), min(p.end or stop, stop)
        if hi <= lo:
            continue
        days = (hi - lo) / DAY
        device_days = days * (p.committed_devices or 0)
        total += device_days
        rows.append({"period_id": p.id, "plan_id": p.plan_id, "kind": p.kind, "coverage": p.coverage,
                     "parts": sorted(COVERAGE_PARTS[p.coverage]), "from": iso(lo), "to": iso(hi),
                     "days": round(days, 6), "committed_devices": p.committed_devices,
                     "device_days": round(device_days, 3), "billable_peak": p.billable_peak})
    return {"subscription_id": subscription_id, "from": iso(start), "to": iso(stop),
            "periods": rows, "device_days": round(total, 3)}


def month_bounds(day: date) -> tuple[datetime, datetime]:
    """The calendar month containing `day`, as [first midnight, next first midnight)."""
    first = datetime(day.year, day.month, 1)
    nxt = datetime(day.year + (day.month == 12), day.month % 12 + 1, 1)
    return first, nxt
